//! `qila bench-siem`: the SIEM's throughput on this machine with a whole rule corpus loaded.
//!
//! (a) detection alone: every event of the given files, parsed once, run through Qila's detector (log-source
//!     routing + rsigma's compiled rules + correlation), and — side by side, the same events — through a bare
//!     `rsigma_eval::Engine` holding the same rules (no routing), as the reference;
//! (b) end to end: a `qila serve` child process on a fresh data directory takes the same records as NDJSON over
//!     HTTP from concurrent senders; timed until every event is stored and checked, with the server's peak RSS.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use qila_detect::{Detector, RuleSet};
use qila_events::Event;
use qila_events::files::read_file;
use serde_json::{Value, json};

/// Arguments of `qila bench-siem`.
#[derive(Debug, Args)]
pub struct BenchSiemArgs {
    /// Sigma rule files or directories (all loaded).
    #[arg(long = "rules", required = true, value_delimiter = ',')]
    rules: Vec<PathBuf>,
    /// How many events each measurement runs (the files' events repeated, times shifted).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Concurrent HTTP senders for (b).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Records per HTTP request for (b).
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Skip (b).
    #[arg(long)]
    no_http: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Event files (JSON Lines, EVTX, logs).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub async fn bench_siem(args: BenchSiemArgs) -> anyhow::Result<ExitCode> {
    let mut base: Vec<Event> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    for path in &args.files {
        for record in read_file(path, 0).with_context(|| format!("reading {}", path.display()))? {
            if let Ok(event) = record.result {
                lines.push(super::ingest::wire_line(&event));
                base.push(event);
            }
        }
    }
    if base.is_empty() {
        bail!("the files hold no events");
    }
    let rules = RuleSet::load(&args.rules, &[])?;
    let loaded = rules.report().loaded.len();
    let not_loaded = rules.report().failed.len();
    let mut detector = Detector::new(rules);

    // The events to run: the files' events repeated up to --events, one second apart per repetition so that
    // correlation windows move on.
    let n = args.events.max(base.len());
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = base[i % base.len()].clone();
            e.time_us += (i / base.len()) as i64 * 1_000_000;
            e
        })
        .collect();

    // (a) Qila's detector.
    let started = Instant::now();
    let mut findings = 0usize;
    for (i, event) in events.iter().enumerate() {
        findings += detector.detect(event, &i.to_string()).len();
    }
    let qila_secs = started.elapsed().as_secs_f64();

    // (a) The reference: a bare rsigma Engine with the same rules, over the same events' fields.
    let mut reference = rsigma_eval::Engine::new();
    for path in &args.rules {
        add_rules(&mut reference, path)?;
    }
    let values: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(e.fields.clone()))
        .collect();
    let started = Instant::now();
    let mut reference_matches = 0usize;
    for value in &values {
        reference_matches += reference
            .evaluate(&rsigma_eval::JsonEvent::borrow(value))
            .len();
    }
    let reference_secs = started.elapsed().as_secs_f64();
    drop(values);

    let mut report = json!({
        "events": n,
        "distinct_events": base.len(),
        "rules_loaded": loaded,
        "rules_not_loaded": not_loaded,
        "detection": {
            "qila_events_per_sec": (n as f64 / qila_secs).round(),
            "qila_findings": findings,
            "rsigma_events_per_sec": (n as f64 / reference_secs).round(),
            "rsigma_rules": reference.rule_count(),
            "rsigma_matches": reference_matches,
            "ratio_qila_to_rsigma": ((reference_secs / qila_secs) * 100.0).round() / 100.0,
        },
    });

    if !args.no_http {
        let wire: Vec<&str> = (0..n).map(|i| lines[i % lines.len()].as_str()).collect();
        report["http"] = http(&args, &wire).await?;
    }
    if args.json {
        println!("{report:#}");
    } else {
        let d = &report["detection"];
        println!(
            "{n} events ({} distinct), {loaded} rules loaded ({not_loaded} not)",
            base.len()
        );
        println!(
            "(a) detection alone: Qila {} events/s ({} findings); rsigma reference {} events/s ({} matches); ratio {}",
            d["qila_events_per_sec"],
            d["qila_findings"],
            d["rsigma_events_per_sec"],
            d["rsigma_matches"],
            d["ratio_qila_to_rsigma"]
        );
        if let Some(h) = report.get("http") {
            println!(
                "(b) NDJSON over HTTP to stored and checked events: {} events/s, {} alerts, server peak RSS {} MiB",
                h["events_per_sec"], h["alerts"], h["server_peak_rss_mib"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn add_rules(engine: &mut rsigma_eval::Engine, path: &std::path::Path) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for entry in entries {
            add_rules(engine, &entry)?;
        }
    } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
        let text = std::fs::read_to_string(path)?;
        if let Ok(collection) = rsigma_parser::parse_sigma_yaml(&text) {
            for rule in &collection.rules {
                let _ = engine.add_rule(rule);
            }
        }
    }
    Ok(())
}

/// (b): a `qila serve` child on a fresh data directory, fed `lines` by concurrent senders.
async fn http(args: &BenchSiemArgs, lines: &[&str]) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--data-dir")
        .arg(dir.path())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(
            args.rules
                .iter()
                .flat_map(|r| ["--rules".into(), r.clone().into_os_string()]),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = Server(command.spawn().context("starting qila serve")?);
    let pid = child.0.id();
    let stdout = child.0.stdout.take().context("the server's stdout")?;
    let (token, url) = tokio::task::spawn_blocking(move || -> anyhow::Result<(String, String)> {
        let (mut token, mut url) = (None, None);
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            let line = line?;
            if let Some(t) = line.strip_prefix("export QILA_TOKEN=") {
                token = Some(t.to_owned());
            }
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.to_owned());
            }
            if let (Some(t), Some(u)) = (&token, &url) {
                // Keep reading, so the server never writes to a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok((t.clone(), u.clone()));
            }
        }
        bail!("the server stopped before it listened")
    })
    .await??;
    let client = reqwest::Client::new();
    let chunks: Vec<String> = lines.chunks(args.batch).map(|c| c.join("\n")).collect();
    let total = lines.len() as u64;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks = std::sync::Arc::new(chunks);
    let mut senders = Vec::new();
    for _ in 0..args.senders.max(1) {
        let (client, chunks, next, token, url) = (
            client.clone(),
            chunks.clone(),
            next.clone(),
            token.clone(),
            url.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = chunks.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                loop {
                    let answer = client
                        .post(format!("{url}/api/v1/events"))
                        .bearer_auth(&token)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await?;
                    if answer.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    if !answer.status().is_success() {
                        bail!("the server answered {}", answer.status());
                    }
                    break;
                }
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    let stored_secs = started.elapsed().as_secs_f64();
    // Wait until detection has checked every event.
    let stats = loop {
        let stats: Value = client
            .get(format!("{url}/api/v1/siem"))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        if stats["stats"]["checked"].as_u64().unwrap_or(0) >= total {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let checked_secs = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    drop(child);
    Ok(json!({
        "events": total,
        "senders": args.senders,
        "batch": args.batch,
        "stored_secs": stored_secs,
        "checked_secs": checked_secs,
        "events_per_sec": (total as f64 / checked_secs).round(),
        "stored_events_per_sec": (total as f64 / stored_secs).round(),
        "alerts": stats["stats"]["alerts"],
        "server_peak_rss_mib": peak_kib / 1024,
    }))
}

/// The `qila serve` child, killed and reaped when dropped, on every path out of the benchmark.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
