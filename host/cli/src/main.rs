//! `qila`: run, validate and inspect Qila playbooks and plugins; serve the orchestrator and its API; drive a
//! running server (playbooks, runs, approvals) from the command line.

mod client;
mod commands;
mod config;
mod fmt;
mod inputs;
mod lock;
mod registry;
mod runtime;
mod scaffold;
mod server_config;
mod siem;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Qila: a SOAR orchestrator whose playbook steps run in WebAssembly sandboxes.
#[derive(Debug, Parser)]
#[command(name = "qila", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    settings: config::Settings,
    #[command(flatten)]
    client: client::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a playbook file to completion in this process, durably. Exit 0 when it succeeded, 1 when it failed, 2
    /// when the playbook or its input is invalid, 130 when interrupted (the run is left for `qila serve` to resume).
    Run(commands::run::RunArgs),
    /// Run the orchestrator and its HTTP API until SIGINT or SIGTERM.
    Serve(commands::serve::ServeArgs),
    /// Publish, list and show playbooks on a running server.
    Playbook {
        #[command(subcommand)]
        command: commands::playbook::PlaybookCommand,
    },
    /// List, show, start, cancel, re-run and watch runs on a running server.
    Runs {
        #[command(subcommand)]
        command: commands::runs::RunsCommand,
    },
    /// Approve (or deny) a run's pending approval on a running server.
    Approve(commands::approve::ApproveArgs),
    /// Create and list API tokens in the data directory.
    Token {
        #[command(subcommand)]
        command: commands::token::TokenCommand,
    },
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
    /// Measure the SIEM with a rule corpus: detection alone (beside a bare rsigma engine as the reference) and NDJSON
    /// over HTTP to stored, checked events (a `qila serve` child), with memory.
    BenchSiem(commands::bench_siem::BenchSiemArgs),
    /// Work with plugins: scaffold, build, package, sign, test, and install them with grants.
    Plugin {
        #[command(subcommand)]
        command: commands::plugin::PluginCommand,
    },
    /// Run Sigma rules over event files (JSON Lines, EVTX, logs) without a server; one line (or JSON object) per
    /// match. Exit 0 when every file was read, 2 when a file or the rules could not be read, 3 when a file is cut
    /// short or damaged (a truncated EVTX: its complete records were hunted; stderr names the file and byte).
    Hunt(commands::hunt::HuntArgs),
    /// Send event files (JSON Lines, EVTX, Zeek, text logs) to a running server's SIEM, with a progress bar. A `503`
    /// is retried as its `Retry-After` says, for up to `--retry-for`. Exit 0 when all were sent, 1 when the server
    /// refused a batch (or still answered 503 after `--retry-for`; stderr says where to resume), 2 when a file could
    /// not be read or the server reached, 3 when a file is cut short or damaged (its readable records were sent).
    Ingest(commands::ingest::IngestArgs),
    /// Set, list and delete the secrets plugins use, on a running server (admin). Values are sealed at rest.
    Secret {
        #[command(subcommand)]
        command: commands::install::SecretCommand,
    },
}

#[expect(unsafe_code, reason = "resets SIGPIPE to its default")]
fn main() -> ExitCode {
    // Die quietly on a closed pipe (`qila run ... | head`) like other Unix tools, instead of panicking in println!.
    // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // A server says what it does; one-shot commands only warn.
    let default_filter = match cli.command {
        Command::Serve(_) => "warn,qila=info,qila_engine=info,qila_server=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QILA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
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
            Command::Serve(args) => commands::serve::serve(&cli.settings, args).await,
            Command::Playbook { command } => {
                commands::playbook::playbook(&cli.settings, &cli.client, command).await
            }
            Command::Runs { command } => commands::runs::runs(&cli.client, command).await,
            Command::Approve(args) => commands::approve::approve(&cli.client, args).await,
            Command::Token { command } => commands::token::token(&cli.settings, command).await,
            Command::Bench(args) => commands::bench::bench(&cli.settings, args).await,
            Command::BenchSiem(args) => commands::bench_siem::bench_siem(args).await,
            Command::Validate { files } => {
                commands::validate::validate(&cli.settings, &files).await
            }
            Command::Plugin { command } => {
                commands::plugin::plugin(&cli.settings, &cli.client, command).await
            }
            Command::Hunt(args) => commands::hunt::hunt(args),
            Command::Ingest(args) => commands::ingest::ingest(&cli.client, args).await,
            Command::Secret { command } => commands::install::secret(&cli.client, command).await,
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command};

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_are_global_and_have_defaults() {
        let cli = Cli::try_parse_from(["qila", "runs", "list", "--status", "failed"]).unwrap();
        assert!(matches!(cli.command, Command::Runs { .. }));
        if std::env::var_os("QILA_SERVER").is_none() {
            assert_eq!(cli.client.server, "http://127.0.0.1:8080");
        }
        let cli = Cli::try_parse_from([
            "qila",
            "approve",
            "RUN",
            "approve",
            "--deny",
            "--server",
            "http://h:1",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.client.server, "http://h:1");
        assert_eq!(cli.client.token.as_deref(), Some("t"));
    }

    #[test]
    fn runs_start_takes_repeated_inputs() {
        let cli = Cli::try_parse_from([
            "qila",
            "runs",
            "start",
            "approve-block",
            "--input",
            "ip=9.9.9.9",
            "-i",
            "reason=x",
            "--wait",
        ])
        .unwrap();
        let Command::Runs { command } = cli.command else {
            panic!("not runs");
        };
        let text = format!("{command:?}");
        assert!(
            text.contains("ip=9.9.9.9") && text.contains("reason=x") && text.contains("wait: true"),
            "{text}"
        );
    }
}
