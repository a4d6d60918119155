//! `qila run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use qila_engine::{Engine, StepEvent};
use qila_model::{Diagnostic, Diagnostics};
use qila_store::{RunStatus, StepStatus};
use serde_json::{Map, Value};

use crate::config::Settings;
use crate::runtime::Runtime;

/// Arguments of `qila run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The playbook file.
    playbook: PathBuf,
    /// An input as KEY=VALUE; the value is read according to the input's declared type. Repeatable.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    /// A YAML or JSON file with an object of inputs; `--input` values override it.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// Print one JSON object describing the run instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs the playbook; exit 0 succeeded, 1 failed, 2 invalid playbook or input.
pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let runtime = Runtime::open(settings).await?;
    let playbook = match super::load_playbook(&args.playbook, &runtime.plugins) {
        Ok(pb) => Arc::new(pb),
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let inputs = match gather_inputs(&playbook, &args)
        .and_then(|provided| playbook.resolve_inputs(provided))
    {
        Ok(inputs) => inputs,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };

    let engine = Engine::new(Arc::new(runtime.executor()), runtime.store.recorder());
    let live = std::io::stderr().is_terminal();
    let (events, printer) = if live {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Some(tx), Some(tokio::spawn(print_events(rx))))
    } else {
        (None, None)
    };
    let report = engine.run(playbook.clone(), inputs, events).await?;
    if let Some(printer) = printer {
        let _ = printer.await;
    }
    engine.flush().await.context("cannot record the run")?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if !live {
            for step in &report.steps {
                eprintln!(
                    "  {} {} {}",
                    mark(step.status),
                    step.id,
                    step.error.as_deref().unwrap_or("")
                );
            }
        }
        eprintln!(
            "run {} of {} {} in {:.1?}",
            report.id,
            report.playbook,
            report.status,
            started.elapsed()
        );
        if let Some(error) = &report.error {
            eprintln!("  {error}");
        }
        if !report.outputs.is_empty() {
            println!("{}", serde_json::to_string_pretty(&report.outputs)?);
        }
    }
    Ok(if report.status == RunStatus::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The inputs from `--input-file` and `--input`, as JSON values; malformed ones become diagnostics.
fn gather_inputs(
    playbook: &qila_model::Playbook,
    args: &RunArgs,
) -> Result<Map<String, Value>, Diagnostics> {
    let mut provided = Map::new();
    if let Some(path) = &args.input_file {
        let file = path.display().to_string();
        let diag = |line, col, message: String| {
            Diagnostics(vec![Diagnostic {
                file: file.clone(),
                line,
                col,
                message,
            }])
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| diag(1, 1, format!("cannot read input file: {e}")))?;
        let value: Value = serde_yaml::from_str(&text).map_err(|e| {
            let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            diag(line, col, format!("invalid input file: {e}"))
        })?;
        match value {
            Value::Object(map) => provided.extend(map),
            Value::Null => {}
            _ => {
                return Err(diag(
                    1,
                    1,
                    "the input file must hold an object of inputs".into(),
                ));
            }
        }
    }
    for pair in &args.inputs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(Diagnostics(vec![Diagnostic {
                file: "--input".into(),
                line: 1,
                col: 1,
                message: format!("`{pair}` is not KEY=VALUE"),
            }]));
        };
        provided.insert(key.to_string(), playbook.coerce_cli_input(key, raw));
    }
    Ok(provided)
}

fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Running => "…",
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
    }
}

/// Prints each step transition as it happens (only on a terminal).
async fn print_events(mut rx: tokio::sync::mpsc::UnboundedReceiver<StepEvent>) {
    while let Some(e) = rx.recv().await {
        let detail = e.detail.map(|d| format!("  {d}")).unwrap_or_default();
        if e.status == StepStatus::Running {
            eprintln!("  {} {} ({})", mark(e.status), e.step_id, e.action);
        } else {
            eprintln!(
                "  {} {} ({}) {:.1?}{detail}",
                mark(e.status),
                e.step_id,
                e.action,
                e.elapsed
            );
        }
    }
}
