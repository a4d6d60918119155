//! Log-source routing: which compiled rules an event is checked against.

use std::collections::HashMap;
use std::sync::Arc;

use qila_events::LogSource;

use crate::RouteTable;

/// The log source a rule names (each part optional, compared without regard to case).
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSource {
    pub product: Option<String>,
    pub service: Option<String>,
    pub category: Option<String>,
}

impl RuleSource {
    fn accepts(&self, event: &LogSource) -> bool {
        let same = |rule: &Option<String>, event: &Option<String>| match (rule, event) {
            (None, _) => true,
            (Some(r), Some(e)) => r.eq_ignore_ascii_case(e),
            (Some(_), None) => false,
        };
        same(&self.product, &event.product)
            && same(&self.service, &event.service)
            && self
                .category
                .as_ref()
                .is_none_or(|c| event.categories.iter().any(|e| e.eq_ignore_ascii_case(c)))
    }
}

/// Distinct log sources seen in events are few (tens), so the rule list of each is computed once and cached.
pub(crate) struct Routes {
    rules: Vec<RuleSource>,
    all: Arc<[usize]>,
    cache: RouteTable,
}

/// Past this many distinct log sources, lists are computed per event rather than cached (bounded memory against
/// events that invent log sources).
const MAX_CACHED: usize = 4096;

impl Routes {
    pub fn new(rules: Vec<RuleSource>) -> Self {
        let all: Arc<[usize]> = (0..rules.len()).collect();
        Self {
            rules,
            all,
            cache: HashMap::new(),
        }
    }

    /// The indexes of the rules for an event of `source`: all rules when it names no log source at all.
    pub fn candidates(&mut self, source: &LogSource) -> Arc<[usize]> {
        if source.product.is_none() && source.service.is_none() && source.categories.is_empty() {
            return self.all.clone();
        }
        if let Some(hit) = self.cache.get(source) {
            return hit.clone();
        }
        let list: Arc<[usize]> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.accepts(source))
            .map(|(i, _)| i)
            .collect();
        if self.cache.len() < MAX_CACHED {
            self.cache.insert(source.clone(), list.clone());
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: Option<&str>, s: Option<&str>, c: Option<&str>) -> RuleSource {
        RuleSource {
            product: p.map(str::to_owned),
            service: s.map(str::to_owned),
            category: c.map(str::to_owned),
        }
    }

    #[test]
    fn rules_reach_only_events_of_their_log_source() {
        let mut routes = Routes::new(vec![
            rule(Some("windows"), None, Some("process_creation")),
            rule(Some("windows"), Some("security"), None),
            rule(Some("linux"), Some("sshd"), None),
            rule(None, None, Some("registry_event")),
        ]);
        let sysmon13 = LogSource {
            product: Some("Windows".into()),
            service: Some("sysmon".into()),
            categories: vec!["registry_set".into(), "registry_event".into()],
        };
        assert_eq!(&*routes.candidates(&sysmon13), &[3]);
        let security4688 = LogSource {
            product: Some("windows".into()),
            service: Some("security".into()),
            categories: vec!["process_creation".into()],
        };
        assert_eq!(&*routes.candidates(&security4688), &[0, 1]);
        assert_eq!(&*routes.candidates(&LogSource::default()), &[0, 1, 2, 3]);
    }
}
