//! Hostile expressions and runs that kill their process, against a real `qila serve`: an expression that would
//! exhaust memory or CPU fails its step with a clear error while the server keeps answering, and a run in flight
//! at three deaths in a row is failed at the next start instead of resumed again.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Api, Server, data_dir_with_plugins, write};

/// Each item's `with` runs an expression that does as much work as it is allowed; `last` makes as much memory as
/// it is allowed; `handler` sees the error.
const GREEDY: &str = r#"name: greedy
version: 1
inputs:
  n: { type: integer, default: 300 }
steps:
  spin:
    for_each: { items: "${{ range(inputs.n) | list }}", concurrency: 8 }
    uses: enrich.classify-ip
    with: { ip: "${{ '10.0.0.1' if (([1] * 1000000) | sum) > 0 else '' }}" }
    on_error: continue
  last:
    needs: [spin]
    uses: enrich.classify-ip
    with: { ip: "${{ (['1.2.3.4'] * 1000000000) | list }}" }
    on_error: handler
  handler:
    uses: enrich.classify-ip
    with: { ip: "10.0.0.2" }
outputs:
  spin: "${{ steps.spin.status }}"
"#;

/// Times one request; the status and body.
fn timed(api: &Api, method: &str, path: &str) -> (Duration, u16, Value) {
    let started = Instant::now();
    let (status, body) = api.call(method, path, None);
    (started.elapsed(), status, body)
}

#[test]
fn the_worst_expressions_fail_their_steps_while_health_and_cancel_answer_at_once() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start(data.path());
    let admin = server.admin.clone().unwrap();
    let api = Api::new(&server.base, &admin);
    let (status, body) = api.call(
        "POST",
        "/api/v1/playbooks",
        Some(json!({"source": GREEDY, "file": "greedy.yaml"})),
    );
    assert_eq!(status, 201, "{body}");

    // Four runs of 300 items, each item burning its whole work budget: tens of seconds of CPU in all.
    let ids: Vec<String> = (0..4)
        .map(|_| {
            let (status, body) =
                api.call("POST", "/api/v1/runs", Some(json!({"playbook": "greedy"})));
            assert_eq!(status, 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (took, status, body) = timed(&api, "GET", "/api/v1/health");
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "health took {slowest:?} while expressions ran"
    );
    let (took, status, body) = timed(&api, "POST", &format!("/api/v1/runs/{}/cancel", ids[0]));
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    let cancelled = api.wait_for(&ids[0], "cancelled", |r| r["run"]["status"] == "cancelled");
    assert_eq!(cancelled["run"]["status"], "cancelled");

    let done = api.wait_for(&ids[1], "its end", |r| {
        matches!(r["run"]["status"].as_str(), Some("succeeded" | "failed"))
    });
    let steps = done["steps"].as_array().unwrap();
    let find = |id: &str| {
        steps
            .iter()
            .find(|s| s["step_id"] == id && s["item"] == -1)
            .unwrap_or_else(|| panic!("no step {id}"))
    };
    let spin = find("spin");
    assert_eq!(spin["status"], "failed", "{spin}");
    assert_eq!(
        spin["error"],
        "expression: item 0 failed: with.ip: expression exceeded its work limit of 100,000,000 instructions"
    );
    let last = find("last");
    assert_eq!(
        last["error"],
        "expression: with.ip: expression exceeded its memory limit of 16 MiB"
    );
    assert_eq!(find("handler")["status"], "succeeded");
    assert_eq!(done["run"]["status"], "succeeded", "{}", done["run"]);

    // A restart serves at once, whatever was still running.
    server.kill();
    let started = Instant::now();
    let server = Server::start(data.path());
    let api = Api::new(&server.base, &admin);
    let (status, _) = api.call("GET", "/api/v1/health", None);
    assert_eq!(status, 200);
    eprintln!("restarted and answered in {:?}", started.elapsed());
}

/// `probe.clock` sleeps for as long as it is asked: a step that is in flight when the process is killed.
const HANG: &str = r#"name: hang
version: 1
steps:
  nap:
    uses: probe.clock
    with: { sleep_ms: 600000 }
"#;

fn start_dev(data: &Path) -> Server {
    Server::start_with(data, &["--dev"])
}

fn wait_running_attempt(api: &Api, id: &str, attempt: i64) {
    api.wait_for(id, &format!("attempt {attempt} of nap running"), |r| {
        r["steps"].as_array().is_some_and(|steps| {
            steps.iter().any(|s| {
                s["step_id"] == "nap" && s["status"] == "running" && s["attempt"] == attempt
            })
        })
    });
}

#[test]
fn a_run_in_flight_at_three_deaths_in_a_row_is_failed_and_the_server_serves() {
    let data = data_dir_with_plugins(&[("probe.wasm", Path::new(qila_e2e::HOSTILE_PROBE))]);
    write(
        data.path(),
        "qila.yaml",
        "plugins:\n  probe:\n    limits: { timeout: 20m }\n",
    );
    let mut server = start_dev(data.path());
    let admin = server.admin.clone().unwrap();
    let api = Api::new(&server.base, &admin);
    let (status, body) = api.call(
        "POST",
        "/api/v1/playbooks",
        Some(json!({"source": HANG, "file": "hang.yaml"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = api.call("POST", "/api/v1/runs", Some(json!({"playbook": "hang"})));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    wait_running_attempt(&api, &id, 1);
    server.kill();

    // Resumed twice, and killed again each time while the step is in flight.
    for attempt in [2, 3] {
        let mut server = start_dev(data.path());
        let api = Api::new(&server.base, &admin);
        wait_running_attempt(&api, &id, attempt);
        server.kill();
    }

    // The fourth start fails it instead of resuming it a third time, and serves.
    let server = start_dev(data.path());
    let api = Api::new(&server.base, &admin);
    let run = api.wait_for(&id, "failed", |r| r["run"]["status"] == "failed");
    let error = run["run"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(
            "not resumed: the process stopped 3 times in a row while this run was in flight"
        ),
        "{error}"
    );
    let (status, _) = api.call("GET", "/api/v1/health", None);
    assert_eq!(status, 200);
    // Runs of the same playbook still start.
    let (status, body) = api.call("POST", "/api/v1/runs", Some(json!({"playbook": "hang"})));
    assert_eq!(status, 201, "{body}");
    wait_running_attempt(&api, body["id"].as_str().unwrap(), 1);
}
