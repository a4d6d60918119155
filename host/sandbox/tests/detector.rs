//! Detector plugins through the real WIT boundary: the bundled `detect-dns`, and test detectors that break the
//! contract or ask for more than `log`. Every failure is a typed `SandboxError::Detect` naming the detector, and the
//! same detector keeps working on the next batch.

mod common;

use std::time::Duration;

use qila_sandbox::{
    DetectorPlugin, ErrorKind, Limits, PluginPolicy, Sandbox, SandboxConfig, SandboxError,
};
use serde_json::{Value, json};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig::default()).unwrap()
}

fn tight() -> PluginPolicy {
    PluginPolicy {
        limits: Limits {
            cpu: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            memory_bytes: 32 << 20,
            ..Limits::default()
        },
        ..PluginPolicy::default()
    }
}

async fn rogue(sandbox: &Sandbox) -> DetectorPlugin {
    sandbox
        .load_detector_file(&common::test_detectors().0, tight())
        .await
        .unwrap()
}

const TUNNEL: &str = "a9x8c7v6b5n4m3q2w1e0rtyuiopasdfghjklzxcvbnm1234.evil-tunnel.com";

#[tokio::test]
async fn detect_dns_finds_tunnelling_and_only_imports_log() {
    let sandbox = sandbox();
    let detector = sandbox
        .load_detector_file(common::detect_dns(), PluginPolicy::default())
        .await
        .unwrap();
    let info = detector.info();
    assert_eq!(info.name, "detect-dns");
    let ids: Vec<&str> = info.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "qila.dns.long-label",
            "qila.dns.high-entropy",
            "qila.dns.tunnel-volume"
        ]
    );
    for import in detector.imports() {
        assert!(
            import.starts_with("wasi:")
                || import.starts_with("qila:plugin/log@")
                || import.starts_with("qila:plugin/types@")
                || import.starts_with("qila:plugin/detection@"),
            "{import}"
        );
    }

    let batch = vec![
        json!({"source.ip": "10.0.0.1", "dns.question.name": "www.google.com"}),
        json!({"source.ip": "10.0.0.9", "dns.question.name": TUNNEL}),
        json!({"message": "not DNS"}),
    ];
    let findings = detector.detect(&batch).await.unwrap();
    let got: Vec<(&str, &[u32], &str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f.rule_id.as_str(),
                f.events.as_slice(),
                f.group_key.as_str(),
                f.level.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("qila.dns.long-label", &[1][..], "evil-tunnel.com", "high"),
            (
                "qila.dns.high-entropy",
                &[1][..],
                "evil-tunnel.com",
                "medium"
            ),
        ]
    );
    assert!(findings[0].tags.contains(&"attack.t1071.004".to_string()));
    assert!(findings[1].tags.contains(&"attack.t1568.002".to_string()));
    assert_eq!(findings[0].details["sources"], json!(["10.0.0.9"]));

    // Benign names only: nothing. An empty batch does not even run the detector.
    let benign = vec![json!({"dns.question.name": "www.google.com"}); 10];
    assert!(detector.detect(&benign).await.unwrap().is_empty());
    assert!(detector.detect::<Value>(&[]).await.unwrap().is_empty());

    // A batch element that is not an object is the host's mistake, caught before the detector runs.
    let err = detector.detect(&[json!("text")]).await.unwrap_err();
    assert_eq!(err.detect_kind(), Some(ErrorKind::InvalidInput), "{err}");
}

#[tokio::test]
async fn contract_breaches_are_typed_errors_naming_the_detector() {
    let sandbox = sandbox();
    let rogue = rogue(&sandbox).await;
    let ok = vec![
        json!({"hit": true}),
        json!({"hit": false}),
        json!({"hit": true}),
    ];
    let cases = [
        (
            "oob",
            ErrorKind::InvalidOutput,
            "event index 8 is out of range",
        ),
        ("level", ErrorKind::InvalidOutput, "\"severe\""),
        ("rule", ErrorKind::InvalidOutput, "rogue.undeclared"),
        ("flood", ErrorKind::OutputTooLarge, "10001 findings"),
        ("error", ErrorKind::Failed, "the rogue gives up"),
        ("trap", ErrorKind::Trap, "panics on purpose"),
        ("spin", ErrorKind::CpuLimit, "CPU limit"),
        ("balloon", ErrorKind::MemoryLimit, "memory limit"),
    ];
    for (what, kind, message) in cases {
        let batch = vec![json!({"do": what}), json!({}), json!({})];
        let err = rogue.detect(&batch).await.unwrap_err();
        match &err {
            SandboxError::Detect { plugin, error } => {
                assert_eq!(plugin, "rogue");
                assert_eq!(error.kind, kind, "{what}: {err}");
                assert!(error.message.contains(message), "{what}: {err}");
            }
            other => panic!("{what}: expected a detect error, got {other}"),
        }
        assert!(err.to_string().starts_with("detector `rogue`: "), "{err}");
        // The next batch runs in a fresh instance, unaffected.
        let findings = rogue.detect(&ok).await.unwrap();
        let events: Vec<&[u32]> = findings.iter().map(|f| f.events.as_slice()).collect();
        assert_eq!(events, [&[0][..], &[2][..]], "after {what}");
    }
}

#[tokio::test]
async fn a_detector_may_import_only_log() {
    let sandbox = sandbox();
    let err = sandbox
        .load_detector_file(&common::test_detectors().1, PluginPolicy::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::Contract(m) if m.contains("`qila:plugin/http@0.1.0`")),
        "{err}"
    );
}

#[tokio::test]
async fn worlds_do_not_mix() {
    let sandbox = sandbox();
    // An action plugin is not a detector ...
    let core = std::fs::read(common::core_plugin()).unwrap();
    let err = sandbox
        .load_detector(&core, PluginPolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Contract(_)), "{err}");
    // ... and a detector is not an action plugin.
    let dns = std::fs::read(common::detect_dns()).unwrap();
    let err = sandbox
        .load(&dns, PluginPolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::Contract(_)), "{err}");
}

#[tokio::test]
async fn detectors_run_concurrently_in_separate_instances() {
    let sandbox = sandbox();
    let rogue = rogue(&sandbox).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let rogue = rogue.clone();
            tokio::spawn(async move {
                let what = if i % 2 == 0 { "trap" } else { "ok" };
                let batch = vec![json!({"do": what, "hit": true})];
                (what, rogue.detect(&batch).await)
            })
        })
        .collect();
    for task in tasks {
        let (what, result) = task.await.unwrap();
        match what {
            "trap" => assert_eq!(result.unwrap_err().detect_kind(), Some(ErrorKind::Trap)),
            _ => assert_eq!(result.unwrap().len(), 1),
        }
    }
}
