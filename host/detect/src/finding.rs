use qila_events::Event;
use rsigma_eval::{EvaluationResult, ResultBody};
use serde::Serialize;
use serde_json::{Value, json};

/// What a rule found: one matching event, or a correlation window whose condition held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's `id` (its title when it has none).
    pub rule_id: String,
    /// The rule's title.
    pub rule_title: String,
    /// `informational`, `low`, `medium`, `high` or `critical` (`medium` when the rule gives none).
    pub level: String,
    /// The rule's tags (ATT&CK techniques and tactics such as `attack.t1110.001`).
    pub tags: Vec<String>,
    /// Detection or correlation, with what matched.
    pub kind: FindingKind,
    /// What alerts from this rule are deduplicated on: a correlation's group-by values, else the event's source
    /// address or host.
    pub group_key: String,
    /// The events it is about, by the references given to [`Detector::detect`](crate::Detector::detect): the
    /// event itself for a detection, the window's events for a correlation.
    pub events: Vec<String>,
    /// When (µs since the epoch) the triggering event happened.
    pub time_us: i64,
}

/// The kind of a [`Finding`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FindingKind {
    /// A detection rule matched one event.
    Detection {
        /// The selections that matched and the field values that made them match.
        matched: Value,
    },
    /// A correlation rule's condition held over a window.
    Correlation {
        /// `event_count`, `value_count`, `temporal`, `temporal_ordered`, …
        correlation: String,
        /// The aggregated value that met the condition (a count, a sum, …).
        value: f64,
        /// The window, in seconds.
        timespan_secs: u64,
    },
}

impl Finding {
    pub(crate) fn from_result(result: EvaluationResult, event: &Event, reference: &str) -> Self {
        let header = result.header;
        let level = header
            .level
            .map(|l| l.as_str().to_owned())
            .unwrap_or_else(|| "medium".to_owned());
        let rule_id = header.rule_id.unwrap_or_else(|| header.rule_title.clone());
        let (kind, group_key, events) = match result.body {
            ResultBody::Detection(body) => {
                let matched = json!({
                    "selections": body.matched_selections,
                    "fields": body.matched_fields.iter().map(|m| json!({"field": m.field, "value": m.value})).collect::<Vec<_>>(),
                });
                (
                    FindingKind::Detection { matched },
                    default_group_key(event),
                    vec![reference.to_owned()],
                )
            }
            ResultBody::Correlation(body) => {
                let key = body
                    .group_key
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut events: Vec<String> = body
                    .event_refs
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.id)
                    .collect();
                if events.is_empty() {
                    events.push(reference.to_owned());
                }
                (
                    FindingKind::Correlation {
                        correlation: body.correlation_type.as_str().to_owned(),
                        value: body.aggregated_value,
                        timespan_secs: body.timespan_secs,
                    },
                    key,
                    events,
                )
            }
        };
        Self {
            rule_id,
            rule_title: header.rule_title,
            level,
            tags: header.tags,
            kind,
            group_key,
            events,
            time_us: event.time_us,
        }
    }
}

fn default_group_key(event: &Event) -> String {
    if let Some(ip) = event.source_ip {
        format!("source.ip={ip}")
    } else if let Some(host) = &event.host {
        format!("host.name={host}")
    } else {
        String::new()
    }
}
