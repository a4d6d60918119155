//! One step's template render (3 expressions: two whole-value, one interpolated) and one `if`.

use criterion::{Criterion, criterion_group, criterion_main};
use qila_model::{EvalContext, Playbook, SharedValue};
use serde_json::json;
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
    let pb = match Playbook::parse(PB, "bench.yaml") {
        Ok(p) => p,
        Err(d) => panic!("{d}"),
    };
    let inputs = match pb.resolve_inputs(
        json!({"ip": "203.0.113.7"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    ) {
        Ok(i) => i,
        Err(d) => panic!("{d}"),
    };
    let output = json!({"score": 85, "tags": ["ssh", "bruteforce"], "asn": {"number": 64500, "name": "Example"}});
    let shared_out = SharedValue::new(&output);
    let shared_in = SharedValue::new(&serde_json::Value::Object(inputs.clone()));
    let step = &pb.steps[1];

    c.bench_function("render_with_3_exprs (context built per step)", |b| {
        b.iter(|| {
            let mut ctx = EvalContext::new(black_box(&inputs));
            ctx.set_step("intel", "succeeded", &output);
            black_box(step.with.render(&ctx))
        })
    });
    c.bench_function("render_with_3_exprs (shared values)", |b| {
        b.iter(|| {
            let mut ctx = EvalContext::with_shared_inputs(&shared_in);
            ctx.set_step_shared("intel", "succeeded", &shared_out);
            black_box(step.with.render(&ctx))
        })
    });
    c.bench_function("if + render (shared values)", |b| {
        b.iter(|| {
            let mut ctx = EvalContext::with_shared_inputs(&shared_in);
            ctx.set_step_shared("intel", "succeeded", &shared_out);
            let go = step.condition.as_ref().map(|e| e.eval_bool(&ctx));
            black_box((go, step.with.render(&ctx)))
        })
    });
    c.bench_function("parse playbook", |b| {
        b.iter(|| black_box(Playbook::parse(black_box(PB), "bench.yaml").is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
