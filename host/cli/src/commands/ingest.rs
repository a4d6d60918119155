//! `qila ingest`: sends event files to a running server (`POST /api/v1/events`), in batches, with a progress bar.
//!
//! A batch is sent again only when the server answered `503` (its store cannot write at the moment, or its queue
//! is full): then nothing of the batch was taken, so a retry neither loses nor duplicates it. Any other failure,
//! a broken connection included (the server may have stored the batch before the answer was lost), stops the
//! command and says where to resume.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qila_events::ParseError;
use qila_events::files::{Location, read_file};
use reqwest::StatusCode;
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError};
use crate::commands::hunt::DAMAGED;

/// Arguments of `qila ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Event files: JSON Lines, concatenated JSON objects, EVTX, Zeek TSV logs or text logs (syslog, sshd,
    /// Asterisk, FreeSWITCH).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Records per request.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How long to keep sending one batch again while the server answers 503 (busy, or its store cannot write),
    /// waiting as its `Retry-After` says (at most 30 s a time); then give up, saying where to resume.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub retry_for: humantime::Duration,
}

/// The most a request body holds (the server's default limit is 32 MiB).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// The longest wait before sending a batch again, whatever `Retry-After` asks.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The first wait when a 503 has no `Retry-After`; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait of the doubling backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Sends every file; exit 0 when all were sent (rejected records are the server's dead letters, counted here),
/// 1 when the server refused a batch (or answered 503 for longer than `--retry-for`), 2 when a file could not be
/// read or the server reached, [`DAMAGED`] when a file is cut short or damaged (its readable records were sent).
pub async fn ingest(client: &ClientArgs, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let client = match Client::new(client) {
        Ok(c) => c,
        Err(e) => return Ok(e.report(false)),
    };
    let total: u64 = args
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {msg} ({eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let mut sender = Sender {
        client,
        retry_for: args.retry_for.into(),
        accepted: 0,
        rejected: 0,
        bar,
    };
    let mut unreadable = 0u64;
    let (mut failed, mut damaged) = (false, false);
    for path in &args.files {
        let file = path.display().to_string();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let records = match read_file(path, qila_store::now_us()) {
            Ok(r) => r,
            Err(e) => {
                sender.bar.suspend(|| eprintln!("{file}: {e}"));
                failed = true;
                continue;
            }
        };
        let mut batch = Batch::default();
        for record in records {
            let line = match &record.result {
                Ok(event) => wire_line(event),
                Err(e) => {
                    // The record has no text to send (e.g. a damaged EVTX chunk): said here, not stored.
                    if matches!(e, ParseError::Damaged(_)) {
                        damaged = true;
                    } else {
                        unreadable += 1;
                    }
                    sender
                        .bar
                        .suspend(|| eprintln!("{file}: {}: {e}", record.location));
                    continue;
                }
            };
            batch.push(record.location, &line);
            if (batch.count >= args.batch || batch.body.len() >= MAX_BATCH_BYTES)
                && let Err(code) = sender.flush(&file, &mut batch).await
            {
                return Ok(code);
            }
        }
        if let Err(code) = sender.flush(&file, &mut batch).await {
            return Ok(code);
        }
        sender.bar.inc(size);
        sender.progress();
    }
    sender.bar.finish_and_clear();
    println!(
        "{} events stored, {} rejected (kept as dead letters: `GET /api/v1/dead-letters`), {unreadable} unreadable",
        sender.accepted, sender.rejected
    );
    Ok(if failed {
        ExitCode::from(2)
    } else if damaged {
        ExitCode::from(DAMAGED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The records of one request: their NDJSON lines and where the first one is in its file.
#[derive(Debug, Default)]
struct Batch {
    body: Vec<u8>,
    count: usize,
    first: Option<Location>,
}

impl Batch {
    fn push(&mut self, location: Location, line: &str) {
        self.first.get_or_insert(location);
        self.body.extend_from_slice(line.as_bytes());
        self.body.push(b'\n');
        self.count += 1;
    }
}

/// Sends batches and counts what the server took.
struct Sender {
    client: Client,
    retry_for: Duration,
    accepted: u64,
    rejected: u64,
    bar: ProgressBar,
}

/// Why a batch was not stored.
enum SendError {
    /// The server refused it, or could not be asked.
    Client(ClientError),
    /// The server answered 503 on every try for longer than `--retry-for`.
    GaveUp {
        tries: u32,
        waited: Duration,
        last: ClientError,
    },
}

impl Sender {
    fn progress(&self) {
        self.bar.set_message(format!(
            "{} stored, {} rejected",
            self.accepted, self.rejected
        ));
    }

    /// Sends `batch` (when it holds anything) and empties it; on failure prints what was stored and where to
    /// resume, and returns the exit code.
    async fn flush(&mut self, file: &str, batch: &mut Batch) -> Result<(), ExitCode> {
        if batch.count == 0 {
            return Ok(());
        }
        let body = std::mem::take(&mut batch.body);
        match send(&self.client, body, self.retry_for).await {
            Ok((a, r)) => {
                self.accepted += a;
                self.rejected += r;
                *batch = Batch::default();
                self.progress();
                Ok(())
            }
            Err(e) => {
                let (text, code) = match &e {
                    SendError::Client(e) => (e.render(self.client.has_token()), e.exit_code()),
                    SendError::GaveUp {
                        tries,
                        waited,
                        last,
                    } => (
                        format!(
                            "error: gave up after the server answered 503 for {} ({tries} tries; --retry-for {}): {}",
                            humantime::format_duration(Duration::from_secs(waited.as_secs())),
                            humantime::format_duration(self.retry_for),
                            last.render(self.client.has_token())
                                .trim_start_matches("error: ")
                        ),
                        last.exit_code(),
                    ),
                };
                let resume = match batch.first {
                    Some(location) => format!("{file}: {location}"),
                    None => file.to_string(),
                };
                self.bar.suspend(|| {
                    eprintln!("{file}: {text}");
                    eprintln!(
                        "{} events were sent and acknowledged before ({} stored, {} rejected); the batch of {} \
                         events from {resume} on was not stored and nothing after it was sent: resume from {resume}",
                        self.accepted + self.rejected,
                        self.accepted,
                        self.rejected,
                        batch.count
                    );
                });
                Err(code)
            }
        }
    }
}

/// The NDJSON line for an event read from a file: its JSON record as one line, or its text line as a JSON
/// string. A Zeek TSV line means nothing without its file's header, so it goes as Zeek's JSON form.
pub(crate) fn wire_line(event: &qila_events::Event) -> String {
    if let Ok(value) = serde_json::from_str::<Value>(&event.raw)
        && value.is_object()
    {
        return value.to_string();
    }
    if event.dataset.starts_with("zeek.") {
        let zeek: serde_json::Map<String, Value> = event
            .fields
            .iter()
            .filter(|(k, _)| !k.contains('.') || k.starts_with("id."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        return Value::Object(zeek).to_string();
    }
    Value::String(event.raw.clone()).to_string()
}

/// Posts one batch. While the server answers 503 (nothing of the batch taken), waits as its `Retry-After` says
/// (at most [`MAX_RETRY_WAIT`]; without one, a backoff from 200 ms doubling to 5 s) and sends it again, until
/// `retry_for` has passed; the last try is made at that deadline.
async fn send(
    client: &Client,
    body: Vec<u8>,
    retry_for: Duration,
) -> Result<(u64, u64), SendError> {
    let started = Instant::now();
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    loop {
        tries += 1;
        match client
            .post_bytes("/api/v1/events", body.clone(), "application/x-ndjson", &[])
            .await
        {
            Ok(answer) => {
                let n = |k: &str| answer.get(k).and_then(Value::as_u64).unwrap_or(0);
                return Ok((n("accepted"), n("rejected")));
            }
            Err(ClientError::Api {
                status,
                message,
                diagnostics,
                retry_after,
            }) if status == StatusCode::SERVICE_UNAVAILABLE => {
                let wait = match retry_after {
                    Some(asked) => asked.min(MAX_RETRY_WAIT),
                    None => {
                        let wait = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        wait
                    }
                };
                let left = retry_for.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(SendError::GaveUp {
                        tries,
                        waited: started.elapsed(),
                        last: ClientError::Api {
                            status,
                            message,
                            diagnostics,
                            retry_after,
                        },
                    });
                }
                tracing::debug!(
                    ?wait,
                    tries,
                    "the server is busy (503); sending the batch again"
                );
                tokio::time::sleep(wait.min(left)).await;
            }
            Err(e) => return Err(SendError::Client(e)),
        }
    }
}
