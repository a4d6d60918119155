//! A store that cannot write answers `503` with `Retry-After`, says so on the health routes, and heals by itself:
//! the real `qila serve`, its data directory made read-only while another process holds the database's write
//! lock (as a backup tool or an operator's `sqlite3` would), then given back.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;

use super::support::{Api, Server};

/// The service account the server runs as when the test is root (root ignores file permissions).
const NOBODY: (u32, u32) = (65534, 65534);

#[expect(unsafe_code, reason = "geteuid tells whether the test runs as root")]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes `dir` and every file in it read-only (`writable: false`) or writable again.
fn set_writable(dir: &Path, writable: bool) {
    let mode = |is_dir: bool| match (is_dir, writable) {
        (true, true) => 0o755,
        (true, false) => 0o555,
        (false, true) => 0o644,
        (false, false) => 0o444,
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let is_dir = entry.file_type().unwrap().is_dir();
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode(is_dir)))
            .unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode(true))).unwrap();
}

/// An NDJSON batch of `n` events of batch `batch`, each with a message of its own.
fn batch(batch: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            json!({"message": format!("ro-probe b{batch} e{i}"), "host": "ro-test"}).to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

fn ingest(api: &Api, token: &str, body: Vec<u8>) -> (u16, Value, Option<String>) {
    api.rt.block_on(async {
        let resp = api
            .http
            .post(format!("{}/api/v1/events", api.base))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            retry_after,
        )
    })
}

#[test]
#[expect(unsafe_code, reason = "chown of the test's data directory")]
fn a_store_that_cannot_write_answers_503_and_heals_with_no_event_lost() {
    let data = tempfile::tempdir().unwrap();
    let user = is_root().then_some(NOBODY);
    if let Some((uid, gid)) = user {
        let path = std::ffi::CString::new(data.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
    }
    let server = Server::start_as(data.path(), &[], user);
    let token = server.admin.clone().unwrap();
    let admin = Api::new(&server.base, &token);

    // A healthy store: events are taken, the server is ready.
    let (status, answer, _) = ingest(&admin, &token, batch(0, 5));
    assert_eq!(status, 200, "{answer}");
    let (status, ready) = admin.call("GET", "/api/v1/health/ready", None);
    assert_eq!(status, 200, "{ready}");

    // Another process takes the write lock and the data directory becomes read-only.
    let db = data.path().join("qila.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut locker = rt.block_on(async {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut c)
            .await
            .unwrap();
        c
    });
    set_writable(data.path(), false);

    // Events and orchestrator writes are refused with 503 + Retry-After and the API's error shape; each
    // refused batch is sent again later, as a client does.
    let mut refused = Vec::new();
    for b in 1..=3 {
        let (status, answer, retry_after) = ingest(&admin, &token, batch(b, 5));
        assert_eq!(status, 503, "batch {b}: {answer}");
        assert!(
            retry_after
                .as_deref()
                .is_some_and(|s| s.parse::<u64>().is_ok()),
            "batch {b}: Retry-After {retry_after:?}"
        );
        assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
        refused.push(b);
    }
    let (status, answer) = admin.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "during", "role": "viewer"})),
    );
    assert_eq!(status, 503, "{answer}");
    let started = Instant::now();
    let (status, ready) = admin.call("GET", "/api/v1/health/ready", None);
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["error"]["message"]
            .as_str()
            .unwrap()
            .contains("degraded"),
        "{ready}"
    );
    // Liveness and the overall health answer at once, and say which part is degraded.
    let (status, live) = admin.call("GET", "/api/v1/health/live", None);
    assert_eq!(status, 200, "{live}");
    let (status, health) = admin.call("GET", "/api/v1/health", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["parts"]["siem"]["status"], "degraded", "{health}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the health routes waited for the store: {:?}",
        started.elapsed()
    );

    // The store can write again: without a restart, every writer recovers.
    set_writable(data.path(), true);
    rt.block_on(async {
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        locker.close().await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    for b in refused {
        loop {
            let (status, answer, _) = ingest(&admin, &token, batch(b, 5));
            if status == 200 {
                assert_eq!(answer["accepted"], 5, "{answer}");
                break;
            }
            assert_eq!(status, 503, "{answer}");
            assert!(Instant::now() < deadline, "the SIEM never healed: {answer}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (status, answer) = admin.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "after", "role": "viewer"})),
    );
    assert_eq!(status, 201, "{answer}");
    // Readiness is probed at most once a second (a flood of checks costs one write a second): poll it.
    loop {
        let (status, ready) = admin.call("GET", "/api/v1/health/ready", None);
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {ready}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every event the server acknowledged is stored exactly once, and none of a refused attempt twice.
    let (status, found) = admin.call(
        "GET",
        "/api/v1/events?query=host%20%3D%20ro-test&limit=1000",
        None,
    );
    assert_eq!(status, 200, "{found}");
    let mut messages: Vec<String> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let raw: Value = serde_json::from_str(e["raw"].as_str().unwrap()).unwrap();
            raw["message"].as_str().unwrap().to_owned()
        })
        .collect();
    messages.sort();
    let mut expected: Vec<String> = (0..=3)
        .flat_map(|b| (0..5).map(move |i| format!("ro-probe b{b} e{i}")))
        .collect();
    expected.sort();
    assert_eq!(messages, expected, "{found}");
}
