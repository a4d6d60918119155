//! The keys for durable orchestration: step `retry`, `timeout`, `on_error`, `for_each`,
//! `concurrency`, and the playbook's triggers (`on:`). Types and their parsing from YAML; the
//! cross-step checks (handler names, expression roots) are in `playbook.rs`.

use std::str::FromStr;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::{Map, Value};

use crate::catalog::did_you_mean;
use crate::diag::{Pos, Sink};
use crate::expr::{Expression, TKind, Template};
use crate::inputs::{InputSpec, InputType};
use crate::playbook::{Fields, as_str, parse_condition, template, type_error};
use crate::yaml::{Kind, Node};

const RETRY_KEYS: &[&str] = &["attempts", "backoff", "initial", "max", "jitter", "on"];
const FOR_EACH_KEYS: &[&str] = &["items", "concurrency"];
const CONCURRENCY_KEYS: &[&str] = &["key", "limit", "rate"];
const ON_KEYS: &[&str] = &["manual", "webhook", "schedule", "event"];
const WEBHOOK_KEYS: &[&str] = &["input", "signature"];
const SCHEDULE_KEYS: &[&str] = &["cron", "inputs"];
const EVENT_KEYS: &[&str] = &["event", "if", "input"];

/// The error kinds a `retry.on` list may name: the executor's kinds (see the plugin contract)
/// plus `any`, which matches every kind.
pub const ERROR_KINDS: &[&str] = &[
    "any",
    "transient",
    "timeout",
    "invalid-input",
    "not-found",
    "denied",
    "failed",
    "cpu-limit",
    "memory-limit",
    "stack-overflow",
    "output-too-large",
    "invalid-output",
    "trap",
];

const DURATION_HINT: &str =
    "write a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h`, `1d` or `1h30m`";
const RATE_HINT: &str = "write `<count>/<period>`, e.g. `10/min`, `5/s`, `100/h` or `3/10s`";

/// Parses a duration: one or more `<integer><unit>` groups (`500ms`, `30s`, `5m`, `1h`, `2d`,
/// `1h30m`; spaces between groups allowed). Units: `ms`, `s`, `m`, `h`, `d`. `Err` is a message.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || format!("`{text}` is not a duration; {DURATION_HINT}");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = rest[unit_len..].trim_start();
        total = total.saturating_add(n.saturating_mul(unit_ms));
        if total > u128::from(u64::MAX) {
            return Err(format!("`{text}` is too long a duration"));
        }
    }
    u64::try_from(total)
        .map(Duration::from_millis)
        .map_err(|_| bad())
}

/// A duration in the shortest form [`parse_duration`] reads back (`5m`, `1h30m`, `1500ms`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backoff {
    /// Always `initial`.
    Fixed,
    /// `initial`, then doubling each retry, capped at `max`.
    #[default]
    Exponential,
}

/// A step's `retry:` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first, 1..=100 (default 3).
    pub attempts: u32,
    /// Default [`Backoff::Exponential`].
    pub backoff: Backoff,
    /// The delay before the first retry (default 1s).
    pub initial: Duration,
    /// The longest delay (default 5m); never shorter than `initial`.
    pub max: Duration,
    /// Random spread of each delay as a fraction, 0.0..=1.0 (default 0.1): the delay is
    /// multiplied by a factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// The error kinds retried (default `["transient", "timeout"]`); `any` retries every kind.
    pub on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.1,
            on: vec!["transient".to_owned(), "timeout".to_owned()],
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `next_attempt` (2 for the first retry), without jitter: fixed →
    /// `initial`; exponential → `initial * 2^(next_attempt-2)`, capped at `max`. An attempt
    /// below 2 gives `initial`.
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let d = match self.backoff {
            Backoff::Fixed => self.initial,
            Backoff::Exponential => {
                let exp = next_attempt.saturating_sub(2);
                match 2u32.checked_pow(exp) {
                    Some(factor) => self.initial.checked_mul(factor).unwrap_or(self.max),
                    None => self.max,
                }
            }
        };
        d.min(self.max)
    }

    /// [`RetryPolicy::delay`] with jitter applied: `unit` is a random number in `0.0..=1.0`
    /// (0.5 gives the plain delay; 0 the shortest, 1 the longest).
    pub fn jittered_delay(&self, next_attempt: u32, unit: f64) -> Duration {
        let base = self.delay(next_attempt).as_secs_f64();
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }

    /// Whether an error of `kind` is retried by this policy.
    pub fn retries(&self, kind: &str) -> bool {
        self.on.iter().any(|k| k == "any" || k == kind)
    }
}

/// What happens when a step fails (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The step's dependents are skipped and the run fails (the default).
    #[default]
    Fail,
    /// The step is recorded failed, its dependents still run, and the run does not fail
    /// because of it.
    Continue,
    /// The handler step at this index (into [`crate::Playbook::steps`]) runs with `error`.
    Handler(usize),
}

/// A step's `for_each:`: the step runs once per item.
#[derive(Debug)]
pub struct ForEach {
    /// The list of items (a template that must render to a JSON array).
    pub items: Template,
    /// How many items run at once, 1..=1000 (default 4).
    pub concurrency: u32,
}

/// A step's `concurrency:`: limits shared by all work with the same key.
#[derive(Debug)]
pub struct StepConcurrency {
    /// The key (rendered per step, or per item in a `for_each` step); `None`: the step itself
    /// (`<playbook>/<step id>`) is the key.
    pub key: Option<Template>,
    /// At most this many at once.
    pub limit: Option<u32>,
    /// At most this many starts per period.
    pub rate: Option<Rate>,
}

/// `count` per `per` (`10/min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// At least 1.
    pub count: u32,
    /// The period, longer than zero.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    /// `10/min`, `5/s`, `100/h`, `3/10s` (periods: `s`, `sec`, `second`, `m`, `min`, `minute`,
    /// `h`, `hour`, `d`, `day`, or a duration).
    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("`{text}` is not a rate; {RATE_HINT}");
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("`{text}`: the count must be at least 1"));
        }
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3_600),
            "d" | "day" => Duration::from_secs(86_400),
            other => parse_duration(other).map_err(|_| bad())?,
        };
        if per.is_zero() {
            return Err(format!("`{text}`: the period must be longer than zero"));
        }
        Ok(Rate { count, per })
    }
}

/// How runs of a playbook may start (`on:`).
#[derive(Debug)]
pub struct Triggers {
    /// Whether runs may be started by hand (API, CLI); default true.
    pub manual: bool,
    /// Runs start from `POST`s to the playbook's webhook.
    pub webhook: Option<WebhookTrigger>,
    /// Runs start on these schedules.
    pub schedules: Vec<Schedule>,
    /// Runs start on these events.
    pub events: Vec<EventTrigger>,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            manual: true,
            webhook: None,
            schedules: Vec::new(),
            events: Vec::new(),
        }
    }
}

/// `on.webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookTrigger {
    /// The declared input that receives the whole payload; `None`: the JSON object body is the
    /// inputs map.
    pub input: Option<String>,
    /// The signature scheme the webhook requires (`signature:`).
    pub signature: WebhookSignature,
}

/// `on.webhook.signature`: how a webhook's sender proves it holds the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookSignature {
    /// Not set: the secret token itself is accepted (and so is either signature).
    #[default]
    None,
    /// `hmac-sha256`: an HMAC-SHA256 of the body (`X-Hub-Signature-256`, as GitHub sends it).
    HmacSha256,
    /// `standard-webhooks`: the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    StandardWebhooks,
}

impl WebhookSignature {
    /// The scheme of a playbook's `signature:` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hmac-sha256" => Some(Self::HmacSha256),
            "standard-webhooks" => Some(Self::StandardWebhooks),
            _ => None,
        }
    }
}

/// One `on.schedule` entry.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The cron expression as written (5 fields, or 6 with seconds first, or `@daily`...), UTC.
    pub cron: String,
    /// The inputs of the runs it starts.
    pub inputs: Map<String, Value>,
    parsed: croner::Cron,
}

impl Schedule {
    /// A schedule from a cron expression; `Err` is croner's reason.
    pub fn new(cron: &str, inputs: Map<String, Value>) -> Result<Schedule, String> {
        let parsed = croner::Cron::from_str(cron).map_err(|e| e.to_string())?;
        Ok(Schedule {
            cron: cron.to_owned(),
            inputs,
            parsed,
        })
    }

    /// Next firing strictly after `after_ms` (unix ms, UTC), or None.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Firings fall on whole seconds: strictly after the whole second containing `after_ms`
        // is strictly after `after_ms`.
        let start = chrono::DateTime::<chrono::Utc>::from_timestamp(after_ms.div_euclid(1000), 0)?;
        let next = self.parsed.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }
}

/// One `on.event` entry.
#[derive(Debug)]
pub struct EventTrigger {
    /// The event name (`alert.created`).
    pub event: String,
    /// `if:`, evaluated with the root `event` (the payload); the run starts only when true.
    pub condition: Option<Expression>,
    /// The declared input that receives the payload; `None`: the payload object is the inputs
    /// map.
    pub input: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// `on_error` as written: the step name is resolved once all steps are known.
pub(crate) enum RawOnError {
    Fail,
    Continue,
    Step(String, Pos),
}

fn positive(node: &Node, path: &str, max: u32, what: &str, sink: &mut Sink<'_>) -> Option<u32> {
    match node.kind {
        Kind::Int(i) if i >= 1 && i <= i64::from(max) => u32::try_from(i).ok(),
        Kind::Int(i) => {
            let range = if max == u32::MAX {
                "at least 1".to_owned()
            } else {
                format!("between 1 and {max}")
            };
            sink.err(
                node.pos,
                format!("{path}: {i} is out of range; {what} must be {range}"),
            );
            None
        }
        _ => {
            let range = if max == u32::MAX {
                "at least 1".to_owned()
            } else {
                format!("1 to {max}")
            };
            type_error(sink, node, path, &format!("an integer ({what}, {range})"));
            None
        }
    }
}

pub(crate) fn duration(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<Duration> {
    match &node.kind {
        Kind::Str(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(m) => {
                sink.err(node.pos, format!("{path}: {m}"));
                None
            }
        },
        Kind::Int(i) => {
            sink.err(
                node.pos,
                format!("{path}: a duration needs a unit: write `{i}s`, `{i}m` or `{i}ms`"),
            );
            None
        }
        _ => {
            type_error(sink, node, path, "a duration such as `30s`");
            None
        }
    }
}

pub(crate) fn parse_timeout(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<Duration> {
    let d = duration(node, path, sink)?;
    if d.is_zero() {
        sink.err(
            node.pos,
            format!("{path}: a timeout must be longer than zero"),
        );
        return None;
    }
    Some(d)
}

pub(crate) fn parse_retry(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<RetryPolicy> {
    let mut p = RetryPolicy::default();
    let entries = match &node.kind {
        Kind::Int(_) => {
            p.attempts = positive(node, path, 100, "attempts", sink)?;
            return Some(p);
        }
        Kind::Map(entries) => entries,
        _ => {
            type_error(
                sink,
                node,
                path,
                "a number of attempts or a mapping (`{ attempts: 5, backoff: exponential }`)",
            );
            return None;
        }
    };
    let fields = Fields::new(entries, RETRY_KEYS, path, sink);
    let mut ok = true;
    if let Some(e) = fields.get("attempts") {
        match positive(&e.value, &format!("{path}.attempts"), 100, "attempts", sink) {
            Some(n) => p.attempts = n,
            None => ok = false,
        }
    }
    if let Some(e) = fields.get("backoff") {
        let bpath = format!("{path}.backoff");
        match as_str(&e.value, &bpath, sink) {
            Some("fixed") => p.backoff = Backoff::Fixed,
            Some("exponential") => p.backoff = Backoff::Exponential,
            Some(other) => {
                sink.err(
                    e.value.pos,
                    format!("{bpath}: `{other}` is not a backoff; use `fixed` or `exponential`"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut durations_ok = true;
    for key in ["initial", "max"] {
        if let Some(e) = fields.get(key) {
            match duration(&e.value, &format!("{path}.{key}"), sink) {
                Some(d) if key == "initial" => p.initial = d,
                Some(d) => p.max = d,
                None => durations_ok = false,
            }
        }
    }
    ok &= durations_ok;
    if durations_ok && p.max < p.initial {
        let (pos, msg) = match fields.get("max") {
            Some(e) => (
                e.value.pos,
                format!(
                    "{path}.max: `{}` is shorter than `initial` ({}); make `max` at least `initial`",
                    fmt_duration(p.max),
                    fmt_duration(p.initial)
                ),
            ),
            None => (
                fields.get("initial").map_or(node.pos, |e| e.value.pos),
                format!(
                    "{path}.initial: `{}` is longer than the default `max` ({}); set `max` too",
                    fmt_duration(p.initial),
                    fmt_duration(p.max)
                ),
            ),
        };
        sink.err(pos, msg);
        ok = false;
    }
    if let Some(e) = fields.get("jitter") {
        let jpath = format!("{path}.jitter");
        let v = match e.value.kind {
            Kind::Int(i) => Some(i as f64),
            Kind::Float(f) => Some(f),
            _ => None,
        };
        match v {
            Some(j) if (0.0..=1.0).contains(&j) => p.jitter = j,
            Some(j) => {
                sink.err(
                    e.value.pos,
                    format!("{jpath}: {j} is out of range; jitter is a fraction from 0 to 1 (0.1 = ±10%)"),
                );
                ok = false;
            }
            None => {
                type_error(sink, &e.value, &jpath, "a number from 0 to 1");
                ok = false;
            }
        }
    }
    if let Some(e) = fields.get("on") {
        let opath = format!("{path}.on");
        let items: Vec<&Node> = match &e.value.kind {
            Kind::Str(_) => vec![&e.value],
            Kind::Seq(items) if !items.is_empty() => items.iter().collect(),
            Kind::Seq(_) => {
                sink.err(
                    e.value.pos,
                    format!("{opath}: list at least one error kind (or remove `retry`)"),
                );
                ok = false;
                Vec::new()
            }
            _ => {
                type_error(
                    sink,
                    &e.value,
                    &opath,
                    "an error kind or a list of error kinds",
                );
                ok = false;
                Vec::new()
            }
        };
        let mut kinds = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{opath}[{i}]");
            let Some(k) = as_str(item, &ipath, sink) else {
                ok = false;
                continue;
            };
            if ERROR_KINDS.contains(&k) {
                kinds.push(k.to_owned());
            } else {
                sink.err(
                    item.pos,
                    format!(
                        "{ipath}: unknown error kind `{k}`{}; use one of: {}",
                        did_you_mean(k, ERROR_KINDS.iter().copied()),
                        ERROR_KINDS.join(", ")
                    ),
                );
                ok = false;
            }
        }
        p.on = kinds;
    }
    ok.then_some(p)
}

pub(crate) fn parse_on_error(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<RawOnError> {
    match &node.kind {
        Kind::Str(s) if &**s == "fail" => Some(RawOnError::Fail),
        Kind::Str(s) if &**s == "continue" => Some(RawOnError::Continue),
        Kind::Str(s) => Some(RawOnError::Step(s.to_string(), node.pos)),
        _ => {
            type_error(
                sink,
                node,
                path,
                "`fail`, `continue` or the id of a handler step",
            );
            None
        }
    }
}

pub(crate) fn parse_for_each(node: &Node, path: &str, sink: &mut Sink<'_>) -> Option<ForEach> {
    let (items_node, items_path, concurrency) = match &node.kind {
        Kind::Str(_) | Kind::Seq(_) => (node, path.to_owned(), Some(4)),
        Kind::Map(entries) => {
            let fields = Fields::new(entries, FOR_EACH_KEYS, path, sink);
            let concurrency = match fields.get("concurrency") {
                Some(c) => positive(
                    &c.value,
                    &format!("{path}.concurrency"),
                    1000,
                    "the number of items run at once",
                    sink,
                ),
                None => Some(4),
            };
            let items = fields.required("items", path, node.pos, sink)?;
            (&items.value, format!("{path}.items"), concurrency)
        }
        _ => {
            type_error(
                sink,
                node,
                path,
                "a list, an expression giving a list (`\"${{ inputs.ips }}\"`) or a mapping with `items`",
            );
            return None;
        }
    };
    let items = template(items_node, &items_path, sink);
    if let TKind::Const(v) = &items.root.kind
        && !v.is_array()
    {
        sink.err(
            items_node.pos,
            format!(
                "{items_path}: expected a list or an expression giving a list (`\"${{{{ inputs.ips }}}}\"`), found {}",
                items_node.type_name()
            ),
        );
        return None;
    }
    Some(ForEach {
        items,
        concurrency: concurrency?,
    })
}

pub(crate) fn parse_concurrency(
    node: &Node,
    path: &str,
    sink: &mut Sink<'_>,
) -> Option<StepConcurrency> {
    let Kind::Map(entries) = &node.kind else {
        type_error(
            sink,
            node,
            path,
            "a mapping such as `{ limit: 1 }`, `{ rate: 10/min }` or `{ key: \"${{ inputs.ip }}\", limit: 1 }`",
        );
        return None;
    };
    let fields = Fields::new(entries, CONCURRENCY_KEYS, path, sink);
    let mut ok = true;
    let key = fields.get("key").and_then(|k| {
        let kpath = format!("{path}.key");
        if matches!(k.value.kind, Kind::Str(_)) {
            Some(template(&k.value, &kpath, sink))
        } else {
            type_error(sink, &k.value, &kpath, "a string (usually an expression)");
            ok = false;
            None
        }
    });
    let limit = match fields.get("limit") {
        Some(l) => {
            let v = positive(
                &l.value,
                &format!("{path}.limit"),
                u32::MAX,
                "the limit",
                sink,
            );
            ok &= v.is_some();
            v
        }
        None => None,
    };
    let rate = match fields.get("rate") {
        Some(r) => {
            let rpath = format!("{path}.rate");
            let v = match &r.value.kind {
                Kind::Str(s) => match s.parse::<Rate>() {
                    Ok(rate) => Some(rate),
                    Err(m) => {
                        sink.err(r.value.pos, format!("{rpath}: {m}"));
                        None
                    }
                },
                _ => {
                    type_error(sink, &r.value, &rpath, "a rate such as `10/min`");
                    None
                }
            };
            ok &= v.is_some();
            v
        }
        None => None,
    };
    if fields.get("limit").is_none() && fields.get("rate").is_none() {
        sink.err(
            node.pos,
            format!("{path}: give `limit` (at most N at once), `rate` (e.g. `10/min`) or both"),
        );
        return None;
    }
    ok.then_some(StepConcurrency { key, limit, rate })
}

pub(crate) fn parse_playbook_concurrency(node: &Node, sink: &mut Sink<'_>) -> Option<u32> {
    positive(
        node,
        "concurrency",
        u32::MAX,
        "the number of runs at once",
        sink,
    )
}

/// `[a-z0-9_.-]+` with at least one dot, not at either end.
fn is_event_name(s: &str) -> bool {
    s.contains('.')
        && !s.starts_with('.')
        && !s.ends_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Parses `on:`. `inputs` are the declared inputs (for `input:` names and schedule inputs).
pub(crate) fn parse_triggers(
    node: &Node,
    inputs: &IndexMap<String, InputSpec>,
    sink: &mut Sink<'_>,
) -> Triggers {
    let mut t = Triggers::default();
    let Kind::Map(entries) = &node.kind else {
        type_error(
            sink,
            node,
            "on",
            "a mapping of triggers (`manual`, `webhook`, `schedule`, `event`)",
        );
        return t;
    };
    let fields = Fields::new(entries, ON_KEYS, "on", sink);
    // Found once: every trigger checks that the inputs it does not fill are optional.
    let required: Vec<&str> = inputs
        .iter()
        .filter(|(_, spec)| spec.required)
        .map(|(name, _)| name.as_str())
        .collect();
    if let Some(e) = fields.get("manual") {
        match e.value.kind {
            Kind::Bool(b) => t.manual = b,
            _ => type_error(sink, &e.value, "on.manual", "a boolean"),
        }
    }
    if let Some(e) = fields.get("webhook") {
        t.webhook = parse_webhook(&e.value, inputs, &required, sink);
    }
    if let Some(e) = fields.get("schedule") {
        let items: Vec<(&Node, String)> = match &e.value.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("on.schedule[{i}]")))
                .collect(),
            _ => vec![(&e.value, "on.schedule".to_owned())],
        };
        for (n, path) in items {
            if let Some(s) = parse_schedule(n, &path, inputs, &required, sink) {
                t.schedules.push(s);
            }
        }
    }
    if let Some(e) = fields.get("event") {
        let items: Vec<(&Node, String)> = match &e.value.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (n, format!("on.event[{i}]")))
                .collect(),
            _ => vec![(&e.value, "on.event".to_owned())],
        };
        for (n, path) in items {
            if let Some(ev) = parse_event(n, &path, inputs, &required, sink) {
                t.events.push(ev);
            }
        }
    }
    t
}

/// Checks that `name` is a declared input (of type `ty` when given) and that every other required
/// input has a value, since the trigger fills only `name`.
fn check_target_input(
    node: &Node,
    path: &str,
    name: &str,
    ty: Option<InputType>,
    inputs: &IndexMap<String, InputSpec>,
    required: &[&str],
    sink: &mut Sink<'_>,
) -> bool {
    let Some(spec) = inputs.get(name) else {
        undeclared(node.pos, path, name, inputs, sink);
        return false;
    };
    if let Some(ty) = ty
        && spec.ty != ty
    {
        sink.err(
            node.pos,
            format!(
                "{path}: input `{name}` is declared `{}` but receives the payload object; declare it `type: {}`",
                spec.ty.name(),
                ty.name()
            ),
        );
        return false;
    }
    let mut ok = true;
    for &other in required.iter().filter(|&&other| other != name) {
        ok = false;
        sink.err_with(node.pos, || {
            format!(
                "{path}: only `{name}` is filled, but input `{other}` is required; give `{other}` a `default` or `required: false`"
            )
        });
        if sink.full() {
            break;
        }
    }
    ok
}

/// Reports `name` as not a declared input at `pos`.
fn undeclared(
    pos: Pos,
    path: &str,
    name: &str,
    inputs: &IndexMap<String, InputSpec>,
    sink: &mut Sink<'_>,
) {
    let hint = sink.did_you_mean(name, inputs.keys().map(String::as_str));
    sink.err_with(pos, || {
        if inputs.is_empty() {
            format!("{path}: `{name}` is not a declared input (no inputs are declared)")
        } else {
            let names: Vec<&str> = inputs.keys().map(String::as_str).collect();
            format!(
                "{path}: `{name}` is not a declared input{hint}; declared: {}",
                names.join(", ")
            )
        }
    });
}

fn parse_input_name(
    fields: &Fields<'_>,
    path: &str,
    ty: Option<InputType>,
    inputs: &IndexMap<String, InputSpec>,
    required: &[&str],
    sink: &mut Sink<'_>,
) -> (Option<String>, bool) {
    let Some(e) = fields.get("input") else {
        return (None, true);
    };
    let ipath = format!("{path}.input");
    let Some(name) = as_str(&e.value, &ipath, sink) else {
        return (None, false);
    };
    let ok = check_target_input(&e.value, &ipath, name, ty, inputs, required, sink);
    (Some(name.to_owned()), ok)
}

fn parse_webhook(
    node: &Node,
    inputs: &IndexMap<String, InputSpec>,
    required: &[&str],
    sink: &mut Sink<'_>,
) -> Option<WebhookTrigger> {
    let path = "on.webhook";
    match &node.kind {
        Kind::Bool(true) | Kind::Null => Some(WebhookTrigger::default()),
        Kind::Bool(false) => None,
        Kind::Map(entries) => {
            let fields = Fields::new(entries, WEBHOOK_KEYS, path, sink);
            let (input, _) = parse_input_name(&fields, path, None, inputs, required, sink);
            let signature = match fields.get("signature") {
                Some(e) => {
                    let scheme = match &e.value.kind {
                        Kind::Str(s) => WebhookSignature::parse(s),
                        _ => None,
                    };
                    scheme.unwrap_or_else(|| {
                        sink.err(
                            e.value.pos,
                            format!(
                                "{path}.signature: expected `standard-webhooks` or `hmac-sha256` (or leave `signature` out to accept the secret token), found {}",
                                match &e.value.kind {
                                    Kind::Str(s) => format!("`{s}`"),
                                    _ => e.value.type_name().to_owned(),
                                }
                            ),
                        );
                        WebhookSignature::None
                    })
                }
                None => WebhookSignature::None,
            };
            Some(WebhookTrigger { input, signature })
        }
        _ => {
            type_error(
                sink,
                node,
                path,
                "`true`, `{}` or a mapping (`{ input: payload, signature: standard-webhooks }`)",
            );
            None
        }
    }
}

fn parse_schedule(
    node: &Node,
    path: &str,
    inputs: &IndexMap<String, InputSpec>,
    required: &[&str],
    sink: &mut Sink<'_>,
) -> Option<Schedule> {
    let (cron_node, cron_path, inputs_node) = match &node.kind {
        Kind::Str(_) => (node, path.to_owned(), None),
        Kind::Map(entries) => {
            let fields = Fields::new(entries, SCHEDULE_KEYS, path, sink);
            let cron = fields.required("cron", path, node.pos, sink)?;
            (
                &cron.value,
                format!("{path}.cron"),
                fields.get("inputs").map(|e| &e.value),
            )
        }
        _ => {
            type_error(
                sink,
                node,
                path,
                "a cron expression (`\"*/5 * * * *\"`), a list of them, or a mapping with `cron` and `inputs`",
            );
            return None;
        }
    };
    let cron = as_str(cron_node, &cron_path, sink)?;
    let mut ok = true;
    let mut values = Map::new();
    let mut given = std::collections::HashSet::new();
    if let Some(n) = inputs_node {
        let ipath = format!("{path}.inputs");
        match &n.kind {
            Kind::Map(entries) => {
                for e in entries.iter() {
                    given.insert(e.key.as_str());
                    let v = e.value.to_json();
                    match inputs.get(&e.key) {
                        None => {
                            undeclared(e.key_pos, &ipath, &e.key, inputs, sink);
                            ok = false;
                        }
                        Some(spec) => {
                            if let Err(m) = spec.check(&v) {
                                sink.err(e.value.pos, format!("{ipath}.{}: {m}", e.key));
                                ok = false;
                            }
                        }
                    }
                    values.insert(e.key.clone(), v);
                }
            }
            _ => {
                type_error(sink, n, &ipath, "a mapping of input values");
                ok = false;
            }
        }
    }
    for &name in required.iter().filter(|&&name| !given.contains(name)) {
        ok = false;
        sink.err_with(node.pos, || {
            format!(
                "{path}: input `{name}` is required; give it under `inputs` (`{{ cron: \"...\", inputs: {{ {name}: ... }} }}`)"
            )
        });
        if sink.full() {
            break;
        }
    }
    let schedule = match Schedule::new(cron, values) {
        Ok(s) => s,
        Err(m) => {
            sink.err(
                cron_node.pos,
                format!(
                    "{cron_path}: invalid cron expression `{cron}`: {m} (write 5 fields `minute hour day-of-month month day-of-week`, e.g. `*/5 * * * *`)"
                ),
            );
            return None;
        }
    };
    ok.then_some(schedule)
}

fn parse_event(
    node: &Node,
    path: &str,
    inputs: &IndexMap<String, InputSpec>,
    required: &[&str],
    sink: &mut Sink<'_>,
) -> Option<EventTrigger> {
    let (name_node, name_path, fields) = match &node.kind {
        Kind::Str(_) => (node, path.to_owned(), None),
        Kind::Map(entries) => {
            let fields = Fields::new(entries, EVENT_KEYS, path, sink);
            let e = fields.required("event", path, node.pos, sink)?;
            (&e.value, format!("{path}.event"), Some(fields))
        }
        _ => {
            type_error(
                sink,
                node,
                path,
                "an event name (`alert.created`), a list of them, or a mapping with `event`, `if` and `input`",
            );
            return None;
        }
    };
    let name = as_str(name_node, &name_path, sink)?;
    let mut ok = true;
    if !is_event_name(name) {
        sink.err(
            name_node.pos,
            format!(
                "{name_path}: invalid event name `{name}`: use lowercase letters, digits, `_`, `-` and dots, with a dot (`alert.created`)"
            ),
        );
        ok = false;
    }
    let mut condition = None;
    let mut input = None;
    if let Some(fields) = fields {
        if let Some(c) = fields.get("if") {
            let cpath = format!("{path}.if");
            match parse_condition(&c.value, &cpath, sink) {
                Some(expr) => {
                    ok &= check_event_refs(&expr, c.value.pos, &cpath, sink);
                    condition = Some(expr);
                }
                None => ok = false,
            }
        }
        let (name, input_ok) = parse_input_name(
            &fields,
            path,
            Some(InputType::Object),
            inputs,
            required,
            sink,
        );
        input = name;
        ok &= input_ok;
    }
    ok.then(|| EventTrigger {
        event: name.to_owned(),
        condition,
        input,
    })
}

/// A trigger condition sees only `event`.
fn check_event_refs(e: &Expression, pos: Pos, path: &str, sink: &mut Sink<'_>) -> bool {
    use crate::expr::Ref;
    let mut ok = true;
    let mut seen = Vec::new();
    for r in e.references() {
        let root = match &r {
            Ref::Step { .. } => "steps".to_owned(),
            Ref::Input(_) => "inputs".to_owned(),
            Ref::Unknown(v) if v == "event" => continue,
            Ref::Unknown(v) => v.clone(),
        };
        if seen.contains(&root) {
            continue;
        }
        sink.err(
            pos,
            format!(
                "{path}: `{root}` is not available in a trigger condition, which sees only `event` (the event's payload)"
            ),
        );
        seen.push(root);
        ok = false;
    }
    ok
}
