//! The scheduler against a real SQLite store, with a scripted executor standing in for the sandbox (the sandbox
//! itself is driven end to end in the workspace's `tests/`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use qila_engine::{Engine, StepCall, StepError, StepExecutor};
use qila_model::Playbook;
use qila_store::{RunStatus, StepStatus, Store};
use serde_json::{Value, json};

/// `test.echo` returns its input; `test.fail` fails with the input's `kind`; `test.slow` sleeps `ms` and tracks how
/// many calls overlap.
#[derive(Default)]
struct Scripted {
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl StepExecutor for Scripted {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        match call.action.as_str() {
            "echo" => Ok(call.input),
            "fail" => Err(StepError::new(
                call.input["kind"].as_str().unwrap_or("failed"),
                "scripted failure",
            )),
            "slow" => {
                let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(
                    call.input["ms"].as_u64().unwrap_or(10),
                ))
                .await;
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(json!({"step": call.step_id}))
            }
            other => Err(StepError::new("not-found", format!("no action {other}"))),
        }
    }
}

async fn setup() -> (tempfile::TempDir, Store, Engine<Scripted>, Arc<Scripted>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let exec = Arc::new(Scripted::default());
    let engine = Engine::new(exec.clone(), store.recorder());
    (dir, store, engine, exec)
}

fn playbook(yaml: &str) -> Arc<Playbook> {
    Arc::new(Playbook::parse(yaml, "test.yaml").unwrap_or_else(|d| panic!("{d}")))
}

#[tokio::test]
async fn outputs_flow_downstream_and_are_recorded() {
    let (_dir, store, engine, _) = setup().await;
    let pb = playbook(
        r#"
name: flow
version: 2
inputs:
  n: { type: integer }
steps:
  a:
    uses: test.echo
    with: { value: "${{ inputs.n * 2 }}" }
  b:
    needs: [a]
    uses: test.echo
    with: { doubled: "${{ steps.a.output.value }}", text: "n=${{ inputs.n }}" }
outputs:
  result: "${{ steps.b.output }}"
"#,
    );
    let inputs = pb
        .resolve_inputs(json!({"n": 21}).as_object().unwrap().clone())
        .unwrap();
    let report = engine.run(pb, inputs, None).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        report.outputs["result"],
        json!({"doubled": 42, "text": "n=21"})
    );

    engine.flush().await.unwrap();
    let run = store.run(&report.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.playbook_version, 2);
    assert_eq!(run.inputs, json!({"n": 21}));
    assert_eq!(
        run.outputs,
        Some(json!({"result": {"doubled": 42, "text": "n=21"}}))
    );
    let b = &run.steps[1];
    assert_eq!(
        (b.step_id.as_str(), b.status, b.attempt),
        ("b", StepStatus::Succeeded, 1)
    );
    assert_eq!(b.input, Some(json!({"doubled": 42, "text": "n=21"})));
    assert!(b.started_at.is_some() && b.finished_at >= b.started_at);
}

#[tokio::test]
async fn independent_steps_run_in_parallel() {
    let (_dir, _store, engine, exec) = setup().await;
    let pb = playbook(
        r#"
name: fan
version: 1
steps:
  a: { uses: test.slow, with: { ms: 50 } }
  b: { uses: test.slow, with: { ms: 50 } }
  c: { uses: test.slow, with: { ms: 50 } }
  d: { uses: test.slow, needs: [a, b, c], with: { ms: 1 } }
"#,
    );
    let report = engine.run(pb, Default::default(), None).await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        exec.max_in_flight.load(Ordering::SeqCst),
        3,
        "a, b and c overlap; d waits for them"
    );
}

#[tokio::test]
async fn false_condition_skips_the_step_and_its_dependents() {
    let (_dir, _store, engine, _) = setup().await;
    let pb = playbook(
        r#"
name: cond
version: 1
inputs:
  score: { type: integer }
steps:
  gate: { uses: test.echo, if: "${{ inputs.score >= 70 }}" }
  act: { uses: test.echo, needs: [gate] }
  other: { uses: test.echo }
"#,
    );
    let inputs = pb
        .resolve_inputs(json!({"score": 10}).as_object().unwrap().clone())
        .unwrap();
    let report = engine.run(pb, inputs, None).await.unwrap();
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "skips do not fail a run"
    );
    let by_id = |id: &str| report.steps.iter().find(|s| s.id == id).unwrap().clone();
    assert_eq!(by_id("gate").status, StepStatus::Skipped);
    assert!(by_id("gate").error.unwrap().contains("inputs.score >= 70"));
    assert_eq!(by_id("act").status, StepStatus::Skipped);
    assert_eq!(
        by_id("act").error.unwrap(),
        "needs `gate`, which was skipped"
    );
    assert_eq!(by_id("other").status, StepStatus::Succeeded);
}

#[tokio::test]
async fn a_failed_step_fails_the_run_but_independent_branches_finish() {
    let (_dir, store, engine, _) = setup().await;
    let pb = playbook(
        r#"
name: fails
version: 1
steps:
  bad: { uses: test.fail, with: { kind: denied } }
  after: { uses: test.echo, needs: [bad] }
  good: { uses: test.echo, with: { ok: true } }
"#,
    );
    let report = engine.run(pb, Default::default(), None).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.steps[0].status, StepStatus::Failed);
    assert_eq!(
        report.steps[0].error.as_deref(),
        Some("denied: scripted failure")
    );
    assert_eq!(report.steps[1].status, StepStatus::Skipped);
    assert_eq!(report.steps[2].status, StepStatus::Succeeded);
    engine.flush().await.unwrap();
    let run = store.run(&report.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps[0].error_kind.as_deref(), Some("denied"));
}

#[tokio::test]
async fn an_expression_error_at_run_time_fails_the_step_with_its_text() {
    let (_dir, _store, engine, _) = setup().await;
    let pb = playbook(
        r#"
name: expr
version: 1
steps:
  a: { uses: test.echo, with: { x: 1 } }
  b: { uses: test.echo, needs: [a], with: { y: "${{ steps.a.output.missing }}" } }
"#,
    );
    let report = engine.run(pb, Default::default(), None).await.unwrap();
    assert_eq!(report.status, RunStatus::Failed);
    let err = report.steps[1].error.clone().unwrap();
    assert!(
        err.starts_with("expression: with:") && err.contains("steps.a.output.missing"),
        "{err}"
    );
}

#[tokio::test]
async fn live_events_report_each_transition() {
    let (_dir, _store, engine, _) = setup().await;
    let pb = playbook(
        "name: ev\nversion: 1\nsteps:\n  a: { uses: test.echo }\n  b: { uses: test.echo, needs: [a] }\n",
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    engine.run(pb, Default::default(), Some(tx)).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(e) = rx.try_recv() {
        seen.push(format!("{}:{}", e.step_id, e.status));
    }
    assert_eq!(
        seen,
        ["a:running", "a:succeeded", "b:running", "b:succeeded"]
    );
}

/// An executor that panics on `test.boom`.
struct Panicky;

impl StepExecutor for Panicky {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        if call.action == "boom" {
            panic!("executor bug");
        }
        Ok(call.input)
    }
}

#[tokio::test]
async fn a_panicking_executor_fails_the_step_not_the_run_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let engine = Engine::new(Arc::new(Panicky), store.recorder());
    // Alone (run inline on the run's task) and in parallel (spawned tasks).
    for yaml in [
        "name: p\nversion: 1\nsteps:\n  a: { uses: test.boom }\n",
        "name: p\nversion: 1\nsteps:\n  a: { uses: test.boom }\n  b: { uses: test.echo, with: { ok: 1 } }\n",
    ] {
        let report = engine
            .run(playbook(yaml), Default::default(), None)
            .await
            .unwrap();
        assert_eq!(report.status, RunStatus::Failed);
        assert_eq!(report.steps[0].status, StepStatus::Failed);
        assert!(
            report.steps[0]
                .error
                .as_deref()
                .unwrap()
                .starts_with("internal:"),
            "{:?}",
            report.steps[0]
        );
    }
}
