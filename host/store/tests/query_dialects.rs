//! The search language selects the same events on SQLite and on PostgreSQL (`docs/search.md`, "Dialects").
//!
//! The same events — records of `tests/fixtures/evtx-jsonl` and events built to reach the corners of the
//! language (case, wildcards, LIKE's own characters, JSON numbers, booleans, nulls, numeric strings, missing
//! fields) — are stored in SQLite through the store's API and in PostgreSQL under
//! `migrations/postgres/0001_siem.sql`. A list of queries covering every operator on every kind of field, then
//! queries generated from the grammar, run on both; the ids they select must be equal.
//!
//! PostgreSQL is a throw-away cluster (`qila-test-postgres`; `QILA_TEST_POSTGRES_URL` to use a server). The
//! default run takes seconds; `PROPTEST_CASES=2000 cargo test -p qila-store --test query_dialects` runs longer.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qila_store::query::{self, Bind, Dialect};
use qila_store::{EventQuery, NewEvent, Store};
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};

/// 2024-05-01T14:00:00Z: far from now, so relative times (`-15m`) select the same on both even a second apart.
const T0: i64 = 1_714_572_000_000_000;
const MINUTE: i64 = 60_000_000;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The scalar fields of an EVTX record's `System` and `EventData` (nested values are left out: see the docs).
fn evtx_fields(record: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for part in ["System", "EventData"] {
        if let Some(Value::Object(m)) = record.pointer(&format!("/Event/{part}")) {
            for (k, v) in m {
                if !v.is_object() && !v.is_array() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    out
}

fn fixture_events() -> Vec<NewEvent> {
    let mut events = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/evtx-jsonl");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let fields = evtx_fields(&record);
            let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
            let i = events.len() as i64;
            events.push(NewEvent {
                time_us: T0 - i * MINUTE,
                received_us: T0,
                dataset: "windows.security".into(),
                host: text("Computer"),
                source_ip: text("IpAddress").and_then(|a| a.parse().ok()),
                source_port: text("IpPort").and_then(|p| p.parse().ok()),
                destination_ip: None,
                destination_port: None,
                user: text("TargetUserName").or_else(|| text("SubjectUserName")),
                process: text("ProcessName")
                    .or_else(|| text("ImagePath"))
                    .or_else(|| text("ServiceName")),
                action: text("Channel"),
                outcome: None,
                fields: Value::Object(fields).to_string(),
                raw: line.to_owned(),
            });
        }
    }
    assert!(events.len() > 10, "the EVTX fixtures hold records");
    let users = [
        Some("alice"),
        Some("Alice"),
        Some("BOB"),
        Some("bob_1"),
        Some("bob%"),
        Some("é"),
        Some("É"),
        Some(""),
        None,
    ];
    let weird = [
        "-5abc", ".", "+", "1e3", "0x1A", "abc", "12.5.3", "5.", " 12", "\t7", "-", ".5", "+4",
    ];
    let names = ["alice", "Bob", "É", "é", "m", "", "Zed", "_x"];
    for i in 0..40i64 {
        let n = i as usize;
        let score = [2.5, -1.0, 0.0, 7.25, 100.5][n % 5];
        let mut fields = json!({
            "EventID": 4620 + i,
            "LogonType": if i % 2 == 0 { json!("10") } else { json!(3) },
            "Enabled": i % 3 == 0,
            "Score": score,
            "Weird": weird[n % weird.len()],
            "Name": names[n % names.len()],
            "Nullable": if i % 4 == 0 { Value::Null } else { json!("x") },
            "CommandLine": format!("cmd /c whoami_{i} 100% C:\\Windows\\System32\\{}", ["powershell.exe", "cmd.exe"][n % 2]),
            "Event ID": "4624",
            "Flag": if i % 5 == 0 { json!("true") } else { json!(i % 2 == 1) },
        });
        if i % 7 == 0 {
            fields["Big"] = json!(9_007_199_254_740_993i64);
        }
        if i % 6 == 0 {
            fields.as_object_mut().unwrap().remove("Score");
        }
        let v4 = |a: i64| format!("10.0.{}.{}", a / 10, a % 10).parse().unwrap();
        events.push(NewEvent {
            time_us: T0 - i * MINUTE + 7,
            received_us: T0,
            dataset: if i % 2 == 0 {
                "syslog"
            } else {
                "Windows.Security"
            }
            .into(),
            host: (i % 9 != 0).then(|| format!("{}-{i}", ["ws", "WS", "srv"][n % 3])),
            source_ip: match i % 4 {
                0 => None,
                1 => Some("2001:db8::1".parse().unwrap()),
                2 => Some("192.168.1.7".parse().unwrap()),
                _ => Some(v4(i)),
            },
            source_port: (i % 5 != 0).then(|| [22u16, 80, 443, 1024, 65535, 0][n % 6]),
            destination_ip: (i % 3 != 0).then(|| v4(i + 1)),
            destination_port: Some(40000 + i as u16),
            user: users[n % users.len()].map(str::to_owned),
            process: Some(
                ["sshd", "C:\\Windows\\System32\\PowerShell.exe", "cmd.exe"][n % 3].into(),
            ),
            action: Some(["logon", "logoff", "Logon"][n % 3].into()),
            outcome: (i % 2 == 0).then(|| ["failure", "success"][n % 4 / 2].into()),
            fields: fields.to_string(),
            raw: format!(
                "Failed password for {} from 10.0.0.{i} port 22 \\ % _ * ? \u{1} {}",
                users[n % users.len()].unwrap_or("nobody"),
                ["mimikatz", "sekurlsa::logonpasswords", "MIMIKATZ", "É"][n % 4]
            ),
        });
    }
    events
}

/// The same events in both databases.
struct Fixture {
    rt: tokio::runtime::Runtime,
    sqlite: Store,
    pg: PgPool,
    count: usize,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let events = fixture_events();
        let url = qila_test_postgres::database().unwrap();
        let (sqlite, pg) = rt.block_on(async {
            let sqlite = Store::open(dir.path()).await.unwrap();
            let ids = sqlite.insert_events(&events).await.unwrap();
            let pg = PgPoolOptions::new()
                .max_connections(2)
                .connect(&url)
                .await
                .unwrap();
            sqlx::raw_sql(include_str!("../migrations/postgres/0001_siem.sql"))
                .execute(&pg)
                .await
                .unwrap();
            for (id, e) in ids.iter().zip(&events) {
                let bin = |ip: Option<std::net::IpAddr>| ip.map(|ip| query::ip_bytes(ip).to_vec());
                sqlx::query(
                    "INSERT INTO events (id, time_us, received_us, dataset, host, source_ip, source_ip_bin, \
                     source_port, destination_ip, destination_ip_bin, destination_port, \"user\", process, action, \
                     outcome, fields, raw) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     CAST($16 AS jsonb), $17)",
                )
                .bind(id)
                .bind(e.time_us)
                .bind(e.received_us)
                .bind(&e.dataset)
                .bind(&e.host)
                .bind(e.source_ip.map(|ip| ip.to_string()))
                .bind(bin(e.source_ip))
                .bind(e.source_port.map(i32::from))
                .bind(e.destination_ip.map(|ip| ip.to_string()))
                .bind(bin(e.destination_ip))
                .bind(e.destination_port.map(i32::from))
                .bind(&e.user)
                .bind(&e.process)
                .bind(&e.action)
                .bind(&e.outcome)
                .bind(&e.fields)
                .bind(&e.raw)
                .execute(&pg)
                .await
                .unwrap();
            }
            (sqlite, pg)
        });
        Self {
            rt,
            sqlite,
            pg,
            count: events.len(),
            _dir: dir,
        }
    }

    /// The ids SQLite selects, through the store's search.
    fn sqlite_ids(&self, text: &str) -> BTreeSet<i64> {
        let q = EventQuery {
            query: Some(text.to_owned()),
            limit: 1000,
            ..EventQuery::default()
        };
        let page = self.rt.block_on(self.sqlite.search_events(&q)).unwrap();
        assert!(page.next_cursor.is_none(), "the fixture fits in a page");
        page.events.iter().map(|e| e.id).collect()
    }

    /// The ids PostgreSQL selects, with the query compiled to its dialect.
    fn pg_ids(&self, text: &str) -> Result<BTreeSet<i64>, String> {
        let expr = query::parse_at(text, now_us()).map_err(|e| e.to_string())?;
        // One value bound before the fragment, as a search's bounds and cursor are.
        let sql = query::compile_for(&expr, Dialect::Postgres, 1);
        let statement = format!(
            "SELECT id FROM events WHERE time_us >= $1 AND {} ORDER BY id",
            sql.text
        );
        let mut q = sqlx::query_scalar::<_, i64>(&statement).bind(i64::MIN);
        for b in sql.binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Real(f) => q.bind(f),
                Bind::Text(t) => q.bind(t),
                Bind::Blob(b) => q.bind(b),
            };
        }
        self.rt
            .block_on(q.fetch_all(&self.pg))
            .map(|ids| ids.into_iter().collect())
            .map_err(|e| format!("{e}\n{statement}"))
    }

    /// Runs `text` on both; the ids of the events both select, or why they differ.
    fn compare(&self, text: &str) -> Result<BTreeSet<i64>, String> {
        let lite = self.sqlite_ids(text);
        let pg = self.pg_ids(text)?;
        if lite == pg {
            Ok(lite)
        } else {
            Err(format!(
                "{text:?}: SQLite and PostgreSQL differ\nonly SQLite: {:?}\nonly PostgreSQL: {:?}",
                lite.difference(&pg).collect::<Vec<_>>(),
                pg.difference(&lite).collect::<Vec<_>>()
            ))
        }
    }
}

/// Every operator on every kind of field, and the corners of each: (query, whether it selects some but not all).
const QUERIES: &[(&str, bool)] = &[
    // Full text: ASCII case folded, LIKE's characters literal, non-ASCII exact.
    ("failed", true),
    ("FAILED password", true),
    ("\"failed password\"", true),
    ("mimikatz", true),
    ("\"sekurlsa::logonpasswords\"", true),
    ("\"%\"", true),
    ("\"_ *\"", true),
    ("\"\\\\ %\"", true),
    ("\"?\"", true),
    ("É", true),
    ("é", true),
    ("\"\u{1}\"", true),
    ("nowhere-to-be-found", false),
    // Text columns: equality and order ignoring ASCII case, wildcards, empty and non-ASCII values.
    ("user = alice", true),
    ("user = ALICE", true),
    ("user != alice", true),
    ("not user = alice", true),
    ("user > bob", true),
    ("user >= BOB", true),
    ("user < bob_1", true),
    ("user <= \"bob%\"", true),
    ("user = \"bob%\"", true),
    ("user = bob_1", true),
    ("user = bob?1", true),
    ("user = \"bob*\"", true),
    ("user != \"bob*\"", true),
    ("user = \"\"", true),
    ("user != \"\"", true),
    ("user = é", true),
    ("user = É", true),
    ("user < é", true),
    ("user = *", true),
    ("host = ws-*", true),
    ("host != ws-*", true),
    ("host = WS-1?", true),
    ("host < srv", true),
    ("dataset = windows.security", true),
    ("event.dataset != syslog", true),
    ("process = \"*\\\\powershell.exe\"", true),
    ("process.name = sshd", true),
    ("action = logon", true),
    ("action != LOGON", true),
    ("outcome = failure", true),
    ("event.outcome >= s", true),
    ("raw = \"*password*\"", true),
    ("message != \"*mimikatz*\"", true),
    ("raw > g", true),
    // Times: all six operators, absolute and relative.
    ("time = 2024-05-01T14:00:00Z", true),
    ("time != 2024-05-01T14:00:00Z", true),
    ("time >= 2024-05-01T13:30:00Z", true),
    ("time > 2024-05-01T13:30:00Z", true),
    ("@timestamp < 2024-05-01T13:30:00Z", true),
    ("@timestamp <= 2024-05-01T13:30:00+00:00", true),
    ("time < 2024-05-02", false),
    ("time >= 2024-05-01T13:59:00Z", true),
    ("time < -1h", false),
    ("time >= -15m", false),
    // Ports: all six operators.
    ("source.port = 22", true),
    ("src_port != 22", true),
    ("src_port > 1024", true),
    ("src_port >= 1024", true),
    ("destination.port < 40010", true),
    ("dst_port <= 40010", true),
    ("src_port = 0", true),
    ("src_port <= 65535", true),
    // Addresses: one, a range, IPv4 and IPv6, everything.
    ("source.ip = 192.168.1.7", true),
    ("src != 192.168.1.7", true),
    ("src = 10.0.0.0/8", true),
    ("src = 10.0.1.0/24", true),
    ("not src = 10.0.0.0/8", true),
    ("src = 2001:db8::1", true),
    ("src = 2001:db8::/32", true),
    ("src != 2001:db8::/32", true),
    ("src_ip = 0.0.0.0/0", true),
    ("src = ::/0", true),
    ("dst = 10.0.0.0/8", true),
    ("destination.ip != 10.0.1.1", true),
    ("dst_ip = 10.0.2.0/23", true),
    // JSON numbers: equal to the number or its text; order over numbers and numeric strings.
    ("EventID = 4624", true),
    ("EventID = \"4624\"", true),
    ("EventID != 4624", true),
    ("EventID > 4640", true),
    ("EventID >= 4640", true),
    ("EventID < 4630", true),
    ("EventID <= 4630", true),
    ("EventID = 4624.0", true),
    ("EventID = 4.624e3", true),
    ("EventID = 46*", true),
    ("EventID != 46*", true),
    ("LogonType = 10", true),
    ("LogonType = 3", true),
    ("LogonType != 10", true),
    ("LogonType > 5", true),
    ("\"Event ID\" = 4624", true),
    ("Score = 2.5", true),
    ("Score != 2.5", true),
    ("Score > 0", true),
    ("Score >= -1", true),
    ("Score < 7.25", true),
    ("Score <= 0", true),
    ("Score = 2.*", true),
    ("Score = \"*.5\"", true),
    ("Score > 1e1", true),
    ("Score = 100.5", true),
    ("Big = 9007199254740993", true),
    ("Big > 9007199254740992", true),
    ("Big < 9007199254740993", false),
    // Strings that read as numbers, the way SQLite's CAST reads them.
    ("Weird > 0", true),
    ("Weird >= 0", true),
    ("Weird < 0", true),
    ("Weird <= 0", true),
    ("Weird > 999", true),
    ("Weird = 12", false),
    ("Weird > 11.9", true),
    ("Weird < 5.5", true),
    ("Weird = \" 12\"", true),
    ("Weird = *.*", true),
    // JSON booleans: true/false, and 1/0 where SQLite reads them as integers.
    ("Enabled = true", true),
    ("Enabled = TRUE", true),
    ("Enabled = false", true),
    ("Enabled != true", true),
    ("Enabled = 1", true),
    ("Enabled = 0", true),
    ("Enabled > 0", true),
    ("Enabled = 1*", true),
    ("Flag = true", true),
    ("Flag != true", true),
    ("Flag = false", true),
    // JSON text: equality and order ignoring ASCII case, wildcards.
    ("Name = alice", true),
    ("Name = ALICE", true),
    ("Name != alice", true),
    ("Name > bob", true),
    ("Name >= BOB", true),
    ("Name < m", true),
    ("Name <= m", true),
    ("Name = \"\"", true),
    ("Name = é", true),
    ("Name > Z", true),
    ("Name = _x", true),
    ("Name = ?x", true),
    ("Name = \"*\"", true),
    ("CommandLine = \"*whoami_1*\"", true),
    ("CommandLine = \"*100%*\"", true),
    ("CommandLine = \"*\\\\POWERSHELL.exe\"", true),
    ("CommandLine != \"*cmd.exe\"", true),
    // JSON null and missing keys: false whatever the operator; `not` finds them.
    ("Nullable = x", true),
    ("Nullable != x", false),
    ("not Nullable = x", true),
    ("Nullable = *", true),
    ("Nullable > a", true),
    ("NoSuchField = 1", false),
    ("NoSuchField != 1", false),
    ("not NoSuchField = 1", false),
    ("\"no such field\" = *", false),
    // The EVTX fixtures' own fields.
    ("Channel = Security", true),
    ("SubjectLogonId = 0x3e7", true),
    ("TargetUserName = \"*admin*\"", true),
    ("Version > 0", true),
    ("Correlation = *", false),
    // Combined.
    (
        "user = alice and outcome = failure and time >= 2024-05-01T13:00:00Z",
        true,
    ),
    ("src = 10.0.0.0/8 and not dst = 10.0.0.0/8", true),
    ("(action = logon or action = logoff) and host = ws-*", true),
    (
        "mimikatz or \"sekurlsa::logonpasswords\" or Enabled = true",
        true,
    ),
    ("not (EventID > 4630 or Name = alice) Score >= 0", true),
];

#[test]
fn every_operator_on_every_field_kind_selects_the_same_events_on_both() {
    let f = Fixture::new();
    let mut failures = Vec::new();
    for (text, some_not_all) in QUERIES {
        match f.compare(text) {
            Ok(ids) => {
                let informative = !ids.is_empty() && ids.len() < f.count;
                if informative != *some_not_all {
                    failures.push(format!(
                        "{text:?} selected {} of {} events: the fixture no longer tests what it says",
                        ids.len(),
                        f.count
                    ));
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn placeholders_are_numbered_after_the_values_bound_before() {
    let expr = query::parse_at("user = alice and EventID > 5", T0).unwrap();
    let sql = query::compile_for(&expr, Dialect::Postgres, 3);
    assert_eq!(sql.binds.len(), 3, "{}", sql.text);
    for n in 4..4 + sql.binds.len() {
        assert!(sql.text.contains(&format!("${n}")), "${n} in {}", sql.text);
    }
    assert!(!sql.text.contains(&format!("${}", 4 + sql.binds.len())));
    assert!(!sql.text.contains("$3"));
    // The SQLite dialect is what `compile` gives.
    assert_eq!(
        query::compile_for(&expr, Dialect::Sqlite, 3),
        query::compile(&expr)
    );
}

fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        ..Default::default()
    }
}

/// A value as the language writes it: a word where it reads as one, else quoted.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "alice",
            "ALICE",
            "bob",
            "Bob",
            "bob_1",
            "\"bob%\"",
            "é",
            "É",
            "\"\"",
            "m",
            "Zed",
            "_x",
            "?x",
            "ws-*",
            "WS-1?",
            "*",
            "*.*",
            "logon",
            "failure",
            "syslog",
            "sshd",
            "x",
            "Security",
            "0x3e7",
            "\"*whoami_1*\"",
            "\"*100%*\"",
            "\"*\\\\powershell.exe\"",
            "\" 12\"",
            "true",
            "FALSE",
            "46*",
        ])
        .prop_map(str::to_owned),
        proptest::sample::select(vec![
            "0",
            "1",
            "-1",
            "2.5",
            "7.25",
            "10",
            "12",
            "3",
            "4624",
            "4.624e3",
            "9007199254740993",
            "1e3",
            "5.",
        ])
        .prop_map(str::to_owned),
        (-10i64..5000).prop_map(|n| n.to_string()),
        (-100i32..200).prop_map(|n| format!("{}.{}", n / 10, (n % 10).abs())),
        "[a-zA-Z0-9_%.*?-]{1,6}".prop_filter("not a keyword", |w| {
            !["and", "or", "not"].contains(&w.to_ascii_lowercase().as_str())
        }),
    ]
}

fn comparison() -> impl Strategy<Value = String> {
    let ops = || proptest::sample::select(vec!["=", "!=", ">", ">=", "<", "<="]);
    let eq = || proptest::sample::select(vec!["=", "!="]);
    prop_oneof![
        6 => (
            proptest::sample::select(vec![
                "user", "host", "process", "action", "outcome", "dataset", "raw", "EventID", "LogonType",
                "Enabled", "Score", "Weird", "Name", "Nullable", "Flag", "Big", "CommandLine", "Channel",
                "\"Event ID\"", "NoSuchField", "Version",
            ]),
            ops(),
            value(),
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        1 => (
            proptest::sample::select(vec!["src", "dst"]),
            eq(),
            proptest::sample::select(vec![
                "10.0.0.0/8",
                "10.0.1.0/24",
                "192.168.1.7",
                "2001:db8::/32",
                "::/0",
                "0.0.0.0/0",
            ]),
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        1 => (
            proptest::sample::select(vec!["src_port", "dst_port"]),
            ops(),
            proptest::sample::select(vec![0u32, 22, 80, 443, 1024, 40005, 65535]),
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        1 => (
            ops(),
            (0i64..50).prop_map(|m| {
                let t = T0 - m * MINUTE;
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t) * 1000)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            }),
        )
            .prop_map(|(o, t)| format!("time {o} {t}")),
    ]
}

fn generated() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => comparison(),
        1 => proptest::sample::select(vec!["failed", "mimikatz", "É", "\"%\"", "\"_ *\"", "password", "\"?\""])
            .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|q| format!("not {q}")),
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" and "))),
            proptest::collection::vec(inner, 2..4).prop_map(|v| format!("({})", v.join(" or "))),
        ]
    })
}

#[test]
fn generated_queries_select_the_same_events_on_both() {
    let f = Fixture::new();
    let mut runner = TestRunner::new(cases(1000));
    runner
        .run(&generated(), |q| {
            f.compare(&q).map(|_| ()).map_err(TestCaseError::fail)
        })
        .unwrap();
}
