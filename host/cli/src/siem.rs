//! The SIEM pack in the `qila` binary: its rules (bundled and from directories), the sink that turns new alerts
//! into the engine event `alert.created`, and the detector plugins.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use qila_detect::RuleSet;
use qila_engine::Orchestrator;
use qila_events::Event;
use qila_sandbox::{DetectorPlugin, PluginPolicy};
use qila_siem::{AlertSink, ExternalDetector, PluginFinding};
use qila_store::AlertRow;

use crate::runtime::{BUNDLED_DETECTORS, BUNDLED_RULES, Runtime};

/// The host pack whose actions the `qila` binary runs itself (they read the SIEM's store): `siem.search`.
pub const PACK: &str = "siem";
/// What playbook versions pin for the `siem` pack (it changes with the binary, not by install).
pub const PACK_DIGEST: &str = "host:siem/1";

/// The input schema of a `siem` action.
pub fn input_schema(action: &str) -> Result<serde_json::Value, String> {
    match action {
        "search" => Ok(serde_json::json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "query": { "type": "string", "description": "A query in the language of docs/search.md." },
                "from": { "type": "string", "description": "RFC 3339, a date, `now` or relative (`-1h`)." },
                "to": { "type": "string", "description": "RFC 3339, a date, `now` or relative (`-1h`)." },
                "from_us": { "type": "integer", "description": "Events at or after, unix µs (instead of `from`)." },
                "to_us": { "type": "integer", "description": "Events before, unix µs (instead of `to`)." },
                "limit": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 },
                "cursor": { "type": "string", "description": "`next_cursor` of the previous page." }
            }
        })),
        other => Err(format!(
            "the `siem` pack has no action `{other}` (it has: search)"
        )),
    }
}

/// Runs `siem.<action>`: `search` answers `{events, count, next_cursor}`, newest first.
pub async fn execute(
    store: &qila_store::Store,
    action: &str,
    input: &serde_json::Value,
) -> Result<serde_json::Value, qila_engine::StepError> {
    use qila_engine::StepError;
    if action != "search" {
        return Err(StepError::new(
            "not-found",
            format!("the `siem` pack has no action `{action}`"),
        ));
    }
    let text = |key: &str| input.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let now = qila_store::now_us();
    let time = |key: &'static str| -> Result<Option<i64>, StepError> {
        let us = match input.get(format!("{key}_us")) {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                StepError::new(
                    "invalid-input",
                    format!("`{key}_us` must be an integer (unix microseconds), not {v}"),
                )
            })?),
        };
        qila_store::query::time_bound(key, text(key).as_deref(), us, now)
            .map_err(|e| StepError::new("invalid-input", e.to_string()))
    };
    let query = qila_store::EventQuery {
        query: text("query").filter(|q| !q.trim().is_empty()),
        from_us: time("from")?,
        to_us: time("to")?,
        limit: input
            .get("limit")
            .and_then(|v| v.as_u64())
            .map_or(100, |n| n.clamp(1, 1000) as u32),
        cursor: text("cursor"),
    };
    match store.search_events(&query).await {
        Ok(page) => Ok(serde_json::json!({
            "count": page.events.len(),
            "events": page.events,
            "next_cursor": page.next_cursor,
        })),
        Err(qila_store::StoreError::Query(e)) => {
            Err(StepError::new("invalid-input", format!("query {e}")))
        }
        Err(qila_store::StoreError::BadCursor(m)) => Err(StepError::new("invalid-input", m)),
        // The store cannot read at the moment: the step's retry policy (transient by default) covers it.
        Err(e) if e.is_unavailable() => Err(StepError::new("transient", e.to_string())),
        Err(e) => Err(StepError::new("internal", e.to_string())),
    }
}

/// The engine event a new alert emits; playbooks subscribe with `on: { event: alert.created }`.
pub const ALERT_EVENT: &str = "alert.created";

/// Loads the bundled rules plus those under `dirs`, with `pipelines` for field mapping; rules that cannot be
/// loaded are in the report (and logged).
pub fn rules(dirs: &[PathBuf], pipelines: &[PathBuf]) -> anyhow::Result<RuleSet> {
    let bundled: Vec<(String, String)> = BUNDLED_RULES
        .iter()
        .map(|(name, text)| (format!("(bundled) {name}"), (*text).to_owned()))
        .collect();
    let set = RuleSet::load_with(bundled, dirs, pipelines)?;
    for failure in &set.report().failed {
        tracing::warn!(
            origin = %failure.origin,
            rule = failure.rule.as_deref().unwrap_or("-"),
            "Sigma rule not loaded: {}",
            failure.reason
        );
    }
    Ok(set)
}

/// Emits [`ALERT_EVENT`] with the alert as payload for every new alert.
pub struct EngineSink(pub Orchestrator);

impl AlertSink for EngineSink {
    fn created(&self, alert: AlertRow) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let payload = match serde_json::to_value(&alert) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "an alert could not be serialised for its playbooks");
                    return;
                }
            };
            match self.0.emit(ALERT_EVENT, payload, "siem").await {
                Ok(runs) if !runs.is_empty() => {
                    tracing::info!(alert = %alert.id, rule = %alert.rule_id, runs = runs.len(), "alert started playbooks")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(alert = %alert.id, error = %e, "an alert could not start its playbooks")
                }
            }
        })
    }
}

/// The bundled detector plugins, loaded in the sandbox (only `log` importable, default limits). One that does not
/// load is logged and left out.
pub async fn detector_plugins(runtime: &Runtime) -> Vec<std::sync::Arc<dyn ExternalDetector>> {
    let mut out: Vec<std::sync::Arc<dyn ExternalDetector>> = Vec::new();
    for (name, bytes) in BUNDLED_DETECTORS {
        match runtime
            .registry
            .sandbox()
            .load_detector(bytes, PluginPolicy::default())
            .await
        {
            Ok(plugin) => out.push(std::sync::Arc::new(SandboxDetector(plugin))),
            Err(e) => tracing::warn!(detector = name, error = %e, "detector plugin not loaded"),
        }
    }
    out
}

/// A detector plugin as the SIEM runs it: each batch's detection fields go through the WIT boundary.
pub struct SandboxDetector(pub DetectorPlugin);

impl ExternalDetector for SandboxDetector {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn detect<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<PluginFinding>, String>> + Send + 'a>> {
        Box::pin(async move {
            let batch: Vec<&serde_json::Map<String, serde_json::Value>> =
                events.iter().map(|e| &e.fields).collect();
            let findings = self.0.detect(&batch).await.map_err(|e| e.to_string())?;
            Ok(findings
                .into_iter()
                .map(|f| PluginFinding {
                    rule_id: f.rule_id,
                    title: f.title,
                    level: f.level,
                    tags: f.tags,
                    events: f.events,
                    group_key: f.group_key,
                    details: f.details,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn search_takes_a_time_range_as_times_or_as_unix_microseconds() {
        let dir = tempfile::tempdir().unwrap();
        let store = qila_store::Store::open(dir.path()).await.unwrap();
        let at = |h: i64| 1_714_564_800_000_000 + h * 3_600_000_000; // 2024-05-01T12:00:00Z + h hours
        let events: Vec<qila_store::NewEvent> = (0..3)
            .map(|h| qila_store::NewEvent {
                time_us: at(h),
                received_us: at(h),
                dataset: "syslog".into(),
                host: None,
                source_ip: None,
                source_port: None,
                destination_ip: None,
                destination_port: None,
                user: None,
                process: None,
                action: None,
                outcome: None,
                fields: "{}".into(),
                raw: format!("ticker {h}"),
            })
            .collect();
        store.insert_events(&events).await.unwrap();
        let raws = |out: &serde_json::Value| -> Vec<String> {
            out["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["raw"].as_str().unwrap().to_owned())
                .collect()
        };

        let out = execute(
            &store,
            "search",
            &json!({ "query": "ticker", "from_us": at(1), "to_us": at(2) }),
        )
        .await
        .unwrap();
        assert_eq!(raws(&out), ["ticker 1"]);
        let out = execute(
            &store,
            "search",
            &json!({ "query": "ticker", "from": "2024-05-01T13:00:00Z", "to_us": at(2) }),
        )
        .await
        .unwrap();
        assert_eq!(raws(&out), ["ticker 1"]);

        for (input, says) in [
            (
                json!({ "from": "-1h", "from_us": at(1) }),
                "give `from` or `from_us`, not both",
            ),
            (
                json!({ "to_us": "soon" }),
                "`to_us` must be an integer (unix microseconds)",
            ),
            (json!({ "query": "a\u{0}" }), "at 1: the query holds a NUL"),
        ] {
            let e = execute(&store, "search", &input).await.unwrap_err();
            assert_eq!(e.kind, "invalid-input", "{input}");
            assert!(e.message.contains(says), "{input}: {}", e.message);
        }
    }
}
