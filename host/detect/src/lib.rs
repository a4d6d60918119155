//! Sigma detection for Qila's SIEM pack.
//!
//! The engine is [rsigma](https://github.com/timescale/rsigma) (`rsigma-parser` + `rsigma-eval`, pinned at 0.15,
//! the newest that builds on rustc 1.95): it parses SigmaHQ rules, compiles every modifier SigmaHQ uses and keeps
//! the sliding-window state of correlation rules. This crate adds what a SIEM needs around it:
//!
//! - [`RuleSet::load`] reads rule files and directories and reports every rule it cannot load, with the file and
//!   the reason, instead of dropping it ([`LoadReport`]);
//! - log-source routing: an event is checked only against the rules whose `logsource` it belongs to (an event
//!   with an empty log source, e.g. generic JSON, against all of them, as rsigma's own CLI does);
//! - field mapping with Sigma processing pipelines (pySigma's YAML format);
//! - [`Detector::detect`] turns matches and correlation firings into [`Finding`]s with a grouping key.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod error;
mod finding;
mod route;
mod rules;
mod view;

pub use error::DetectError;
pub use finding::{Finding, FindingKind};
pub use rules::{LoadReport, RuleFailure, RuleInfo, RuleSet};
pub use view::EventView;

use std::collections::HashMap;
use std::sync::Arc;

use qila_events::{Event, LogSource};
use rsigma_eval::{EvaluationResult, ResultBody, evaluate_rule};

/// Runs a [`RuleSet`] over events, one at a time and in time order, keeping correlation state between them.
pub struct Detector {
    rules: RuleSet,
    routes: route::Routes,
}

impl Detector {
    /// A detector for `rules`, with empty correlation state.
    pub fn new(rules: RuleSet) -> Self {
        let routes = route::Routes::new(rules.logsources());
        Self { rules, routes }
    }

    /// The rules it runs.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Checks `event` against the rules of its log source and feeds the matches to the correlation rules.
    /// `reference` identifies the event in correlation findings (a stored event id, or `file:line`).
    pub fn detect(&mut self, event: &Event, reference: &str) -> Vec<Finding> {
        let view = EventView::new(&event.fields, reference);
        let candidates = self.routes.candidates(&event.logsource);
        let compiled = self.rules.engine().engine().rules();
        let matches: Vec<EvaluationResult> = candidates
            .iter()
            .filter_map(|&index| compiled.get(index))
            .filter_map(|rule| evaluate_rule(rule, &view))
            .collect();
        if matches.is_empty() && !self.rules.has_correlations() {
            return Vec::new();
        }
        let seconds = event.time_us.div_euclid(1_000_000);
        let results = self
            .rules
            .engine_mut()
            .process_with_detections(&view, matches, seconds);
        results
            .into_iter()
            .filter(|result| self.complete_group(result))
            .map(|result| Finding::from_result(result, event, reference))
            .collect()
    }

    /// A correlation groups only events that have every `group-by` field: the events without one share a window
    /// of their own in rsigma, whose firing would lump unrelated events together, so it is not a finding.
    fn complete_group(&self, result: &EvaluationResult) -> bool {
        match &result.body {
            ResultBody::Correlation(body) => {
                let id = result
                    .header
                    .rule_id
                    .as_deref()
                    .unwrap_or(&result.header.rule_title);
                body.group_key.len() >= self.rules.group_by_len(id)
            }
            ResultBody::Detection(_) => true,
        }
    }

    /// How many correlation windows are open (memory held by correlation state).
    pub fn correlation_state(&self) -> usize {
        self.rules.engine().state_count()
    }

    /// Drops correlation windows that ended before `now_secs`.
    pub fn evict_expired(&mut self, now_secs: i64) {
        self.rules.engine_mut().evict_expired(now_secs);
    }
}

/// The rules of each distinct log source, for [`route::Routes`].
pub(crate) type RouteTable = HashMap<LogSource, Arc<[usize]>>;
