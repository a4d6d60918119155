//! The orchestrator through its public API, on a real SQLite store in a temporary directory, with an executor
//! whose behaviour each test picks by action name.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qila_engine::{
    ActionError, Approver, Options, Orchestrator, PluginCatalog, PublishError, StartError,
    StartRun, StepCall, StepError, StepExecutor,
};
use qila_model::{ActionCatalog, StaticCatalog};
use qila_sandbox::{ExpressionLimits, SandboxedEvaluator};
use qila_store::{RunRow, RunStatus, StepRow, StepStatus, Store, TriggerKind};
use serde_json::{Value, json};

/// `t.echo` returns its input; `t.flaky` fails `transient` until attempt `input.ok_at`; `t.fail` fails with
/// `input.kind` (default `failed`); `t.slow` sleeps `input.ms`; `t.block` never returns. Every call is recorded.
#[derive(Default)]
struct Exec {
    calls: Mutex<Vec<StepCall>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Exec {
    fn calls_of(&self, step: &str) -> Vec<StepCall> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.step_id == step)
            .cloned()
            .collect()
    }
}

impl StepExecutor for Exec {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        self.calls.lock().unwrap().push(call.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let result = match call.action.as_str() {
            "flaky" if (call.attempt as u64) < call.input["ok_at"].as_u64().unwrap_or(2) => Err(
                StepError::new("transient", format!("attempt {} failed", call.attempt)),
            ),
            "fail" => Err(StepError::new(
                call.input["kind"].as_str().unwrap_or("failed"),
                "asked to fail",
            )),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(
                    call.input["ms"].as_u64().unwrap_or(100),
                ))
                .await;
                Ok(call.input.clone())
            }
            "block" => std::future::pending().await,
            _ => Ok(call.input.clone()),
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
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
        Some("digest-of-t".into())
    }

    /// `ext` stands for a plugin with external egress: data up to TLP:AMBER.
    fn max_tlp(&self, plugin: &str) -> qila_model::Tlp {
        if plugin == "ext" {
            qila_model::Tlp::Amber
        } else {
            qila_model::Tlp::Red
        }
    }
}

fn catalog() -> Arc<Catalog> {
    let mut c = StaticCatalog::new();
    for action in ["echo", "flaky", "fail", "slow", "block"] {
        c.add("t", action, json!({}));
    }
    c.add("ext", "echo", json!({}));
    Arc::new(Catalog(c))
}

/// Whether the suite runs on PostgreSQL (`QILA_TEST_STORE=postgres`; a throw-away cluster, see
/// `qila-test-postgres`) instead of the data directory's SQLite.
fn on_postgres() -> bool {
    std::env::var("QILA_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The store of data directory `dir`: its SQLite file, or with [`on_postgres`] a PostgreSQL database of its own
/// (the same one each time `dir` is opened again, as a restarted process finds its data).
async fn open_store(dir: &Path) -> Store {
    let mut options = qila_store::StoreOptions::default();
    if on_postgres() {
        static DATABASES: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> =
            std::sync::Mutex::new(Vec::new());
        let mut dbs = DATABASES.lock().unwrap();
        let url = match dbs.iter().find(|(d, _)| d == dir) {
            Some((_, url)) => url.clone(),
            None => {
                let url = qila_test_postgres::database().expect("a PostgreSQL database");
                dbs.push((dir.to_path_buf(), url.clone()));
                url
            }
        };
        options.database = Some(url);
    }
    Store::open_with(dir, options).await.unwrap()
}

async fn start(dir: &Path, exec: Arc<Exec>) -> Orchestrator {
    let store = open_store(dir).await;
    Orchestrator::start(store, exec, evaluator(), catalog(), Options::default())
        .await
        .unwrap()
}

/// The sandboxed evaluator `qila` uses, compiled once for all tests of this binary.
fn evaluator() -> Arc<dyn qila_model::Evaluator> {
    static EVALUATOR: std::sync::OnceLock<Arc<SandboxedEvaluator>> = std::sync::OnceLock::new();
    EVALUATOR
        .get_or_init(|| {
            Arc::new(SandboxedEvaluator::new(ExpressionLimits::default(), None).expect("evaluator"))
        })
        .clone()
}

async fn run(o: &Orchestrator, playbook: &str, inputs: Value) -> RunRow {
    o.start_run(StartRun {
        playbook: playbook.into(),
        version: None,
        inputs,
        trigger: TriggerKind::Manual,
        actor: "tester".into(),
        tlp: Default::default(),
    })
    .await
    .unwrap()
}

async fn finish(o: &Orchestrator, id: &str) -> RunRow {
    tokio::time::timeout(Duration::from_secs(20), o.wait(id))
        .await
        .expect("the run did not end in time")
        .unwrap()
}

async fn steps(o: &Orchestrator, id: &str) -> HashMap<(String, i64), StepRow> {
    o.store()
        .steps(id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| ((s.step_id.clone(), s.item), s))
        .collect()
}

fn step<'a>(steps: &'a HashMap<(String, i64), StepRow>, id: &str) -> &'a StepRow {
    steps
        .get(&(id.to_owned(), -1))
        .unwrap_or_else(|| panic!("no row for step {id}"))
}

async fn wait_until<F: Fn(&HashMap<(String, i64), StepRow>) -> bool>(
    o: &Orchestrator,
    id: &str,
    f: F,
) {
    for _ in 0..400 {
        if f(&steps(o, id).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "run {id} never reached the expected state: {:?}",
        steps(o, id).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dag_runs_in_order_and_records_every_transition() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let yaml = r#"name: dag
version: 1
inputs:
  n: { type: integer, default: 2 }
steps:
  a: { uses: t.echo, with: { v: "${{ inputs.n }}" } }
  b: { uses: t.echo, with: { v: "${{ inputs.n * 10 }}" } }
  c:
    needs: [a, b]
    uses: t.echo
    with: { sum: "${{ steps.a.output.v + steps.b.output.v }}" }
  never:
    needs: [c]
    if: "${{ steps.c.output.sum > 100 }}"
    uses: t.echo
outputs:
  sum: "${{ steps.c.output.sum }}"
"#;
    let published = o.publish(yaml, "dag.yaml", "tester").await.unwrap();
    assert!(published.created);
    assert_eq!(published.version.version, 1);
    let r = run(&o, "dag", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.outputs.unwrap()["sum"], 22);
    assert_eq!(done.version, 1);
    let s = steps(&o, &r.id).await;
    assert_eq!(step(&s, "never").status, StepStatus::Skipped);
    assert!(
        step(&s, "never")
            .error
            .as_deref()
            .unwrap()
            .contains("is false")
    );
    let history = o.store().transitions(&r.id, 0).await.unwrap();
    let c: Vec<&str> = history
        .iter()
        .filter(|t| t.step_id.as_deref() == Some("c"))
        .map(|t| t.status.as_str())
        .collect();
    assert_eq!(c, ["running", "succeeded"]);
    assert_eq!(history.last().unwrap().status, "succeeded");
    assert!(
        history.last().unwrap().step_id.is_none(),
        "the run's own end comes last"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_with_the_same_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    let yaml = r#"name: retry
version: 1
steps:
  flaky:
    uses: t.flaky
    with: { ok_at: 3 }
    retry: { attempts: 3, backoff: exponential, initial: 20ms, max: 1s, jitter: 0 }
  hard:
    uses: t.fail
    with: { kind: denied }
    retry: { attempts: 5, initial: 10ms }
  any:
    uses: t.fail
    retry: { attempts: 2, initial: 10ms, on: [any] }
  exhausted:
    uses: t.flaky
    with: { ok_at: 9 }
    retry: { attempts: 2, backoff: fixed, initial: 10ms }
"#;
    o.publish(yaml, "retry.yaml", "tester").await.unwrap();
    let r = run(&o, "retry", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let s = steps(&o, &r.id).await;
    assert_eq!(step(&s, "flaky").status, StepStatus::Succeeded);
    assert_eq!(step(&s, "flaky").attempt, 3);
    let keys: Vec<String> = exec
        .calls_of("flaky")
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(
        keys,
        vec![format!("{}/flaky", r.id); 3],
        "one key for every attempt"
    );
    let attempts: Vec<u32> = exec.calls_of("flaky").iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(
        exec.calls_of("hard").len(),
        1,
        "`denied` is not retried by default"
    );
    assert_eq!(step(&s, "hard").error_kind.as_deref(), Some("denied"));
    assert_eq!(
        exec.calls_of("any").len(),
        2,
        "`on: [any]` retries every kind"
    );
    assert_eq!(step(&s, "exhausted").attempt, 2);
    assert!(
        step(&s, "exhausted")
            .error
            .as_deref()
            .unwrap()
            .contains("attempt 2 failed")
    );
    let waits = o.store().transitions(&r.id, 0).await.unwrap();
    let backoff = waits
        .iter()
        .find(|t| t.step_id.as_deref() == Some("flaky") && t.status == "waiting")
        .expect("a retry waits durably");
    assert!(
        backoff.detail.as_deref().unwrap().contains("next in"),
        "{backoff:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_ends_an_attempt_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    let yaml = "name: slow\nversion: 1\nsteps:\n  s:\n    uses: t.slow\n    with: { ms: 2000 }\n    timeout: 50ms\n    retry: { attempts: 2, initial: 10ms }\n";
    o.publish(yaml, "slow.yaml", "tester").await.unwrap();
    let r = run(&o, "slow", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let s = steps(&o, &r.id).await;
    assert_eq!(step(&s, "s").error_kind.as_deref(), Some("timeout"));
    assert_eq!(step(&s, "s").attempt, 2, "timeouts are retried by default");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_paths_continue_handle_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let yaml = r#"name: paths
version: 1
on_failure: report
steps:
  soft:
    uses: t.fail
    on_error: continue
  after-soft:
    needs: [soft]
    uses: t.echo
    with: { saw: "${{ steps.soft.status }}" }
  risky:
    uses: t.fail
    with: { kind: not-found }
    on_error: fix
  after-risky:
    needs: [risky]
    uses: t.echo
  fix:
    uses: t.echo
    with: { step: "${{ error.step }}", kind: "${{ error.kind }}" }
  report:
    uses: t.echo
    with: { failed: "${{ error.step }}" }
outputs:
  fixed: "${{ steps.fix.output }}"
"#;
    o.publish(yaml, "paths.yaml", "tester").await.unwrap();
    let r = run(&o, "paths", json!({})).await;
    let done = finish(&o, &r.id).await;
    let s = steps(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?} {s:?}", done.error);
    assert_eq!(
        step(&s, "after-soft").output.as_ref().unwrap()["saw"],
        "failed"
    );
    assert_eq!(
        step(&s, "fix").output.as_ref().unwrap(),
        &json!({"step": "risky", "kind": "not-found"})
    );
    assert_eq!(step(&s, "after-risky").status, StepStatus::Skipped);
    assert!(
        !s.contains_key(&("report".into(), -1)),
        "on_failure does not run when nothing fails unhandled"
    );

    // An unhandled failure fails the run, after the on_failure handler has run once with the error.
    let failing = r#"name: failing
version: 1
on_failure: report
steps:
  boom:
    uses: t.fail
  report:
    uses: t.echo
    with: { failed: "${{ error.step }}", kind: "${{ error.kind }}" }
"#;
    o.publish(failing, "failing.yaml", "tester").await.unwrap();
    let r = run(&o, "failing", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert!(done.error.unwrap().contains("boom"));
    let s = steps(&o, &r.id).await;
    assert_eq!(
        step(&s, "report").output.as_ref().unwrap(),
        &json!({"failed": "boom", "kind": "failed"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn for_each_keeps_item_order_and_its_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    let yaml = r#"name: fan
version: 1
inputs:
  ms: { type: array }
steps:
  each:
    uses: t.slow
    for_each: { items: "${{ inputs.ms }}", concurrency: 2 }
    with: { ms: "${{ item }}", index: "${{ index }}" }
  none:
    uses: t.echo
    for_each: "${{ [] }}"
outputs:
  order: "${{ steps.each.output | map(attribute='index') | list }}"
  empty: "${{ steps.none.output }}"
"#;
    o.publish(yaml, "fan.yaml", "tester").await.unwrap();
    let r = run(&o, "fan", json!({"ms": [80, 10, 50, 10, 30, 5]})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let outputs = done.outputs.unwrap();
    assert_eq!(outputs["order"], json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(outputs["empty"], json!([]));
    assert!(
        exec.max_running.load(Ordering::SeqCst) <= 2,
        "never more than 2 items at once"
    );
    let mut keys: Vec<String> = exec
        .calls_of("each")
        .iter()
        .map(|c| c.idempotency_key.clone())
        .collect();
    keys.sort();
    assert_eq!(keys[0], format!("{}/each/0", r.id));

    let failing =
        "name: fan-fail\nversion: 1\nsteps:\n  each:\n    uses: t.fail\n    for_each: [1, 2]\n";
    o.publish(failing, "fan-fail.yaml", "tester").await.unwrap();
    let r = run(&o, "fan-fail", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let s = steps(&o, &r.id).await;
    assert!(
        step(&s, "each")
            .error
            .as_deref()
            .unwrap()
            .contains("item 0 failed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_wait_in_the_database_not_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let yaml = r#"name: gate
version: 1
steps:
  ok:
    uses: core.approval
    with: { message: "go?", approvers: ["role:analyst"] }
  go:
    needs: [ok]
    if: "${{ steps.ok.output.approved }}"
    uses: t.echo
"#;
    o.publish(yaml, "gate.yaml", "tester").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(run(&o, "gate", json!({})).await.id);
    }
    for id in &ids {
        wait_until(&o, id, |s| {
            s.get(&("ok".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Waiting)
        })
        .await;
    }
    for _ in 0..100 {
        if o.active_runs() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        o.active_runs(),
        0,
        "runs that only wait are not held in memory"
    );
    let viewer = Approver {
        name: "vic".into(),
        role: "viewer".into(),
    };
    let analyst = Approver {
        name: "ann".into(),
        role: "analyst".into(),
    };
    assert!(matches!(
        o.decide(&ids[0], "ok", true, None, &viewer).await,
        Err(ActionError::Forbidden(_))
    ));
    o.decide(&ids[0], "ok", true, Some("fine".into()), &analyst)
        .await
        .unwrap();
    assert!(matches!(
        o.decide(&ids[0], "ok", false, None, &analyst).await,
        Err(ActionError::Conflict(_))
    ));
    o.decide(&ids[1], "ok", false, None, &analyst)
        .await
        .unwrap();
    let approved = finish(&o, &ids[0]).await;
    assert_eq!(approved.status, RunStatus::Succeeded);
    let s = steps(&o, &ids[0]).await;
    assert_eq!(step(&s, "ok").output.as_ref().unwrap()["decided_by"], "ann");
    assert_eq!(step(&s, "go").status, StepStatus::Succeeded);
    finish(&o, &ids[1]).await;
    assert_eq!(
        step(&steps(&o, &ids[1]).await, "go").status,
        StepStatus::Skipped
    );

    let expiring = r#"name: expiring
version: 1
steps:
  ok:
    uses: core.approval
    with: { message: "go?", approvers: ["role:analyst"], expires: 200ms, default: approve }
"#;
    o.publish(expiring, "expiring.yaml", "tester")
        .await
        .unwrap();
    let r = run(&o, "expiring", json!({})).await;
    finish(&o, &r.id).await;
    let out = step(&steps(&o, &r.id).await, "ok").output.clone().unwrap();
    assert_eq!(
        (out["approved"].clone(), out["expired"].clone()),
        (json!(true), json!(true))
    );
    let audit: Vec<String> = sqlx_actions(o.store()).await;
    assert!(
        audit.contains(&"approval.approve".to_owned())
            && audit.contains(&"approval.deny".to_owned())
    );
}

async fn sqlx_actions(store: &Store) -> Vec<String> {
    store
        .audit_log(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

#[test]
fn a_durable_sleep_and_a_dead_workers_step_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"name: survive
version: 1
steps:
  nap:
    uses: core.sleep
    with: { duration: 700ms }
  stuck:
    uses: t.block
  after:
    needs: [nap]
    uses: t.echo
"#;
    // The first process: its runtime is dropped mid-run, as if killed: `stuck` is left `running` under a lease of
    // a worker that no longer exists, `nap` waits on a timer.
    let first = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = dir.path().to_owned();
    let id = first.block_on(async {
        let o = start(&path, Arc::default()).await;
        o.publish(yaml, "survive.yaml", "tester").await.unwrap();
        let r = run(&o, "survive", json!({})).await;
        wait_until(&o, &r.id, |s| {
            s.get(&("stuck".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Running)
                && s.get(&("nap".into(), -1))
                    .is_some_and(|r| r.status == StepStatus::Waiting)
        })
        .await;
        r.id
    });
    first.shutdown_background();

    // The second process resumes the run: the timer fires, the dead worker's step is claimed again (attempt 2,
    // same idempotency key); this time it is told to succeed by a different executor behaviour.
    #[derive(Default)]
    struct Unblocked(Exec);
    impl StepExecutor for Unblocked {
        async fn execute(&self, mut call: StepCall) -> Result<Value, StepError> {
            if call.action == "block" {
                call.action = "echo".into();
            }
            self.0.execute(call).await
        }
    }
    let second = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async move {
        let exec = Arc::new(Unblocked::default());
        let store = open_store(dir.path()).await;
        let o = Orchestrator::start(
            store,
            exec.clone(),
            evaluator(),
            catalog(),
            Options::default(),
        )
        .await
        .unwrap();
        let done = finish(&o, &id).await;
        assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
        let s = steps(&o, &id).await;
        assert_eq!(step(&s, "stuck").attempt, 2);
        assert_eq!(
            exec.0.calls_of("stuck")[0].idempotency_key,
            format!("{id}/stuck")
        );
        assert!(
            step(&s, "nap").output.as_ref().unwrap()["slept_ms"]
                .as_i64()
                .unwrap()
                >= 700
        );
        let history = o.store().transitions(&id, 0).await.unwrap();
        for name in ["nap", "stuck", "after"] {
            let terminal = history
                .iter()
                .filter(|t| {
                    t.step_id.as_deref() == Some(name)
                        && ["succeeded", "failed", "skipped", "cancelled"]
                            .contains(&t.status.as_str())
                })
                .count();
            assert_eq!(terminal, 1, "step {name}'s result is recorded once");
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_a_run_and_rerun_keeps_what_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    o.publish(
        "name: stuck\nversion: 1\nsteps:\n  s:\n    uses: t.block\n",
        "stuck.yaml",
        "tester",
    )
    .await
    .unwrap();
    let r = run(&o, "stuck", json!({})).await;
    wait_until(&o, &r.id, |s| s.contains_key(&("s".into(), -1))).await;
    o.cancel(&r.id, "tester").await.unwrap();
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    assert_eq!(
        step(&steps(&o, &r.id).await, "s").status,
        StepStatus::Cancelled
    );
    assert!(matches!(
        o.cancel(&r.id, "tester").await,
        Err(ActionError::Conflict(_))
    ));

    let half = "name: half\nversion: 1\ninputs:\n  kind: { type: string }\nsteps:\n  a:\n    uses: t.echo\n    with: { n: 1 }\n  b:\n    uses: t.fail\n    needs: [a]\n    with: { kind: \"${{ inputs.kind }}\" }\n";
    o.publish(half, "half.yaml", "tester").await.unwrap();
    let r = run(&o, "half", json!({"kind": "failed"})).await;
    assert_eq!(finish(&o, &r.id).await.status, RunStatus::Failed);
    o.rerun(&r.id, "tester").await.unwrap();
    let runs = o
        .store()
        .runs(&qila_store::RunFilter {
            playbook: Some("half".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let again = runs
        .iter()
        .find(|x| x.rerun_of.as_deref() == Some(r.id.as_str()))
        .unwrap();
    finish(&o, &again.id).await;
    assert_eq!(
        exec.calls_of("a").len(),
        1,
        "`a` succeeded the first time and is not run again"
    );
    assert_eq!(exec.calls_of("b").len(), 2);
    assert_eq!(
        step(&steps(&o, &again.id).await, "a")
            .output
            .as_ref()
            .unwrap(),
        &json!({"n": 1})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playbook_calls_another_waiting_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    o.publish(
        "name: child\nversion: 1\ninputs:\n  x: { type: integer }\nsteps:\n  a: { uses: t.echo, with: { y: \"${{ inputs.x * 2 }}\" } }\noutputs:\n  y: \"${{ steps.a.output.y }}\"\n",
        "child.yaml",
        "tester",
    )
    .await
    .unwrap();
    let parent = r#"name: parent
version: 1
steps:
  call:
    uses: core.playbook
    with: { playbook: child, inputs: { x: 21 } }
  fire:
    uses: core.playbook
    with: { playbook: child, inputs: { x: 1 }, wait: false }
  bad:
    uses: core.playbook
    with: { playbook: nobody }
    on_error: continue
outputs:
  y: "${{ steps.call.output.outputs.y }}"
  fired: "${{ steps.fire.output.run_id }}"
"#;
    o.publish(parent, "parent.yaml", "tester").await.unwrap();
    let r = run(&o, "parent", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let outputs = done.outputs.unwrap();
    assert_eq!(outputs["y"], 42);
    let fired = finish(&o, outputs["fired"].as_str().unwrap()).await;
    assert_eq!(fired.parent_run.as_deref(), Some(r.id.as_str()));
    assert!(
        step(&steps(&o, &r.id).await, "bad")
            .error
            .as_deref()
            .unwrap()
            .contains("nobody")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_queue_work_instead_of_failing_it() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    let keyed = "name: keyed\nversion: 1\ninputs:\n  k: { type: string }\nsteps:\n  s:\n    uses: t.slow\n    with: { ms: 40 }\n    concurrency: { key: \"${{ inputs.k }}\", limit: 1 }\n";
    o.publish(keyed, "keyed.yaml", "tester").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(run(&o, "keyed", json!({"k": "same"})).await.id);
    }
    for id in &ids {
        assert_eq!(finish(&o, id).await.status, RunStatus::Succeeded);
    }
    assert_eq!(
        exec.max_running.load(Ordering::SeqCst),
        1,
        "one at a time for the same key"
    );

    let serial = "name: serial\nversion: 1\nconcurrency: 1\nsteps:\n  s:\n    uses: t.slow\n    with: { ms: 50 }\n";
    o.publish(serial, "serial.yaml", "tester").await.unwrap();
    let first = run(&o, "serial", json!({})).await;
    let second = run(&o, "serial", json!({})).await;
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(
        second.status,
        RunStatus::Queued,
        "over the playbook's limit, a run queues"
    );
    let a = finish(&o, &first.id).await;
    let b = finish(&o, &second.id).await;
    assert_eq!(b.status, RunStatus::Succeeded);
    assert!(
        b.started_at.unwrap() >= a.finished_at.unwrap(),
        "the queued run starts when the first ends"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_webhook_events_schedules_and_manual() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let hooked = "name: hooked\nversion: 1\non:\n  webhook: { input: payload }\n  manual: false\ninputs:\n  payload: { type: object }\nsteps:\n  s: { uses: t.echo, with: { got: \"${{ inputs.payload.ip }}\" } }\n";
    let published = o.publish(hooked, "hooked.yaml", "tester").await.unwrap();
    assert!(published.hook_secret.is_some());
    let r = o.webhook("hooked", json!({"ip": "9.9.9.9"})).await.unwrap();
    assert_eq!(r.trigger, TriggerKind::Webhook);
    finish(&o, &r.id).await;
    assert_eq!(
        step(&steps(&o, &r.id).await, "s").output.as_ref().unwrap()["got"],
        "9.9.9.9"
    );
    let refused = o
        .start_run(StartRun {
            playbook: "hooked".into(),
            version: None,
            inputs: json!({}),
            trigger: TriggerKind::Manual,
            actor: "t".into(),
            tlp: Default::default(),
        })
        .await;
    assert!(matches!(refused, Err(StartError::NotTriggerable { .. })));

    let alerted = r#"name: on-alert
version: 1
on:
  event: { event: alert.created, if: "${{ event.severity == 'high' }}", input: alert }
inputs:
  alert: { type: object }
steps:
  s: { uses: t.echo, with: { rule: "${{ inputs.alert.rule }}" } }
"#;
    o.publish(alerted, "alerted.yaml", "tester").await.unwrap();
    assert!(
        o.emit(
            "alert.created",
            json!({"severity": "low", "rule": "x"}),
            "siem"
        )
        .await
        .unwrap()
        .is_empty()
    );
    let started = o
        .emit(
            "alert.created",
            json!({"severity": "high", "rule": "ssh-brute"}),
            "siem",
        )
        .await
        .unwrap();
    assert_eq!(started.len(), 1);
    finish(&o, &started[0].id).await;
    assert_eq!(
        step(&steps(&o, &started[0].id).await, "s")
            .output
            .as_ref()
            .unwrap()["rule"],
        "ssh-brute"
    );

    let ticking = "name: ticking\nversion: 1\non:\n  schedule: \"* * * * * *\"\nsteps:\n  s: { uses: t.echo }\n";
    o.publish(ticking, "ticking.yaml", "tester").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let runs = o
        .store()
        .runs(&qila_store::RunFilter {
            playbook: Some("ticking".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        runs.len() >= 2,
        "a schedule every second fired {} times in 2.5 s",
        runs.len()
    );
    assert!(
        runs.iter()
            .all(|r| r.trigger == TriggerKind::Schedule && r.started_by.starts_with("schedule@"))
    );
    let mut seconds: Vec<i64> = runs.iter().map(|r| r.created_at / 1000).collect();
    seconds.dedup();
    assert!(
        seconds.len() >= runs.len() - 1,
        "no second fired twice: {seconds:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_immutable_and_runs_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let v1 = "name: v\nversion: 1\nsteps:\n  gate:\n    uses: core.approval\n    with: { message: m, approvers: [\"role:analyst\"] }\noutputs:\n  which: one\n";
    let v2 = v1.replace("which: one", "which: two");
    assert_eq!(
        o.publish(v1, "v.yaml", "t").await.unwrap().version.version,
        1
    );
    assert!(!o.publish(v1, "v.yaml", "t").await.unwrap().created);
    let r1 = run(&o, "v", json!({})).await;
    assert_eq!(
        o.publish(&v2, "v.yaml", "t").await.unwrap().version.version,
        2
    );
    let r2 = run(&o, "v", json!({})).await;
    assert_eq!((r1.version, r2.version), (1, 2));
    let analyst = Approver {
        name: "ann".into(),
        role: "analyst".into(),
    };
    for r in [&r1, &r2] {
        wait_until(&o, &r.id, |s| s.contains_key(&("gate".into(), -1))).await;
        o.decide(&r.id, "gate", true, None, &analyst).await.unwrap();
    }
    assert_eq!(finish(&o, &r1.id).await.outputs.unwrap()["which"], "one");
    assert_eq!(finish(&o, &r2.id).await.outputs.unwrap()["which"], "two");
    if !on_postgres() {
        // On PostgreSQL the same guard is a trigger, checked by `host/store/tests/postgres_schema.rs`.
        let update = sqlx_update(o.store()).await;
        assert!(update.contains("immutable"), "{update}");
    }

    match o
        .publish(
            "name: broken\nversion: 1\nsteps:\n  a:\n    uses: t.nope\n",
            "broken.yaml",
            "t",
        )
        .await
    {
        Err(PublishError::Invalid(d)) => assert!(d.to_string().contains("broken.yaml:5:"), "{d}"),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

async fn sqlx_update(store: &Store) -> String {
    let path = store.path().expect("an SQLite store");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite:{}",
        path.display()
    ))
    .await
    .expect("a second connection");
    match sqlx::query("UPDATE playbook_versions SET source = 'x'")
        .execute(&mut conn)
        .await
    {
        Ok(_) => "updated".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_schedule_neither_misses_nor_doubles_a_firing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ticking = "name: ticking\nversion: 1\non:\n  schedule: \"* * * * * *\"\nsteps:\n  s: { uses: t.echo }\n";
    let first = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = dir.path().to_owned();
    first.block_on(async {
        let o = start(&path, Arc::default()).await;
        o.publish(ticking, "ticking.yaml", "tester").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2200)).await;
    });
    // Killed: nothing fires for two seconds.
    first.shutdown_background();
    std::thread::sleep(Duration::from_millis(2000));
    let second = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async move {
        let o = start(dir.path(), Arc::default()).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let runs = o
            .store()
            .runs(&qila_store::RunFilter {
                playbook: Some("ticking".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut fired: Vec<i64> = runs
            .iter()
            .map(|r| {
                r.started_by
                    .strip_prefix("schedule@")
                    .expect("a scheduled run")
                    .parse()
                    .unwrap()
            })
            .collect();
        fired.sort_unstable();
        assert!(fired.len() >= 5, "{fired:?}");
        let gaps: Vec<i64> = fired.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|&g| g == 1000),
            "one firing per second, none missed or doubled: {fired:?}"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn tlp_red_data_is_refused_to_a_plugin_limited_to_amber_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(Exec::default());
    let o = start(dir.path(), exec.clone()).await;
    let yaml = r#"name: flow
version: 1
inputs:
  ip: { type: string }
  case: { type: object, default: { id: 1 } }
steps:
  local: { uses: t.echo, with: { v: "${{ inputs.ip }}" } }
  share:
    needs: [local]
    uses: ext.echo
    with: { v: "${{ steps.local.output.v }}" }
  harmless: { uses: ext.echo, with: { v: "static" } }
  labelled: { uses: ext.echo, with: { c: "${{ inputs.case }}" } }
"#;
    o.publish(yaml, "flow.yaml", "tester").await.unwrap();
    let request = |tlp: &[(&str, qila_model::Tlp)], case: Value| StartRun {
        playbook: "flow".into(),
        version: None,
        inputs: json!({"ip": "192.0.2.1", "case": case}),
        trigger: TriggerKind::Manual,
        actor: "tester".into(),
        tlp: tlp.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    let red = o
        .start_run(request(&[("ip", qila_model::Tlp::Red)], json!({"id": 1})))
        .await
        .unwrap();
    let done = finish(&o, &red.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    let s = steps(&o, &red.id).await;
    let share = step(&s, "share");
    assert_eq!(share.status, StepStatus::Failed);
    assert_eq!(share.error_kind.as_deref(), Some("denied"));
    let message = share.error.as_deref().unwrap();
    for part in [
        "TLP:RED",
        "plugin `ext`",
        "up to TLP:AMBER",
        "inputs.ip",
        "marked by the caller",
        "via steps.local",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(exec.calls_of("share").is_empty(), "the plugin must not run");
    assert_eq!(step(&s, "harmless").status, StepStatus::Succeeded);
    assert_eq!(
        exec.calls_of("local").len(),
        1,
        "a plugin without a limit gets the data"
    );

    // A label inside a value counts like a mark; without either, the data flows.
    let labelled = o
        .start_run(request(&[], json!({"id": 2, "tlp": "red"})))
        .await
        .unwrap();
    let s = steps(&o, &finish(&o, &labelled.id).await.id).await;
    assert_eq!(step(&s, "labelled").error_kind.as_deref(), Some("denied"));
    assert_eq!(step(&s, "share").status, StepStatus::Succeeded);
    let amber = o
        .start_run(request(&[("*", qila_model::Tlp::Amber)], json!({"id": 3})))
        .await
        .unwrap();
    assert_eq!(finish(&o, &amber.id).await.status, RunStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_expressions_fail_their_step_and_the_run_follows_its_error_edges() {
    let dir = tempfile::tempdir().unwrap();
    let o = start(dir.path(), Arc::default()).await;
    let yaml = r#"name: hostile
version: 1
steps:
  boom:
    uses: t.echo
    with: { v: "${{ ([1] * 1000000000) | list }}" }
    on_error: report
  spin:
    uses: t.echo
    if: "${{ (([1] * 1000000) | sum) > 0 }}"
    on_error: continue
  big:
    uses: t.echo
    with: { deep: { text: "${{ 'x' * 1000 }}${{ ('y' * 1000000) * 2 }}" } }
    on_error: continue
  after:
    needs: [spin, big]
    uses: t.echo
    with: { spin: "${{ steps.spin.status }}", big: "${{ steps.big.status }}" }
  report:
    uses: t.echo
    with: { kind: "${{ error.kind }}", message: "${{ error.message }}" }
"#;
    o.publish(yaml, "hostile.yaml", "tester").await.unwrap();
    let r = run(&o, "hostile", json!({})).await;
    let done = finish(&o, &r.id).await;
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let s = steps(&o, &r.id).await;
    let boom = step(&s, "boom");
    assert_eq!(boom.status, StepStatus::Failed);
    assert_eq!(boom.error_kind.as_deref(), Some("expression"));
    assert_eq!(
        boom.error.as_deref(),
        Some("expression: with.v: expression exceeded its memory limit of 16 MiB")
    );
    let report = step(&s, "report");
    assert_eq!(report.status, StepStatus::Succeeded);
    assert_eq!(
        report.output.as_ref().unwrap(),
        &json!({"kind": "expression", "message": "expression: with.v: expression exceeded its memory limit of 16 MiB"})
    );
    assert_eq!(
        step(&s, "spin").error.as_deref(),
        Some("expression: if: expression exceeded its work limit of 100,000,000 instructions")
    );
    assert_eq!(
        step(&s, "big").error.as_deref(),
        Some("expression: with.deep.text: expression exceeded its output limit of 1 MiB")
    );
    assert_eq!(
        step(&s, "after").output.as_ref().unwrap(),
        &json!({"spin": "failed", "big": "failed"})
    );
}

/// Starts an orchestrator on `dir` in a runtime of its own, lets `f` drive it, then drops the runtime as a killed
/// process would be: what was in flight is left as it was.
fn process<T>(dir: &Path, f: impl AsyncFnOnce(Orchestrator) -> T) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let o = start(dir, Arc::default()).await;
        f(o).await
    });
    rt.shutdown_background();
    out
}

#[test]
fn a_run_in_flight_at_three_deaths_in_a_row_is_failed_not_resumed_a_third_time() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: killer\nversion: 1\nsteps:\n  hang: { uses: t.block }\n  gate:\n    uses: core.approval\n    with: { message: m, approvers: [\"role:analyst\"] }\n";
    let id = process(dir.path(), async |o| {
        o.publish(yaml, "killer.yaml", "tester").await.unwrap();
        let r = run(&o, "killer", json!({})).await;
        wait_until(&o, &r.id, |s| {
            s.get(&("hang".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Running)
                && s.get(&("gate".into(), -1))
                    .is_some_and(|r| r.status == StepStatus::Waiting)
        })
        .await;
        r.id
    });
    // Two more processes resume it and die while `hang` is in flight again.
    for attempt in [2, 3] {
        process(dir.path(), async |o| {
            wait_until(&o, &id, |s| {
                s.get(&("hang".into(), -1))
                    .is_some_and(|r| r.attempt == attempt && r.status == StepStatus::Running)
            })
            .await;
        });
    }
    // The fourth start does not resume it a third time: it fails it, and serves.
    process(dir.path(), async |o| {
        let done = finish(&o, &id).await;
        assert_eq!(done.status, RunStatus::Failed);
        let error = done.error.unwrap_or_default();
        assert!(
            error.starts_with(
                "not resumed: the process stopped 3 times in a row while this run was in flight"
            ),
            "{error}"
        );
        assert_eq!(step(&steps(&o, &id).await, "hang").attempt, 3);
        // The orchestrator still runs playbooks.
        let r = run(&o, "killer", json!({})).await;
        wait_until(&o, &r.id, |s| {
            s.get(&("gate".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Waiting)
        })
        .await;
    });
}

#[test]
fn a_run_that_only_waits_is_resumed_after_any_number_of_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: patient\nversion: 1\nsteps:\n  gate:\n    uses: core.approval\n    with: { message: m, approvers: [\"role:analyst\"] }\n";
    let id = process(dir.path(), async |o| {
        o.publish(yaml, "patient.yaml", "tester").await.unwrap();
        let r = run(&o, "patient", json!({})).await;
        wait_until(&o, &r.id, |s| {
            s.get(&("gate".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Waiting)
        })
        .await;
        r.id
    });
    for _ in 0..4 {
        process(dir.path(), async |o| {
            // Resumed, it finds nothing to do: the start is never counted against it, however soon it dies.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let row = o.store().run(&id).await.unwrap().unwrap();
            assert_eq!((row.status, row.resumes), (RunStatus::Running, 0));
        });
    }
}

#[test]
fn a_graceful_shutdown_takes_back_the_start_it_counted() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "name: slow\nversion: 1\nsteps:\n  hang: { uses: t.block }\n";
    let id = process(dir.path(), async |o| {
        o.publish(yaml, "slow.yaml", "tester").await.unwrap();
        let r = run(&o, "slow", json!({})).await;
        wait_until(&o, &r.id, |s| {
            s.get(&("hang".into(), -1))
                .is_some_and(|r| r.status == StepStatus::Running)
        })
        .await;
        r.id
    });
    // Three starts in a row each resume it and stop gracefully while it is in flight: none is a death.
    for attempt in [2, 3, 4] {
        process(dir.path(), async |o| {
            wait_until(&o, &id, |s| {
                s.get(&("hang".into(), -1))
                    .is_some_and(|r| r.attempt == attempt && r.status == StepStatus::Running)
            })
            .await;
            assert_eq!(o.store().run(&id).await.unwrap().unwrap().resumes, 1);
            o.shutdown(Duration::from_millis(10)).await;
            assert_eq!(o.store().run(&id).await.unwrap().unwrap().resumes, 0);
        });
    }
    process(dir.path(), async |o| {
        wait_until(&o, &id, |s| step(s, "hang").attempt == 5).await;
        assert_eq!(
            o.store().run(&id).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    });
}
