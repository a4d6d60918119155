//! The correlation examples of the Sigma specification load and behave as the specification says.

use std::path::PathBuf;

use qila_detect::{Detector, Finding, FindingKind, RuleSet};
use qila_events::{Event, LogSource};
use serde_json::{Map, Value, json};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// The base rules plus one correlation example of the specification.
fn detector(example: &str) -> Detector {
    let rules = RuleSet::load(
        &[
            fixtures().join("sigma-spec-base/base.yml"),
            fixtures().join(format!(
                "sigma-specification/tests/schema/correlation/{example}.yml"
            )),
        ],
        &[],
    )
    .expect("rules load");
    let report = rules.report();
    assert!(report.failed.is_empty(), "{example}: {:?}", report.failed);
    assert_eq!(rules.correlation_rules(), 1, "{example}");
    Detector::new(rules)
}

fn event(category: Option<&str>, service: Option<&str>, seconds: i64, fields: Value) -> Event {
    let Value::Object(fields) = fields else {
        panic!("fields must be an object");
    };
    Event {
        time_us: seconds * 1_000_000,
        dataset: "test".into(),
        logsource: LogSource {
            product: Some("test".into()),
            service: service.map(str::to_owned),
            categories: category.map(str::to_owned).into_iter().collect(),
        },
        host: None,
        source_ip: None,
        source_port: None,
        destination_ip: None,
        destination_port: None,
        user: None,
        process: None,
        action: None,
        outcome: None,
        fields: fields as Map<String, Value>,
        raw: String::new(),
    }
}

fn correlations(findings: Vec<Finding>) -> Vec<Finding> {
    findings
        .into_iter()
        .filter(|f| matches!(f.kind, FindingKind::Correlation { .. }))
        .collect()
}

const T0: i64 = 1_700_000_000;

#[test]
fn event_count_fires_at_the_hundredth_failed_logon_of_one_computer_within_an_hour() {
    let mut d = detector("event_count");
    for i in 0..99 {
        let e = event(
            None,
            Some("auth"),
            T0 + i * 30,
            json!({"action": "failed_logon", "ComputerName": "pc1"}),
        );
        assert!(
            correlations(d.detect(&e, &format!("e{i}"))).is_empty(),
            "fired early at {i}"
        );
        // Another computer's failures never count towards pc1.
        let other = event(
            None,
            Some("auth"),
            T0 + i * 30,
            json!({"action": "failed_logon", "ComputerName": "pc2"}),
        );
        assert!(correlations(d.detect(&other, "x")).is_empty());
    }
    let last = event(
        None,
        Some("auth"),
        T0 + 99 * 30,
        json!({"action": "failed_logon", "ComputerName": "pc1"}),
    );
    let fired = correlations(d.detect(&last, "e99"));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule_id, "0e95725d-7320-415d-80f7-004da920fc11");
    assert_eq!(fired[0].group_key, "ComputerName=pc1");
    assert!(
        fired[0].events.contains(&"e99".to_owned()) && fired[0].events.contains(&"e5".to_owned())
    );
    // The referenced rule's matches are not findings of their own (`generate: false`).
    assert!(
        d.detect(&last, "again")
            .iter()
            .all(|f| f.rule_id != "5638f7c0-ac70-491d-8465-2a65075e0d86")
    );
}

#[test]
fn event_count_does_not_fire_when_the_failures_are_spread_over_more_than_the_timespan() {
    let mut d = detector("event_count");
    for i in 0..150 {
        // One failure every minute: never 100 within one hour.
        let e = event(
            None,
            Some("auth"),
            T0 + i * 60,
            json!({"action": "failed_logon", "ComputerName": "pc1"}),
        );
        assert!(correlations(d.detect(&e, "e")).is_empty(), "fired at {i}");
    }
}

#[test]
fn event_count_groups_by_a_dotted_ecs_field() {
    let mut d = detector("event_count_ecs");
    let mut fired = Vec::new();
    for i in 0..100 {
        let e = event(
            None,
            Some("auth"),
            T0 + i,
            json!({"action": "failed_logon", "dns.question.name": "evil.example"}),
        );
        fired.extend(correlations(d.detect(&e, "e")));
    }
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].group_key, "dns.question.name=evil.example");
}

fn recon(d: &mut Detector, seconds: i64, command: &str, user: &str) -> Vec<Finding> {
    let e = event(
        Some("process_creation"),
        None,
        seconds,
        json!({"CommandLine": command, "ComputerName": "pc1", "User": user, "Image": "C:\\x.cmd"}),
    );
    correlations(d.detect(&e, command))
}

#[test]
fn temporal_fires_when_all_three_recon_commands_run_within_five_minutes_in_any_order() {
    let mut d = detector("temporal");
    assert!(recon(&mut d, T0, "ipconfig /all", "alice").is_empty());
    assert!(recon(&mut d, T0 + 10, "whoami", "alice").is_empty());
    // Bob's command does not complete Alice's set.
    assert!(recon(&mut d, T0 + 20, "net group /domain", "bob").is_empty());
    let fired = recon(&mut d, T0 + 60, "net group /domain", "alice");
    assert_eq!(fired.len(), 1);
    assert!(
        matches!(&fired[0].kind, FindingKind::Correlation { correlation, .. } if correlation == "temporal")
    );

    let mut late = detector("temporal");
    assert!(recon(&mut late, T0, "whoami", "carol").is_empty());
    assert!(recon(&mut late, T0 + 10, "ipconfig", "carol").is_empty());
    assert!(
        recon(&mut late, T0 + 400, "net group", "carol").is_empty(),
        "outside the 5 minutes"
    );
}

#[test]
fn temporal_ordered_fires_only_for_a_then_b_then_c() {
    let mut d = detector("temporal_ordered");
    assert!(recon(&mut d, T0, "ipconfig", "alice").is_empty());
    assert!(recon(&mut d, T0 + 10, "net group", "alice").is_empty());
    assert!(
        recon(&mut d, T0 + 20, "whoami", "alice").is_empty(),
        "c, b, a is not the order"
    );

    let mut d = detector("temporal_ordered");
    assert!(recon(&mut d, T0, "whoami", "alice").is_empty());
    assert!(recon(&mut d, T0 + 10, "net group", "alice").is_empty());
    assert_eq!(recon(&mut d, T0 + 20, "ipconfig", "alice").len(), 1);
}

#[test]
fn value_count_fires_at_the_hundredth_distinct_user() {
    let mut d = detector("value_count");
    for i in 0..99 {
        for _ in 0..2 {
            let e = event(
                None,
                Some("auth"),
                T0 + i,
                json!({"action": "failed_logon", "ComputerName": "dc", "WorkstationName": "ws", "User": format!("user{i}")}),
            );
            assert!(
                correlations(d.detect(&e, "e")).is_empty(),
                "repeats of one user must not count"
            );
        }
    }
    let e = event(
        None,
        Some("auth"),
        T0 + 200,
        json!({"action": "failed_logon", "ComputerName": "dc", "WorkstationName": "ws", "User": "user99"}),
    );
    let fired = correlations(d.detect(&e, "e"));
    assert_eq!(fired.len(), 1);
    assert!(matches!(fired[0].kind, FindingKind::Correlation { value, .. } if value >= 100.0));
}

#[test]
fn value_sum_fires_when_the_bytes_sent_in_an_hour_pass_a_million() {
    let mut d = detector("value_sum");
    let post = |s: i64, bytes: i64| {
        event(
            Some("proxy"),
            None,
            s,
            json!({"method": "POST", "SourceIP": "10.0.0.5", "User": "u", "bytes_sent": bytes}),
        )
    };
    assert!(correlations(d.detect(&post(T0, 600_000), "a")).is_empty());
    assert!(
        correlations(d.detect(&post(T0 + 4000, 600_000), "b")).is_empty(),
        "the first is out of the hour"
    );
    assert_eq!(
        correlations(d.detect(&post(T0 + 4100, 600_000), "c")).len(),
        1
    );
}

#[test]
fn value_avg_fires_when_the_average_passes_the_threshold() {
    let mut d = detector("value_avg");
    let conn = |s: i64, bytes: i64| {
        event(
            Some("network_connection"),
            None,
            s,
            json!({"Initiated": "true", "SourceIP": "10.0.0.5", "User": "u", "BytesOut": bytes}),
        )
    };
    assert!(correlations(d.detect(&conn(T0, 100), "a")).is_empty());
    assert!(correlations(d.detect(&conn(T0 + 1, 200), "b")).is_empty());
    assert_eq!(
        correlations(d.detect(&conn(T0 + 2, 5000), "c")).len(),
        1,
        "average 1766 > 500"
    );
}

#[test]
fn value_percentile_loads() {
    let d = detector("value_percentile");
    assert_eq!(d.rules().correlation_rules(), 1);
}

#[test]
fn events_without_the_group_by_field_never_fire_a_correlation_together() {
    let mut d = detector("event_count");
    for i in 0..150 {
        // No ComputerName: these failures belong to no group.
        let e = event(
            None,
            Some("auth"),
            T0 + i,
            json!({"action": "failed_logon"}),
        );
        assert!(correlations(d.detect(&e, "e")).is_empty(), "fired at {i}");
    }
}
