//! SIEM storage: events searched in the query language, paging, retention, dead letters and alert deduplication.

use std::collections::HashSet;
use std::net::IpAddr;

use qila_store::{
    AlertFilter, AlertStatus, AlertUpsert, DeadLetter, EventQuery, NewAlert, NewEvent, Store,
    StoreError, now_us,
};
use serde_json::json;

const MIN: i64 = 60_000_000;

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    Env { _dir: dir, store }
}

fn ev(time_us: i64, raw: &str) -> NewEvent {
    NewEvent {
        time_us,
        received_us: time_us,
        dataset: "test".into(),
        host: None,
        source_ip: None,
        source_port: None,
        destination_ip: None,
        destination_port: None,
        user: None,
        process: None,
        action: None,
        outcome: None,
        fields: "{}".to_owned(),
        raw: raw.into(),
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// A small corpus, named by `raw`; times are minutes before now.
async fn corpus(store: &Store) -> i64 {
    let now = now_us();
    let mut events = Vec::new();
    let mut e = ev(now - MIN, "alpha logon success");
    e.dataset = "windows.security".into();
    e.host = Some("WS-01".into());
    e.user = Some("Alice".into());
    e.source_ip = ip("10.1.2.3");
    e.source_port = Some(50_000);
    e.destination_ip = ip("192.168.1.10");
    e.destination_port = Some(445);
    e.process = Some("C:\\Windows\\System32\\cmd.exe".into());
    e.action = Some("logon".into());
    e.outcome = Some("success".into());
    e.fields = json!({"EventID": 4624, "LogonType": "3", "CommandLine": "cmd /c whoami /all", "Event ID": "x"}).to_string();
    events.push(e);

    let mut e = ev(now - 10 * MIN, "bravo logon FAILURE 100%_done");
    e.dataset = "windows.security".into();
    e.host = Some("ws-02".into());
    e.user = Some("bob".into());
    e.source_ip = ip("10.200.0.1");
    e.source_port = Some(1023);
    e.destination_ip = ip("2001:db8::5");
    e.destination_port = Some(22);
    e.action = Some("logon".into());
    e.outcome = Some("failure".into());
    e.fields = json!({"EventID": 4625, "LogonType": 10, "Enabled": true}).to_string();
    events.push(e);

    let mut e = ev(now - 3 * 60 * MIN, "charlie dns query x' OR 1=1 --");
    e.dataset = "dns".into();
    e.host = Some("dns-1".into());
    e.source_ip = ip("2001:db8:1::7");
    e.destination_ip = ip("8.8.8.8");
    e.destination_port = Some(53);
    e.user = Some("x' OR 1=1 --".into());
    e.fields = json!({"query": "evil.example", "EventID": "4624"}).to_string();
    events.push(e);

    let mut e = ev(now - 8 * 24 * 60 * MIN, "delta old syslog");
    e.dataset = "syslog".into();
    e.source_ip = ip("172.16.0.1");
    events.push(e);

    store.insert_events(&events).await.unwrap();
    now
}

async fn raws(store: &Store, query: &str) -> Vec<String> {
    let page = store
        .search_events(&EventQuery {
            query: Some(query.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    page.events
        .into_iter()
        .map(|e| e.raw.split(' ').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_by_each_field_kind() {
    let env = env().await;
    let s = &env.store;
    corpus(s).await;
    let cases: &[(&str, &[&str])] = &[
        // text columns: case-insensitive, wildcards
        ("user = alice", &["alpha"]),
        ("user.name = ALICE", &["alpha"]),
        ("user != alice", &["bravo", "charlie"]),
        ("not user = alice", &["bravo", "charlie", "delta"]),
        ("host = ws-*", &["alpha", "bravo"]),
        ("host = \"ws-0?\"", &["alpha", "bravo"]),
        ("host.name != ws*", &["charlie"]),
        ("process = *cmd.exe", &["alpha"]),
        (
            "process.name = \"C:\\\\Windows\\\\System32\\\\cmd.exe\"",
            &["alpha"],
        ),
        ("action = logon and outcome = failure", &["bravo"]),
        ("event.outcome = success", &["alpha"]),
        ("dataset = windows.*", &["alpha", "bravo"]),
        ("event.dataset = DNS", &["charlie"]),
        // ports
        ("destination.port = 445", &["alpha"]),
        ("source.port < 1024", &["bravo"]),
        ("dst_port >= 53", &["alpha", "charlie"]),
        ("destination.port != 445", &["bravo", "charlie"]),
        // IPs and CIDRs, v4 and v6
        ("source.ip = 10.1.2.3", &["alpha"]),
        ("src = 10.0.0.0/8", &["alpha", "bravo"]),
        ("src_ip = 10.1.0.0/16", &["alpha"]),
        ("src != 10.0.0.0/8", &["charlie", "delta"]),
        ("dst = 2001:db8::/32", &["bravo"]),
        ("src = 2001:db8::/32", &["charlie"]),
        ("destination.ip = 2001:db8::5", &["bravo"]),
        ("dst_ip = 8.8.8.8", &["charlie"]),
        ("src = 0.0.0.0/0", &["alpha", "bravo", "delta"]),
        // JSON fields
        ("EventID = 4624", &["alpha", "charlie"]),
        ("EventID != 4624", &["bravo"]),
        ("EventID > 4624", &["bravo"]),
        ("EventID <= 4624", &["alpha", "charlie"]),
        ("LogonType = 3", &["alpha"]),
        ("LogonType >= 3", &["alpha", "bravo"]),
        ("CommandLine = \"*whoami*\"", &["alpha"]),
        ("CommandLine = \"*WHOAMI /ALL\"", &["alpha"]),
        ("query = evil.example", &["charlie"]),
        ("\"Event ID\" = x", &["alpha"]),
        ("Enabled = true", &["bravo"]),
        ("Missing = *", &[]),
        ("not Missing = x", &["alpha", "bravo", "charlie", "delta"]),
        // full text
        ("logon", &["alpha", "bravo"]),
        ("LOGON failure", &["bravo"]),
        ("\"100%_done\"", &["bravo"]),
        ("\"100%\"", &["bravo"]),
        ("_", &["bravo"]),
        ("message = \"*old*\"", &["delta"]),
        // not / or / precedence
        ("alpha or bravo and dns", &["alpha"]),
        ("(alpha or bravo) and logon", &["alpha", "bravo"]),
        ("not (alpha or bravo)", &["charlie", "delta"]),
        ("not alpha and not bravo", &["charlie", "delta"]),
        ("alpha OR charlie Or delta", &["alpha", "charlie", "delta"]),
        ("NOT NOT alpha", &["alpha"]),
        // time
        ("time >= -15m", &["alpha", "bravo"]),
        ("time >= -5m", &["alpha"]),
        ("@timestamp < -2h", &["charlie", "delta"]),
        ("time >= -7d and time < -1h", &["charlie"]),
        ("time <= now", &["alpha", "bravo", "charlie", "delta"]),
        ("time > 2000-01-01T00:00:00Z and time < 2000-01-02", &[]),
        ("source.ip = 10.1.2.3 and time >= -1h", &["alpha"]),
        // injection-shaped values are values
        ("user = \"x' OR 1=1 --\"", &["charlie"]),
        ("\"' OR 1=1 --\"", &["charlie"]),
        ("user = \"'; DROP TABLE events; --\"", &[]),
        ("\"'); DELETE FROM events; --\" = 1", &[]),
    ];
    for (q, want) in cases {
        assert_eq!(raws(s, q).await, *want, "{q}");
    }
    assert_eq!(
        raws(s, "delta or not delta").await.len(),
        4,
        "the table is intact"
    );
}

#[tokio::test]
async fn time_range_and_blank_query() {
    let env = env().await;
    let s = &env.store;
    let now = corpus(s).await;
    let page = s
        .search_events(&EventQuery {
            query: Some("  ".into()),
            from_us: Some(now - 11 * MIN),
            to_us: Some(now - MIN),
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].user.as_deref(), Some("bob"));
    assert_eq!(
        page.events[0].destination_ip.as_deref(),
        Some("2001:db8::5")
    );
    assert_eq!(page.events[0].fields["LogonType"], json!(10));
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once() {
    let env = env().await;
    let s = &env.store;
    let base = now_us();
    // Many events share a time, so paging must order by (time, id).
    let events: Vec<_> = (0..2_537)
        .map(|i| ev(base - (i / 7) as i64, &format!("e{i} page")))
        .collect();
    let ids = s.insert_events(&events).await.unwrap();
    assert_eq!(ids.len(), events.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let back = s.event(ids[5]).await.unwrap().unwrap();
    assert_eq!(back.raw, "e5 page");
    let by_ids = s.events_by_ids(&[ids[9], -1, ids[2]]).await.unwrap();
    assert_eq!(
        by_ids.iter().map(|e| e.raw.as_str()).collect::<Vec<_>>(),
        ["e9 page", "e2 page"]
    );

    for limit in [1, 100, 1000, 5000] {
        let mut seen = HashSet::new();
        let mut last: Option<(i64, i64)> = None;
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = s
                .search_events(&EventQuery {
                    query: Some("page".into()),
                    limit,
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            pages += 1;
            assert!(page.events.len() <= limit.min(1000) as usize);
            for e in &page.events {
                assert!(seen.insert(e.id), "{} twice", e.id);
                if let Some(prev) = last {
                    assert!((e.time_us, e.id) < prev, "newest first");
                }
                last = Some((e.time_us, e.id));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            if limit == 1 && pages > 50 {
                // Enough for the smallest pages; the rest are the same.
                break;
            }
        }
        if limit > 1 {
            assert_eq!(seen.len(), events.len(), "limit {limit}");
        }
    }
    let bad = s
        .search_events(&EventQuery {
            cursor: Some("nonsense".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::BadCursor(_)), "{bad}");
    assert!(
        bad.to_string()
            .contains("repeat the search without a cursor")
    );
}

#[tokio::test]
async fn bad_queries_give_positions() {
    let env = env().await;
    let err = env
        .store
        .search_events(&EventQuery {
            query: Some("source.ip = 10.0.0.0/8 and user =".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let StoreError::Query(q) = &err else {
        panic!("{err}")
    };
    assert_eq!(q.position, 33);
    assert_eq!(
        err.to_string(),
        "invalid query at 33: expected a value after '='"
    );
}

#[tokio::test]
async fn hostile_queries_are_refused_or_harmless() {
    let env = env().await;
    let s = &env.store;
    corpus(s).await;
    // The most a query may hold still runs in SQLite.
    let widest = (0..256)
        .map(|i| format!("F{i} = {i}"))
        .collect::<Vec<_>>()
        .join(" or ");
    assert!(widest.chars().count() <= 4096);
    assert_eq!(raws(s, &widest).await, Vec::<String>::new());
    let deep = format!("{}alpha{}", "not (".repeat(32), ")".repeat(32));
    assert_eq!(raws(s, &deep).await, ["alpha"]);
    let ands = (0..256)
        .map(|i| format!("EventID>{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(ands.chars().count() <= 4096);
    assert_eq!(raws(s, &ands).await, ["alpha", "bravo", "charlie"]);
}

#[tokio::test]
async fn retention_deletes_only_old_rows() {
    let env = env().await;
    let s = &env.store;
    let cut = 1_000_000_000;
    let events: Vec<_> = (0..25_000).map(|i| ev(cut - 20_000 + i, "r")).collect();
    s.insert_events(&events).await.unwrap();
    let letters: Vec<_> = [cut - 1, cut, cut + 1]
        .iter()
        .map(|&t| DeadLetter {
            received_us: t,
            source: "http".into(),
            location: "line 1".into(),
            reason: "bad".into(),
            raw: "x".into(),
        })
        .collect();
    s.insert_dead_letters(&letters).await.unwrap();
    assert_eq!(s.delete_events_before(cut).await.unwrap(), 20_000);
    let left = s
        .search_events(&EventQuery {
            query: Some(format!("time < {}", "1970-01-01T00:16:40Z")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(left.events.is_empty());
    let db = s.path().expect("an SQLite store");
    let mut conn =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 5_000);
    assert_eq!(s.dead_letter_count().await.unwrap(), 2);
    assert_eq!(s.delete_events_before(cut).await.unwrap(), 0);
}

#[tokio::test]
async fn dead_letters_are_kept_verbatim() {
    let env = env().await;
    let s = &env.store;
    let odd = String::from_utf8_lossy(
        b"<13>bad \xff\xfe record\0 with nul, 'quotes' \"and\" \\ \r\n\t\xf0\x9f\x98\x80",
    )
    .into_owned();
    let letters: Vec<_> = (0..5)
        .map(|i| DeadLetter {
            received_us: 100 + i,
            source: format!("file:auth{i}.log"),
            location: format!("line {}", i + 12),
            reason: "no timestamp".into(),
            raw: odd.clone(),
        })
        .collect();
    let ids = s.insert_dead_letters(&letters).await.unwrap();
    assert_eq!(s.dead_letter_count().await.unwrap(), 5);
    let page = s.dead_letters(2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    assert_eq!(page[0].raw, odd);
    assert_eq!(page[0].location, "line 16");
    assert_eq!(page[0].source, "file:auth4.log");
    let next = s.dead_letters(10, Some(ids[3])).await.unwrap();
    assert_eq!(next.len(), 3);
    assert_eq!(next[0].id, ids[2]);
}

fn detection(time_us: i64, event_ids: Vec<i64>) -> NewAlert {
    NewAlert {
        rule_id: "r-1".into(),
        rule_title: "Brute force".into(),
        level: "high".into(),
        tags: vec!["attack.t1110".into()],
        group_key: "user=alice".into(),
        time_us,
        event_ids,
        findings: 1,
        details: json!({"why": "many failures"}),
    }
}

#[tokio::test]
async fn alerts_deduplicate_within_the_window() {
    let env = env().await;
    let s = &env.store;
    let w = 10 * MIN;
    let t0 = 1_000 * MIN;
    let AlertUpsert::Created(a) = s.raise_alert(&detection(t0, vec![1, 2]), w).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (a.count, a.status, a.tags.clone()),
        (1, AlertStatus::Open, vec!["attack.t1110".to_owned()])
    );
    let AlertUpsert::Merged(m) = s
        .raise_alert(&detection(t0 + w, vec![2, 3]), w)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (m.id.clone(), m.count, m.first_us, m.last_us),
        (a.id.clone(), 2, t0, t0 + w)
    );
    assert_eq!(m.event_ids, [1, 2, 3]);
    // An earlier, late-arriving detection merges and widens the span.
    let AlertUpsert::Merged(m) = s
        .raise_alert(&detection(t0 - MIN, vec![]), w)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((m.count, m.first_us), (3, t0 - MIN));
    // After the window: a new alert.
    let AlertUpsert::Created(b) = s
        .raise_alert(&detection(t0 + 2 * w + 1, vec![4]), w)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(b.id, a.id);
    // Another group key or rule: a new alert.
    let mut other = detection(t0 + 2 * w + 1, vec![]);
    other.group_key = "user=bob".into();
    assert!(matches!(
        s.raise_alert(&other, w).await.unwrap(),
        AlertUpsert::Created(_)
    ));
    // Event ids are capped at the first 100.
    for i in 0..3 {
        s.raise_alert(
            &detection(t0 + 2 * w + 2, (i * 50..i * 50 + 50).collect()),
            w,
        )
        .await
        .unwrap();
    }
    let capped = s.alert(&b.id).await.unwrap().unwrap();
    assert_eq!(capped.event_ids.len(), 100);
    assert_eq!(capped.event_ids[0], 4);
    assert_eq!(capped.count, 4);
    // A closed alert is not merged into.
    let closed = s
        .set_alert_status(&b.id, AlertStatus::Closed, "analyst-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.status, AlertStatus::Closed);
    let AlertUpsert::Created(c) = s
        .raise_alert(&detection(t0 + 2 * w + 3, vec![]), w)
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(c.id, b.id);
    // Status changes are audited.
    s.set_alert_status(&a.id, AlertStatus::Acknowledged, "analyst-2")
        .await
        .unwrap()
        .unwrap();
    let log = s.audit_log(0, 100).await.unwrap();
    let entries: Vec<_> = log.iter().filter(|e| e.action == "alert.status").collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[1].actor.as_str(), entries[1].target.as_str()),
        ("analyst-2", a.id.as_str())
    );
    assert_eq!(
        entries[1].detail,
        Some(json!({"from": "open", "to": "acknowledged", "rule_id": "r-1"}))
    );
    assert_eq!(
        s.set_alert_status("nope", AlertStatus::Closed, "x")
            .await
            .unwrap(),
        None
    );
    // Listing and filters.
    let all = s
        .alerts(&AlertFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let open = s
        .alerts(&AlertFilter {
            status: Some(AlertStatus::Open),
            limit: 100,
            ..Default::default()
        })
        .await;
    assert_eq!(open.unwrap().len(), 2);
    let page = s
        .alerts(&AlertFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let rest = s
        .alerts(&AlertFilter {
            limit: 100,
            before: Some(page[1].id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    let high = AlertFilter {
        rule_id: Some("r-1".into()),
        level: Some("low".into()),
        limit: 5,
        ..Default::default()
    };
    assert!(s.alerts(&high).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_raises_create_one_alert() {
    let env = env().await;
    let s = env.store.clone();
    let t = now_us();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.raise_alert(&detection(t + i, vec![i]), MIN)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        if let AlertUpsert::Created(_) = task.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    let all = s
        .alerts(&AlertFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].count, 16);
    assert_eq!(all[0].event_ids.len(), 16);
}
