//! Property tests of the event search language (`docs/search.md`): arbitrary text, queries mutated from the ones
//! the docs and tests use, and queries generated from the grammar. Parsing never panics and takes bounded time; a
//! refused query names a position inside it (exactly where the problem is, for the defects planted here); a
//! query that parses compiles to SQL whose placeholders match its values, and runs against a real store.
//!
//! The default run takes a few seconds; `PROPTEST_CASES=5000 cargo test -p qila-store --test query_fuzz` runs
//! longer.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use qila_store::query::{self, MAX_QUERY_CHARS};
use qila_store::{EventQuery, NewEvent, Store, StoreError};

/// The queries of `docs/search.md` and the store's tests.
const SEEDS: &[&str] = &[
    "source.ip = 1.2.3.4 and time >= -1h",
    "user = alice and outcome = failure and time >= -15m",
    "src = 10.0.0.0/8 and not dst = 10.0.0.0/8",
    "EventID = 4625 and LogonType = 10",
    "CommandLine = \"*whoami*\"",
    "mimikatz or \"sekurlsa::logonpasswords\"",
    "host = ws-* and (action = logon or action = logoff) and time >= 2024-05-01T00:00:00Z and time < 2024-05-02",
    "a b or c and not d",
    "NOT (a OR b) AND user=alice",
    "\"Event ID\" = 4624",
    "\"Event ID\"=\"a\\\"b\\\\c\"",
    "CommandLine=a=b",
    "process = \"*\\\\powershell.exe\"",
    "Enabled = true",
    "source.port >= 1024 and destination.port < 1024",
    "source.ip = 2001:db8::/32",
    "@timestamp < 2023-11-14T22:13:20Z",
    "user = \"x' OR 1=1 --\" and CommandLine = \"*who_ami*\"",
    "failed password",
    "\"failed password\"",
    "user != alice",
    "user =",
    "a and",
    "(a or b",
    "a)",
    "= 5",
    "\"abc",
    "src = 10.0.0.300",
    "src > 10.0.0.1",
    "source.port = http",
    "time > yesterday",
];

/// Far above what any case takes (microseconds to milliseconds), far below "unbounded".
const BOUND: Duration = Duration::from_secs(5);

const NOW: i64 = 1_714_572_000_000_000;

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

/// A store with a few events whose fields the generated queries name.
struct Fixture {
    rt: tokio::runtime::Runtime,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = rt.block_on(Store::open(dir.path())).unwrap();
        let events: Vec<NewEvent> = (0..20)
            .map(|i| NewEvent {
                time_us: NOW - i * 60_000_000,
                received_us: NOW,
                dataset: if i % 2 == 0 { "syslog" } else { "windows.security" }.into(),
                host: Some(format!("ws-{i}")),
                source_ip: Some(format!("10.0.0.{i}").parse().unwrap()),
                source_port: Some(40000 + i as u16),
                destination_ip: Some("2001:db8::1".parse().unwrap()),
                destination_port: Some(22),
                user: Some(["alice", "bob", "root"][i as usize % 3].into()),
                process: Some("sshd".into()),
                action: Some("logon".into()),
                outcome: Some(if i % 3 == 0 { "failure" } else { "success" }.into()),
                fields: format!(
                    r#"{{"EventID": {}, "LogonType": "10", "Enabled": true, "CommandLine": "cmd /c whoami_{i} 100%", "Event ID": "4624"}}"#,
                    4620 + i
                ),
                raw: format!("Failed password for alice from 10.0.0.{i} port 22 \\ % _ * ? \u{1}"),
            })
            .collect();
        rt.block_on(store.insert_events(&events)).unwrap();
        Self {
            rt,
            store,
            _dir: dir,
        }
    }

    /// Checks the properties for one query; `must_parse` for a query generated from the grammar.
    fn check(&self, text: &str, must_parse: bool) -> Result<(), TestCaseError> {
        let started = Instant::now();
        let parsed = query::parse_at(text, NOW);
        prop_assert!(
            started.elapsed() < BOUND,
            "parsing took {:?}",
            started.elapsed()
        );
        let chars = text.chars().count();
        match parsed {
            Err(e) => {
                prop_assert!(!must_parse, "{text:?} was generated from the grammar: {e}");
                prop_assert!(
                    e.position <= chars.min(MAX_QUERY_CHARS),
                    "{e} outside {chars} characters"
                );
                prop_assert!(!e.message.is_empty());
                // The store refuses it the same way, with no SQL run (a blank query is no filter there).
                let got = self.search(text);
                if text.trim().is_empty() {
                    prop_assert!(got.is_ok(), "{got:?}");
                    return Ok(());
                }
                prop_assert!(
                    matches!(&got, Err(StoreError::Query(q)) if q.position == e.position),
                    "{got:?}"
                );
            }
            Ok(expr) => {
                let sql = query::compile(&expr);
                prop_assert_eq!(sql.text.matches('?').count(), sql.binds.len());
                let started = Instant::now();
                let got = self.search(text);
                prop_assert!(got.is_ok(), "{text:?} parsed but did not run: {got:?}");
                prop_assert!(
                    started.elapsed() < BOUND,
                    "the search took {:?}",
                    started.elapsed()
                );
            }
        }
        Ok(())
    }

    fn search(&self, text: &str) -> Result<usize, StoreError> {
        let q = EventQuery {
            query: Some(text.to_owned()),
            limit: 1000,
            ..EventQuery::default()
        };
        self.rt
            .block_on(self.store.search_events(&q))
            .map(|page| page.events.len())
    }
}

/// Bits of the language that mutations insert.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(" ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("=".to_owned()),
        Just("!=".to_owned()),
        Just(">=".to_owned()),
        Just("<".to_owned()),
        Just("!".to_owned()),
        Just(" and ".to_owned()),
        Just(" or ".to_owned()),
        Just("not ".to_owned()),
        Just("*".to_owned()),
        Just("?".to_owned()),
        Just("%".to_owned()),
        Just("_".to_owned()),
        Just("'".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{1}".to_owned()),
        Just("\t".to_owned()),
        Just("\u{a0}".to_owned()),
        Just("é".to_owned()),
        Just("/".to_owned()),
        Just("-15m".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("::".to_owned()),
        "[a-zA-Z0-9_.@-]{1,10}",
    ]
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutated() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(SEEDS),
        proptest::collection::vec((any::<usize>(), any::<bool>(), token()), 1..6),
    )
        .prop_map(|(seed, edits)| {
            let mut s = seed.to_owned();
            for (at, insert, t) in edits {
                let i = boundary(&s, at);
                if insert {
                    s.insert_str(i, &t);
                } else {
                    let j = boundary(&s, i + t.len());
                    s.replace_range(i..j.max(i), "");
                }
            }
            s
        })
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.%*?\\\\:@/-]{1,12}".prop_filter("not a keyword", |w| {
            !["and", "or", "not"].contains(&w.to_ascii_lowercase().as_str())
        }),
        Just("mimikatz".to_owned()),
        Just("alice".to_owned()),
    ]
}

/// Text as a quoted string: `"` and `\` escaped.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn any_text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,16}"
}

fn comparison() -> impl Strategy<Value = String> {
    let ops = || proptest::sample::select(vec!["=", "!=", ">", ">=", "<", "<="]);
    let eq = || proptest::sample::select(vec!["=", "!="]);
    prop_oneof![
        (
            proptest::sample::select(vec!["time", "@timestamp"]),
            ops(),
            proptest::sample::select(vec![
                "-15m",
                "-2h",
                "-7d",
                "-1w",
                "-30s",
                "now",
                "2024-05-01",
                "2024-05-01T13:00:00Z",
                "2024-05-01T15:00:00+02:00"
            ]),
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        (
            proptest::sample::select(vec!["src", "source.ip", "dst_ip", "destination.ip"]),
            eq(),
            proptest::sample::select(vec![
                "10.0.0.1",
                "10.0.0.0/8",
                "0.0.0.0/0",
                "2001:db8::1",
                "2001:db8::/32",
                "::/0"
            ]),
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        (
            proptest::sample::select(vec!["src_port", "destination.port"]),
            ops(),
            0u32..=65535,
        )
            .prop_map(|(f, o, v)| format!("{f}{o}{v}")),
        (
            proptest::sample::select(vec![
                "user",
                "host",
                "process.name",
                "event.action",
                "outcome",
                "dataset",
                "raw",
                "message",
                "CommandLine",
                "EventID",
                "LogonType",
                "Enabled",
                "winlog.event_id"
            ]),
            ops(),
            prop_oneof![
                word(),
                any_text().prop_map(|t| quoted(&t)),
                (-100000i64..100000).prop_map(|n| n.to_string()),
                Just("true".to_owned())
            ],
        )
            .prop_map(|(f, o, v)| format!("{f} {o} {v}")),
        // A quoted field name: any text but '"' and control characters.
        ("[^\"\\p{Cc}]{1,12}", eq(), word())
            .prop_map(|(f, o, v)| format!("{} {o} {v}", quoted(&f))),
    ]
}

/// Queries generated from the grammar of `docs/search.md`.
fn valid() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        word(),
        any_text()
            .prop_filter("not empty", |t| !t.is_empty())
            .prop_map(|t| quoted(&t)),
        comparison(),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|q| format!("not {q}")),
            inner.clone().prop_map(|q| format!("({q})")),
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" and "))),
            proptest::collection::vec(inner.clone(), 2..4)
                .prop_map(|v| format!("({})", v.join(" "))),
            proptest::collection::vec(inner, 2..4).prop_map(|v| format!("({})", v.join(" OR "))),
        ]
    })
}

#[test]
fn arbitrary_and_mutated_queries_parse_or_fail_with_a_position() {
    let f = Fixture::new();
    for seed in SEEDS {
        f.check(seed, false).unwrap();
    }
    let mut runner = TestRunner::new(cases(256));
    runner
        .run(&prop_oneof![any::<String>(), mutated()], |q| {
            f.check(&q, false)
        })
        .unwrap();
}

#[test]
fn generated_queries_parse_and_run_against_a_real_store() {
    let f = Fixture::new();
    let mut runner = TestRunner::new(cases(256));
    runner.run(&valid(), |q| f.check(&q, true)).unwrap();
}

#[test]
fn planted_defects_are_refused_exactly_where_they_are() {
    let f = Fixture::new();
    let mut runner = TestRunner::new(cases(256));
    runner
        .run(&(valid(), any::<usize>()), |(q, at)| {
            let n = q.chars().count();
            prop_assume!(n + 8 <= MAX_QUERY_CHARS);
            // A NUL anywhere: refused at it.
            let i = at % (n + 1);
            let mut with_nul: String = q.chars().take(i).collect();
            with_nul.push('\0');
            with_nul.extend(q.chars().skip(i));
            let e = query::parse_at(&with_nul, NOW).unwrap_err();
            prop_assert_eq!(e.position, i, "{}", e);
            // A dangling `and (`: the query ends where a term was expected.
            let e = query::parse_at(&format!("{q} and ("), NOW).unwrap_err();
            prop_assert_eq!(e.position, n + 6, "{}", e);
            // An IP field with text: refused at the value.
            let e = query::parse_at(&format!("{q} or src = nowhere"), NOW).unwrap_err();
            prop_assert_eq!(e.position, n + 10, "{}", e);
            f.check(&with_nul, false)
        })
        .unwrap();
}
