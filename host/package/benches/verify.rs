//! The cost of checking a package at install: parsing it (which hashes the component) and verifying its
//! signature, for a small and a large component.

use criterion::{Criterion, criterion_group, criterion_main};
use qila_package::{
    ActionManifest, Capabilities, ComponentInfo, FORMAT_VERSION, Manifest, Package, SigningKey,
    TrustedKeys,
};

fn manifest() -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        name: "bench".into(),
        version: "1.0.0".into(),
        vendor: "Bench".into(),
        description: "A benchmark package.".into(),
        actions: vec![ActionManifest {
            name: "run".into(),
            summary: "Runs.".into(),
            input_schema: serde_json::json!({"type": "object"}),
            output_schema: serde_json::json!(true),
            example_input: None,
        }],
        capabilities: Capabilities::default(),
        component: ComponentInfo::default(),
    }
}

fn install_check(c: &mut Criterion) {
    let key = SigningKey::generate().expect("random key");
    let trusted = TrustedKeys::new(vec![key.public("Bench")]);
    for (label, size) in [("300KB", 300 << 10), ("20MB", 20 << 20)] {
        let mut package = Package::new(manifest(), vec![7u8; size]).expect("valid package");
        package.sign(&key);
        let bytes = package.to_bytes();
        c.bench_function(&format!("parse+verify {label} package"), |b| {
            b.iter(|| {
                let p = Package::parse(&bytes).expect("parses");
                p.verify(&trusted).expect("verifies");
            })
        });
    }
}

criterion_group!(benches, install_check);
criterion_main!(benches);
