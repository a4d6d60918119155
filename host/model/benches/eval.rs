//! Parsing and validating a playbook. (Evaluating its expressions is measured where it happens, in the sandbox:
//! `cargo bench -p qila-sandbox --bench expressions`.)

use criterion::{Criterion, criterion_group, criterion_main};
use qila_model::Playbook;
use std::hint::black_box;

const PB: &str = r#"name: bench
version: 1
inputs:
  ip: { type: string, format: ipv4 }
steps:
  intel:
    uses: intel.lookup
    with: { value: "${{ inputs.ip }}" }
  case:
    needs: [intel]
    uses: cases.open
    if: "${{ steps.intel.output.score >= 70 }}"
    with:
      title: "SSH brute force from ${{ inputs.ip }}"
      severity: "${{ 'high' if steps.intel.output.score > 80 else 'medium' }}"
      score: "${{ steps.intel.output.score }}"
      observables: [{ type: ipv4, tlp: amber }]
"#;

fn bench(c: &mut Criterion) {
    c.bench_function("parse playbook", |b| {
        b.iter(|| black_box(Playbook::parse(black_box(PB), "bench.yaml").is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
