//! Tests for the durable-orchestration keys: step `retry`, `timeout`, `on_error`, `for_each`,
//! `concurrency`, the playbook's `on_failure`, `concurrency` and `on:` triggers.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::{
    Backoff, EvalContext, OnError, Playbook, Rate, RetryPolicy, Schedule, SharedValue,
    WebhookSignature, parse_duration,
};

fn parse(src: &str) -> Playbook {
    match Playbook::parse(src, "pb.yaml") {
        Ok(p) => p,
        Err(d) => panic!("unexpected diagnostics:\n{d}"),
    }
}

fn errors(src: &str) -> Vec<String> {
    match Playbook::parse(src, "pb.yaml") {
        Ok(_) => panic!("expected diagnostics"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

const GOOD: &str = r#"name: durable
version: 1
on:
  manual: false
  webhook: { input: payload, signature: hmac-sha256 }
  schedule: ["0 * * * *", { cron: "0 6 * * 1-5", inputs: { ips: ["10.0.0.1"], payload: { a: 1 } } }]
  event:
    - alert.created
    - { event: case.changed, if: "${{ event.severity == 'high' }}", input: payload }
concurrency: 5
inputs:
  ips: { type: array, default: [] }
  payload: { type: object, required: false }
steps:
  lookup:
    uses: enrich.classify-ip
    with: { ip: "${{ item }}", n: "${{ index }}" }
    for_each: "${{ inputs.ips }}"
    retry: { attempts: 5, backoff: fixed, initial: 2s, max: 1m, jitter: 0.2, on: [transient] }
    timeout: 30s
    on_error: notify
    concurrency: { key: "${{ item }}", limit: 1, rate: 10/min }
  each:
    uses: p.a
    needs: lookup
    for_each: { items: [1, 2, 3], concurrency: 8 }
    retry: 3
    on_error: continue
    concurrency: { rate: 3/10s }
  notify:
    uses: notify.send
    needs: each
    if: "${{ error.kind != 'timeout' }}"
    with: { text: "${{ error.step }} failed: ${{ error.message }} after ${{ steps.each.status }}" }
  cleanup:
    uses: p.a
    with: { why: "${{ error.message }}" }
on_failure: cleanup
"#;

#[test]
fn good_durable_playbook() {
    let pb = parse(GOOD);
    let lookup = &pb.steps[0];
    let fe = lookup.for_each.as_ref().unwrap();
    assert_eq!(fe.concurrency, 4);
    assert!(!fe.items.is_static());
    assert_eq!(
        lookup.retry,
        Some(RetryPolicy {
            attempts: 5,
            backoff: Backoff::Fixed,
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
            jitter: 0.2,
            on: vec!["transient".into()],
        })
    );
    assert_eq!(lookup.timeout, Some(Duration::from_secs(30)));
    assert_eq!(lookup.on_error, OnError::Handler(2));
    let c = lookup.concurrency.as_ref().unwrap();
    assert!(c.key.is_some());
    assert_eq!(c.limit, Some(1));
    assert_eq!(
        c.rate,
        Some(Rate {
            count: 10,
            per: Duration::from_secs(60)
        })
    );

    let each = &pb.steps[1];
    let fe = each.for_each.as_ref().unwrap();
    assert_eq!(fe.concurrency, 8);
    assert!(fe.items.is_static());
    let ctx = EvalContext::new(&Map::new());
    assert_eq!(fe.items.render_now(&ctx).unwrap(), json!([1, 2, 3]));
    assert_eq!(
        each.retry,
        Some(RetryPolicy {
            attempts: 3,
            ..RetryPolicy::default()
        })
    );
    assert_eq!(each.timeout, None);
    assert_eq!(each.on_error, OnError::Continue);
    let c = each.concurrency.as_ref().unwrap();
    assert!(c.key.is_none() && c.limit.is_none());
    assert_eq!(
        c.rate,
        Some(Rate {
            count: 3,
            per: Duration::from_secs(10)
        })
    );

    assert_eq!(pb.steps[2].on_error, OnError::Fail);
    assert!(pb.steps[2].retry.is_none() && pb.steps[2].for_each.is_none());
    assert_eq!(
        (0..5).map(|i| pb.is_handler(i)).collect::<Vec<_>>(),
        vec![false, false, true, true, false]
    );
    assert_eq!(pb.on_failure, Some(3));
    assert_eq!(pb.concurrency, Some(5));

    let t = &pb.triggers;
    assert!(!t.manual);
    let w = t.webhook.as_ref().unwrap();
    assert_eq!(w.input.as_deref(), Some("payload"));
    assert_eq!(w.signature, WebhookSignature::HmacSha256);
    assert_eq!(t.schedules.len(), 2);
    assert_eq!(t.schedules[0].cron, "0 * * * *");
    assert!(t.schedules[0].inputs.is_empty());
    assert_eq!(
        Value::Object(t.schedules[1].inputs.clone()),
        json!({"ips": ["10.0.0.1"], "payload": {"a": 1}})
    );
    assert_eq!(t.events.len(), 2);
    assert_eq!(t.events[0].event, "alert.created");
    assert!(t.events[0].condition.is_none() && t.events[0].input.is_none());
    assert_eq!(t.events[1].event, "case.changed");
    assert_eq!(t.events[1].input.as_deref(), Some("payload"));
    let cond = t.events[1].condition.as_ref().unwrap();
    let ectx = ctx.with_local("event", &json!({"severity": "high"}));
    assert_eq!(cond.eval_bool_now(&ectx), Ok(true));
    let ectx = ctx.with_local("event", &json!({"severity": "low"}));
    assert_eq!(cond.eval_bool_now(&ectx), Ok(false));
}

#[test]
fn defaults_without_new_keys() {
    let pb = parse("name: x\nversion: 1\nsteps:\n  a:\n    uses: p.a\n");
    let s = &pb.steps[0];
    assert!(s.retry.is_none() && s.timeout.is_none() && s.for_each.is_none());
    assert!(s.concurrency.is_none());
    assert_eq!(s.on_error, OnError::Fail);
    assert!(!pb.is_handler(0) && !pb.is_handler(7));
    assert_eq!(pb.on_failure, None);
    assert_eq!(pb.concurrency, None);
    let t = &pb.triggers;
    assert!(t.manual && t.webhook.is_none() && t.schedules.is_empty() && t.events.is_empty());
}

#[test]
fn trigger_short_forms() {
    let pb = parse(
        "name: x\nversion: 1\non:\n  webhook: true\n  schedule: \"*/5 * * * *\"\n  event: alert.created\nsteps:\n  a:\n    uses: p.a\n",
    );
    let t = &pb.triggers;
    assert!(t.manual);
    assert_eq!(t.webhook.as_ref().unwrap().input, None);
    assert_eq!(
        t.webhook.as_ref().unwrap().signature,
        WebhookSignature::None
    );
    assert_eq!(t.schedules.len(), 1);
    assert_eq!(t.events[0].event, "alert.created");
    let pb = parse("name: x\nversion: 1\non: { webhook: {} }\nsteps: {a: {uses: p.a}}\n");
    assert!(pb.triggers.webhook.is_some());
    let pb = parse(
        "name: x\nversion: 1\non: { webhook: { signature: standard-webhooks } }\nsteps: {a: {uses: p.a}}\n",
    );
    assert_eq!(
        pb.triggers.webhook.as_ref().unwrap().signature,
        WebhookSignature::StandardWebhooks
    );
    let pb = parse("name: x\nversion: 1\non:\n  webhook:\nsteps: {a: {uses: p.a}}\n");
    assert!(pb.triggers.webhook.is_some());
    let pb = parse("name: x\nversion: 1\non: { webhook: false }\nsteps: {a: {uses: p.a}}\n");
    assert!(pb.triggers.webhook.is_none());
}

#[test]
fn retry_on_any_and_single_kind() {
    let pb = parse(
        "name: x\nversion: 1\nsteps:\n  a:\n    uses: p.a\n    retry: { on: [any] }\n  b:\n    uses: p.a\n    retry: { on: denied }\n",
    );
    let a = pb.steps[0].retry.as_ref().unwrap();
    assert_eq!(a.on, vec!["any"]);
    assert!(a.retries("denied") && a.retries("transient"));
    let b = pb.steps[1].retry.as_ref().unwrap();
    assert!(b.retries("denied") && !b.retries("transient"));
    let d = RetryPolicy::default();
    assert!(d.retries("transient") && d.retries("timeout") && !d.retries("invalid-input"));
}

#[test]
fn step_key_errors() {
    let src = r#"name: x
version: 1
steps:
  a:
    uses: p.a
    retry: { attempts: 0, backoff: linear, initial: 10, max: soon, jitter: 1.5, on: [transient, oops] }
    timeout: 30
    on_error: [x]
    for_each: 3
    concurrency: 2
  b:
    uses: p.a
    retry: 101
    timeout: 0s
    for_each: { items: plain, concurrency: 0 }
    concurrency: { key: "${{ inputs.x }}" }
  c:
    uses: p.a
    retry: { initial: 10m }
    for_each: { concurrency: 2 }
    concurrency: { limit: 0, rate: 10/fortnight, extra: 1 }
  d:
    uses: p.a
    retry: { initial: 1m, max: 1s, attempts: two }
    timeout: 5 minutes
    concurrency: { rate: 0/s, key: [1] }
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:6:24: steps.a.retry.attempts: 0 is out of range; attempts must be between 1 and 100",
            "pb.yaml:6:36: steps.a.retry.backoff: `linear` is not a backoff; use `fixed` or `exponential`",
            "pb.yaml:6:53: steps.a.retry.initial: a duration needs a unit: write `10s`, `10m` or `10ms`",
            "pb.yaml:6:62: steps.a.retry.max: `soon` is not a duration; write a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h`, `1d` or `1h30m`",
            "pb.yaml:6:76: steps.a.retry.jitter: 1.5 is out of range; jitter is a fraction from 0 to 1 (0.1 = ±10%)",
            "pb.yaml:6:97: steps.a.retry.on[1]: unknown error kind `oops`; use one of: any, transient, timeout, invalid-input, not-found, denied, failed, cpu-limit, memory-limit, stack-overflow, output-too-large, invalid-output, trap",
            "pb.yaml:7:14: steps.a.timeout: a duration needs a unit: write `30s`, `30m` or `30ms`",
            "pb.yaml:8:15: steps.a.on_error: expected `fail`, `continue` or the id of a handler step, found a list",
            "pb.yaml:9:15: steps.a.for_each: expected a list, an expression giving a list (`\"${{ inputs.ips }}\"`) or a mapping with `items`, found an integer",
            "pb.yaml:10:18: steps.a.concurrency: expected a mapping such as `{ limit: 1 }`, `{ rate: 10/min }` or `{ key: \"${{ inputs.ip }}\", limit: 1 }`, found an integer",
            "pb.yaml:13:12: steps.b.retry: 101 is out of range; attempts must be between 1 and 100",
            "pb.yaml:14:14: steps.b.timeout: a timeout must be longer than zero",
            "pb.yaml:15:24: steps.b.for_each.items: expected a list or an expression giving a list (`\"${{ inputs.ips }}\"`), found a string",
            "pb.yaml:15:44: steps.b.for_each.concurrency: 0 is out of range; the number of items run at once must be between 1 and 1000",
            "pb.yaml:16:18: steps.b.concurrency: give `limit` (at most N at once), `rate` (e.g. `10/min`) or both",
            "pb.yaml:19:23: steps.c.retry.initial: `10m` is longer than the default `max` (5m); set `max` too",
            "pb.yaml:20:15: steps.c.for_each: missing required key `items`",
            "pb.yaml:21:27: steps.c.concurrency.limit: 0 is out of range; the limit must be at least 1",
            "pb.yaml:21:36: steps.c.concurrency.rate: `10/fortnight` is not a rate; write `<count>/<period>`, e.g. `10/min`, `5/s`, `100/h` or `3/10s`",
            "pb.yaml:21:50: steps.c.concurrency: unknown key `extra`; allowed keys: key, limit, rate",
            "pb.yaml:24:32: steps.d.retry.max: `1s` is shorter than `initial` (1m); make `max` at least `initial`",
            "pb.yaml:24:46: steps.d.retry.attempts: expected an integer (attempts, 1 to 100), found a string",
            "pb.yaml:25:14: steps.d.timeout: `5 minutes` is not a duration; write a number and a unit, e.g. `500ms`, `30s`, `5m`, `1h`, `1d` or `1h30m`",
            "pb.yaml:26:26: steps.d.concurrency.rate: `0/s`: the count must be at least 1",
            "pb.yaml:26:36: steps.d.concurrency.key: expected a string (usually an expression), found a list",
        ]
    );
}

#[test]
fn handler_errors() {
    let src = r#"name: x
version: 1
steps:
  a:
    uses: p.a
    on_error: a
  b:
    uses: p.a
    on_error: hanlder
  c:
    uses: p.a
    on_error: handler
  handler:
    uses: p.a
    on_error: other
  other:
    uses: p.a
  d:
    uses: p.a
    needs: [handler]
  e:
    uses: p.a
    on_error: f
  f:
    uses: p.a
    needs: e
on_failure: nope
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:6:15: steps.a.on_error: a step cannot be its own handler; name another step, or use `fail` or `continue`",
            "pb.yaml:9:15: steps.b.on_error: unknown step `hanlder` (did you mean `handler`?); expected `fail`, `continue` or the id of a handler step",
            "pb.yaml:15:15: steps.handler.on_error: `handler` is a handler (named by the `on_error` of step `c`), so it cannot hand its own failure to handler `other`; use `fail` or `continue`",
            "pb.yaml:20:13: steps.d.needs: `handler` is a handler (named by the `on_error` of step `c`), which runs only on failure; a step cannot need a handler",
            "pb.yaml:26:12: steps.f.needs: `e` hands its failures to `f`, so `f` cannot need it (the failure is in `error`)",
            "pb.yaml:27:13: on_failure: unknown step `nope`; expected the id of a handler step",
        ]
    );
}

#[test]
fn expression_roots() {
    let src = r#"name: x
version: 1
inputs:
  ips: { type: array }
steps:
  a:
    uses: p.a
    for_each: "${{ inputs.ips + [item] }}"
    if: "${{ item != '10.0.0.1' }}"
    with: { ip: "${{ item }}", i: "${{ index }}", e: "${{ error.kind }}" }
    concurrency: { key: "${{ item }}-${{ index }}", limit: 1 }
  b:
    uses: p.a
    with: { ip: "${{ item }}" }
    if: "${{ error.step == 'a' }}"
    concurrency: { key: "${{ index }}", limit: 2 }
  h:
    uses: p.a
    with: { s: "${{ error.step }}", i: "${{ item }}", ev: "${{ event.x }}" }
  c:
    uses: p.a
    on_error: h
outputs:
  o: "${{ error }}"
on:
  event:
    - { event: alert.created, if: "${{ event.severity == inputs.level and steps.a.status }}" }
    - { event: alert-created, if: "${{ item }}" }
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:8:15: steps.a.for_each: unknown variable `item` (expressions can use `inputs` and `steps`; `item` and `index` exist only in the `with` and `concurrency.key` of a `for_each` step)",
            "pb.yaml:9:9: steps.a.if: `item` is not available in `if`, which is evaluated once for the whole step before its items; filter the list in `for_each` instead",
            "pb.yaml:10:54: steps.a.with.e: unknown variable `error` (expressions here can use `inputs`, `steps`, `item`, `index`; `error` exists only in a handler step (named by `on_error` or `on_failure`))",
            "pb.yaml:14:17: steps.b.with.ip: unknown variable `item` (expressions can use `inputs` and `steps`; `item` and `index` exist only in the `with` and `concurrency.key` of a `for_each` step)",
            "pb.yaml:15:9: steps.b.if: unknown variable `error` (expressions can use `inputs` and `steps`; `error` exists only in a handler step (named by `on_error` or `on_failure`))",
            "pb.yaml:16:25: steps.b.concurrency.key: unknown variable `index` (expressions can use `inputs` and `steps`; `item` and `index` exist only in the `with` and `concurrency.key` of a `for_each` step)",
            "pb.yaml:19:40: steps.h.with.i: unknown variable `item` (expressions here can use `inputs`, `steps`, `error`; `item` and `index` exist only in the `with` and `concurrency.key` of a `for_each` step)",
            "pb.yaml:19:59: steps.h.with.ev: unknown variable `event` (expressions here can use `inputs`, `steps`, `error`; `event` exists only in the `if` of an `on.event` trigger)",
            "pb.yaml:24:6: outputs.o: unknown variable `error` (expressions can use `inputs` and `steps`; `error` exists only in a handler step (named by `on_error` or `on_failure`))",
            "pb.yaml:27:35: on.event[0].if: `inputs` is not available in a trigger condition, which sees only `event` (the event's payload)",
            "pb.yaml:27:35: on.event[0].if: `steps` is not available in a trigger condition, which sees only `event` (the event's payload)",
            "pb.yaml:28:16: on.event[1].event: invalid event name `alert-created`: use lowercase letters, digits, `_`, `-` and dots, with a dot (`alert.created`)",
            "pb.yaml:28:35: on.event[1].if: `item` is not available in a trigger condition, which sees only `event` (the event's payload)",
        ]
    );
}

#[test]
fn trigger_errors() {
    let src = r#"name: x
version: 1
on:
  manual: yes
  webhook: { input: paylod, signature: md5, path: /x }
  schedule:
    - "61 * * * *"
    - { cron: "0 * * * *", inputs: { ip: 42, nope: 1 } }
    - { inputs: {} }
    - 5
  event:
    - alert
    - { event: case.changed, input: ip }
    - { if: "true" }
  cron: "* * * * *"
concurrency: 0
inputs:
  ip: { type: string, format: ipv4 }
  n: { type: integer, default: 1 }
steps:
  a:
    uses: p.a
"#;
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:4:11: on.manual: expected a boolean, found a string",
            "pb.yaml:5:21: on.webhook.input: `paylod` is not a declared input; declared: ip, n",
            "pb.yaml:5:40: on.webhook.signature: expected `standard-webhooks` or `hmac-sha256` (or leave `signature` out to accept the secret token), found `md5`",
            "pb.yaml:5:45: on.webhook: unknown key `path`; allowed keys: input, signature",
            "pb.yaml:7:7: on.schedule[0]: input `ip` is required; give it under `inputs` (`{ cron: \"...\", inputs: { ip: ... } }`)",
            "pb.yaml:7:7: on.schedule[0]: invalid cron expression `61 * * * *`: Component error: Number out of bounds. (write 5 fields `minute hour day-of-month month day-of-week`, e.g. `*/5 * * * *`)",
            "pb.yaml:8:42: on.schedule[1].inputs.ip: expected string (ipv4), found 42",
            "pb.yaml:8:46: on.schedule[1].inputs: `nope` is not a declared input; declared: ip, n",
            "pb.yaml:9:7: on.schedule[2]: missing required key `cron`",
            "pb.yaml:10:7: on.schedule[3]: expected a cron expression (`\"*/5 * * * *\"`), a list of them, or a mapping with `cron` and `inputs`, found an integer",
            "pb.yaml:12:7: on.event[0]: invalid event name `alert`: use lowercase letters, digits, `_`, `-` and dots, with a dot (`alert.created`)",
            "pb.yaml:13:37: on.event[1].input: input `ip` is declared `string` but receives the payload object; declare it `type: object`",
            "pb.yaml:14:7: on.event[2]: missing required key `event`",
            "pb.yaml:15:3: on: unknown key `cron`; allowed keys: manual, webhook, schedule, event",
            "pb.yaml:16:14: concurrency: 0 is out of range; the number of runs at once must be at least 1",
        ]
    );
}

#[test]
fn trigger_input_leaves_required_inputs_empty() {
    let src = "name: x\nversion: 1\non:\n  webhook: { input: body }\n  event: [{ event: alert.created, input: body }]\ninputs:\n  body: { type: object }\n  ip: { type: string }\nsteps:\n  a:\n    uses: p.a\n";
    assert_eq!(
        errors(src),
        vec![
            "pb.yaml:4:21: on.webhook.input: only `body` is filled, but input `ip` is required; give `ip` a `default` or `required: false`",
            "pb.yaml:5:42: on.event[0].input: only `body` is filled, but input `ip` is required; give `ip` a `default` or `required: false`",
        ]
    );
}

#[test]
fn retry_delays() {
    let exp = RetryPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(10),
        ..RetryPolicy::default()
    };
    let secs: Vec<u64> = (2..=7).map(|n| exp.delay(n).as_secs()).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 10, 10]);
    assert_eq!(exp.delay(1), Duration::from_secs(1));
    assert_eq!(exp.delay(u32::MAX), Duration::from_secs(10));
    assert_eq!(exp.delay(40), Duration::from_secs(10));
    let fixed = RetryPolicy {
        backoff: Backoff::Fixed,
        initial: Duration::from_millis(500),
        ..RetryPolicy::default()
    };
    assert_eq!(fixed.delay(2), Duration::from_millis(500));
    assert_eq!(fixed.delay(9), Duration::from_millis(500));
    let d = RetryPolicy::default();
    assert_eq!(d.delay(2), Duration::from_secs(1));
    assert_eq!(d.delay(20), Duration::from_secs(300));
    // jitter 0.1: factor 0.9..=1.1
    assert_eq!(d.jittered_delay(3, 0.5), Duration::from_secs(2));
    assert_eq!(d.jittered_delay(3, 0.0), Duration::from_millis(1800));
    assert_eq!(d.jittered_delay(3, 1.0), Duration::from_millis(2200));
}

#[test]
fn rates_and_durations() {
    let r = |s: &str| s.parse::<Rate>();
    let rate = |count, secs| Rate {
        count,
        per: Duration::from_secs(secs),
    };
    assert_eq!(r("10/min"), Ok(rate(10, 60)));
    assert_eq!(r("5/s"), Ok(rate(5, 1)));
    assert_eq!(r("100/h"), Ok(rate(100, 3600)));
    assert_eq!(r("3/10s"), Ok(rate(3, 10)));
    assert_eq!(r("1/day"), Ok(rate(1, 86_400)));
    assert_eq!(r(" 2 / m "), Ok(rate(2, 60)));
    assert!(r("10").is_err() && r("x/min").is_err() && r("10/0s").is_err());
    assert!(r("0/min").is_err() && r("10/week").is_err() && r("-1/s").is_err());

    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in [
        "",
        "30",
        "s",
        "1.5s",
        "3 weeks",
        "-1s",
        "1h-",
        "99999999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
    for d in [0, 1, 999, 1000, 61_000, 5_400_000, 90_061_000] {
        let d = Duration::from_millis(d);
        let text = crate::durable::fmt_duration(d);
        assert_eq!(parse_duration(&text), Ok(d), "{text}");
    }
}

/// Unix ms of 2024-01-01 (UTC) plus hours, minutes, seconds.
fn at(h: i64, m: i64, s: i64) -> i64 {
    1_704_067_200_000 + ((h * 60 + m) * 60 + s) * 1000
}

#[test]
fn cron_next_after() {
    let s = Schedule::new("*/5 * * * *", Map::new()).unwrap();
    assert_eq!(s.next_after(at(0, 3, 0)), Some(at(0, 5, 0)));
    assert_eq!(
        s.next_after(at(0, 5, 0)),
        Some(at(0, 10, 0)),
        "strictly after"
    );
    assert_eq!(s.next_after(at(0, 5, 0) - 1), Some(at(0, 5, 0)));
    assert_eq!(s.next_after(at(0, 5, 0) + 1), Some(at(0, 10, 0)));
    assert_eq!(s.next_after(at(23, 59, 0)), Some(at(24, 0, 0)));
    let daily = Schedule::new("0 6 * * 1-5", Map::new()).unwrap();
    // 2024-01-01 is a Monday; after Friday 06:00 comes Monday 06:00.
    assert_eq!(daily.next_after(at(0, 0, 0)), Some(at(6, 0, 0)));
    assert_eq!(
        daily.next_after(at(4 * 24 + 6, 0, 0)),
        Some(at(7 * 24 + 6, 0, 0))
    );
    let secs = Schedule::new("*/30 * * * * *", Map::new()).unwrap();
    assert_eq!(secs.next_after(at(0, 0, 0)), Some(at(0, 0, 30)));
    assert_eq!(secs.next_after(at(0, 0, 0) + 500), Some(at(0, 0, 30)));
    let nick = Schedule::new("@hourly", Map::new()).unwrap();
    assert_eq!(nick.next_after(at(0, 0, 0)), Some(at(1, 0, 0)));
    assert!(Schedule::new("* * *", Map::new()).is_err());
}

#[test]
fn with_local_sees_later_steps() {
    let inputs = obj(json!({"ip": "10.0.0.1"}));
    let mut ctx = EvalContext::new(&inputs);
    ctx.set_step("a", "succeeded", &json!({"n": 1}));
    let item = ctx.with_local("item", &json!("1.2.3.4"));
    let both = item.with_local("index", &json!(2));
    let t = crate::Template::from_json(&json!({
        "ip": "${{ item }}",
        "i": "${{ index }}",
        "in": "${{ inputs.ip }}",
        "a": "${{ steps.a.output.n }}",
        "b": "${{ steps.b.status if steps.b is defined else 'none' }}",
    }))
    .unwrap();
    assert_eq!(
        t.render_now(&both).unwrap(),
        json!({"ip": "1.2.3.4", "i": 2, "in": "10.0.0.1", "a": 1, "b": "none"})
    );
    // Recorded on the parent after derivation: visible in the derived contexts.
    ctx.set_step("b", "failed", &Value::Null);
    assert_eq!(t.render_now(&both).unwrap()["b"], json!("failed"));
    // Recorded on a derived context: visible in the parent.
    let mut derived = both.clone();
    derived.set_step_shared("c", "succeeded", &SharedValue::new(&json!(3)));
    let e = crate::Expression::compile("steps.c.output").unwrap();
    assert_eq!(e.eval_now(&ctx), Ok(json!(3)));
    // The parent does not see the local; rebinding replaces; `inputs` cannot be shadowed.
    assert!(
        crate::Expression::compile("item")
            .unwrap()
            .eval_now(&ctx)
            .is_err()
    );
    let again = both.with_local("item", &json!("5.6.7.8"));
    let item_e = crate::Expression::compile("item").unwrap();
    assert_eq!(item_e.eval_now(&again), Ok(json!("5.6.7.8")));
    assert_eq!(item_e.eval_now(&both), Ok(json!("1.2.3.4")));
    let shadow = ctx.with_local("inputs", &json!({}));
    let ip = crate::Expression::compile("inputs.ip").unwrap();
    assert_eq!(ip.eval_now(&shadow), Ok(json!("10.0.0.1")));
}

#[test]
fn handler_error_root_renders() {
    let pb = parse(GOOD);
    let ctx = EvalContext::new(&Map::new());
    ctx.clone().set_step("each", "succeeded", &json!([1, 2, 3]));
    let err = ctx.with_local(
        "error",
        &json!({"step": "lookup", "kind": "transient", "message": "503"}),
    );
    let notify = &pb.steps[2];
    assert_eq!(
        notify.condition.as_ref().unwrap().eval_bool_now(&err),
        Ok(true)
    );
    assert_eq!(
        notify.with.render_now(&err).unwrap(),
        json!({"text": "lookup failed: 503 after succeeded"})
    );
}
