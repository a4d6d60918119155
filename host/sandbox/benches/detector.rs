//! One `detect` call of the bundled `detect-dns` detector on a batch of 1,000 DNS events: serialising the batch,
//! a fresh instance, the call through the WIT boundary, and the host's checks of the findings.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use qila_sandbox::{PluginPolicy, Sandbox, SandboxConfig};
use serde_json::{Value, json};

/// 1,000 events: mostly ordinary names from 50 hosts, 1 in 50 a long encoded name under one tunnel domain.
fn batch() -> Vec<Value> {
    let names = [
        "www.google.com",
        "outlook.office365.com",
        "e1234.dscx.akamaiedge.net",
        "api.github.com",
        "update.microsoft.com",
    ];
    (0..1000)
        .map(|i| {
            let name = if i % 50 == 0 {
                format!("{i:04}a9x8c7v6b5n4m3q2w1e0rtyuiopasdfghjklzxcvbnm.evil-tunnel.com")
            } else {
                names[i % names.len()].to_string()
            };
            json!({
                "@timestamp": "2026-01-01T00:00:00Z",
                "source.ip": format!("10.0.0.{}", i % 50),
                "dns.question.name": name,
                "dns.question.type": "A",
                "event.category": "network",
            })
        })
        .collect()
}

fn detector(c: &mut Criterion) {
    let path = common::detect_dns();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let detector = rt
        .block_on(sandbox.load_detector_file(path, PluginPolicy::default()))
        .expect("detect-dns loads");
    let batch = batch();
    let findings = rt.block_on(detector.detect(&batch)).expect("detect");
    // Long labels and high entropy under evil-tunnel.com, and 20 distinct subdomains of it from 10.0.0.0.
    assert_eq!(findings.len(), 3, "{findings:?}");
    c.bench_function(
        "detect-dns: detect on 1,000 events (instantiate + call)",
        |b| b.iter(|| rt.block_on(detector.detect(&batch)).expect("detect")),
    );
}

criterion_group!(benches, detector);
criterion_main!(benches);
