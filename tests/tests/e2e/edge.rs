//! The HTTP edge of a real `qila serve`, as an attacker meets it: raw TCP with malformed request lines, huge and
//! too many headers, raw 0xFF bytes, slow and half-sent heads, oversized bodies and wrong content types — every
//! answer is JSON with `error` and the server keeps answering `/api/v1/health`; and Standard Webhooks deliveries
//! signed by the PyPI `standardwebhooks` package (installed by this test into a virtual environment under
//! `target/`), accepted once, across a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Api, Server, code, qila, root, run, write};

/// The pinned sender library.
const STANDARDWEBHOOKS: &str = "1.3.0";

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Writes `bytes` on a new connection and reads until the server closes it (at most `wait`).
fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    // The server may answer and close before everything is written (a refused head, a body over the limit).
    let _ = stream.write_all(bytes);
    // Done sending (so that the server does not wait for more), except a head left half-sent on purpose.
    if bytes.ends_with(b"\r\n\r\n") || bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// The status of an answer, after checking that it carries `{"error": {...}}` as JSON when it is an error.
fn check(answer: &[u8], what: &str) -> u16 {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no complete answer: {text:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no status: {head:?}"));
    if status >= 400 {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{what}: {head}"
        );
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
        assert!(json["error"]["message"].is_string(), "{what}: {json}");
    }
    status
}

fn healthy(addr: &str) {
    let answer = exchange(
        addr,
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(check(&answer, "health"), 200);
}

fn config(dir: &std::path::Path) -> PathBuf {
    write(
        dir,
        "qila.yaml",
        "server:\n  header_timeout: 2s\n  max_connections: 2000\n",
    )
}

#[test]
fn hostile_http_requests_all_get_json_errors_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let cfg = config(data.path());
    let server = Server::start_with(data.path(), &["--config", cfg.to_str().unwrap()]);
    let admin = server.admin.clone().unwrap();
    let addr = addr(&server);
    let bearer = format!("Authorization: Bearer {admin}\r\n");
    let long = "a".repeat(20_000);
    let mut corpus: Vec<(String, Vec<u8>)> = vec![
        ("long path".into(), format!("GET /api/v1/{long} HTTP/1.1\r\n\r\n").into_bytes()),
        ("long query".into(), format!("GET /api/v1/runs?q={long} HTTP/1.1\r\n\r\n").into_bytes()),
        ("huge header".into(), format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(100_000)).into_bytes()),
        ("many headers".into(), format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(500)).into_bytes()),
        ("0xFF in the path".into(), b"GET /api/v1/\xff HTTP/1.1\r\n\r\n".to_vec()),
        ("0xFF in a header name".into(), b"GET / HTTP/1.1\r\nX\xff: 1\r\n\r\n".to_vec()),
        ("0xFF as the method".into(), b"\xff / HTTP/1.1\r\n\r\n".to_vec()),
        ("NUL in the path".into(), b"GET /a\0b HTTP/1.1\r\n\r\n".to_vec()),
        ("bad method".into(), b"G(T / HTTP/1.1\r\n\r\n".to_vec()),
        ("unknown method".into(), b"BREW /api/v1/health HTTP/1.1\r\n\r\n".to_vec()),
        ("bad version".into(), b"GET / HTTP/1.7\r\n\r\n".to_vec()),
        ("garbage version".into(), b"GET / FTP\r\n\r\n".to_vec()),
        ("HTTP/2 preface".into(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("bare LF lines".into(), b"GET / HTTP/1.1\nHost: x\n\n".to_vec()),
        ("no request line".into(), b"\r\n\r\n\r\nHost: x\r\n\r\n".to_vec()),
        ("TLS hello".into(), b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec()),
        ("two lengths".into(), b"POST /api/v1/runs HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\n1".to_vec()),
        ("negative length".into(), b"POST /api/v1/runs HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec()),
        ("gzip transfer".into(), b"POST /api/v1/runs HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec()),
        (
            "bad chunk".into(),
            format!("POST /api/v1/runs HTTP/1.1\r\n{bearer}Transfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n").into_bytes(),
        ),
        (
            "oversized JSON body".into(),
            format!("POST /api/v1/runs HTTP/1.1\r\n{bearer}Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{{").into_bytes(),
        ),
        (
            "oversized webhook".into(),
            b"POST /api/v1/hooks/approve-block HTTP/1.1\r\nX-Qila-Hook-Secret: x\r\nContent-Length: 104857600\r\n\r\n".to_vec(),
        ),
        (
            "YAML as JSON".into(),
            format!("POST /api/v1/playbooks HTTP/1.1\r\n{bearer}Content-Type: application/json\r\nContent-Length: 9\r\n\r\nname: x\r\n").into_bytes(),
        ),
        (
            "binary as a playbook".into(),
            [
                format!("POST /api/v1/playbooks HTTP/1.1\r\n{bearer}Content-Type: text/yaml\r\nContent-Length: 4\r\n\r\n").as_bytes(),
                b"\xff\xfe\0\x01".as_slice(),
            ]
            .concat(),
        ),
        (
            "text as a run".into(),
            format!("POST /api/v1/runs HTTP/1.1\r\n{bearer}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").into_bytes(),
        ),
        (
            "array as a webhook".into(),
            b"POST /api/v1/hooks/nope HTTP/1.1\r\nX-Qila-Hook-Secret: x\r\nContent-Length: 2\r\n\r\n[]".to_vec(),
        ),
        ("no token".into(), b"GET /api/v1/runs HTTP/1.1\r\n\r\n".to_vec()),
        ("half-sent head (slowloris)".into(), b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow:".to_vec()),
    ];
    // Bytes 0x00-0xFF in each place of a request line.
    for b in [0u8, 1, 0x7f, 0x80, 0xc0, 0xff, b' ', b'\t', b'\r'] {
        corpus.push((
            format!("byte {b:#04x} in the method"),
            [b"GE".as_slice(), &[b], b"T / HTTP/1.1\r\n\r\n"].concat(),
        ));
        corpus.push((
            format!("byte {b:#04x} in the target"),
            [b"GET /a".as_slice(), &[b], b"b HTTP/1.1\r\n\r\n"].concat(),
        ));
        corpus.push((
            format!("byte {b:#04x} in a value"),
            [b"GET / HTTP/1.1\r\nX: a".as_slice(), &[b], b"b\r\n\r\n"].concat(),
        ));
    }
    let mut refused = 0;
    for (what, bytes) in &corpus {
        let answer = exchange(&addr, bytes, Duration::from_secs(8));
        if answer.is_empty() {
            // Only a client that sent nothing usable may be closed without an answer.
            panic!("{what}: closed without an answer");
        }
        let status = check(&answer, what);
        if status >= 400 {
            refused += 1;
        }
        healthy(&addr);
    }
    assert!(
        refused >= corpus.len() - 2,
        "{refused} of {} refused",
        corpus.len()
    );
}

#[test]
fn half_sent_heads_are_closed_at_the_header_timeout() {
    let data = tempfile::tempdir().unwrap();
    let cfg = config(data.path());
    let server = Server::start_with(data.path(), &["--config", cfg.to_str().unwrap()]);
    let addr = addr(&server);
    let started = Instant::now();
    let mut open: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            s
        })
        .collect();
    // While they hang, the server answers others.
    healthy(&addr);
    for s in &mut open {
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert_eq!(check(&answer, "half-sent head"), 408);
    }
    // 2 s header timeout; "bounded" means well before the client's own 15 s give-up.
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    healthy(&addr);
}

/// A virtual environment with the pinned `standardwebhooks` package, under `target/` (made once).
fn python_with_standardwebhooks() -> &'static PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let made = PYTHON.get_or_init(|| {
        let venv = root().join(format!("target/standardwebhooks-{STANDARDWEBHOOKS}"));
        let python = venv.join("bin/python");
        if python.is_file()
            && Command::new(&python)
                .args(["-c", "import standardwebhooks"])
                .status()
                .is_ok_and(|s| s.success())
        {
            return Ok(python);
        }
        // Made beside its place and moved there when complete: an interrupted install never looks done. (A venv's
        // `bin/python` finds its packages relative to itself, so the move keeps it working.)
        let staging = root().join(format!("target/standardwebhooks.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let ran = |cmd: &mut Command, what: &str| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{what} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        ran(
            Command::new("python3").args(["-m", "venv"]).arg(&staging),
            "python3 -m venv",
        )?;
        ran(
            Command::new(staging.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .args(["--retries", "2", "--timeout", "30"])
                .arg(format!("standardwebhooks=={STANDARDWEBHOOKS}")),
            "pip install standardwebhooks",
        )?;
        let _ = std::fs::remove_dir_all(&venv);
        std::fs::rename(&staging, &venv).map_err(|e| format!("{}: {e}", venv.display()))?;
        Ok(python)
    });
    match made {
        Ok(p) => p,
        Err(e) => panic!(
            "cannot install the PyPI standardwebhooks package (needs python3 with venv and PyPI): {e}"
        ),
    }
}

/// Sends one delivery signed by the PyPI package; the status and the JSON answer.
fn deliver(base: &str, secret: &str, id: &str, age: i64, body: &str) -> (u16, Value) {
    let out = Command::new(python_with_standardwebhooks())
        .arg(root().join("tests/python/standard_webhooks_sender.py"))
        .args([
            &format!("{base}/api/v1/hooks/std-hook"),
            secret,
            id,
            &age.to_string(),
            body,
        ])
        .output()
        .expect("cannot run the sender");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (
        status.trim().parse().unwrap_or(0),
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

const STD_HOOK: &str = "name: std-hook\nversion: 1\non:\n  webhook: { signature: standard-webhooks, input: event }\n\
inputs:\n  event: { type: object, required: false }\nsteps:\n  a:\n    uses: core.echo\n    with: { event: \"${{ inputs.event }}\" }\n";

#[test]
fn standard_webhooks_from_the_pypi_client_are_accepted_once_even_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let playbooks = tempfile::tempdir().unwrap();
    write(playbooks.path(), "std-hook.yaml", STD_HOOK);
    let dir = playbooks.path().to_str().unwrap().to_owned();
    let mut server = Server::start_with(data.path(), &["--playbooks", &dir]);
    let admin = server.admin.clone().unwrap();
    let (out, secret, stderr) = run(qila(data.path()).args(["playbook", "hook", "std-hook"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let body = r#"{"type": "invoice.paid", "id": 7}"#;
    let (status, first) = deliver(&server.base, &secret, "msg_first", 0, body);
    assert_eq!(status, 202, "{first}");
    let (status, again) = deliver(&server.base, &secret, "msg_first", 0, body);
    assert_eq!(status, 409, "a replay is refused: {again}");
    let (status, old) = deliver(&server.base, &secret, "msg_old", 600, body);
    assert_eq!(status, 401, "an old timestamp is refused: {old}");
    let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (status, forged) = deliver(&server.base, wrong, "msg_forged", 0, body);
    assert_eq!(status, 401, "a wrong signature is refused: {forged}");

    // The delivery is remembered in the store: after a restart it is still refused.
    server.kill();
    let server = Server::start_with(data.path(), &["--playbooks", &dir]);
    let (status, replay) = deliver(&server.base, &secret, "msg_first", 0, body);
    assert_eq!(status, 409, "{replay}");
    let api = Api::new(&server.base, &admin);
    let (_, runs) = api.call("GET", "/api/v1/runs?playbook=std-hook", None);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "one run: {runs}");
    let id = first["run_id"].as_str().unwrap();
    let done = api.wait_for(id, "its end", |b| b["run"]["status"] == "succeeded");
    assert_eq!(done["run"]["inputs"]["event"]["type"], "invoice.paid");
}
