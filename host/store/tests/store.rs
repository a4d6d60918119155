//! The store against a real SQLite file.

use qila_store::{RunRecord, RunStatus, StepRecord, StepStatus, Store};
use serde_json::json;

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        playbook: "demo".into(),
        playbook_version: 3,
        status: RunStatus::Running,
        inputs: json!({"ip": "10.0.0.1"}),
        outputs: None,
        error: None,
        created_at: 1_000,
        finished_at: None,
        steps: vec![],
    }
}

fn step(run_id: &str, id: &str, position: u32, status: StepStatus) -> StepRecord {
    StepRecord {
        run_id: run_id.into(),
        step_id: id.into(),
        position,
        action: "core.echo".into(),
        status,
        attempt: 1,
        input: None,
        output: None,
        error_kind: None,
        error: None,
        started_at: None,
        finished_at: None,
    }
}

#[tokio::test]
async fn transitions_are_coalesced_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let rec = store.recorder();
    rec.run_started(run("r1")).await.unwrap();
    rec.step(StepRecord {
        input: Some(json!({"a": 1})),
        started_at: Some(5),
        ..step("r1", "b", 1, StepStatus::Running)
    })
    .await
    .unwrap();
    rec.step(step("r1", "a", 0, StepStatus::Skipped))
        .await
        .unwrap();
    rec.step(StepRecord {
        output: Some(json!({"ok": true})),
        finished_at: Some(9),
        ..step("r1", "b", 1, StepStatus::Succeeded)
    })
    .await
    .unwrap();
    rec.run_finished(
        "r1".into(),
        RunStatus::Succeeded,
        Some(json!({"x": 1})),
        None,
        10,
    )
    .await
    .unwrap();
    rec.flush().await.unwrap();

    let got = store.run("r1").await.unwrap().unwrap();
    assert_eq!(got.status, RunStatus::Succeeded);
    assert_eq!(got.playbook_version, 3);
    assert_eq!(got.outputs, Some(json!({"x": 1})));
    assert_eq!(
        got.steps
            .iter()
            .map(|s| s.step_id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    let b = &got.steps[1];
    assert_eq!(b.status, StepStatus::Succeeded);
    assert_eq!(
        b.input,
        Some(json!({"a": 1})),
        "input of the running record survives the finished one"
    );
    assert_eq!(b.started_at, Some(5));
    assert_eq!(b.finished_at, Some(9));
    assert!(store.run("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn records_survive_reopening_and_list_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).await.unwrap();
        let rec = store.recorder();
        for (i, id) in ["r1", "r2", "r3"].iter().enumerate() {
            rec.run_started(RunRecord {
                created_at: i as i64,
                ..run(id)
            })
            .await
            .unwrap();
        }
        rec.flush().await.unwrap();
        store.close().await;
    }
    let store = Store::open(dir.path()).await.unwrap();
    let ids: Vec<_> = store
        .recent_runs(2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r3", "r2"]);
}

#[tokio::test]
async fn kv_is_namespaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    store.kv_set("p1", "k", b"v1").await.unwrap();
    store.kv_set("p2", "k", b"v2").await.unwrap();
    store.kv_set("p1", "k", b"v3").await.unwrap();
    assert_eq!(
        store.kv_get("p1", "k").await.unwrap().as_deref(),
        Some(&b"v3"[..])
    );
    assert_eq!(
        store.kv_get("p2", "k").await.unwrap().as_deref(),
        Some(&b"v2"[..])
    );
    store.kv_delete("p1", "k").await.unwrap();
    assert_eq!(store.kv_get("p1", "k").await.unwrap(), None);
}
