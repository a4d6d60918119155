//! `qila ingest`: sends event files to a running server (`POST /api/v1/events`), in batches, with a progress bar.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qila_events::files::read_file;
use reqwest::StatusCode;
use serde_json::Value;

use crate::client::{Client, ClientArgs, ClientError};

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
}

/// The most a request body holds (the server's default limit is 32 MiB).
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Sends every file; exit 0 when all were sent (rejected records are the server's dead letters, counted here),
/// 1 when the server refused a batch, 2 when a file could not be read or the server reached.
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
    let (mut accepted, mut rejected, mut unreadable) = (0u64, 0u64, 0u64);
    let mut failed = false;
    for path in &args.files {
        let file = path.display().to_string();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let records = match read_file(path, qila_store::now_us()) {
            Ok(r) => r,
            Err(e) => {
                bar.suspend(|| eprintln!("{file}: {e}"));
                failed = true;
                continue;
            }
        };
        let mut body = Vec::new();
        let mut count = 0usize;
        for record in records {
            let line = match &record.result {
                Ok(event) => wire_line(event),
                Err(e) => {
                    // The record has no text to send (e.g. a damaged EVTX chunk): said here, not stored.
                    unreadable += 1;
                    bar.suspend(|| eprintln!("{file}: {}: {e}", record.location));
                    continue;
                }
            };
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            count += 1;
            if count >= args.batch || body.len() >= MAX_BATCH_BYTES {
                match send(&client, std::mem::take(&mut body)).await {
                    Ok((a, r)) => {
                        accepted += a;
                        rejected += r;
                    }
                    Err(e) => {
                        bar.suspend(|| eprintln!("{file}: {}", e.render(client.has_token())));
                        return Ok(e.exit_code());
                    }
                }
                count = 0;
                bar.set_message(format!("{accepted} stored, {rejected} rejected"));
            }
        }
        if !body.is_empty() {
            match send(&client, body).await {
                Ok((a, r)) => {
                    accepted += a;
                    rejected += r;
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("{file}: {}", e.render(client.has_token())));
                    return Ok(e.exit_code());
                }
            }
        }
        bar.inc(size);
        bar.set_message(format!("{accepted} stored, {rejected} rejected"));
    }
    bar.finish_and_clear();
    println!(
        "{accepted} events stored, {rejected} rejected (kept as dead letters: `GET /api/v1/dead-letters`), {unreadable} unreadable"
    );
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
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

/// Posts one batch, waiting and retrying while the server says it is busy (503): nothing is dropped.
async fn send(client: &Client, body: Vec<u8>) -> Result<(u64, u64), ClientError> {
    let mut wait = Duration::from_millis(200);
    loop {
        match client
            .post_bytes("/api/v1/events", body.clone(), "application/x-ndjson", &[])
            .await
        {
            Ok(answer) => {
                let n = |k: &str| answer.get(k).and_then(Value::as_u64).unwrap_or(0);
                return Ok((n("accepted"), n("rejected")));
            }
            Err(ClientError::Api { status, .. }) if status == StatusCode::SERVICE_UNAVAILABLE => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
