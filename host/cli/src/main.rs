//! `qila`: run, validate and inspect Qila playbooks and plugins.

mod commands;
mod config;
mod runtime;
mod scaffold;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Qila: a SOAR orchestrator whose playbook steps run in WebAssembly sandboxes.
#[derive(Debug, Parser)]
#[command(name = "qila", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    settings: config::Settings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a playbook to completion. Exit 0 when it succeeded, 1 when it failed, 2 when the playbook or its input is
    /// invalid.
    Run(commands::run::RunArgs),
    /// Check playbooks without running them. Exit 0 when all are valid, else 2 with one `file:line:col: message`
    /// line per error.
    Validate {
        /// Playbook files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Measure the engine with the real sandbox and store: per-step overhead, fan-out throughput, and the time and
    /// memory of a `qila run` process.
    Bench(commands::bench::BenchArgs),
    /// Work with plugins: list, inspect, scaffold and build them.
    Plugin {
        #[command(subcommand)]
        command: commands::plugin::PluginCommand,
    },
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`qila run ... | head`) like other Unix tools, instead of panicking in println!.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QILA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(&cli.settings, args).await,
            Command::Bench(args) => commands::bench::bench(&cli.settings, args).await,
            Command::Validate { files } => {
                commands::validate::validate(&cli.settings, &files).await
            }
            Command::Plugin { command } => commands::plugin::plugin(&cli.settings, command).await,
        }
    });
    if std::env::var_os("QILA_REPORT_PEAK_RSS").is_some() {
        report_peak_rss();
    }
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints this process's peak resident set size (`VmHWM`) to stderr, for `qila bench`: a parent cannot measure it
/// with `wait4`, whose figure includes the parent's own memory from before `exec`.
fn report_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
        eprintln!(
            "qila: peak-rss-kib {}",
            kib.trim().trim_end_matches("kB").trim()
        );
    }
}
