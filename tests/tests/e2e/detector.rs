//! Detector plugins end to end: the bundled `detect-dns` component, built from `plugins/` as the `qila` binary's
//! build builds it, finds DNS tunnelling in a batch through the real sandbox; hostile detectors (a contract breach,
//! a trap, a limit, an import it may not have) fail with typed errors and leave the host serving.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use qila_sandbox::{
    DetectorPlugin, ErrorKind, Limits, PluginPolicy, Sandbox, SandboxConfig, SandboxError,
};
use serde_json::{Value, json};

use super::support::{root, without_test_env};

const TUNNEL: &str = "a9x8c7v6b5n4m3q2w1e0rtyuiopasdfghjklzxcvbnm1234.evil-tunnel.com";

/// Builds a workspace of components for `wasm32-wasip2` into `target/<dir>` and returns `<artifact>.wasm`.
fn build(manifest: &str, dir: &str, artifact: &str) -> PathBuf {
    let target = root().join("target").join(dir);
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    without_test_env(&mut cargo);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root().join(manifest))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {manifest} failed");
    target.join(format!("wasm32-wasip2/release/{artifact}.wasm"))
}

/// `detect-dns`, where the `qila` build leaves it: `target/wasm-plugins/wasm32-wasip2/release/`.
fn detect_dns() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "plugins/Cargo.toml",
            "wasm-plugins",
            "qila_plugin_detect_dns",
        )
    })
}

/// The sandbox's test detectors (`host/sandbox/tests/detectors`): `rogue` and `sneaky`.
fn test_detector(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build(
            "host/sandbox/tests/detectors/Cargo.toml",
            "wasm-detectors",
            "detector_rogue",
        )
        .parent()
        .expect("a directory")
        .to_path_buf()
    })
    .join(format!("detector_{name}.wasm"))
}

async fn load(sandbox: &Sandbox, path: &Path, policy: PluginPolicy) -> DetectorPlugin {
    sandbox
        .load_detector_file(path, policy)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dns(source: &str, name: &str) -> Value {
    json!({
        "@timestamp": "2026-03-01T12:00:00Z",
        "event.category": "network",
        "source.ip": source,
        "dns.question.name": name,
    })
}

/// The batch of the scenario: benign names around two tunnelling names from one host, and a DGA-style Sysmon
/// event.
fn batch() -> Vec<Value> {
    vec![
        dns("10.0.0.1", "www.google.com"),
        dns("10.0.0.66", TUNNEL),
        dns("10.0.0.2", "outlook.office365.com"),
        dns(
            "10.0.0.66",
            "b8n7m6q5w4e3r2t1y0uiopzxcvbnmasdfghjklqwerty99.evil-tunnel.com",
        ),
        json!({"EventID": 22, "Image": "C:\\Users\\x\\drop.exe", "QueryName": "k3j4h5g6f7d8s9a0p1o2i3u4.dga-example.net"}),
    ]
}

#[tokio::test]
async fn detect_dns_finds_the_tunnel_and_the_dga_name() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let detector = load(&sandbox, detect_dns(), PluginPolicy::default()).await;
    assert_eq!(detector.name(), "detect-dns");

    let findings = detector.detect(&batch()).await.unwrap();
    let got: Vec<(&str, &[u32], &str)> = findings
        .iter()
        .map(|f| {
            (
                f.rule_id.as_str(),
                f.events.as_slice(),
                f.group_key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("qila.dns.long-label", &[1, 3][..], "evil-tunnel.com"),
            ("qila.dns.high-entropy", &[4][..], "dga-example.net"),
            ("qila.dns.high-entropy", &[1, 3][..], "evil-tunnel.com"),
        ]
    );
    assert_eq!(findings[0].level, "high");
    assert_eq!(findings[0].details["sources"], json!(["10.0.0.66"]));
    assert_eq!(
        findings[1].details["sources"],
        json!(["C:\\Users\\x\\drop.exe"])
    );
    assert!(
        findings
            .iter()
            .all(|f| f.tags.iter().any(|t| t == "attack.command-and-control"))
    );

    // Benign names alone: nothing.
    let benign: Vec<Value> = (0..100)
        .map(|i| dns(&format!("10.0.0.{i}"), "www.google.com"))
        .collect();
    assert!(detector.detect(&benign).await.unwrap().is_empty());
}

#[tokio::test]
async fn hostile_detectors_fail_typed_and_the_host_keeps_serving() {
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let tight = PluginPolicy {
        limits: Limits {
            cpu: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            memory_bytes: 32 << 20,
            ..Limits::default()
        },
        ..PluginPolicy::default()
    };
    let rogue = load(&sandbox, &test_detector("rogue"), tight.clone()).await;
    let dns = load(&sandbox, detect_dns(), PluginPolicy::default()).await;

    for (what, kind) in [
        ("oob", ErrorKind::InvalidOutput),
        ("trap", ErrorKind::Trap),
        ("spin", ErrorKind::CpuLimit),
    ] {
        let err = rogue.detect(&[json!({"do": what})]).await.unwrap_err();
        assert!(
            matches!(&err, SandboxError::Detect { plugin, error } if plugin == "rogue" && error.kind == kind),
            "{what}: {err}"
        );
        // The host is fine: the same detectors go on working.
        assert_eq!(
            rogue.detect(&[json!({"hit": true})]).await.unwrap().len(),
            1
        );
        assert_eq!(dns.detect(&batch()).await.unwrap().len(), 3);
    }

    // A detector that imports `http` is refused at load, naming the import.
    let err = sandbox
        .load_detector_file(test_detector("sneaky"), PluginPolicy::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("qila:plugin/http"), "{err}");

    // Limits apply to the built-in detector too: findings larger than its output limit are refused.
    let small = load(
        &sandbox,
        detect_dns(),
        PluginPolicy {
            limits: Limits {
                max_output_bytes: 64,
                ..Limits::default()
            },
            ..PluginPolicy::default()
        },
    )
    .await;
    let err = small.detect(&batch()).await.unwrap_err();
    assert_eq!(err.detect_kind(), Some(ErrorKind::OutputTooLarge), "{err}");
}
