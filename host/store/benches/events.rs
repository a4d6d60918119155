//! The cost of storing SIEM events: one `insert_events` call (one transaction) per batch of 1,000 small events,
//! into a database that grows as the benchmark runs; and a search on an indexed field.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qila_store::{EventQuery, NewEvent, Store, now_us};

fn batch(start: usize, n: usize) -> Vec<NewEvent> {
    let now = now_us();
    (start..start + n)
        .map(|i| NewEvent {
            time_us: now + i as i64,
            received_us: now,
            dataset: "windows.security".into(),
            host: Some(format!("ws-{:03}", i % 200)),
            source_ip: Some(IpAddr::V4(Ipv4Addr::new(
                10,
                (i >> 16) as u8,
                (i >> 8) as u8,
                i as u8,
            ))),
            source_port: Some(40_000 + (i % 20_000) as u16),
            destination_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, (i % 250) as u8))),
            destination_port: Some(445),
            user: Some(format!("user{}", i % 500)),
            process: Some("C:\\Windows\\System32\\svchost.exe".into()),
            action: Some("logon".into()),
            outcome: Some(if i % 10 == 0 { "failure" } else { "success" }.into()),
            fields: serde_json::json!({"EventID": 4624, "LogonType": 3}).to_string(),
            raw: format!(
                "<Event><EventID>4624</EventID><Computer>ws-{:03}</Computer><Seq>{i}</Seq></Event>",
                i % 200
            ),
        })
        .collect()
}

fn insert(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt.block_on(Store::open(dir.path())).expect("store");
    let mut group = c.benchmark_group("events");
    group.throughput(Throughput::Elements(1000));
    let mut next = 0;
    group.bench_function("insert batch of 1000", |b| {
        b.iter(|| {
            let events = batch(next, 1000);
            next += 1000;
            rt.block_on(store.insert_events(&events)).expect("insert");
        })
    });
    group.finish();
    let q = EventQuery {
        query: Some("user = user40 and outcome = failure".into()),
        limit: 100,
        ..Default::default()
    };
    c.bench_function(&format!("search user+outcome, 100 of {next} events"), |b| {
        b.iter(|| rt.block_on(store.search_events(&q)).expect("search"))
    });
    rt.block_on(store.close());
}

criterion_group!(benches, insert);
criterion_main!(benches);
