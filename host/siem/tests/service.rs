//! The SIEM service through its API: ingest is acknowledged after commit, malformed records become dead letters,
//! findings become one deduplicated alert handed to the sink, a slow store answers Busy without losing anything.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qila_detect::{Detector, RuleSet};
use qila_siem::{AlertSink, Record, Siem, SiemConfig, SiemError};
use qila_store::{AlertRow, EventQuery, Store};

#[derive(Default)]
struct Collect(Mutex<Vec<AlertRow>>);

impl AlertSink for Collect {
    fn created(&self, alert: AlertRow) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move { self.0.lock().unwrap().push(alert) })
    }
}

fn telecom_rules() -> Detector {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../plugins/siem/rules"
    ));
    Detector::new(RuleSet::load(&[dir], &[]).expect("rules"))
}

fn failures(ip: &str, n: usize) -> Vec<(String, Record)> {
    (0..n)
        .map(|i| {
            (
                format!("line {}", i + 1),
                Record::Text(format!(
                    "Nov 28 03:10:{i:02} edge-1 sshd[44{i:02}]: Failed password for invalid user u{i} from {ip} port 4410{i} ssh2"
                )),
            )
        })
        .collect()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_events_are_stored_checked_and_raise_one_deduplicated_alert() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let sink = Arc::new(Collect::default());
    let (siem, tasks) = Siem::start(
        store.clone(),
        telecom_rules(),
        Vec::new(),
        sink.clone(),
        SiemConfig::default(),
    );

    let mut batch = failures("198.51.100.77", 7);
    batch.push(("line 8".into(), Record::Text("{not json".into())));
    batch.push((
        "line 9".into(),
        Record::Undecodable("\u{fffd}\u{fffd}".into(), "not UTF-8 (byte 0)".into()),
    ));
    let done = siem.ingest("test", batch).await.unwrap();
    assert_eq!((done.accepted, done.rejected), (7, 2), "{done:?}");
    assert_eq!(done.errors[0].location, "line 8");

    // Acknowledged means committed: searchable at once.
    let page = store
        .search_events(&EventQuery {
            query: Some("source.ip = 198.51.100.77".into()),
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 7);
    let dead = store.dead_letters(10, None).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .any(|d| d.raw == "{not json" && d.location == "line 8" && !d.reason.is_empty())
    );

    // Five failures fire the brute force, the sixth and seventh add to the same alert.
    wait_for("every event checked", async || siem.stats().checked == 7).await;
    let brute: Vec<AlertRow> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.rule_title == "SSH Brute Force From One Source")
        .cloned()
        .collect();
    assert_eq!(brute.len(), 1, "one new alert handed to the sink");
    let stored = store.alert(&brute[0].id).await.unwrap().unwrap();
    assert_eq!(stored.group_key, "source.ip=198.51.100.77");
    assert_eq!(
        stored.count, 3,
        "fired at the 5th, 6th and 7th failure: one alert"
    );
    assert!(stored.event_ids.len() >= 5);
    assert_eq!(
        stored.tags,
        vec!["attack.credential-access", "attack.t1110.001"]
    );

    drop(siem);
    tasks.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_makes_senders_wait_then_answers_busy_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let sink = Arc::new(Collect::default());
    let config = SiemConfig {
        queue_batches: 1,
        enqueue_timeout: Duration::from_millis(300),
        ..SiemConfig::default()
    };
    let (siem, tasks) = Siem::start(store.clone(), telecom_rules(), Vec::new(), sink, config);

    // Another connection holds SQLite's write lock: the writer waits on it.
    let db = dir.path().join(qila_store::DATABASE_FILE);
    let mut lock =
        <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();

    let first = tokio::spawn({
        let siem = siem.clone();
        async move { siem.ingest("a", failures("192.0.2.1", 3)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn({
        let siem = siem.clone();
        async move { siem.ingest("b", failures("192.0.2.2", 3)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The writer holds the first batch, the queue the second: the third waits 300 ms and is refused whole.
    let third = siem.ingest("c", failures("192.0.2.3", 3)).await;
    assert!(matches!(third, Err(SiemError::Busy)), "{third:?}");
    assert_eq!(siem.stats().busy, 1);

    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap().accepted, 3);
    assert_eq!(second.await.unwrap().unwrap().accepted, 3);
    // Sent again, it goes in.
    assert_eq!(
        siem.ingest("c", failures("192.0.2.3", 3))
            .await
            .unwrap()
            .accepted,
        3
    );
    let all = store
        .search_events(&EventQuery {
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.events.len(), 9);
    drop(siem);
    tasks.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_udp_and_tcp_reaches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (siem, _tasks) = Siem::start(
        store.clone(),
        telecom_rules(),
        Vec::new(),
        Arc::new(Collect::default()),
        SiemConfig::default(),
    );
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = udp.local_addr().unwrap();
    qila_siem::syslog::serve_udp(siem.clone(), udp);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    qila_siem::syslog::serve_tcp(siem.clone(), tcp, Default::default());

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rfc5424 = "<34>1 2026-11-28T03:10:00Z edge-1 sshd 4410 - - Failed password for root from 192.0.2.10 port 1 ssh2";
    client.send_to(rfc5424.as_bytes(), udp_addr).await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    let rfc3164 = "<38>Nov 28 03:10:01 edge-2 sshd[4411]: Failed password for admin from 192.0.2.11 port 2 ssh2";
    // One newline-framed message and one octet-counted (RFC 6587).
    stream
        .write_all(format!("{rfc3164}\n").as_bytes())
        .await
        .unwrap();
    let counted = rfc3164.replace("192.0.2.11", "192.0.2.12");
    stream
        .write_all(format!("{} {counted}", counted.len()).as_bytes())
        .await
        .unwrap();
    stream.flush().await.unwrap();

    wait_for("three syslog events", async || {
        store
            .search_events(&EventQuery {
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
            .len()
            == 3
    })
    .await;
    let page = store
        .search_events(&EventQuery {
            query: Some("host = edge-1".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events[0].source_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(page.events[0].dataset, "linux.auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_tcp_closes_idle_and_slow_senders_and_caps_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let (siem, _tasks) = Siem::start(
        store.clone(),
        telecom_rules(),
        Vec::new(),
        Arc::new(Collect::default()),
        SiemConfig::default(),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let limits = qila_siem::syslog::TcpLimits {
        max_connections: 2,
        idle_timeout: std::time::Duration::from_millis(600),
        frame_timeout: std::time::Duration::from_millis(300),
    };
    qila_siem::syslog::serve_tcp(siem.clone(), tcp, limits);
    // Closed by the server: the read sees the end of the stream (bounded here by 5 s, far above the limits).
    async fn closed(stream: &mut tokio::net::TcpStream) -> std::time::Duration {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the server closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
        started.elapsed()
    }
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"<34>1 2026-11-28T03:10:00Z half a mess")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // A third sender while two are open is turned away at once.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut third).await < std::time::Duration::from_millis(250));
    assert!(closed(&mut slow).await < std::time::Duration::from_millis(1500));
    assert!(closed(&mut idle).await < std::time::Duration::from_millis(1500));
    // With both gone, a sender is served again.
    let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
    let rfc3164 = "<38>Nov 28 03:10:01 edge-2 sshd[4411]: Failed password for admin from 192.0.2.11 port 2 ssh2\n";
    next.write_all(rfc3164.as_bytes()).await.unwrap();
    wait_for("the event of the sender after them", async || {
        store
            .search_events(&EventQuery {
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap()
            .events
            .len()
            == 1
    })
    .await;
}
