//! What evaluating a step's expressions costs in the sandbox: a fresh instance of the evaluator per evaluation,
//! the data the expressions read copied in, the answer copied out. Beside it, the same evaluation in this process
//! without limits (`qila_expr::Unbounded`, what the engine did before expressions were sandboxed), and the time a
//! hostile expression takes to be stopped by each limit.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use qila_model::{EvalContext, Evaluator, Playbook, SharedValue};
use qila_sandbox::{ExpressionLimits, SandboxedEvaluator};
use serde_json::json;

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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sandboxed: Arc<dyn Evaluator> = Arc::new(
        SandboxedEvaluator::new(ExpressionLimits::default(), None).expect("the evaluator"),
    );
    let unbounded: Arc<dyn Evaluator> = Arc::new(qila_expr::Unbounded);
    let pb = Playbook::parse(PB, "bench.yaml").expect("the playbook parses");
    let inputs = json!({"ip": "203.0.113.7"});
    let output = json!({"score": 85, "tags": ["ssh", "bruteforce"], "asn": {"number": 64500, "name": "Example"}});
    let mut ctx = EvalContext::with_shared_inputs(&SharedValue::new(&inputs));
    ctx.set_step_shared("intel", "succeeded", &SharedValue::new(&output));
    let step = &pb.steps[1];
    let first = &pb.steps[0];

    for (name, ev) in [
        ("sandboxed", &sandboxed),
        ("in-process, unbounded", &unbounded),
    ] {
        c.bench_function(&format!("if + with of 3 expressions ({name})"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let go = step
                        .condition
                        .as_ref()
                        .map(|e| e.eval_bool("if", &ctx, ev.as_ref()));
                    let go = match go {
                        Some(f) => f.await,
                        None => Ok(true),
                    };
                    black_box((go, step.with.render("with", &ctx, ev.as_ref()).await))
                })
            })
        });
        c.bench_function(&format!("with of one reference ({name})"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    black_box(first.with.render("with", &ctx, ev.as_ref()).await)
                })
            })
        });
    }

    let mut group = c.benchmark_group("hostile expression stopped");
    group.sample_size(10);
    for (name, src) in [
        (
            "work limit: [1] * 10**6 | sum",
            "${{ ([1] * 1000000) | sum }}",
        ),
        (
            "memory limit: [1] * 10**9 | list",
            "${{ ([1] * 1000000000) | list }}",
        ),
        (
            "memory limit: tojson(indent=10**9)",
            "${{ {'a': 1} | tojson(indent=1000000000) }}",
        ),
    ] {
        let template = qila_model::Template::from_json(&json!({ "v": src })).expect("compiles");
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let e = template.render("with", &ctx, sandboxed.as_ref()).await;
                    assert!(e.is_err());
                    black_box(e)
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
