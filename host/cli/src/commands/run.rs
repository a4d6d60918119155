//! `qila run`: publishes a playbook file and runs it to the end in this process, durably.
//!
//! The run goes through the same orchestrator as `qila serve`: the file is published as a version of its
//! playbook (actor `cli`; nothing new when it has not changed), the run and every transition are committed to the
//! data directory's database before they are acted on. So a `qila run` stopped by Ctrl-C (or killed) leaves a run
//! that `qila serve` on the same data directory resumes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use qila_engine::{Orchestrator, PublishError, StartError, StartRun};
use qila_model::Playbook;
use qila_store::{RunRow, RunStatus, StepRow, StepStatus, Store, TriggerKind};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::config::Settings;
use crate::inputs::InputArgs;
use crate::runtime::Driver;

/// Who `qila run` publishes and starts as.
pub const ACTOR: &str = "cli";

/// How long a stopping `qila run` lets running steps finish before leaving them to the next start.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Arguments of `qila run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The playbook file.
    playbook: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Print one JSON object describing the run instead of text.
    #[arg(long)]
    json: bool,
}

/// The result of a run, as `qila run --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The run's identifier.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// How it ended.
    pub status: RunStatus,
    /// The playbook's outputs (empty unless it succeeded).
    pub outputs: Map<String, Value>,
    /// Why the run failed, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every step, in playbook order.
    pub steps: Vec<StepReport>,
}

/// How one step ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The step's id.
    pub id: String,
    /// Its status.
    pub status: StepStatus,
    /// How many times its action was started (0 when skipped).
    pub attempts: i64,
    /// `kind: message` when it failed, the reason when skipped.
    pub error: Option<String>,
}

impl Report {
    /// The report of `run` from its rows.
    pub fn new(run: &RunRow, steps: &[StepRow]) -> Self {
        let outputs = match &run.outputs {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Self {
            id: run.id.clone(),
            playbook: run.playbook.clone(),
            status: run.status,
            outputs,
            error: run.error.clone(),
            steps: steps
                .iter()
                .filter(|s| s.item < 0)
                .map(|s| StepReport {
                    id: s.step_id.clone(),
                    status: s.status,
                    attempts: s.attempt,
                    error: step_error(s.error_kind.as_deref(), s.error.as_deref()),
                })
                .collect(),
        }
    }

    /// Reads the run `id` and its steps from the store.
    pub async fn load(store: &Store, id: &str) -> anyhow::Result<Self> {
        let run = store
            .run(id)
            .await?
            .with_context(|| format!("run {id} is not in the store"))?;
        let steps = store.steps(id).await?;
        Ok(Self::new(&run, &steps))
    }
}

/// `kind: message`, or whichever of the two there is.
pub fn step_error(kind: Option<&str>, message: Option<&str>) -> Option<String> {
    match (kind, message) {
        // The engine records a failure as `kind: message` already.
        (Some(k), Some(m)) if m.starts_with(&format!("{k}:")) => Some(m.to_string()),
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (Some(k), None) => Some(k.to_string()),
        (None, Some(m)) => Some(m.to_string()),
        (None, None) => None,
    }
}

/// Runs the playbook; exit 0 succeeded, 1 failed, 2 invalid playbook or input, 130 interrupted.
pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let file = args.playbook.display().to_string();
    let source = match super::read_playbook(&args.playbook) {
        Ok(source) => source,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };
    let driver = Driver::start(settings).await?;
    let orchestrator = driver.orchestrator.clone();
    let outcome = drive(&orchestrator, &source, &file, &args, started).await;
    orchestrator.shutdown(STOP_GRACE).await;
    outcome
}

async fn drive(
    orchestrator: &Orchestrator,
    source: &str,
    file: &str,
    args: &RunArgs,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let published = match orchestrator.publish(source, file, ACTOR).await {
        Ok(published) => published,
        Err(PublishError::Invalid(diagnostics)) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e).context("cannot publish the playbook"),
    };
    // The published source parsed, so this does too; it reads `--input` values by their declared types.
    let playbook = Playbook::parse(source, file).ok();
    // Check the inputs here too, so that their diagnostics name the file given (the engine checks them again).
    let inputs = match args
        .inputs
        .gather(playbook.as_ref())
        .and_then(|provided| match &playbook {
            Some(pb) => pb.resolve_inputs(provided.clone()).map(|_| provided),
            None => Ok(provided),
        }) {
        Ok(inputs) => inputs,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
    };

    let live = std::io::stderr().is_terminal();
    let mut changes = orchestrator.subscribe();
    let run = match orchestrator
        .start_run(StartRun {
            playbook: published.version.name.clone(),
            version: Some(published.version.version),
            inputs: Value::Object(inputs),
            trigger: TriggerKind::Manual,
            actor: ACTOR.to_string(),
            tlp: Default::default(),
        })
        .await
    {
        Ok(run) => run,
        Err(StartError::Inputs(diagnostics)) => {
            eprintln!("{diagnostics}");
            return Ok(ExitCode::from(2));
        }
        Err(e @ StartError::NotTriggerable { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e).context("cannot start the run"),
    };
    eprintln!("run {} started", run.id);

    let mut printer = LivePrinter::new(orchestrator.store().clone(), run.id.clone());
    let wait = orchestrator.wait(&run.id);
    tokio::pin!(wait);
    let stop = crate::signals::stop_requested();
    tokio::pin!(stop);
    let mut listening = live;
    let ended = loop {
        tokio::select! {
            ended = &mut wait => break ended.context("cannot follow the run")?,
            change = changes.recv(), if listening => match change {
                Ok(change) if *change.run_id == *run.id => printer.print_new().await,
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => printer.print_new().await,
                Err(RecvError::Closed) => listening = false,
            },
            signal = &mut stop => {
                if live {
                    printer.print_new().await;
                }
                let dir = match orchestrator.store().path() {
                    Some(db) => db.parent().unwrap_or(std::path::Path::new(".")).display().to_string(),
                    None => "the PostgreSQL database".to_owned(),
                };
                eprintln!(
                    "interrupted ({signal}): run {id} is not finished; its state is recorded in {dir}, and `qila \
                     serve` on that store resumes it (then: `qila runs watch {id}`)",
                    id = run.id,
                );
                return Ok(ExitCode::from(130));
            }
        }
    };
    if live {
        printer.print_new().await;
    }

    let report = Report::load(orchestrator.store(), &ended.id).await?;
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

/// A one-character mark of a step status.
pub fn mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Queued => "·",
        StepStatus::Running => "…",
        StepStatus::Waiting => "⏸",
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
        StepStatus::Cancelled => "⊘",
    }
}

/// Prints a run's step transitions on stderr as they are committed (only on a terminal).
struct LivePrinter {
    store: Store,
    run_id: String,
    /// The last transition printed.
    seq: i64,
    /// `plugin.action` by step id.
    actions: HashMap<String, String>,
    /// When each step (or item) started running or waiting (unix µs).
    since: HashMap<String, i64>,
}

impl LivePrinter {
    fn new(store: Store, run_id: String) -> Self {
        Self {
            store,
            run_id,
            seq: 0,
            actions: HashMap::new(),
            since: HashMap::new(),
        }
    }

    async fn print_new(&mut self) {
        let transitions = match self.store.transitions(&self.run_id, self.seq).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read transitions");
                return;
            }
        };
        for t in transitions {
            self.seq = self.seq.max(t.seq);
            let Some(step) = t.step_id.as_deref() else {
                continue;
            };
            let Some(status) = StepStatus::parse(&t.status) else {
                continue;
            };
            if !self.actions.contains_key(step)
                && let Ok(rows) = self.store.steps(&self.run_id).await
            {
                for row in rows {
                    self.actions.insert(row.step_id, row.action);
                }
            }
            let action = self.actions.get(step).map_or("?", String::as_str);
            let label = if t.item >= 0 {
                format!("{step}[{}]", t.item)
            } else {
                step.to_string()
            };
            let attempt = if t.attempt > 1 {
                format!(" attempt {}", t.attempt)
            } else {
                String::new()
            };
            let detail = t.detail.map(|d| format!("  {d}")).unwrap_or_default();
            let key = label.clone();
            match status {
                StepStatus::Running => {
                    self.since.insert(key, t.at_us);
                    eprintln!("  {} {label} ({action}){attempt}", mark(status));
                }
                StepStatus::Queued => {
                    eprintln!("  {} {label} ({action}) queued{detail}", mark(status))
                }
                StepStatus::Waiting => {
                    self.since.entry(key).or_insert(t.at_us);
                    eprintln!("  {} {label} ({action}) waiting{detail}", mark(status));
                    if action == "core.approval" {
                        eprintln!(
                            "    it waits for an approval: stop with Ctrl-C, start `qila serve` on this data \
                             directory and decide with `qila approve {} {step}` (or --deny)",
                            self.run_id
                        );
                    }
                }
                _ => {
                    let elapsed = self
                        .since
                        .remove(&key)
                        .map(|from| Duration::from_micros((t.at_us - from).max(0) as u64));
                    let elapsed = elapsed.map(|e| format!(" {e:.1?}")).unwrap_or_default();
                    eprintln!(
                        "  {} {label} ({action}){attempt}{elapsed}{detail}",
                        mark(status)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(
        id: &str,
        item: i64,
        status: StepStatus,
        kind: Option<&str>,
        error: Option<&str>,
    ) -> StepRow {
        StepRow {
            run_id: "r".into(),
            step_id: id.into(),
            item,
            position: 0,
            action: "core.echo".into(),
            status,
            attempt: if status == StepStatus::Skipped { 0 } else { 1 },
            input: None,
            output: None,
            error_kind: kind.map(Into::into),
            error: error.map(Into::into),
            lease_owner: None,
            lease_until: None,
            wake_at: None,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn the_report_has_the_shape_qila_run_json_always_had() {
        let run = RunRow {
            id: "0190".into(),
            playbook: "p".into(),
            version: 1,
            status: RunStatus::Failed,
            inputs: json!({}),
            tlp: None,
            outputs: None,
            error: None,
            trigger: TriggerKind::Manual,
            started_by: "cli".into(),
            parent_run: None,
            parent_step: None,
            parent_item: None,
            parent_wait: false,
            rerun_of: None,
            cancel_requested: false,
            created_at: 0,
            started_at: None,
            finished_at: None,
            resumes: 0,
        };
        let steps = [
            step(
                "a",
                -1,
                StepStatus::Failed,
                Some("cpu-limit"),
                Some("too much"),
            ),
            step(
                "b",
                -1,
                StepStatus::Skipped,
                None,
                Some("a did not succeed"),
            ),
            step("c", -1, StepStatus::Succeeded, None, None),
            step("c", 0, StepStatus::Succeeded, None, None),
        ];
        let report = serde_json::to_value(Report::new(&run, &steps)).unwrap();
        assert_eq!(
            report,
            json!({
                "id": "0190", "playbook": "p", "status": "failed", "outputs": {},
                "steps": [
                    {"id": "a", "status": "failed", "attempts": 1, "error": "cpu-limit: too much"},
                    {"id": "b", "status": "skipped", "attempts": 0, "error": "a did not succeed"},
                    {"id": "c", "status": "succeeded", "attempts": 1, "error": null},
                ]
            })
        );
    }
}
