//! Hostile playbook documents through `qila validate` and `POST /api/v1/playbooks` (issue 11): an alias bomb
//! stops at the byte budget in little time and memory, a NUL and a non-UTF-8 byte are errors at their place, a
//! 40,000-step `needs:` chain validates in linear time, and the server keeps serving throughout.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Api, Server, code, qila, root, run, write};

fn hello() -> Vec<u8> {
    std::fs::read(root().join("playbooks/hello.yaml")).expect("playbooks/hello.yaml")
}

/// The reproduction of the issue: a 100 KB string anchored and aliased in five nested levels of ten (10 GB
/// expanded; it reached 3.9 GB in `qila validate` and 5.9 GB through the API).
fn string_bomb() -> String {
    let mut s = format!(
        "name: bomb\nversion: 1\nx0: &a0 \"{}\"\n",
        "a".repeat(100_000)
    );
    for level in 1..=5 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        s.push_str(&format!("x{level}: &a{level} [{items}]\n"));
    }
    s.push_str("steps: { s: { uses: core.echo, with: { v: *a5 } } }\n");
    s
}

/// Ten levels of ten aliases of a ten-item list: 10^11 small nodes.
fn node_bomb() -> String {
    let mut s = String::from("name: bomb\nversion: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let items = vec![format!("*a{}", i - 1); 10].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{items}]\n"));
    }
    s.push_str("steps: { s: { uses: core.echo, with: { v: *a9 } } }\n");
    s
}

const BYTES_ERROR: &str = "document too large (more than 16777216 bytes after expanding aliases)";

/// Runs `cmd` to the end; its standard output, wall time and peak resident memory (from `wait4`, which
/// reaps it: the `Child` is never waited on).
#[allow(clippy::zombie_processes)]
#[expect(unsafe_code, reason = "wait4 reads the child's peak RSS")]
fn measured(cmd: &mut Command) -> (i32, String, Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start qila");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: `rusage` is plain data that `wait4` fills in; `pid` is our child, reaped here once.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let took = started.elapsed();
    let out = reader.join().unwrap_or_default();
    let exit = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux reports `ru_maxrss` in KiB.
    (exit, out, took, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn validate_stops_alias_bombs_in_little_time_and_memory_and_places_nul_and_bad_bytes() {
    let data = tempfile::tempdir().unwrap();
    let hello = write(
        data.path(),
        "hello.yaml",
        &String::from_utf8(hello()).unwrap(),
    );
    // The first run compiles the bundled plugins into the cache: not what is measured.
    let (out, _, stderr) = run(qila(data.path()).arg("validate").arg(&hello));
    assert_eq!(code(&out), 0, "{stderr}");

    for (name, source, message) in [
        (
            "strings.yaml",
            string_bomb(),
            format!("6:10: {BYTES_ERROR}"),
        ),
        (
            "nodes.yaml",
            node_bomb(),
            "document too large (its aliases stand for more than 200000 nodes)".to_owned(),
        ),
    ] {
        let path = write(data.path(), name, &source);
        let (exit, stdout, took, peak) = measured(qila(data.path()).arg("validate").arg(&path));
        assert_eq!(exit, 2, "{stdout}");
        assert!(
            stdout.starts_with(&format!("{}:", path.display())) && stdout.contains(&message),
            "{stdout}"
        );
        assert!(took < Duration::from_secs(5), "{name}: {took:?}");
        assert!(peak < 100 << 20, "{name}: peak RSS {peak} bytes");
    }

    let nul = write(
        data.path(),
        "nul.yaml",
        "name: x\nversion: 1\nsteps:\n  a: {uses: core.echo}\n\0  b: {uses: core.echo}\n",
    );
    let latin1 = data.path().join("latin1.yaml");
    std::fs::write(
        &latin1,
        b"name: x\nversion: 1\ndescription: caf\xe9\nsteps:\n  a: {uses: core.echo}\n",
    )
    .unwrap();
    let (out, stdout, stderr) = run(qila(data.path()).arg("validate").arg(&nul).arg(&latin1));
    assert_eq!(code(&out), 2, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:5:1: a NUL character is not allowed in YAML (inside a double-quoted string, write `\\0`)",
                nul.display()
            ),
            format!(
                "{}:3:17: not UTF-8 text: an invalid UTF-8 sequence (0xE9) at byte 35; a playbook must be UTF-8",
                latin1.display()
            ),
        ]
    );
}

#[test]
fn validate_checks_a_40000_step_needs_chain_in_linear_time() {
    let data = tempfile::tempdir().unwrap();
    let mut s = String::from("name: chain\nversion: 1\nsteps:\n  s0: {uses: core.echo}\n");
    for i in 1..40_000 {
        s.push_str(&format!("  s{i}: {{uses: core.echo, needs: s{}}}\n", i - 1));
    }
    s.push_str(
        "  last: {uses: core.echo, needs: s39999, with: {first: \"${{ steps.s0.output }}\"}}\n",
    );
    let path = write(data.path(), "chain.yaml", &s);
    let started = Instant::now();
    let (out, _, stderr) = run(qila(data.path()).arg("validate").arg(&path));
    // 48 s in a release build before (quadratic); under a second in a debug build now.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code(&out), 0, "{stderr}");
    assert!(stderr.contains("ok (chain v1, 40001 steps)"), "{stderr}");
}

fn first_diagnostic(body: &Value) -> &Value {
    &body["error"]["diagnostics"][0]
}

#[test]
fn publish_refuses_hostile_documents_with_positions_and_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let api = Api::new(&server.base, server.admin.as_deref().expect("admin token"));
    let yaml = |bytes: Vec<u8>| {
        api.send(
            "POST",
            "/api/v1/playbooks?file=bomb.yaml",
            Some((bytes, "application/yaml")),
            &[],
        )
    };

    let started = Instant::now();
    let (status, body) = yaml(string_bomb().into_bytes());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status, 422, "{body}");
    let d = first_diagnostic(&body);
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(6), Some(10)),
        "{body}"
    );
    assert_eq!(d["message"], BYTES_ERROR);

    // The same through the JSON form, and the small-node variant.
    let (status, body) = api.call(
        "POST",
        "/api/v1/playbooks",
        Some(json!({"source": node_bomb(), "file": "nodes.yaml"})),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        first_diagnostic(&body)["text"],
        "nodes.yaml:8:10: document too large (its aliases stand for more than 200000 nodes)"
    );

    let (status, body) = yaml(b"name: x\nversion: 1\ndescription: caf\xe9\nsteps: {}\n".to_vec());
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        first_diagnostic(&body)["text"],
        "bomb.yaml:3:17: not UTF-8 text: an invalid UTF-8 sequence (0xE9) at byte 35; a playbook must be UTF-8"
    );
    let (status, body) = api.call(
        "POST",
        "/api/v1/playbooks",
        Some(json!({"source": "name: x\nversion: 1\n\u{0}steps: {}\n", "file": "nul.yaml"})),
    );
    assert_eq!(status, 422, "{body}");
    let d = first_diagnostic(&body);
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(3), Some(1)),
        "{body}"
    );

    // The largest document the body limit lets through publishes; one byte more is a 413 with the error body.
    let mut big = String::from("name: big\nversion: 1\nsteps:\n  s0: {uses: core.echo}\n");
    let mut i = 1;
    loop {
        let step = format!(
            "  s{i}: {{uses: core.echo, needs: s{}, with: {{n: {i}}}}}\n",
            i - 1
        );
        if big.len() + step.len() > 1024 * 1024 {
            break;
        }
        big.push_str(&step);
        i += 1;
    }
    let (status, body) = yaml(big.clone().into_bytes());
    assert_eq!(status, 201, "{body}");
    big.push_str(&"#".repeat(1024 * 1024 + 1 - big.len()));
    let (status, body) = yaml(big.into_bytes());
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");

    let (status, _) = api.call("GET", "/api/v1/health", None);
    assert_eq!(status, 200);
    // And a real playbook still publishes.
    let (status, body) = yaml(hello());
    assert!(status == 200 || status == 201, "{status} {body}");
}
