//! Detector plugins: components of the `qila:plugin/detector-plugin` world, which look at batches of events and
//! return findings. They run in the same engine, pool, limits and locked-down WASI as action plugins, with one
//! import only: `log`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::detector::qila::plugin::detection;
use crate::bindings::detector::{DetectorPlugin as DetectorWorld, DetectorPluginPre};
use crate::error::{ErrorKind, InvokeError, SandboxError};
use crate::host::{CallScope, HostState};
use crate::plugin::{CallFuture, Instantiate, clamp, from_wit_error, guarded, is_valid_name};
use crate::policy::PluginPolicy;
use crate::runtime::Sandbox;

/// The severities a rule or finding may have, lowest first.
pub const LEVELS: [&str; 5] = ["informational", "low", "medium", "high", "critical"];
/// Most findings one `detect` call may return.
pub const MAX_FINDINGS: usize = 10_000;
/// Longest rule id, in bytes.
pub const MAX_RULE_ID: usize = 128;
/// Longest title (of a rule or a finding), in bytes.
pub const MAX_TITLE: usize = 512;
/// Most tags on one rule or finding.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG: usize = 128;
/// Longest group key, in bytes.
pub const MAX_GROUP_KEY: usize = 1024;
/// Most rules one detector may declare.
pub const MAX_RULES: usize = 1024;

/// Import interfaces (without version) a detector may have besides WASI. `types` and `detection` hold only
/// types; `log` is the one host call.
const DETECTOR_IMPORTS: [&str; 3] = [
    "qila:plugin/log",
    "qila:plugin/types",
    "qila:plugin/detection",
];

/// What a detector says about itself, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetectorInfo {
    /// The detector's name (lower-case letters, digits, `-`, `_`).
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// What it finds.
    pub description: String,
    /// Its rules; ids are unique.
    pub rules: Vec<RuleInfo>,
}

/// One rule of a detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    /// Stable id; findings refer to it.
    pub id: String,
    /// One line on what it finds.
    pub title: String,
    /// Default severity, one of [`LEVELS`].
    pub level: String,
    /// ATT&CK and other tags.
    pub tags: Vec<String>,
}

/// What a detector found in a batch, checked against the contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The id of one of the detector's [`RuleInfo`]s.
    pub rule_id: String,
    /// One line for the alert.
    pub title: String,
    /// One of [`LEVELS`].
    pub level: String,
    /// ATT&CK and other tags (`attack.t1071.004`).
    pub tags: Vec<String>,
    /// Indexes into the batch given to [`DetectorPlugin::detect`]: at least one, each in range, ascending and
    /// without duplicates (the host sorts them).
    pub events: Vec<u32>,
    /// What alerts are deduplicated on (with the rule id): a source address, a parent domain, ...
    pub group_key: String,
    /// Whatever else the detector reports, as JSON.
    pub details: Value,
}

/// A loaded detector plugin, ready to run over batches of events. Cheap to clone and safe to share between tasks.
///
/// Load it with [`Sandbox::load_detector`] (or [`Sandbox::load_detector_file`]), then call
/// [`DetectorPlugin::detect`] once per batch:
///
/// ```no_run
/// # async fn demo() -> Result<(), qila_sandbox::SandboxError> {
/// use qila_sandbox::{PluginPolicy, Sandbox, SandboxConfig};
/// let sandbox = Sandbox::new(SandboxConfig::default())?;
/// let detector = sandbox
///     .load_detector_file("target/wasm-plugins/wasm32-wasip2/release/qila_plugin_detect_dns.wasm", PluginPolicy::default())
///     .await?;
/// let batch = vec![serde_json::json!({"source.ip": "10.0.0.5", "dns.question.name": "www.example.com"})];
/// for finding in detector.detect(&batch).await? {
///     println!("{} {} on events {:?}, group {}", finding.level, finding.rule_id, finding.events, finding.group_key);
/// }
/// # Ok(()) }
/// ```
///
/// Every call runs in a fresh instance under the detector's [`crate::Limits`] (memory, CPU, wall-clock timeout;
/// `max_output_bytes` bounds the findings), so a trap or a limit hit in one batch cannot affect the next. What the
/// detector returns is checked: indexes in range, levels among [`LEVELS`], rule ids among those it declared, sizes
/// bounded ([`MAX_FINDINGS`] and friends). Every failure is a [`SandboxError::Detect`] naming the detector, with a
/// typed [`InvokeError`]: [`ErrorKind::InvalidOutput`] for a broken contract, [`ErrorKind::OutputTooLarge`],
/// [`ErrorKind::Trap`], [`ErrorKind::CpuLimit`], [`ErrorKind::Timeout`], [`ErrorKind::MemoryLimit`], or the kind
/// of the detector's own `error`.
#[derive(Clone)]
pub struct DetectorPlugin {
    inner: Arc<DetectorInner>,
}

struct DetectorInner {
    sandbox: Sandbox,
    name: Arc<str>,
    digest: String,
    size: usize,
    info: DetectorInfo,
    imports: Vec<String>,
    policy: Arc<PluginPolicy>,
    http: crate::address::PolicyClient,
    pre: DetectorPluginPre<HostState>,
}

impl std::fmt::Debug for DetectorPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorPlugin")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .finish()
    }
}

impl Instantiate for DetectorPluginPre<HostState> {
    type World = DetectorWorld;
    fn instantiate<'a>(&'a self, store: &'a mut Store<HostState>) -> CallFuture<'a, Self::World> {
        Box::pin(self.instantiate_async(store))
    }
}

impl DetectorPlugin {
    pub(crate) async fn link(
        sandbox: Sandbox,
        component: Component,
        digest: String,
        size: usize,
        policy: PluginPolicy,
    ) -> Result<Self, SandboxError> {
        let engine = &sandbox.inner.engine;
        let imports: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if let Some(refused) = imports.iter().find(|name| !allowed_import(name)) {
            return Err(SandboxError::Contract(format!(
                "a detector may import only `qila:plugin/log` (and WASI), but this component imports `{refused}`"
            )));
        }
        let instance_pre = sandbox
            .inner
            .detector_linker
            .instantiate_pre(&component)
            .map_err(|e| SandboxError::Contract(format!("{e:#}")))?;
        let pre = DetectorPluginPre::new(instance_pre).map_err(|e| {
            SandboxError::Contract(format!(
                "not a detector (world `qila:plugin/detector-plugin`): {e:#}"
            ))
        })?;
        let policy = Arc::new(clamp(policy, &sandbox));
        let http = crate::address::PolicyClient::new(&policy);
        let scope = CallScope {
            plugin: Arc::from("(loading)"),
            http: http.clone(),
            policy: policy.clone(),
            services: sandbox.inner.services.clone(),
            run_id: String::new(),
            step_id: String::from("describe-detector"),
            deadline: Instant::now() + policy.limits.timeout,
        };
        let raw = guarded(&sandbox, &pre, scope, |plugin, store| {
            Box::pin(plugin.call_describe_detector(store))
        })
        .await
        .map_err(|e| SandboxError::Manifest(format!("describe-detector failed: {e}")))?;
        let info = check_info(raw).map_err(SandboxError::Manifest)?;
        Ok(Self {
            inner: Arc::new(DetectorInner {
                name: Arc::from(info.name.as_str()),
                sandbox,
                digest,
                size,
                info,
                imports,
                policy,
                http,
                pre,
            }),
        })
    }

    /// The detector's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// What the detector says about itself: name, version, description and rules.
    pub fn info(&self) -> &DetectorInfo {
        &self.inner.info
    }

    /// SHA-256 of the component bytes, in hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The interfaces the component imports (`qila:plugin/log@0.1.0` at most, besides WASI).
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// The limits the detector runs under.
    pub fn policy(&self) -> &PluginPolicy {
        &self.inner.policy
    }

    /// Runs the detector over one batch of events, each serialised to a JSON object (`serde_json::Value`s,
    /// `qila_events` views, anything `Serialize` that serialises to an object), in a fresh instance under its
    /// limits, and returns its findings, checked. `Finding::events` index into `batch`. An empty batch returns no
    /// findings without running the detector.
    pub async fn detect<E: Serialize>(&self, batch: &[E]) -> Result<Vec<Finding>, SandboxError> {
        let mut texts = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            let text = serde_json::to_string(event).map_err(|e| {
                self.error(InvokeError::new(
                    ErrorKind::InvalidInput,
                    format!("event {i} cannot be serialised: {e}"),
                ))
            })?;
            texts.push(text);
        }
        self.detect_json(texts).await
    }

    /// [`DetectorPlugin::detect`] on events already serialised as JSON objects.
    pub async fn detect_json(&self, batch: Vec<String>) -> Result<Vec<Finding>, SandboxError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = batch.iter().position(|t| !t.trim_start().starts_with('{')) {
            return Err(self.error(InvokeError::new(
                ErrorKind::InvalidInput,
                format!("event {i} is not a JSON object"),
            )));
        }
        let span = tracing::info_span!(
            "detect",
            plugin = %self.inner.name,
            events = batch.len(),
            findings = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self.run(batch).instrument(span.clone()).await;
        span.record("elapsed_us", started.elapsed().as_micros() as u64);
        match &result {
            Ok(findings) => {
                span.record("findings", findings.len());
            }
            Err(e) => {
                let _enter = span.enter();
                tracing::warn!(target: "qila::plugin", error = %e, "detector failed");
            }
        }
        result
    }

    async fn run(&self, batch: Vec<String>) -> Result<Vec<Finding>, SandboxError> {
        let inner = &self.inner;
        let len = batch.len();
        let scope = CallScope {
            plugin: inner.name.clone(),
            http: inner.http.clone(),
            policy: inner.policy.clone(),
            services: inner.sandbox.inner.services.clone(),
            run_id: String::new(),
            step_id: String::from("detect"),
            deadline: Instant::now() + inner.policy.limits.timeout,
        };
        let returned = guarded(&inner.sandbox, &inner.pre, scope, move |plugin, store| {
            Box::pin(async move { plugin.call_detect(store, &batch).await })
        })
        .await
        .map_err(|e| self.error(e))?;
        let raw = returned.map_err(|e| self.error(from_wit_error(e)))?;
        check_findings(raw, len, &inner.info, inner.policy.limits.max_output_bytes)
            .map_err(|e| self.error(e))
    }

    fn error(&self, error: InvokeError) -> SandboxError {
        SandboxError::Detect {
            plugin: self.inner.name.to_string(),
            error,
        }
    }
}

fn allowed_import(name: &str) -> bool {
    let unversioned = name.split('@').next().unwrap_or(name);
    name.starts_with("wasi:") || DETECTOR_IMPORTS.contains(&unversioned)
}

fn check_level(level: &str) -> Result<(), String> {
    if LEVELS.contains(&level) {
        Ok(())
    } else {
        Err(format!(
            "level {level:?} is not one of {}",
            LEVELS.join(", ")
        ))
    }
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        Err(format!(
            "{what} is {} bytes long, more than {max}",
            value.len()
        ))
    } else {
        Ok(())
    }
}

fn check_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("{} tags, more than {MAX_TAGS}", tags.len()));
    }
    tags.iter().try_for_each(|t| check_len("a tag", t, MAX_TAG))
}

/// Checks what `describe-detector` returned.
fn check_info(raw: detection::DetectorInfo) -> Result<DetectorInfo, String> {
    if !is_valid_name(&raw.name) {
        return Err(format!(
            "detector name {:?} must be 1-64 lower-case letters, digits, `-` or `_`, starting with a letter or digit",
            raw.name
        ));
    }
    if raw.rules.is_empty() || raw.rules.len() > MAX_RULES {
        return Err(format!(
            "detector `{}` declares {} rules; it needs 1 to {MAX_RULES}",
            raw.name,
            raw.rules.len()
        ));
    }
    let mut ids = HashSet::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for r in raw.rules {
        let at = |e: String| format!("detector `{}`, rule {:?}: {e}", raw.name, r.id);
        if r.id.is_empty() {
            return Err(at("the id is empty".into()));
        }
        check_len("the id", &r.id, MAX_RULE_ID).map_err(at)?;
        check_len("the title", &r.title, MAX_TITLE).map_err(at)?;
        check_level(&r.level).map_err(at)?;
        check_tags(&r.tags).map_err(at)?;
        if !ids.insert(r.id.clone()) {
            return Err(at("the id is declared twice".into()));
        }
        rules.push(RuleInfo {
            id: r.id,
            title: r.title,
            level: r.level,
            tags: r.tags,
        });
    }
    Ok(DetectorInfo {
        name: raw.name,
        version: raw.version,
        description: raw.description,
        rules,
    })
}

/// Checks the findings of one `detect` call on a batch of `len` events.
fn check_findings(
    raw: Vec<detection::Finding>,
    len: usize,
    info: &DetectorInfo,
    max_bytes: usize,
) -> Result<Vec<Finding>, InvokeError> {
    let invalid = |i: usize, m: String| {
        InvokeError::new(ErrorKind::InvalidOutput, format!("finding {i}: {m}"))
    };
    if raw.len() > MAX_FINDINGS {
        return Err(InvokeError::new(
            ErrorKind::OutputTooLarge,
            format!(
                "{} findings in one batch, more than the limit of {MAX_FINDINGS}",
                raw.len()
            ),
        ));
    }
    let size: usize = raw
        .iter()
        .map(|f| {
            f.rule_id.len()
                + f.title.len()
                + f.level.len()
                + f.tags.iter().map(String::len).sum::<usize>()
                + f.events.len() * 4
                + f.group_key.len()
                + f.details.len()
        })
        .sum();
    if size > max_bytes {
        return Err(InvokeError::new(
            ErrorKind::OutputTooLarge,
            format!(
                "findings of {size} bytes are larger than the detector's limit of {max_bytes} bytes"
            ),
        ));
    }
    let mut findings = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        if !info.rules.iter().any(|r| r.id == f.rule_id) {
            return Err(invalid(
                i,
                format!("rule id {:?} is not one the detector declared", f.rule_id),
            ));
        }
        check_len("the title", &f.title, MAX_TITLE).map_err(|m| invalid(i, m))?;
        check_level(&f.level).map_err(|m| invalid(i, m))?;
        check_tags(&f.tags).map_err(|m| invalid(i, m))?;
        check_len("the group key", &f.group_key, MAX_GROUP_KEY).map_err(|m| invalid(i, m))?;
        if f.events.is_empty() {
            return Err(invalid(i, "it names no event".into()));
        }
        if let Some(bad) = f.events.iter().find(|&&e| e as usize >= len) {
            return Err(invalid(
                i,
                format!("event index {bad} is out of range for a batch of {len} events"),
            ));
        }
        let mut events = f.events;
        events.sort_unstable();
        events.dedup();
        let details = serde_json::from_str(&f.details)
            .map_err(|e| invalid(i, format!("details are not JSON: {e}")))?;
        findings.push(Finding {
            rule_id: f.rule_id,
            title: f.title,
            level: f.level,
            tags: f.tags,
            events,
            group_key: f.group_key,
            details,
        });
    }
    Ok(findings)
}

impl detection::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DetectorInfo {
        DetectorInfo {
            name: "d".into(),
            version: "1.0.0".into(),
            description: String::new(),
            rules: vec![RuleInfo {
                id: "r1".into(),
                title: "R".into(),
                level: "high".into(),
                tags: vec![],
            }],
        }
    }

    fn finding(events: Vec<u32>) -> detection::Finding {
        detection::Finding {
            rule_id: "r1".into(),
            title: "t".into(),
            level: "high".into(),
            tags: vec!["attack.t1071.004".into()],
            events,
            group_key: "10.0.0.1".into(),
            details: "{}".into(),
        }
    }

    #[test]
    fn imports_allowed_for_detectors() {
        assert!(allowed_import("qila:plugin/log@0.1.0"));
        assert!(allowed_import("qila:plugin/detection@0.1.0"));
        assert!(allowed_import("wasi:io/streams@0.2.6"));
        assert!(!allowed_import("qila:plugin/http@0.1.0"));
        assert!(!allowed_import("qila:plugin/kv@0.1.0"));
        assert!(!allowed_import("other:thing/x"));
    }

    #[test]
    fn findings_are_checked() {
        let ok = check_findings(vec![finding(vec![2, 0, 2])], 3, &info(), 1 << 20).unwrap();
        assert_eq!(ok[0].events, [0, 2]);
        let e = check_findings(vec![finding(vec![3])], 3, &info(), 1 << 20).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidOutput);
        assert!(e.message.contains("index 3 is out of range"), "{e}");
        let mut f = finding(vec![0]);
        f.level = "severe".into();
        let e = check_findings(vec![f], 1, &info(), 1 << 20).unwrap_err();
        assert!(e.message.contains("\"severe\""), "{e}");
        let mut f = finding(vec![0]);
        f.rule_id = "r2".into();
        assert!(check_findings(vec![f], 1, &info(), 1 << 20).is_err());
        let mut f = finding(vec![0]);
        f.details = "not json".into();
        assert!(check_findings(vec![f], 1, &info(), 1 << 20).is_err());
        assert!(check_findings(vec![finding(vec![])], 1, &info(), 1 << 20).is_err());
        let e = check_findings(vec![finding(vec![0])], 1, &info(), 8).unwrap_err();
        assert_eq!(e.kind, ErrorKind::OutputTooLarge);
    }

    #[test]
    fn info_is_checked() {
        let raw = |id: &str, level: &str| detection::DetectorInfo {
            name: "dns".into(),
            version: "1".into(),
            description: String::new(),
            rules: vec![
                detection::RuleInfo {
                    id: "a".into(),
                    title: String::new(),
                    level: "low".into(),
                    tags: vec![],
                },
                detection::RuleInfo {
                    id: id.into(),
                    title: String::new(),
                    level: level.into(),
                    tags: vec![],
                },
            ],
        };
        assert!(check_info(raw("b", "critical")).is_ok());
        assert!(check_info(raw("a", "low")).unwrap_err().contains("twice"));
        assert!(
            check_info(raw("b", "urgent"))
                .unwrap_err()
                .contains("urgent")
        );
    }
}
