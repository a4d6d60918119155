//! The orchestrator's own cost per step, with an executor that returns at once: a chain (every step waits for
//! the previous one's commit) and a fan-out (independent steps share commits). Each step is claimed (a committed
//! row with a lease) and settled (committed) in the real SQLite store in a temporary directory.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qila_engine::{
    Options, Orchestrator, PluginCatalog, StartRun, StepCall, StepError, StepExecutor,
};
use qila_model::{ActionCatalog, StaticCatalog};
use qila_sandbox::{ExpressionLimits, SandboxedEvaluator};
use qila_store::{RunStatus, Store, TriggerKind};
use serde_json::{Value, json};

struct Instant;

impl StepExecutor for Instant {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        Ok(call.input)
    }
}

struct Catalog(StaticCatalog);

impl ActionCatalog for Catalog {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        self.0.input_schema(plugin, action)
    }
}

impl PluginCatalog for Catalog {
    fn digest(&self, _plugin: &str) -> Option<String> {
        Some("bench".into())
    }

    /// `x` is limited to TLP:AMBER, so every step that uses it pays the TLP check.
    fn max_tlp(&self, plugin: &str) -> qila_model::Tlp {
        if plugin == "x" {
            qila_model::Tlp::Amber
        } else {
            qila_model::Tlp::Red
        }
    }
}

/// A chain whose every step reads the previous step's output (and the first, a marked input), using `plugin`.
fn data_chain(name: &str, plugin: &str, n: usize) -> String {
    let mut s = format!(
        "name: {name}\nversion: 1\ninputs:\n  seed: {{ type: integer, default: 1 }}\nsteps:\n"
    );
    s +=
        &format!("  s0:\n    uses: {plugin}.echo\n    with: {{ n: \"${{{{ inputs.seed }}}}\" }}\n");
    for i in 1..n {
        s += &format!(
            "  s{i}:\n    uses: {plugin}.echo\n    needs: [s{}]\n    with: {{ n: \"${{{{ steps.s{}.output.n }}}}\" }}\n",
            i - 1,
            i - 1
        );
    }
    s
}

fn chain(n: usize) -> String {
    let mut s = String::from("name: chain\nversion: 1\nsteps:\n");
    for i in 0..n {
        s += &format!("  s{i}:\n    uses: t.echo\n    with: {{ n: {i} }}\n");
        if i > 0 {
            s += &format!("    needs: [s{}]\n", i - 1);
        }
    }
    s
}

fn fan_out(n: usize) -> String {
    let mut s = String::from("name: fan\nversion: 1\nsteps:\n");
    for i in 0..n {
        s += &format!("  s{i}:\n    uses: t.echo\n    with: {{ n: {i} }}\n");
    }
    s
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let orchestrator = rt.block_on(async {
        let store = Store::open(dir.path()).await.expect("store");
        let catalog =
            StaticCatalog::new()
                .with("t", "echo", json!({}))
                .with("x", "echo", json!({}));
        let o = Orchestrator::start(
            store,
            Arc::new(Instant),
            Arc::new(
                SandboxedEvaluator::new(ExpressionLimits::default(), None)
                    .expect("the expression evaluator"),
            ),
            Arc::new(Catalog(catalog)),
            Options::default(),
        )
        .await
        .expect("orchestrator");
        o.publish(&chain(100), "chain.yaml", "bench")
            .await
            .expect("chain");
        o.publish(&fan_out(100), "fan.yaml", "bench")
            .await
            .expect("fan");
        for (name, plugin) in [("open", "t"), ("limited", "x")] {
            o.publish(&data_chain(name, plugin, 100), "data.yaml", "bench")
                .await
                .expect("data chain");
        }
        o
    });
    let run = |name: &'static str| {
        let o = orchestrator.clone();
        async move {
            let run = o
                .start_run(StartRun {
                    playbook: name.into(),
                    version: None,
                    inputs: json!({}),
                    trigger: TriggerKind::Manual,
                    actor: "bench".into(),
                    tlp: [("seed".to_owned(), qila_model::Tlp::Green)].into(),
                })
                .await
                .expect("start");
            let done = o.wait(&run.id).await.expect("wait");
            assert_eq!(done.status, RunStatus::Succeeded);
        }
    };
    let mut group = c.benchmark_group("orchestrator");
    group
        .measurement_time(Duration::from_secs(8))
        .sample_size(20);
    group.throughput(Throughput::Elements(100));
    group.bench_function("chain of 100 steps", |b| {
        b.iter(|| rt.block_on(run("chain")))
    });
    group.bench_function("data chain of 100 steps, no TLP limit", |b| {
        b.iter(|| rt.block_on(run("open")))
    });
    group.bench_function("data chain of 100 steps, TLP check on every step", |b| {
        b.iter(|| rt.block_on(run("limited")))
    });
    group.bench_function("fan-out of 100 steps", |b| {
        b.iter(|| rt.block_on(run("fan")))
    });
    group.bench_function("10 runs of 100 fan-out steps at once", |b| {
        b.iter(|| {
            rt.block_on(async {
                let runs: Vec<_> = (0..10).map(|_| tokio::spawn(run("fan"))).collect();
                for r in runs {
                    r.await.expect("join");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
