//! The SIEM pack's telecom rules (`plugins/siem/rules/`) on fail2ban's real test logs: every line fail2ban marks
//! as a failure is detected, and the brute-force correlations fire on the repeated failures.

use std::collections::BTreeSet;
use std::path::PathBuf;

use qila_detect::{Detector, FindingKind, RuleSet};
use qila_events::parse_text;
use serde::Deserialize;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn telecom_rules() -> Detector {
    let rules = RuleSet::load(&[root().join("plugins/siem/rules")], &[]).expect("bundled rules");
    assert!(
        rules.report().failed.is_empty(),
        "{:#?}",
        rules.report().failed
    );
    Detector::new(rules)
}

#[derive(Deserialize)]
struct Case {
    lines: Vec<String>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Expect {
    #[serde(rename = "match")]
    matched: bool,
    host: Option<String>,
}

/// sshd reports one attempt on several lines, and fail2ban counts only one of them: the PAM echo of a verdict,
/// the `Too many authentication failures` summary, the disconnect or close before authentication and the key
/// exchange error are `match: false` in its normal mode because "the failure was already produced above". Here
/// each is a failure finding of its own (alerts are deduplicated by source), so they are not false alarms; any
/// other line fail2ban does not match must give no finding.
const SECOND_REPORTS: [&str; 5] = [
    "pam_unix_failure",
    "too_many_failures",
    "disconnected",
    "connection_closed",
    "kex_failed",
];

/// Runs `log`'s fail2ban cases through the telecom rules; returns (missed failures, false alarms, correlations).
fn check(log: &str) -> (Vec<String>, Vec<String>, BTreeSet<String>) {
    let path = root().join(format!("tests/fixtures/fail2ban/{log}.expected.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut detector = telecom_rules();
    let (mut missed, mut false_alarms, mut correlations) =
        (Vec::new(), Vec::new(), BTreeSet::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: Case = serde_json::from_str(line).expect("a fail2ban case");
        let mut detected = false;
        let mut kind = String::new();
        for raw in &case.lines {
            let event =
                parse_text(raw, 0).unwrap_or_else(|e| panic!("{log} case {}: {raw}: {e}", i + 1));
            if let Some(k) = event.fields.get("sshd.event").and_then(|v| v.as_str()) {
                kind = k.to_owned();
            }
            for finding in detector.detect(&event, &format!("{log}:{}", i + 1)) {
                // A correlation that fires on this line (e.g. a login accepted after failures) detects it too.
                detected = true;
                if let FindingKind::Correlation { .. } = finding.kind {
                    correlations.insert(finding.rule_title.clone());
                }
            }
        }
        let what = format!(
            "{log} case {}: {:?} (host {:?})",
            i + 1,
            case.lines,
            case.expect.host
        );
        if case.expect.matched && !detected {
            missed.push(what);
        } else if !case.expect.matched && detected && !SECOND_REPORTS.contains(&kind.as_str()) {
            false_alarms.push(what);
        }
    }
    (missed, false_alarms, correlations)
}

#[test]
fn every_ssh_failure_that_fail2ban_marks_is_detected_and_the_brute_force_fires() {
    let (missed, false_alarms, correlations) = check("sshd");
    assert!(
        missed.is_empty() && false_alarms.is_empty(),
        "{} sshd failures not detected:\n{}\n{} false alarms:\n{}",
        missed.len(),
        missed.join("\n"),
        false_alarms.len(),
        false_alarms.join("\n")
    );
    // fail2ban's multi-user connections and the scanner that drops the key exchange are found by correlations.
    assert!(
        correlations.contains("SSH Attempts For Several Accounts On One Connection")
            && correlations.contains("SSH Connection Dropped During Key Exchange"),
        "{correlations:?}"
    );
}

/// Five refused logins from one address within five minutes are a brute force; four are not, and neither are
/// failures spread over more than the window.
#[test]
fn five_ssh_failures_from_one_address_within_five_minutes_are_a_brute_force() {
    let mut detector = telecom_rules();
    let line = |minute: u32, second: u32, ip: &str, user: &str| {
        format!(
            "Feb 25 14:{minute:02}:{second:02} belka sshd[3160{second}]: Failed password for invalid user {user} from {ip} port 50273 ssh2"
        )
    };
    let mut fired = Vec::new();
    let attempts = [
        (0, 1, "194.117.26.69", "root"),
        (0, 5, "198.51.100.2", "admin"),
        (1, 2, "194.117.26.69", "admin"),
        (1, 9, "198.51.100.2", "admin"),
        (2, 3, "194.117.26.69", "oracle"),
        (2, 7, "198.51.100.2", "test"),
        (3, 4, "194.117.26.69", "ubuntu"),
        (9, 8, "198.51.100.2", "pi"),
        (4, 5, "194.117.26.69", "pi"),
    ];
    for (i, (m, s, ip, user)) in attempts.iter().enumerate() {
        let event = parse_text(&line(*m, *s, ip, user), 0).unwrap();
        for f in detector.detect(&event, &i.to_string()) {
            if f.rule_title == "SSH Brute Force From One Source" {
                fired.push((i, f.group_key, f.events.len()));
            }
        }
    }
    assert_eq!(fired, vec![(8, "source.ip=194.117.26.69".to_owned(), 5)]);
}

#[test]
fn every_asterisk_failure_that_fail2ban_marks_is_detected() {
    let (missed, false_alarms, _) = check("asterisk.even");
    assert!(
        missed.is_empty(),
        "{} Asterisk failures not detected:\n{}",
        missed.len(),
        missed.join("\n")
    );
    assert!(
        false_alarms.is_empty(),
        "{} false alarms:\n{}",
        false_alarms.len(),
        false_alarms.join("\n")
    );
}

/// fail2ban's Asterisk lines span years; replayed as a burst (ten seconds apart), the failures from one address
/// are a brute force, and the failures for several accounts from one address a spray.
#[test]
fn a_burst_of_asterisk_failures_from_one_source_fires_the_sip_brute_force_rules() {
    let text = std::fs::read_to_string(
        root().join("tests/fixtures/fail2ban/asterisk.even.expected.jsonl"),
    )
    .unwrap();
    let mut detector = telecom_rules();
    let mut fired: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let case: Case = serde_json::from_str(line).unwrap();
        for raw in &case.lines {
            let mut event = parse_text(raw, 0).unwrap();
            event.time_us = 1_700_000_000_000_000 + i as i64 * 10_000_000;
            for f in detector.detect(&event, &i.to_string()) {
                if matches!(f.kind, FindingKind::Correlation { .. }) {
                    fired.insert((f.rule_title, f.group_key));
                }
            }
        }
    }
    assert!(
        fired.contains(&(
            "Repeated Failed SIP Registrations From One Source".to_owned(),
            "source.ip=1.2.3.4".to_owned()
        )),
        "{fired:?}"
    );
    // Only 1.2.3.4 fails often enough; no other address gets a brute-force alert.
    assert!(
        fired.iter().all(|(_, key)| key == "source.ip=1.2.3.4"),
        "{fired:?}"
    );
}

/// A hijacked account calling expensive destinations: five international calls in a few minutes fire the
/// toll-fraud correlation; four do not.
#[test]
fn five_international_calls_from_one_account_in_minutes_are_toll_fraud() {
    let mut detector = telecom_rules();
    let call = |i: usize, number: &str| {
        format!(
            "[2024-03-01 02:0{i}:00] NOTICE[2211] chan_sip.c: Call from '2001' (203.0.113.9:5060) to extension '{number}' rejected because extension not found in context 'from-trunk'."
        )
    };
    let numbers = [
        "00972599123456",
        "011447700900123",
        "+88216123456",
        "9001139912345",
        "0900123456",
    ];
    let mut toll = Vec::new();
    for (i, number) in numbers.iter().enumerate() {
        let event = parse_text(&call(i, number), 0).unwrap();
        assert_eq!(event.user.as_deref(), Some("2001"), "{event:?}");
        for f in detector.detect(&event, &i.to_string()) {
            if f.rule_title.starts_with("Toll Fraud") {
                toll.push((i, f.group_key));
            }
        }
    }
    assert_eq!(toll, vec![(4, "user.name=2001".to_owned())]);
    // Local extensions are not international calls.
    let mut detector = telecom_rules();
    for i in 0..8 {
        let event = parse_text(&call(i, "2042"), 0).unwrap();
        assert!(
            detector
                .detect(&event, "x")
                .iter()
                .all(|f| !f.rule_title.starts_with("Toll Fraud"))
        );
    }
}

/// Zeek's SIP log of a scan: the scanner's User-Agent is detected.
#[test]
fn a_sip_scanner_user_agent_in_zeek_is_detected() {
    let mut detector = telecom_rules();
    let line = r#"{"ts":1700000000.1,"uid":"C1","id.orig_h":"198.51.100.7","id.orig_p":5060,"id.resp_h":"192.0.2.5","id.resp_p":5060,"trans_depth":0,"method":"OPTIONS","uri":"sip:100@192.0.2.5","user_agent":"friendly-scanner","status_code":404}"#;
    let event = parse_text(line, 0).unwrap();
    assert_eq!(event.dataset, "zeek.sip");
    let findings = detector.detect(&event, "1");
    assert!(
        findings
            .iter()
            .any(|f| f.rule_title == "SIP Scanner User Agent" && f.level == "high"),
        "{findings:?}"
    );
    let benign = parse_text(
        &line.replace("friendly-scanner", "Yealink SIP-T46S 66.86.0.15"),
        0,
    )
    .unwrap();
    assert!(detector.detect(&benign, "2").is_empty());
}

#[test]
fn every_freeswitch_failure_that_fail2ban_marks_is_detected() {
    let (missed, false_alarms, _) = check("freeswitch");
    assert!(
        missed.is_empty(),
        "{} FreeSWITCH failures not detected:\n{}",
        missed.len(),
        missed.join("\n")
    );
    assert!(
        false_alarms.is_empty(),
        "{} false alarms:\n{}",
        false_alarms.len(),
        false_alarms.join("\n")
    );
}
