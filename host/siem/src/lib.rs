//! The SIEM service: events come in ([`Siem::ingest`], the syslog listeners), are parsed by `qila-events`,
//! stored, checked by Sigma rules (`qila-detect`) and detector plugins, and what they find becomes deduplicated
//! alerts; a new alert is handed to an [`AlertSink`] (the engine emits `alert.created`, which starts playbooks).
//!
//! ```text
//! ingest ──parse──► queue (bounded) ──► writer: one transaction per group of batches ──► caller acknowledged
//!                                              │
//!                                              ▼ (bounded)
//!                                        detection: Sigma + plugins, in order ──► alerts ──► AlertSink
//! ```
//!
//! Back-pressure instead of loss: when the store is slow the queue fills, [`Siem::ingest`] waits for room (up to
//! [`SiemConfig::enqueue_timeout`]) and then answers [`SiemError::Busy`] with nothing of that batch taken, so the
//! sender retries; an acknowledged batch is committed. A record that cannot be parsed is kept in the dead-letter
//! table with the reason and never stops the batch.
//!
//! A store that cannot write (read-only, full, an I/O error) is retried with backoff for
//! [`SiemConfig::write_retry`]; then the senders of that group are answered [`SiemError::Unavailable`], with
//! nothing of their batches kept, and the next group tries again on a fresh connection: the service heals by
//! itself when the store can write again.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod alerts;
pub mod ndjson;
mod pipeline;
pub mod syslog;

pub use alerts::{AlertSink, ExternalDetector, PluginFinding};
pub use pipeline::{Ingested, Rejection};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qila_detect::{Detector, LoadReport};
use qila_store::Store;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One incoming record.
#[derive(Debug, Clone)]
pub enum Record {
    /// A log line (syslog, Asterisk, FreeSWITCH, sshd, a JSON object as text).
    Text(String),
    /// A JSON object already parsed, with its text as received.
    Json(serde_json::Value, String),
    /// A record that could not even be decoded (e.g. not UTF-8): its text as far as it goes (lossy) and why; it
    /// goes to the dead letters.
    Undecodable(String, String),
}

/// Settings of the SIEM service.
#[derive(Debug, Clone)]
pub struct SiemConfig {
    /// How many batches may wait for the writer; past it, senders wait.
    pub queue_batches: usize,
    /// How long [`Siem::ingest`] waits for room in the queue before it answers [`SiemError::Busy`].
    pub enqueue_timeout: Duration,
    /// Within this window (of event time), a finding of the same rule and grouping key adds to the open alert
    /// instead of raising a new one.
    pub dedup_window: Duration,
    /// Events (and dead letters) older than this are deleted; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// How long the writer retries a group of batches the store could not write (with backoff) before it answers
    /// their senders [`SiemError::Unavailable`].
    pub write_retry: Duration,
}

impl Default for SiemConfig {
    fn default() -> Self {
        Self {
            queue_batches: 8,
            enqueue_timeout: Duration::from_secs(10),
            dedup_window: Duration::from_secs(600),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_interval: Duration::from_secs(3600),
            write_retry: Duration::from_secs(1),
        }
    }
}

/// Errors of the SIEM service.
#[derive(Debug, thiserror::Error)]
pub enum SiemError {
    /// The queue stayed full for the whole wait: nothing of the batch was taken; send it again later.
    #[error("the event store is busy: nothing of this batch was taken, send it again in a moment")]
    Busy,
    /// The service has stopped.
    #[error("the SIEM service has stopped")]
    Stopped,
    /// The store cannot write at the moment (read-only, full, an I/O error): nothing of the batch was kept; send it
    /// again in a moment.
    #[error(
        "the event store cannot write at the moment ({0}); nothing of this batch was kept, send it again later"
    )]
    Unavailable(String),
    /// The batch's events could not be committed for another reason (nothing of it was kept).
    #[error("the events could not be stored: {0}")]
    Write(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] qila_store::StoreError),
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    stored: AtomicU64,
    rejected: AtomicU64,
    checked: AtomicU64,
    findings: AtomicU64,
    alerts: AtomicU64,
    busy: AtomicU64,
}

/// A copy of the [`Stats`] counters.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Records received.
    pub received: u64,
    /// Events stored.
    pub stored: u64,
    /// Records that could not be parsed (kept as dead letters).
    pub rejected: u64,
    /// Stored events that detection has checked.
    pub checked: u64,
    /// Findings of rules and detectors.
    pub findings: u64,
    /// Alerts raised (not counting findings merged into open alerts).
    pub alerts: u64,
    /// Batches answered with [`SiemError::Busy`].
    pub busy: u64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            checked: self.checked.load(Ordering::Relaxed),
            findings: self.findings.load(Ordering::Relaxed),
            alerts: self.alerts.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }
}

/// How the service is doing, for the health routes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SiemHealth {
    /// Whether the writer task is running (it stops only with the service).
    pub writer_running: bool,
    /// Batches waiting for the writer.
    pub queued_batches: usize,
    /// How many may wait before senders wait too.
    pub queue_capacity: usize,
    /// What the writer's last group of batches came to.
    pub last_write: qila_store::WriterHealth,
}

impl SiemHealth {
    /// Whether events are being stored.
    pub fn ok(&self) -> bool {
        self.writer_running && self.last_write.ok
    }
}

/// A handle on the running SIEM service. Cheap to clone.
#[derive(Clone)]
pub struct Siem {
    queue: mpsc::Sender<pipeline::Job>,
    store: Store,
    config: Arc<SiemConfig>,
    stats: Arc<Stats>,
    rules: Arc<LoadReport>,
    detectors: Arc<Vec<String>>,
}

impl std::fmt::Debug for Siem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siem")
            .field("rules", &self.rules.loaded.len())
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

/// The service's tasks; they end when every [`Siem`] handle is dropped and the queue has drained.
pub struct SiemTasks {
    /// The writer and detection tasks.
    handles: Vec<JoinHandle<()>>,
    /// The retention task, which sleeps between runs: stopped by [`SiemTasks::join`].
    retention: Option<JoinHandle<()>>,
}

impl SiemTasks {
    /// Waits until the queue has drained and detection has checked every stored event (drop every [`Siem`]
    /// handle first), then stops retention.
    pub async fn join(self) {
        for handle in self.handles {
            let _ = handle.await;
        }
        if let Some(retention) = self.retention {
            retention.abort();
        }
    }
}

impl Siem {
    /// Starts the service on `store` with `detector` (Sigma rules), the detector plugins and `sink` for new alerts.
    pub fn start(
        store: Store,
        detector: Detector,
        plugins: Vec<Arc<dyn ExternalDetector>>,
        sink: Arc<dyn AlertSink>,
        config: SiemConfig,
    ) -> (Self, SiemTasks) {
        let stats = Arc::new(Stats::default());
        let rules = Arc::new(detector.rules().report().clone());
        let detectors = Arc::new(plugins.iter().map(|p| p.name().to_owned()).collect());
        let config = Arc::new(config);
        let (queue, handles, retention) = pipeline::spawn(
            store.clone(),
            detector,
            plugins,
            sink,
            config.clone(),
            stats.clone(),
        );
        (
            Self {
                queue,
                store,
                config,
                stats,
                rules,
                detectors,
            },
            SiemTasks { handles, retention },
        )
    }

    /// Parses `records` (each with where it came from, e.g. `line 12`) from `source` (e.g. `http`,
    /// `syslog-udp`), and returns once the events and the dead letters are committed.
    pub async fn ingest(
        &self,
        source: &str,
        records: Vec<(String, Record)>,
    ) -> Result<Ingested, SiemError> {
        pipeline::ingest(self, source, records).await
    }

    /// The store the events and alerts are in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Which rules loaded and which did not.
    pub fn rules(&self) -> &LoadReport {
        &self.rules
    }

    /// The names of the detector plugins in use.
    pub fn detectors(&self) -> &[String] {
        &self.detectors
    }

    /// How the service is doing: its writer, its queue, and what the store's events writer last saw.
    pub fn health(&self) -> SiemHealth {
        let capacity = self.queue.max_capacity();
        SiemHealth {
            writer_running: !self.queue.is_closed(),
            queued_batches: capacity - self.queue.capacity(),
            queue_capacity: capacity,
            last_write: self.store.health().events,
        }
    }
}
