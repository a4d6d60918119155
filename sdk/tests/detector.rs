//! `detector!` from a detector's point of view, natively.

use qila_sdk::Error;
use qila_sdk::detect::{Event, Finding, Level, Rule};
use serde_json::json;

const FAILED_LOGIN: Rule = Rule {
    id: "sample.failed-login",
    title: "Failed log-in",
    level: Level::Low,
    tags: &["attack.credential-access", "attack.t1110"],
};

const BRUTE_FORCE: Rule = Rule {
    id: "sample.brute-force",
    title: "Many failed log-ins from one source",
    level: Level::High,
    tags: &["attack.t1110.001"],
};

fn detect(batch: &[Event]) -> Result<Vec<Finding>, Error> {
    let failed: Vec<usize> = batch
        .iter()
        .enumerate()
        .filter(|(_, e)| e.str("event.outcome") == Some("failure"))
        .map(|(i, _)| i)
        .collect();
    let mut findings: Vec<Finding> = failed
        .iter()
        .map(|&i| {
            Finding::new(
                &FAILED_LOGIN,
                [i],
                batch[i]
                    .first_str(&["source.ip", "host.name"])
                    .unwrap_or("-"),
            )
        })
        .collect();
    if failed.len() >= 3 {
        findings.push(
            Finding::new(&BRUTE_FORCE, failed.iter().copied(), "all")
                .with_title(format!("{} failed log-ins", failed.len()))
                .with_level(Level::Critical)
                .with_details(json!({"count": failed.len()})),
        );
    }
    Ok(findings)
}

qila_sdk::detector! {
    name: "sample-detector",
    description: "Finds failed log-ins.",
    rules: &[FAILED_LOGIN, BRUTE_FORCE],
    detect: detect,
}

#[test]
fn info_from_the_declarations() {
    DETECTOR.check().unwrap();
    let info = DETECTOR.info();
    assert_eq!(info.name, "sample-detector");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.rules.len(), 2);
    assert_eq!(info.rules[1].level, "high");
    assert_eq!(
        info.rules[0].tags,
        ["attack.credential-access", "attack.t1110"]
    );
}

#[test]
fn detect_through_the_json_boundary() {
    let fail = json!({"event.outcome": "failure", "source": {"ip": "192.0.2.1"}});
    let batch: Vec<String> = [
        json!({"event.outcome": "success"}),
        fail.clone(),
        fail.clone(),
        fail,
    ]
    .iter()
    .map(|v| v.to_string())
    .collect();
    let findings = <__QilaDetector as qila_sdk::detector_bindings::Guest>::detect(batch).unwrap();
    assert_eq!(findings.len(), 4);
    assert_eq!(findings[0].events, [1]);
    assert_eq!(findings[0].group_key, "192.0.2.1");
    assert_eq!(findings[0].level, "low");
    let last = &findings[3];
    assert_eq!(
        (last.rule_id.as_str(), last.level.as_str()),
        ("sample.brute-force", "critical")
    );
    assert_eq!(last.events, [1, 2, 3]);
    assert_eq!(last.title, "3 failed log-ins");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last.details).unwrap(),
        json!({"count": 3})
    );

    let err = <__QilaDetector as qila_sdk::detector_bindings::Guest>::detect(vec!["[]".into()])
        .unwrap_err();
    assert!(matches!(err, qila_sdk::bindings::Error::InvalidInput(m) if m.contains("event 0")));
}

#[test]
fn detect_values_returns_sdk_findings() {
    let findings = DETECTOR
        .detect_values(&[json!({"event.outcome": "failure", "host.name": "web1"})])
        .unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].level, Level::Low);
    assert_eq!(findings[0].group_key, "web1");
    assert!(DETECTOR.detect_values(&[json!(1)]).is_err());
}

const DUPLICATE: Rule = Rule {
    id: "x",
    title: "",
    level: Level::Low,
    tags: &[],
};

#[test]
fn check_finds_problems() {
    static BAD: qila_sdk::detect::Detector =
        qila_sdk::detect::Detector::new("Bad Name", "0.1.0", "", &[DUPLICATE, DUPLICATE], detect);
    let problems = BAD.check().unwrap_err();
    assert_eq!(problems.len(), 2, "{problems:?}");
}
