//! Detector plugins: components of the `qila:plugin/detector-plugin` world, which look at batches of events and
//! return findings. Declare one with [`detector!`](crate::detector!).
//!
//! ```
//! use qila_sdk::detect::{Event, Finding, Level, Rule};
//! use qila_sdk::Error;
//!
//! /// Events whose `user.name` is `root`.
//! pub const ROOT_LOGIN: Rule = Rule {
//!     id: "example.root-login",
//!     title: "Log-in as root",
//!     level: Level::Medium,
//!     tags: &["attack.privilege-escalation", "attack.t1078.003"],
//! };
//!
//! fn detect(batch: &[Event]) -> Result<Vec<Finding>, Error> {
//!     Ok(batch
//!         .iter()
//!         .enumerate()
//!         .filter(|(_, e)| e.str("user.name") == Some("root"))
//!         .map(|(i, e)| Finding::new(&ROOT_LOGIN, [i], e.str("source.ip").unwrap_or("-")))
//!         .collect())
//! }
//!
//! qila_sdk::detector! {
//!     name: "root-logins",
//!     description: "Finds log-ins as root.",
//!     rules: &[ROOT_LOGIN],
//!     detect: detect,
//! }
//!
//! // Natively, in a unit test: through the same JSON boundary as the host.
//! let findings = DETECTOR.detect_values(&[
//!     serde_json::json!({"user.name": "alice"}),
//!     serde_json::json!({"user": {"name": "root"}, "source": {"ip": "192.0.2.7"}}),
//! ])?;
//! assert_eq!(findings.len(), 1);
//! assert_eq!((findings[0].events.as_slice(), findings[0].group_key.as_str()), (&[1][..], "192.0.2.7"));
//! assert!(DETECTOR.check().is_ok());
//! # Ok::<(), Error>(())
//! ```

use serde_json::{Map, Value};

use crate::Error;
use crate::detector_bindings::qila::plugin::detection as wit;

/// How severe a rule or finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Worth recording, not alerting.
    Informational,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Level {
    /// The name the contract uses: `informational`, `low`, `medium`, `high` or `critical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// One rule of a detector. Declare rules as constants and list them in [`detector!`](crate::detector!).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Stable id (`<detector>.<rule>` or a UUID): alerts and suppressions refer to it, so never change it.
    pub id: &'static str,
    /// One line on what it finds.
    pub title: &'static str,
    /// Default severity of its findings.
    pub level: Level,
    /// ATT&CK tags and others (`attack.command-and-control`, `attack.t1071.004`).
    pub tags: &'static [&'static str],
}

/// One event of a batch: a JSON object with the normalised event's detection fields.
///
/// Fields are found by their dotted ECS name either as a flat key (`{"source.ip": ...}`, how the host sends them)
/// or as nested objects (`{"source": {"ip": ...}}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event(pub Map<String, Value>);

impl Event {
    /// The value of `field` (`dns.question.name`, `QueryName`), flat or nested.
    pub fn get(&self, field: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(field) {
            return Some(v);
        }
        let mut parts = field.split('.');
        let mut current = self.0.get(parts.next()?)?;
        for part in parts {
            current = current.as_object()?.get(part)?;
        }
        Some(current)
    }

    /// The value of `field` if it is a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.get(field)?.as_str()
    }

    /// The first of `fields` that is a non-empty string.
    pub fn first_str(&self, fields: &[&str]) -> Option<&str> {
        fields
            .iter()
            .find_map(|f| self.str(f).filter(|s| !s.is_empty()))
    }
}

/// Something a rule found. Build it with [`Finding::new`], which takes the title, level and tags from the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The rule's id.
    pub rule_id: String,
    /// One line for the alert.
    pub title: String,
    /// Severity.
    pub level: Level,
    /// ATT&CK tags and others.
    pub tags: Vec<String>,
    /// The events it is about: indexes into the batch.
    pub events: Vec<u32>,
    /// What alerts are deduplicated on: a source address, a parent domain, ...
    pub group_key: String,
    /// Anything else worth showing.
    pub details: Value,
}

impl Finding {
    /// A finding of `rule` about the events at `events` (indexes into the batch), deduplicated on `group_key`.
    pub fn new(
        rule: &Rule,
        events: impl IntoIterator<Item = usize>,
        group_key: impl Into<String>,
    ) -> Self {
        Self {
            rule_id: rule.id.to_owned(),
            title: rule.title.to_owned(),
            level: rule.level,
            tags: rule.tags.iter().map(|t| (*t).to_owned()).collect(),
            events: events
                .into_iter()
                .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
            group_key: group_key.into(),
            details: Value::Object(Map::new()),
        }
    }

    /// With another title (the rule's title plus what matched, say).
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// With another level.
    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// With details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

impl From<Finding> for wit::Finding {
    fn from(f: Finding) -> Self {
        wit::Finding {
            rule_id: f.rule_id,
            title: f.title,
            level: f.level.as_str().to_owned(),
            tags: f.tags,
            events: f.events,
            group_key: f.group_key,
            details: f.details.to_string(),
        }
    }
}

/// The detection function a detector declares.
pub type DetectFn = fn(&[Event]) -> Result<Vec<Finding>, Error>;

/// A detector: what [`detector!`](crate::detector!) declares as `DETECTOR`.
#[derive(Debug)]
pub struct Detector {
    name: &'static str,
    version: &'static str,
    description: &'static str,
    rules: &'static [Rule],
    detect: DetectFn,
}

impl Detector {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        version: &'static str,
        description: &'static str,
        rules: &'static [Rule],
        detect: DetectFn,
    ) -> Self {
        Self {
            name,
            version,
            description,
            rules,
            detect,
        }
    }

    /// The detector's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its rules.
    pub fn rules(&self) -> &'static [Rule] {
        self.rules
    }

    /// What the component's `describe-detector` returns.
    pub fn info(&self) -> wit::DetectorInfo {
        wit::DetectorInfo {
            name: self.name.to_owned(),
            version: self.version.to_owned(),
            description: self.description.to_owned(),
            rules: self
                .rules
                .iter()
                .map(|r| wit::RuleInfo {
                    id: r.id.to_owned(),
                    title: r.title.to_owned(),
                    level: r.level.as_str().to_owned(),
                    tags: r.tags.iter().map(|t| (*t).to_owned()).collect(),
                })
                .collect(),
        }
    }

    /// What the component's `detect` does: parses each event (a JSON object, else [`Error::InvalidInput`] naming
    /// its index) and runs the detection function.
    pub fn detect(&self, batch: &[String]) -> Result<Vec<wit::Finding>, Error> {
        let events = batch
            .iter()
            .enumerate()
            .map(|(i, text)| match serde_json::from_str(text) {
                Ok(Value::Object(map)) => Ok(Event(map)),
                Ok(_) => Err(Error::invalid_input(format!(
                    "event {i} is not a JSON object"
                ))),
                Err(e) => Err(Error::invalid_input(format!("event {i} is not JSON: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((self.detect)(&events)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// [`Detector::detect`] on JSON values, returning the SDK's findings: for tests.
    pub fn detect_values(&self, batch: &[Value]) -> Result<Vec<Finding>, Error> {
        let events = batch
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok(Event(map.clone())),
                _ => Err(Error::invalid_input(format!(
                    "event {i} is not a JSON object"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        (self.detect)(&events)
    }

    /// Checks what the host checks at load: a well-formed name, 1 to 1024 rules with unique, non-empty ids of at
    /// most 128 bytes. Returns every problem found. Call it from a unit test.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !crate::plugin::is_valid_name(self.name) {
            problems.push(format!(
                "detector name `{}` must be lower-case letters, digits, `-` and `_`",
                self.name
            ));
        }
        if self.rules.is_empty() || self.rules.len() > 1024 {
            problems.push(format!(
                "the detector declares {} rules; it needs 1 to 1024",
                self.rules.len()
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.id.is_empty() || r.id.len() > 128 {
                problems.push(format!("rule {i}: the id must be 1 to 128 bytes"));
            }
            if self.rules[..i].iter().any(|o| o.id == r.id) {
                problems.push(format!("rule `{}` is declared twice", r.id));
            }
            if r.tags.len() > 32 || r.tags.iter().any(|t| t.len() > 128) {
                problems.push(format!(
                    "rule `{}`: at most 32 tags of at most 128 bytes",
                    r.id
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
