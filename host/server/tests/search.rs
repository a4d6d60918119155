//! Searching events over real HTTP: the SIEM service on a real store, events sent with `POST /api/v1/events`,
//! and `GET /api/v1/events` with the query language of `docs/search.md`. Characters that mean something to the
//! database (`%`, `_`, `\`, control characters) are matched literally, a NUL is refused with its position, and a
//! time range can be given in unix microseconds (`from_us`, `to_us`) as the docs say.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use qila_detect::{Detector, RuleSet};
use qila_model::StaticCatalog;
use qila_siem::{AlertSink, Siem, SiemConfig};
use qila_store::{AlertRow, Store};
use reqwest::StatusCode;
use serde_json::Value;

struct NoAlerts;

impl AlertSink for NoAlerts {
    fn created(&self, _alert: AlertRow) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

struct Server {
    base: String,
    http: reqwest::Client,
    token: String,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let (siem, _tasks) = Siem::start(
            store.clone(),
            Detector::new(RuleSet::from_sources(&[], Vec::new())),
            Vec::new(),
            Arc::new(NoAlerts),
            SiemConfig::default(),
        );
        let options = qila_server::ServerOptions {
            siem: Some(siem),
            ..Default::default()
        };
        let (base, token) = support::serve(&store, StaticCatalog::new(), options).await;
        Self {
            base,
            http: reqwest::Client::new(),
            token,
            _dir: dir,
        }
    }

    async fn ingest(&self, body: &str) {
        let resp = self
            .http
            .post(format!("{}/api/v1/events", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/x-ndjson")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["rejected"], 0, "{answer}");
    }

    /// `GET /api/v1/events` with these query parameters (encoded here).
    async fn search(&self, params: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}/api/v1/events", self.base))
            .query(params)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// The raw records a query finds, which must succeed.
    async fn found(&self, query: &str) -> Vec<String> {
        let (status, page) = self.search(&[("query", query), ("limit", "1000")]).await;
        assert_eq!(status, StatusCode::OK, "{query:?}: {page}");
        let mut raws: Vec<String> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["raw"].as_str().unwrap().to_owned())
            .collect();
        raws.sort();
        raws
    }
}

/// The syslog header of every line (it holds none of the characters tried).
const HEADER: &str = "<13>1 2024-05-01T13:00:00Z h1 app - - - ";

/// Log messages, each holding one character the database could take for something else.
const LINES: &[&str] = &[
    "disk 100% full on ws-1",
    "user snake_case logged on",
    "glob star*star in a command",
    r"path C:\Windows\Temp\x.exe",
    "bell \u{1} and escape \u{1b}[0m in a line",
    "tab\there and a question? mark",
    "plain line with none of them",
];

fn just(i: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = i.iter().map(|&i| format!("{HEADER}{}", LINES[i])).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn search_terms_match_special_characters_literally_and_a_nul_is_refused() {
    let s = Server::start().await;
    // Each line as a JSON string, so that control characters travel as escapes.
    let body: String = LINES
        .iter()
        .map(|l| {
            format!(
                "{}\n",
                serde_json::to_string(&format!("{HEADER}{l}")).unwrap()
            )
        })
        .collect();
    s.ingest(&body).await;
    assert_eq!(s.found("app").await.len(), LINES.len());

    for (query, want) in [
        ("%", just(&[0])),
        ("\"100%\"", just(&[0])),
        ("_", just(&[1])),
        ("e_c", just(&[1])),
        ("*", just(&[2])),
        ("\"r*s\"", just(&[2])),
        ("\\", just(&[3])),
        (r#""\\Temp\\""#, just(&[3])),
        ("\u{1}", just(&[4])),
        ("\u{1b}[0m", just(&[4])),
        ("?", just(&[5])),
        ("\"tab\there\"", just(&[5])),
        ("\"tab here\"", Vec::new()),
        // Comparisons: `*` and `?` are wildcards, `%`, `_` and `\` are not.
        ("raw = \"*100%*\"", just(&[0])),
        ("raw = \"*%*\"", just(&[0])),
        ("raw = \"*e_c*\"", just(&[1])),
        ("raw = *_*", just(&[1])),
        (r#"raw = "*C:\\Windows\\*""#, just(&[3])),
        ("raw = \"*\u{1}*\"", just(&[4])),
        ("raw = \"*disk 100% full on ws-1\"", just(&[0])),
        ("raw = \"*disk 100_ full on ws-1\"", Vec::new()),
        ("raw != \"*%*\"", just(&[1, 2, 3, 4, 5, 6])),
    ] {
        assert_eq!(s.found(query).await, want, "{query:?}");
    }

    // A NUL cannot be matched by the database's text comparison (it ends the text there): the query is refused
    // with its position, never run as a term that matches every event.
    for (query, at) in [
        ("\u{0}", 0),
        ("a\u{0}b", 1),
        ("\"full\u{0}\"", 5),
        ("raw = \"*\u{0}*\"", 8),
        ("user\u{0} = x", 4),
    ] {
        let (status, body) = s.search(&[("query", query)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("query at {at}: the query holds a NUL character")),
            "{query:?}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_time_range_can_be_given_in_unix_microseconds() {
    let s = Server::start().await;
    s.ingest(
        "<13>1 2024-05-01T13:00:00Z h1 app - - - ticker one\n\
         <13>1 2024-05-01T14:00:00Z h1 app - - - ticker two\n\
         <13>1 2024-05-01T15:00:00Z h1 app - - - ticker three\n",
    )
    .await;
    let at_14 = 1_714_572_000_000_000_i64.to_string();
    let at_15 = 1_714_575_600_000_000_i64.to_string();
    let raws = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["raw"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, page) = s
        .search(&[("query", "ticker"), ("from_us", &at_14), ("to_us", &at_15)])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let by_us = raws(&page);
    assert_eq!(by_us.len(), 1, "{page}");
    assert!(by_us[0].ends_with("ticker two"), "{page}");
    assert_eq!(page["events"][0]["time_us"].to_string(), at_14);
    // The same range as times.
    let (_, page) = s
        .search(&[
            ("query", "ticker"),
            ("from", "2024-05-01T14:00:00Z"),
            ("to", "2024-05-01T15:00:00Z"),
        ])
        .await;
    assert_eq!(raws(&page), by_us);
    // One end in each form; one end only.
    let (_, page) = s
        .search(&[
            ("query", "ticker"),
            ("from", "2024-05-01T14:00:00Z"),
            ("to_us", &at_15),
        ])
        .await;
    assert_eq!(raws(&page), by_us);
    let (_, page) = s.search(&[("query", "ticker"), ("to_us", &at_15)]).await;
    assert_eq!(raws(&page).len(), 2, "{page}");

    // Both forms of one end, or microseconds that are not a number: a 400 that says why.
    let (status, body) = s.search(&[("from", "-1h"), ("from_us", &at_14)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("give `from` or `from_us`, not both"),
        "{body}"
    );
    let (status, body) = s.search(&[("to_us", "yesterday")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("to_us"),
        "{body}"
    );
    let (status, body) = s.search(&[("from", "soon")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("or give `from_us` in unix microseconds"),
        "{body}"
    );
}
