//! The SIEM pack end to end, as a new user meets it: `qila serve` on the embedded database, a day of logs sent
//! with `qila ingest` and over syslog, alerts for the attacks in them, a search around an alert, an alert that
//! starts a playbook, malformed records kept as dead letters; and `qila hunt` without a server.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{Api, Server, code, qila, root, run, write};

fn fixture(path: &str) -> PathBuf {
    root().join("tests/fixtures").join(path)
}

/// Polls `path` until `pred` holds on its answer (60 s at most).
fn poll(api: &Api, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api.call("GET", path, None);
        if status == 200 && pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "never got {what}: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn titles(alerts: &Value) -> BTreeSet<String> {
    alerts["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["rule_title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_day_of_logs_gives_alerts_that_are_searchable_and_start_a_playbook() {
    let data = tempfile::tempdir().unwrap();
    let sigma = fixture("sigmahq/rules");
    let server = Server::start_with(
        data.path(),
        &[
            "--rules",
            sigma.to_str().unwrap(),
            "--syslog-udp",
            "127.0.0.1:0",
        ],
    );
    let token = server.admin.clone().expect("admin token");
    let api = Api::new(&server.base, &token);

    // The day's logs: sshd and Asterisk (fail2ban's real lines, spread over years), a night's attack in the same
    // formats (a password guesser and a SIP brute force, minutes apart), a Sysmon sample from SigmaHQ, and
    // Windows EVTX.
    let sample = "sigmahq/regression_data/rules/windows/process_creation/proc_creation_win_certutil_download_file_sharing_domains/42a5f1e7-9603-4f6d-97ae-3f37d130d794.json";
    let mut night = String::new();
    for (i, user) in ["root", "admin", "oracle", "ubuntu", "pi", "test"]
        .iter()
        .enumerate()
    {
        night.push_str(&format!(
            "Nov 28 03:1{i}:0{i} edge-1 sshd[4410{i}]: Failed password for invalid user {user} from 198.51.100.77 port 4410{i} ssh2\n"
        ));
    }
    for (i, ext) in ["100", "101", "102", "200", "201", "300"]
        .iter()
        .enumerate()
    {
        night.push_str(&format!(
            "[2026-11-28 03:2{i}:1{i}] NOTICE[2211] chan_sip.c: Registration from '<sip:{ext}@pbx.example.net>' failed for '203.0.113.50:5060' - Wrong password\n"
        ));
    }
    let night = write(data.path(), "night.log", &night);
    let files = [
        fixture("fail2ban/sshd.log"),
        fixture("fail2ban/asterisk.even.log"),
        night,
        fixture(sample),
        fixture("chainsaw/security_sample.evtx"),
    ];
    let (out, stdout, stderr) = run(qila(data.path())
        .arg("ingest")
        .arg("--quiet")
        .args(&files)
        .env("QILA_SERVER", &server.base)
        .env("QILA_TOKEN", &token));
    assert_eq!(code(&out), 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("events stored"), "{stdout}");

    let alerts = poll(
        &api,
        "/api/v1/alerts?limit=1000",
        "the brute-force and Windows alerts",
        |body| {
            let t = titles(body);
            t.contains("SSH Brute Force From One Source")
                && t.contains("Repeated Failed SIP Registrations From One Source")
                && t.iter().any(|x| x.to_lowercase().contains("certutil"))
        },
    );

    // The events around the SSH brute force: its alert lists them, and a search by its source finds them.
    let brute = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["rule_title"] == "SSH Brute Force From One Source")
        .unwrap()
        .clone();
    let (status, detail) = api.call(
        "GET",
        &format!("/api/v1/alerts/{}", brute["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(status, 200, "{detail}");
    let events = detail["events"].as_array().expect("the alert's events");
    assert!(events.len() >= 5, "{detail}");
    let ip = events[0]["source_ip"]
        .as_str()
        .expect("a source address")
        .to_owned();
    assert!(
        brute["group_key"].as_str().unwrap().contains(&ip),
        "{brute}"
    );
    let query = format!("source.ip = {ip} and outcome = failure");
    let (status, page) = api.send(
        "GET",
        &format!("/api/v1/events?query={}&limit=1000", urlencode(&query)),
        None,
        &[],
    );
    assert_eq!(status, 200, "{page}");
    let found = page["events"].as_array().unwrap();
    assert!(
        found.len() >= events.len(),
        "{} found by `{query}`, the alert has {}",
        found.len(),
        events.len()
    );
    assert!(found.iter().all(|e| e["source_ip"] == ip.as_str()));

    // A bad query says where and what is wrong.
    let (status, body) = api.call("GET", "/api/v1/events?query=source.ip%20%3D", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("at "),
        "{body}"
    );

    // The high alerts started the bundled `alert-triage` playbook, with the alert as input; its `siem.search`
    // step found the events of the alert's source.
    let runs = poll(
        &api,
        "/api/v1/runs?playbook=alert-triage&limit=1000",
        "runs of alert-triage",
        |b| b["runs"].as_array().is_some_and(|r| r.len() >= 2),
    );
    let mut brute_runs = 0;
    for run in runs["runs"].as_array().unwrap() {
        let id = run["id"].as_str().unwrap();
        let done = api.wait_for(id, "an end", |r| {
            ["succeeded", "failed"].contains(&r["run"]["status"].as_str().unwrap_or(""))
        });
        assert_eq!(done["run"]["status"], "succeeded", "{done}");
        if done["run"]["outputs"]["rule"] == "SSH Brute Force From One Source" {
            brute_runs += 1;
            assert_eq!(
                done["run"]["outputs"]["about"], "source.ip=198.51.100.77",
                "{done}"
            );
            assert!(
                done["run"]["outputs"]["events_around"].as_u64().unwrap() >= 6,
                "{done}"
            );
        }
    }
    assert_eq!(brute_runs, 1, "one alert, one run: {runs}");

    // Syslog over UDP: the same detection path.
    let udp = server
        .startup
        .iter()
        .find_map(|l| l.strip_prefix("syslog over UDP on "))
        .expect("the syslog address")
        .trim()
        .to_owned();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..6 {
        let line = format!(
            "<38>Feb 25 14:34:1{i} belka sshd[3160{i}]: Failed password for invalid user admin from 203.0.113.77 port 5027{i} ssh2"
        );
        socket.send_to(line.as_bytes(), &udp).unwrap();
    }
    poll(
        &api,
        "/api/v1/events?query=source.ip%20%3D%20203.0.113.77",
        "the syslog events",
        |b| b["events"].as_array().is_some_and(|e| e.len() == 6),
    );
    poll(
        &api,
        "/api/v1/alerts?limit=1000",
        "the syslog brute force",
        |b| {
            b["alerts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["group_key"]
                        .as_str()
                        .is_some_and(|k| k.contains("203.0.113.77"))
                })
            })
        },
    );

    // Malformed records never stop a batch and are kept, with the reason, as dead letters.
    let body = b"{\"Event\":{\"System\":{}}}\nnot json {\n{\"message\":\"fine\",\"host\":\"h1\"}\n\xff\xfe\n".to_vec();
    let (status, answer) = api.send(
        "POST",
        "/api/v1/events",
        Some((body, "application/x-ndjson")),
        &[],
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer["accepted"].as_u64().unwrap() >= 1, "{answer}");
    assert!(answer["rejected"].as_u64().unwrap() >= 2, "{answer}");
    let dead = poll(&api, "/api/v1/dead-letters", "dead letters", |b| {
        b["total"].as_i64().unwrap_or(0) >= 2
    });
    let first = &dead["dead_letters"][0];
    assert!(
        !first["reason"].as_str().unwrap().is_empty() && first["raw"].is_string(),
        "{dead}"
    );

    // The rules that did not load are reported, never dropped silently.
    let (status, siem) = api.call("GET", "/api/v1/siem", None);
    assert_eq!(status, 200);
    assert!(siem["rules"]["loaded"].as_u64().unwrap() > 250, "{siem}");
    assert!(siem["stats"]["stored"].as_u64().unwrap() > 150, "{siem}");

    // Ingest needs a token that may ingest; a viewer may search but not send.
    let (_, viewer) = api.call(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "watcher", "role": "viewer"})),
    );
    let viewer_api = Api::new(&server.base, viewer["token"].as_str().unwrap());
    let (status, _) = viewer_api.send(
        "POST",
        "/api/v1/events",
        Some((b"{}".to_vec(), "application/x-ndjson")),
        &[],
    );
    assert_eq!(status, 403);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn hunt_reproduces_chainsaws_logon_hits_on_the_evtx_sample() {
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(qila(data.path())
        .args(["hunt", "--json", "--rules"])
        .arg(fixture("chainsaw-sigma/any_logon.yml"))
        .arg(fixture("chainsaw/security_sample.evtx")));
    assert_eq!(code(&out), 0, "{stderr}");
    let hits: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<u64> = hits.iter().map(|h| h["line"].as_u64().unwrap()).collect();
    assert_eq!(records, vec![31794, 31799], "{stdout}");
    for hit in &hits {
        assert_eq!(hit["rule_title"], "Any Logon");
        assert_eq!(hit["level"], "informational");
        assert!(
            hit["file"]
                .as_str()
                .unwrap()
                .ends_with("security_sample.evtx")
        );
        assert_eq!(hit["event"]["Event"]["System"]["EventID"], 4624);
    }
}

#[test]
fn hunt_finds_sigmahq_detections_in_json_lines_with_their_line_numbers() {
    let data = tempfile::tempdir().unwrap();
    let sample = fixture(
        "sigmahq/regression_data/rules/windows/process_creation/proc_creation_win_certutil_download_file_sharing_domains/42a5f1e7-9603-4f6d-97ae-3f37d130d794.json",
    );
    // A JSON Lines file: a benign event, then the sample compacted onto line 2, then a malformed line.
    let text = std::fs::read_to_string(&sample).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let jsonl = write(
        data.path(),
        "day.jsonl",
        &format!("{{\"message\":\"nothing\"}}\n{value}\n{{broken\n"),
    );
    let (out, stdout, stderr) = run(qila(data.path())
        .args(["hunt", "--json", "--rules"])
        .arg(fixture("sigmahq/rules/windows/process_creation"))
        .arg(&jsonl));
    assert_eq!(code(&out), 0, "{stderr}");
    let hits: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        hits.iter()
            .any(|h| h["rule_id"] == "42a5f1e7-9603-4f6d-97ae-3f37d130d794" && h["line"] == 2),
        "{stdout}"
    );
    assert!(hits.iter().all(|h| h["line"] == 2), "{stdout}");
    assert!(
        stderr.contains("day.jsonl: line 3"),
        "the malformed line is reported: {stderr}"
    );
}
