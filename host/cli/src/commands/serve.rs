//! `qila serve`: the orchestrator and the HTTP API in one long-running process.
//!
//! On start it locks the data directory, resumes every unfinished run, publishes the example playbooks embedded
//! in the binary and those of `--playbooks DIR` (each only when it changed), creates an admin token on the first
//! start, and serves the API until SIGINT or SIGTERM.
//!
//! Its standard output is for the operator and is stable, line by line:
//! - `admin token (shown once): qila_...` and `export QILA_TOKEN=qila_...` (first start only);
//! - `listening on http://ADDR` (the address actually bound: `--listen 127.0.0.1:0` picks a free port).
//!
//! Everything else is logged on stderr (`QILA_LOG`, default `info` for Qila's own crates).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use qila_engine::{Orchestrator, PublishError};
use qila_store::Role;

use crate::config::Settings;
use crate::runtime::{BUNDLED_PLAYBOOKS, Driver};

/// How long running steps may take to finish when the server stops; the rest is resumed on the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Who publishes the bundled playbooks and creates the first token.
const SYSTEM: &str = "system";

/// Arguments of `qila serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(
        long,
        env = "QILA_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    listen: String,
    /// A directory of playbooks (`*.yaml`) to publish on start, besides the bundled examples.
    #[arg(long, env = "QILA_PLAYBOOKS_DIR", value_name = "DIR")]
    playbooks: Option<PathBuf>,
    /// Sigma rule files or directories for the SIEM, besides its bundled telecom rules (repeatable; the
    /// environment variable takes a `:`-separated list).
    #[arg(
        long = "rules",
        env = "QILA_RULES",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    rules: Vec<PathBuf>,
    /// Sigma processing pipelines (pySigma YAML) for field mapping (repeatable).
    #[arg(long = "pipeline", value_name = "FILE")]
    pipelines: Vec<PathBuf>,
    /// Receive syslog (RFC 5424 / RFC 3164) over UDP on this address, e.g. `0.0.0.0:514`.
    #[arg(long, env = "QILA_SYSLOG_UDP", value_name = "ADDR")]
    syslog_udp: Option<String>,
    /// Receive syslog over TCP (newline or octet-counted framing) on this address.
    #[arg(long, env = "QILA_SYSLOG_TCP", value_name = "ADDR")]
    syslog_tcp: Option<String>,
    /// Delete events older than this (e.g. `30d`, `12h`); `0` keeps them all.
    #[arg(
        long,
        env = "QILA_RETENTION",
        default_value = "30d",
        value_name = "AGE"
    )]
    retention: humantime::Duration,
    /// Findings of one rule with one grouping key within this window (of event time) add to one alert.
    #[arg(
        long,
        env = "QILA_ALERT_DEDUP",
        default_value = "10m",
        value_name = "WINDOW"
    )]
    alert_dedup: humantime::Duration,
}

/// Serves until stopped.
pub async fn serve(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let driver = Driver::start(settings).await?;
    let orchestrator = driver.orchestrator.clone();
    tracing::info!(
        data_dir = %settings.data_dir().display(),
        plugins = driver.runtime.registry.snapshot().loaded.len(),
        "orchestrator started"
    );

    publish_all(&orchestrator, args.playbooks.as_deref()).await?;

    let store = orchestrator.store();
    if !store.has_tokens().await.context("cannot read the tokens")? {
        let (_, secret) = store
            .create_token("admin", Role::Admin, SYSTEM)
            .await
            .context("cannot create the admin token")?;
        println!("admin token (shown once): {secret}");
        println!("export QILA_TOKEN={secret}");
    }

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the address listened on")?;
    let rules = crate::siem::rules(&args.rules, &args.pipelines)?;
    tracing::info!(
        rules = rules.detection_rules(),
        correlations = rules.correlation_rules(),
        not_loaded = rules.report().failed.len(),
        "SIEM rules loaded"
    );
    let retention: Duration = args.retention.into();
    let (siem, siem_tasks) = qila_siem::Siem::start(
        store.clone(),
        qila_detect::Detector::new(rules),
        crate::siem::detector_plugins(&driver.runtime).await,
        Arc::new(crate::siem::EngineSink(orchestrator.clone())),
        qila_siem::SiemConfig {
            retention: (!retention.is_zero()).then_some(retention),
            dedup_window: args.alert_dedup.into(),
            ..qila_siem::SiemConfig::default()
        },
    );
    // The listeners' limits: defaults, replaced by the keys of `qila.yaml`'s `server:` section.
    let mut options = qila_server::ServerOptions::default();
    let mut syslog_limits = qila_siem::syslog::TcpLimits::default();
    settings
        .load_config()?
        .server
        .apply(&mut options, &mut syslog_limits)?;
    let mut listeners = Vec::new();
    if let Some(addr) = &args.syslog_udp {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .with_context(|| format!("cannot receive syslog on UDP {addr}"))?;
        println!("syslog over UDP on {}", socket.local_addr()?);
        listeners.push(qila_siem::syslog::serve_udp(siem.clone(), socket));
    }
    if let Some(addr) = &args.syslog_tcp {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot receive syslog on TCP {addr}"))?;
        println!("syslog over TCP on {}", listener.local_addr()?);
        listeners.push(qila_siem::syslog::serve_tcp(
            siem.clone(),
            listener,
            syslog_limits,
        ));
    }
    options.plugins = Some(Arc::new(crate::registry::Admin(
        driver.runtime.registry.clone(),
    )));
    options.siem = Some(siem);
    let edge = options.edge.clone();
    let router = qila_server::router(orchestrator.clone(), options);
    if settings.dev() {
        tracing::warn!(
            "development mode: unsigned plugin packages and loose components are accepted"
        );
    }
    println!("listening on http://{addr}");

    tokio::spawn(return_freed_memory());

    let stopped = async {
        let signal = crate::signals::stop_requested().await;
        tracing::info!("{signal}: stopping");
    };
    let served = qila_server::serve(listener, router, edge, stopped).await;
    for listener in listeners {
        listener.abort();
    }
    // Acknowledged batches are committed; what waits for detection is checked before the engine stops, up to the
    // grace period (the rest is stored, unchecked).
    if tokio::time::timeout(SHUTDOWN_GRACE, siem_tasks.join())
        .await
        .is_err()
    {
        tracing::warn!("SIEM detection did not finish within the grace period");
    }
    orchestrator.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!("stopped; unfinished runs resume on the next start");
    served.context("the HTTP server failed")?;
    Ok(ExitCode::SUCCESS)
}

/// Publishes the bundled playbooks, then every `*.yaml` of `dir` (in name order), as `system`. A playbook that
/// does not publish is a warning, not fatal.
async fn publish_all(orchestrator: &Orchestrator, dir: Option<&Path>) -> anyhow::Result<()> {
    let mut sources: Vec<(String, String)> = BUNDLED_PLAYBOOKS
        .iter()
        .map(|(name, source)| (format!("playbooks/{name}"), source.to_string()))
        .collect();
    if let Some(dir) = dir {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the playbooks directory {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let file = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(source) => sources.push((file, source)),
                Err(e) => {
                    tracing::warn!("{file}:1:1: playbook not published: cannot read file: {e}")
                }
            }
        }
    }
    for (file, source) in sources {
        match orchestrator.publish(&source, &file, SYSTEM).await {
            Ok(p) if p.created => tracing::info!(
                "published {} version {} from {file}",
                p.version.name,
                p.version.version
            ),
            Ok(p) => tracing::debug!(
                "{} is unchanged at version {} ({file})",
                p.version.name,
                p.version.version
            ),
            Err(PublishError::Invalid(diagnostics)) => {
                for d in &diagnostics.0 {
                    tracing::warn!("playbook not published: {d}");
                }
            }
            Err(e) => tracing::warn!("{file}: playbook not published: {e}"),
        }
    }
    Ok(())
}

/// Gives memory freed by the allocator back to the operating system every half minute. After a burst (ten thousand
/// runs created, or resumed at start, and then left waiting), glibc keeps the freed heap mapped: the server's RSS
/// would stay at its peak although the runs now cost only rows on disk.
#[expect(unsafe_code, reason = "malloc_trim returns the freed heap to the OS")]
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it is safe to call at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
