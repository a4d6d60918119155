//! `qila serve` as an operator runs it: a real process on a free port, driven over HTTP and with the CLI, killed
//! with SIGKILL and restarted.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Api, Server, code, qila, run};

#[test]
fn a_webhook_starts_a_run_that_an_analyst_approves_with_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let admin = server
        .admin
        .clone()
        .expect("the first start prints an admin token");
    let api = Api::new(&server.base, &admin);

    let (status, body) = api.call("GET", "/api/v1/playbooks", None);
    assert_eq!(status, 200);
    let names: Vec<&str> = body["playbooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"approve-block"),
        "bundled playbooks are published: {names:?}"
    );

    let (out, secret, stderr) = run(qila(data.path()).args(["playbook", "hook", "approve-block"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let secret = secret.trim().to_owned();
    let hook = |header: (&str, &str), body: &str| {
        api.rt.block_on(async {
            let resp = api
                .http
                .post(format!("{}/api/v1/hooks/approve-block", server.base))
                .header(header.0, header.1)
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        })
    };
    assert_eq!(
        hook(("x-qila-hook-secret", "wrong"), r#"{"ip":"9.9.9.9"}"#).0,
        401
    );
    let (status, started) = hook(
        ("x-qila-hook-secret", &secret),
        r#"{"ip":"9.9.9.9","reason":"sensor 7"}"#,
    );
    assert_eq!(status, 202, "{started}");
    let id = started["run_id"].as_str().unwrap().to_owned();
    api.wait_for(&id, "its approval", |b| {
        b["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["step_id"] == "approve" && s["status"] == "waiting")
        })
    });

    let client = |token: &str| {
        let mut cmd = qila(data.path());
        cmd.env("QILA_SERVER", &server.base)
            .env("QILA_TOKEN", token);
        cmd
    };
    let (out, viewer, _) =
        run(qila(data.path()).args(["token", "create", "--role", "viewer", "--name", "vic"]));
    assert_eq!(code(&out), 0);
    let (out, _, stderr) = run(client(viewer.trim()).args(["approve", &id, "approve"]));
    assert_eq!(code(&out), 1, "a viewer may not approve: {stderr}");
    assert!(stderr.contains("role"), "{stderr}");
    let (out, analyst, _) =
        run(qila(data.path()).args(["token", "create", "--role", "analyst", "--name", "ann"]));
    assert_eq!(code(&out), 0);
    let (out, stdout, stderr) =
        run(client(analyst.trim()).args(["approve", &id, "approve", "--comment", "confirmed"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let done = api.wait_for(&id, "its end", |b| b["run"]["status"] == "succeeded");
    assert_eq!(done["run"]["outputs"]["decision"], "blocked");
    assert_eq!(done["run"]["outputs"]["request"]["approved_by"], "ann");
    let (out, stdout, stderr) = run(client(analyst.trim()).args(["runs", "show", &id]));
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
}

const CHAIN: &str = r#"name: chain4
version: 1
inputs:
  n: { type: integer }
steps:
  a:
    uses: core.echo
    with: { n: "${{ inputs.n }}" }
  nap:
    needs: [a]
    uses: core.sleep
    with: { duration: 300ms }
  b:
    needs: [nap]
    uses: enrich.classify-ip
    with: { ip: 192.0.2.1 }
  c:
    needs: [b]
    uses: core.echo
    with: { n: "${{ steps.a.output.n }}", kind: "${{ steps.b.output.kind }}" }
outputs:
  n: "${{ steps.c.output.n }}"
"#;

fn count(api: &Api, status: &str) -> usize {
    let (_, body) = api.call(
        "GET",
        &format!("/api/v1/runs?playbook=chain4&status={status}&limit=1000"),
        None,
    );
    body["runs"].as_array().map_or(0, Vec::len)
}

#[test]
fn after_kill_dash_nine_every_run_finishes_and_no_result_is_recorded_twice() {
    const RUNS: usize = 1000;
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let admin = server.admin.clone().unwrap();
    let api = Api::new(&server.base, &admin);
    let (status, body) = api.call(
        "POST",
        "/api/v1/playbooks",
        Some(json!({"source": CHAIN, "file": "chain4.yaml"})),
    );
    assert_eq!(status, 201, "{body}");

    // Start the runs, 16 requests at a time.
    let ids: Vec<String> = api.rt.block_on(async {
        use std::sync::Arc;
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for n in 0..RUNS {
            let (http, base, token, sem) = (
                api.http.clone(),
                server.base.clone(),
                admin.clone(),
                sem.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                let resp = http
                    .post(format!("{base}/api/v1/runs"))
                    .bearer_auth(token)
                    .json(&json!({"playbook": "chain4", "inputs": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 201);
                resp.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids
    });
    assert_eq!(ids.len(), RUNS);

    // Pull the plug while some runs have finished and others are mid-way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&api, "succeeded") < 20 {
        assert!(Instant::now() < deadline, "no run finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let finished_before = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut store = sqlite(data.path()).await;
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'")
                .fetch_one(&mut store)
                .await
                .unwrap();
            drop(store);
            n as usize
        })
    };
    assert!(
        finished_before < RUNS,
        "the kill came after every run had finished; nothing to resume"
    );

    // Restart on the same data directory: every run finishes.
    let restarted = Instant::now();
    let server = Server::start(data.path());
    assert!(server.admin.is_none(), "the second start creates no token");
    let api = Api::new(&server.base, &admin);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = count(&api, "succeeded");
        if done == RUNS {
            break;
        }
        assert_eq!(
            count(&api, "failed"),
            0,
            "no run fails because of the crash"
        );
        assert!(
            Instant::now() < deadline,
            "only {done} of {RUNS} runs finished after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{finished_before} of {RUNS} runs had finished at the kill; the rest finished {:?} after the restart",
        restarted.elapsed()
    );

    // No step's final result is recorded twice, and every step of every run succeeded once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut store = sqlite(data.path()).await;
        let doubled: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT run_id, step_id, COUNT(*) FROM transitions WHERE step_id IS NOT NULL \
             AND status IN ('succeeded', 'failed', 'skipped', 'cancelled') GROUP BY run_id, step_id, item HAVING COUNT(*) > 1",
        )
        .fetch_all(&mut store)
        .await
        .unwrap();
        assert!(doubled.is_empty(), "results recorded twice: {doubled:?}");
        let succeeded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM steps WHERE status = 'succeeded'")
            .fetch_one(&mut store)
            .await
            .unwrap();
        assert_eq!(succeeded as usize, RUNS * 4);
        let reclaimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM steps WHERE attempt > 1").fetch_one(&mut store).await.unwrap();
        eprintln!("{reclaimed} step(s) were claimed again after the kill");
    });
    for id in ids.iter().step_by(97) {
        let body = api.run(id);
        assert_eq!(body["run"]["status"], "succeeded", "{body}");
    }
}

/// A connection of its own to the SQLite database of the data directory `data`.
async fn sqlite(data: &std::path::Path) -> sqlx::SqliteConnection {
    let db = data.join(qila_store::DATABASE_FILE);
    <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap()
}
