//! The ingest queue, the writer and the detection task.

use std::sync::Arc;

use qila_detect::Detector;
use qila_events::{Event, Outcome};
use qila_store::{DeadLetter, NewEvent, Store, now_us};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::alerts::{self, AlertSink, ExternalDetector};
use crate::{Record, Siem, SiemConfig, SiemError, Stats};

/// What became of a batch given to [`Siem::ingest`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Ingested {
    /// Events stored.
    pub accepted: usize,
    /// Records that could not be parsed; each is kept as a dead letter.
    pub rejected: usize,
    /// The first rejections, with where and why.
    pub errors: Vec<Rejection>,
}

/// A record that could not be parsed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejection {
    /// Where it was in the batch (e.g. `line 3`).
    pub location: String,
    /// Why.
    pub reason: String,
}

/// How many rejections an [`Ingested`] lists (all are kept as dead letters).
const LISTED_REJECTIONS: usize = 20;
/// The writer commits up to this many events in one transaction, taking several queued batches at once.
const MAX_GROUP_EVENTS: usize = 10_000;
/// Batches of events waiting for detection; past it, the writer waits.
const DETECTION_QUEUE: usize = 2;

pub(crate) struct Job {
    /// The events, for detection (their raw text moved to `rows`).
    events: Vec<Event>,
    /// The same events as rows to store.
    rows: Vec<NewEvent>,
    dead: Vec<DeadLetter>,
    done: oneshot::Sender<Result<(), Failure>>,
}

/// Why a group of batches was not stored (the same for each of its senders).
#[derive(Debug, Clone)]
struct Failure {
    unavailable: bool,
    message: String,
}

/// The backoff between two attempts to write a group the store refused.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const LONGEST_RETRY: std::time::Duration = std::time::Duration::from_millis(400);

struct Stored {
    events: Vec<Event>,
    ids: Vec<i64>,
}

pub(crate) fn spawn(
    store: Store,
    detector: Detector,
    plugins: Vec<Arc<dyn ExternalDetector>>,
    sink: Arc<dyn AlertSink>,
    config: Arc<SiemConfig>,
    stats: Arc<Stats>,
) -> (
    mpsc::Sender<Job>,
    Vec<JoinHandle<()>>,
    Option<JoinHandle<()>>,
) {
    let (queue, jobs) = mpsc::channel(config.queue_batches.max(1));
    let (detect_tx, detect_rx) = mpsc::channel(DETECTION_QUEUE);
    let handles = vec![
        tokio::spawn(writer(
            store.clone(),
            jobs,
            detect_tx,
            stats.clone(),
            config.write_retry,
        )),
        tokio::spawn(detection(
            store.clone(),
            detector,
            plugins,
            sink,
            config.clone(),
            stats,
            detect_rx,
        )),
    ];
    let retention = config.retention.map(|retention| {
        tokio::spawn(retain(
            store,
            retention,
            config.retention_interval,
            queue.downgrade(),
        ))
    });
    (queue, handles, retention)
}

pub(crate) async fn ingest(
    siem: &Siem,
    source: &str,
    records: Vec<(String, Record)>,
) -> Result<Ingested, SiemError> {
    let received_us = now_us();
    let count = records.len();
    Stats::add(&siem.stats.received, count);
    let source = source.to_owned();
    // Parsing is CPU work: a large batch goes to the blocking pool so it does not hold up the runtime.
    let parsed = if count > 256 {
        let source = source.clone();
        tokio::task::spawn_blocking(move || parse(&source, records, received_us))
            .await
            .map_err(|_| SiemError::Stopped)?
    } else {
        parse(&source, records, received_us)
    };
    let (events, rows, dead, report) = parsed;
    if events.is_empty() && dead.is_empty() {
        return Ok(report);
    }
    let (done, acknowledged) = oneshot::channel();
    let job = Job {
        events,
        rows,
        dead,
        done,
    };
    match tokio::time::timeout(siem.config.enqueue_timeout, siem.queue.reserve()).await {
        Ok(Ok(permit)) => permit.send(job),
        Ok(Err(_)) => return Err(SiemError::Stopped),
        Err(_) => {
            Stats::add(&siem.stats.busy, 1);
            return Err(SiemError::Busy);
        }
    }
    match acknowledged.await {
        Ok(Ok(())) => Ok(report),
        Ok(Err(Failure {
            unavailable: true,
            message,
        })) => Err(SiemError::Unavailable(message)),
        Ok(Err(Failure { message, .. })) => Err(SiemError::Write(message)),
        Err(_) => Err(SiemError::Stopped),
    }
}

/// Parses the records and prepares their rows (fields serialised, raw text moved), so that the writer only
/// writes.
fn parse(
    source: &str,
    records: Vec<(String, Record)>,
    received_us: i64,
) -> (Vec<Event>, Vec<NewEvent>, Vec<DeadLetter>, Ingested) {
    let mut events = Vec::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    let mut report = Ingested::default();
    for (location, record) in records {
        let (result, raw) = match record {
            Record::Text(line) => (
                qila_events::parse_text(&line, received_us).map_err(|e| e.to_string()),
                line,
            ),
            Record::Json(value, raw) => (
                qila_events::parse_json(value, raw.clone(), received_us).map_err(|e| e.to_string()),
                raw,
            ),
            Record::Undecodable(raw, reason) => (Err(reason), raw),
        };
        match result {
            Ok(mut event) => {
                rows.push(to_row(&mut event, received_us));
                events.push(event);
            }
            Err(reason) => {
                if report.errors.len() < LISTED_REJECTIONS {
                    report.errors.push(Rejection {
                        location: location.clone(),
                        reason: reason.clone(),
                    });
                }
                dead.push(DeadLetter {
                    received_us,
                    source: source.to_owned(),
                    location,
                    reason,
                    raw,
                });
            }
        }
    }
    report.accepted = events.len();
    report.rejected = dead.len();
    (events, rows, dead, report)
}

/// The row of `event`, taking its raw text (detection does not need it).
fn to_row(event: &mut Event, received_us: i64) -> NewEvent {
    NewEvent {
        time_us: event.time_us,
        received_us,
        dataset: event.dataset.clone(),
        host: event.host.clone(),
        source_ip: event.source_ip,
        source_port: event.source_port,
        destination_ip: event.destination_ip,
        destination_port: event.destination_port,
        user: event.user.clone(),
        process: event.process.clone(),
        action: event.action.clone(),
        outcome: event.outcome.map(|o| {
            match o {
                Outcome::Success => "success",
                Outcome::Failure => "failure",
                Outcome::Unknown => "unknown",
            }
            .to_owned()
        }),
        fields: serde_json::to_string(&event.fields).unwrap_or_else(|_| "{}".to_owned()),
        raw: std::mem::take(&mut event.raw),
    }
}

/// Stores a group's dead letters and events in one transaction, retrying with backoff while the store cannot
/// write, for up to `retry`. A failed attempt kept nothing, so a retry stores nothing twice.
async fn store_group(
    store: &Store,
    dead: &[DeadLetter],
    rows: &[NewEvent],
    retry: std::time::Duration,
) -> Result<Vec<i64>, qila_store::StoreError> {
    let deadline = tokio::time::Instant::now() + retry;
    let mut wait = FIRST_RETRY;
    loop {
        match store.store_events(dead, rows).await {
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the store cannot write events; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_RETRY);
            }
            other => return other,
        }
    }
}

/// Takes queued batches, commits each group in one transaction, acknowledges the senders, and passes the stored
/// events on to detection.
async fn writer(
    store: Store,
    mut jobs: mpsc::Receiver<Job>,
    detection: mpsc::Sender<Stored>,
    stats: Arc<Stats>,
    retry: std::time::Duration,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let mut size = group[0].events.len();
        while size < MAX_GROUP_EVENTS {
            match jobs.try_recv() {
                Ok(job) => {
                    size += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let rows: Vec<NewEvent> = group
            .iter_mut()
            .flat_map(|job| std::mem::take(&mut job.rows))
            .collect();
        let dead: Vec<DeadLetter> = group.iter().flat_map(|j| j.dead.iter().cloned()).collect();
        let span = tracing::debug_span!("siem.write", events = rows.len(), dead = dead.len());
        let result = store_group(&store, &dead, &rows, retry)
            .instrument(span)
            .await;
        match result {
            Ok(ids) => {
                Stats::add(&stats.stored, rows.len());
                Stats::add(&stats.rejected, dead.len());
                let mut events = Vec::with_capacity(rows.len());
                for job in group {
                    let _ = job.done.send(Ok(()));
                    events.extend(job.events);
                }
                if detection.send(Stored { events, ids }).await.is_err() {
                    tracing::error!(
                        "the detection task has stopped; stored events are not checked"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "storing events failed; the senders are told");
                let failure = Failure {
                    unavailable: e.is_unavailable(),
                    message: e.to_string(),
                };
                for job in group {
                    let _ = job.done.send(Err(failure.clone()));
                }
            }
        }
    }
}

async fn detection(
    store: Store,
    mut detector: Detector,
    plugins: Vec<Arc<dyn ExternalDetector>>,
    sink: Arc<dyn AlertSink>,
    config: Arc<SiemConfig>,
    stats: Arc<Stats>,
    mut batches: mpsc::Receiver<Stored>,
) {
    let window_us = i64::try_from(config.dedup_window.as_micros()).unwrap_or(i64::MAX);
    while let Some(Stored { events, ids }) = batches.recv().await {
        let span = tracing::debug_span!("siem.detect", events = events.len());
        async {
            let mut new_alerts = Vec::new();
            for (event, id) in events.iter().zip(&ids) {
                for finding in detector.detect(event, &id.to_string()) {
                    Stats::add(&stats.findings, 1);
                    new_alerts.push(alerts::from_finding(&finding));
                }
            }
            for plugin in &plugins {
                match plugin.detect(&events).await {
                    Ok(findings) => {
                        for finding in &findings {
                            Stats::add(&stats.findings, 1);
                            new_alerts.push(alerts::from_plugin(plugin.name(), finding, &events, &ids));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(plugin = plugin.name(), error = %e, "a detector plugin failed on a batch")
                    }
                }
            }
            for alert in alerts::merge(new_alerts, window_us) {
                match alerts::raise(&store, &alert, window_us).await {
                    Ok(Some(row)) => {
                        Stats::add(&stats.alerts, 1);
                        sink.created(row).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(rule = %alert.rule_id, error = %e, "an alert could not be stored"),
                }
            }
            Stats::add(&stats.checked, events.len());
        }
        .instrument(span)
        .await;
    }
}

/// Deletes what is older than `retention` every `interval`, until the service stops.
async fn retain(
    store: Store,
    retention: std::time::Duration,
    interval: std::time::Duration,
    queue: mpsc::WeakSender<Job>,
) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        if queue.upgrade().is_none() {
            return;
        }
        let cutoff = now_us() - i64::try_from(retention.as_micros()).unwrap_or(i64::MAX / 2);
        match store.delete_events_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention deleted old events"),
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}
