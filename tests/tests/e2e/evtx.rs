//! EVTX files cut short, through `qila hunt` and `qila ingest`; and `qila ingest` against a server that answers
//! `503` with `Retry-After` (a tiny HTTP server in the test, so that the answers are exactly what we choose).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::{code, qila, root, run};

fn fixture(path: &str) -> std::path::PathBuf {
    root().join("tests/fixtures").join(path)
}

/// One request the test server took: when, and its body.
#[derive(Debug, Clone)]
struct Taken {
    at: Instant,
    body: String,
}

/// A minimal HTTP/1.1 server on a free port: answers each `POST` with what `answer(n, body)` returns for the
/// n-th request (0-based) — a status and an optional `Retry-After` — and records every request.
struct TestServer {
    url: String,
    taken: Arc<Mutex<Vec<Taken>>>,
}

impl TestServer {
    fn start(answer: impl Fn(usize) -> (u16, Option<&'static str>) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let taken = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&taken);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(body) = read_request(&stream) else {
                    continue;
                };
                let n = {
                    let mut log = log.lock().unwrap();
                    log.push(Taken {
                        at: Instant::now(),
                        body: body.clone(),
                    });
                    log.len() - 1
                };
                let (status, retry_after) = answer(n);
                let lines = body.lines().count();
                let (reason, json) = if status == 200 {
                    (
                        "OK",
                        format!(r#"{{"accepted": {lines}, "rejected": 0, "errors": []}}"#),
                    )
                } else {
                    (
                        "Service Unavailable",
                        r#"{"error": {"code": "unavailable", "message": "the store cannot write at the moment"}}"#
                            .to_string(),
                    )
                };
                let mut head = format!(
                    "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    json.len()
                );
                if let Some(r) = retry_after {
                    head.push_str(&format!("retry-after: {r}\r\n"));
                }
                head.push_str("\r\n");
                let mut stream = stream;
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(json.as_bytes());
            }
        });
        Self { url, taken }
    }

    fn taken(&self) -> Vec<Taken> {
        self.taken.lock().unwrap().clone()
    }
}

/// The body of one request (headers up to the blank line, then `Content-Length` bytes).
fn read_request(stream: &TcpStream) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8(body).ok()
}

/// The record ends (from the start of the file) of the fixture's one chunk, from its record headers: each
/// record starts with `**\0\0` and its size, the first at byte 512 of the chunk, the chunk at byte 4096.
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let chunk = &bytes[4096..];
    let free = u32::from_le_bytes(chunk[48..52].try_into().unwrap()) as usize;
    let mut at = 512;
    let mut ends = Vec::new();
    while at < free {
        assert_eq!(&chunk[at..at + 4], b"**\0\0", "a record at {at}");
        let size = u32::from_le_bytes(chunk[at + 4..at + 8].try_into().unwrap()) as usize;
        at += size;
        ends.push(4096 + at);
    }
    ends
}

/// `qila ingest` of `file` to `server`, its output, and the lines the server was sent with 200.
fn ingest(server: &str, file: &Path, extra: &[&str]) -> (i32, String, String) {
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(qila(data.path())
        .args(["ingest", "--quiet", "--server", server, "--token", "t"])
        .args(extra)
        .arg(file));
    (code(&out), stdout, stderr)
}

#[test]
fn a_cut_evtx_file_is_hunted_and_ingested_to_its_last_complete_record_and_exits_3() {
    let bytes = std::fs::read(fixture("chainsaw/security_sample.evtx")).unwrap();
    let ends = record_ends(&bytes);
    assert_eq!(ends.len(), 10, "the fixture holds ten records");
    // The uncut file, sent whole: the lines every cut must send a prefix of.
    let whole_server = TestServer::start(|_| (200, None));
    let (status, _, stderr) = ingest(
        &whole_server.url,
        &fixture("chainsaw/security_sample.evtx"),
        &[],
    );
    assert_eq!(status, 0, "{stderr}");
    let whole: Vec<String> = whole_server.taken()[0]
        .body
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(whole.len(), 10);

    // In the file header, at its end, inside the chunk header, at its end, inside records, at record
    // boundaries and just past them, and in the free space after the last record.
    let mut cuts = vec![
        8,
        1000,
        4095,
        4096,
        4097,
        4096 + 100,
        4096 + 511,
        4096 + 512,
        4096 + 513,
    ];
    let mut start = 4096 + 512;
    for &end in &ends {
        // Inside the record's header, in its middle, one byte short, at its end, and into the next header.
        cuts.extend([
            start + 10,
            (start + end) / 2,
            end - 1,
            end,
            end + 1,
            end + 23,
            end + 24,
        ]);
        start = end;
    }
    cuts.extend([bytes.len() - 1, bytes.len() - 4096]);
    cuts.sort_unstable();
    cuts.dedup();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(|_| (200, None));
    let started = Instant::now();
    for cut in cuts {
        let complete = ends.iter().filter(|end| **end <= cut).count();
        let file = dir.path().join(format!("cut-{cut}.evtx"));
        std::fs::write(&file, &bytes[..cut]).unwrap();
        let place = format!(
            "{}: byte {cut}: truncated: the file ends at byte {cut}",
            file.display()
        );

        let data = tempfile::tempdir().unwrap();
        let (out, _, stderr) = run(qila(data.path())
            .args(["hunt", "--rules"])
            .arg(fixture("chainsaw-sigma/any_logon.yml"))
            .arg(&file));
        assert_eq!(code(&out), 3, "hunt, cut at {cut}: {stderr}");
        assert!(stderr.contains(&place), "hunt, cut at {cut}: {stderr}");
        assert!(
            stderr.contains(&format!("\n{complete} events, ")),
            "hunt, cut at {cut}: {complete} complete records: {stderr}"
        );

        let before = server.taken().len();
        let (status, stdout, stderr) = ingest(&server.url, &file, &[]);
        assert_eq!(status, 3, "ingest, cut at {cut}: {stderr}");
        assert!(stderr.contains(&place), "ingest, cut at {cut}: {stderr}");
        assert!(
            stdout.starts_with(&format!("{complete} events stored")),
            "ingest, cut at {cut}: {stdout}"
        );
        let sent: Vec<String> = server.taken()[before..]
            .iter()
            .flat_map(|t| t.body.lines().map(String::from).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            sent,
            whole[..complete],
            "ingest, cut at {cut}: the complete records, in order"
        );
    }
    eprintln!(
        "cuts read (hunt and ingest, one process each) in {:?}",
        started.elapsed()
    );
}

#[test]
fn ingest_sends_each_batch_once_and_in_order_through_503s_honouring_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"message":"event {i}","@timestamp":"2024-05-01T10:00:{i:02}Z"}}"#))
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    // Requests 0 and 1 (the first batch) get 503 + Retry-After: 1, request 3 (the second batch) a 503 without
    // Retry-After; every other request is taken.
    let server = TestServer::start(|n| match n {
        0 | 1 => (503, Some("1")),
        3 => (503, None),
        _ => (200, None),
    });
    let (status, stdout, stderr) = ingest(&server.url, &file, &["--batch", "10"]);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("25 events stored"), "{stdout}");
    let taken = server.taken();
    assert_eq!(taken.len(), 6, "3 batches, 3 of them sent again: {taken:?}");
    // A batch refused with 503 is the same batch sent again; taken ones are the file, once, in order.
    assert_eq!(taken[0].body, taken[2].body);
    assert_eq!(taken[1].body, taken[2].body);
    assert_eq!(taken[3].body, taken[4].body);
    let stored: Vec<String> = [2, 4, 5]
        .iter()
        .flat_map(|i| taken[*i].body.lines().map(String::from).collect::<Vec<_>>())
        .collect();
    assert_eq!(stored, lines);
    // Retry-After: 1 was waited for.
    for i in [1, 2] {
        let waited = taken[i].at - taken[i - 1].at;
        assert!(
            waited >= Duration::from_millis(900),
            "waited {waited:?} before try {i}"
        );
    }
}

#[test]
fn ingest_gives_up_after_retry_for_and_says_what_was_sent_and_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..25)
        .map(|i| format!(r#"{{"message": "event {i}"}}"#))
        .collect();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    // The first batch is taken; then the server is unavailable for good, asking for an hour's wait (capped).
    let server = TestServer::start(|n| {
        if n == 0 {
            (200, None)
        } else {
            (503, Some("3600"))
        }
    });
    let started = Instant::now();
    let (status, stdout, stderr) =
        ingest(&server.url, &file, &["--batch", "10", "--retry-for", "2s"]);
    let took = started.elapsed();
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    assert!(
        stderr.contains("gave up after the server answered 503"),
        "{stderr}"
    );
    assert!(stderr.contains("--retry-for 2s"), "{stderr}");
    assert!(
        stderr.contains("10 events were sent and acknowledged before"),
        "{stderr}"
    );
    let resume = format!("resume from {}: line 11", file.display());
    assert!(stderr.contains(&resume), "{stderr}");
    let taken = server.taken();
    assert_eq!(taken[0].body.lines().count(), 10);
    // Only the second batch was tried again (twice: at once and at the deadline), never the third.
    assert!(taken.len() >= 2, "{taken:?}");
    assert!(
        taken[1..].iter().all(|t| t.body == taken[1].body),
        "{taken:?}"
    );
}
