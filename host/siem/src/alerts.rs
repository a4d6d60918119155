//! Findings become alerts: deduplicated per rule and grouping key within a window, and handed to the sink when new.

use std::future::Future;
use std::pin::Pin;

use qila_detect::{Finding, FindingKind};
use qila_events::Event;
use qila_store::{AlertRow, AlertUpsert, NewAlert, Store, StoreError};
use serde_json::{Value, json};

/// Receives every new alert (not findings merged into an open one). The `qila` binary's sink emits the engine
/// event `alert.created` with the alert as payload, which starts the playbooks that subscribe to it.
pub trait AlertSink: Send + Sync {
    /// Called once per new alert, after it is stored.
    fn created(&self, alert: AlertRow) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A finding of a detector plugin, by the index of the event in the batch it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginFinding {
    /// The plugin's rule id.
    pub rule_id: String,
    /// The rule's title.
    pub title: String,
    /// `informational`, `low`, `medium`, `high` or `critical`.
    pub level: String,
    /// ATT&CK tags.
    pub tags: Vec<String>,
    /// Indexes into the batch.
    pub events: Vec<u32>,
    /// What alerts are deduplicated on.
    pub group_key: String,
    /// Anything else the plugin says about it.
    pub details: Value,
}

/// Detection by something other than the Sigma rules: the detector plugins (WASM components of the
/// `detector-plugin` world), run on each stored batch.
pub trait ExternalDetector: Send + Sync {
    /// The plugin's name, for logs and alerts.
    fn name(&self) -> &str;
    /// Checks a batch of events.
    fn detect<'a>(
        &'a self,
        events: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<PluginFinding>, String>> + Send + 'a>>;
}

/// The alert for a Sigma finding whose events are stored with ids given as their references.
pub(crate) fn from_finding(finding: &Finding) -> NewAlert {
    let details = match &finding.kind {
        FindingKind::Detection { matched } => json!({ "source": "sigma", "matched": matched }),
        FindingKind::Correlation {
            correlation,
            value,
            timespan_secs,
        } => json!({
            "source": "sigma",
            "correlation": correlation,
            "value": value,
            "timespan_secs": timespan_secs,
        }),
    };
    NewAlert {
        rule_id: finding.rule_id.clone(),
        rule_title: finding.rule_title.clone(),
        level: finding.level.clone(),
        tags: finding.tags.clone(),
        group_key: finding.group_key.clone(),
        time_us: finding.time_us,
        event_ids: finding
            .events
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect(),
        findings: 1,
        details,
    }
}

/// The alert for a plugin finding over `events` stored as `ids`.
pub(crate) fn from_plugin(
    plugin: &str,
    finding: &PluginFinding,
    events: &[Event],
    ids: &[i64],
) -> NewAlert {
    let mut event_ids = Vec::new();
    let mut time_us = i64::MIN;
    for &index in &finding.events {
        if let (Some(id), Some(event)) = (ids.get(index as usize), events.get(index as usize)) {
            event_ids.push(*id);
            time_us = time_us.max(event.time_us);
        }
    }
    if time_us == i64::MIN {
        time_us = qila_store::now_us();
    }
    NewAlert {
        rule_id: finding.rule_id.clone(),
        rule_title: finding.title.clone(),
        level: finding.level.clone(),
        tags: finding.tags.clone(),
        group_key: finding.group_key.clone(),
        time_us,
        event_ids,
        findings: 1,
        details: json!({ "source": plugin, "details": finding.details }),
    }
}

/// Stores `alert`, merged into an open one within `window_us`; returns the row when it is new.
pub(crate) async fn raise(
    store: &Store,
    alert: &NewAlert,
    window_us: i64,
) -> Result<Option<AlertRow>, StoreError> {
    match store.raise_alert(alert, window_us).await? {
        AlertUpsert::Created(row) => Ok(Some(row)),
        AlertUpsert::Merged(_) => Ok(None),
    }
}

/// Merges the alerts of one batch that share a rule and grouping key (and fall within `window_us` of each other's
/// first one): one store transaction per group instead of one per finding. The merged alert keeps the first
/// finding's details, the latest time, the union of the event ids, and how many findings it stands for.
pub(crate) fn merge(alerts: Vec<NewAlert>, window_us: i64) -> Vec<NewAlert> {
    let mut out: Vec<NewAlert> = Vec::with_capacity(alerts.len());
    let mut open: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    for alert in alerts {
        let key = (alert.rule_id.clone(), alert.group_key.clone());
        if let Some(&i) = open.get(&key) {
            let first = &mut out[i];
            if alert.time_us.saturating_sub(first.time_us) <= window_us {
                first.findings += alert.findings;
                first.time_us = first.time_us.max(alert.time_us);
                for id in alert.event_ids {
                    if first.event_ids.len() >= qila_store::ALERT_EVENT_IDS_CAP {
                        break;
                    }
                    if !first.event_ids.contains(&id) {
                        first.event_ids.push(id);
                    }
                }
                continue;
            }
        }
        open.insert(key, out.len());
        out.push(alert);
    }
    out
}
