//! The scheduler of one run.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use qila_model::{EvalContext, Playbook, SharedValue};
use qila_store::{Recorder, RunRecord, RunStatus, StepRecord, StepStatus, StoreError, now_ms};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info_span};

use crate::executor::{StepCall, StepError, StepExecutor};
use crate::report::{RunReport, StepEvent, StepReport};

/// A failure of the engine itself (the store stopped), as opposed to a failed run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Run state could not be recorded.
    #[error("cannot record the run: {0}")]
    Store(#[from] StoreError),
}

/// Runs playbooks with a [`StepExecutor`], recording every transition. Cheap to clone.
pub struct Engine<E> {
    executor: Arc<E>,
    recorder: Recorder,
}

impl<E> Clone for Engine<E> {
    fn clone(&self) -> Self {
        Self {
            executor: self.executor.clone(),
            recorder: self.recorder.clone(),
        }
    }
}

impl<E: StepExecutor> Engine<E> {
    /// An engine that executes steps with `executor` and records them with `recorder`.
    pub fn new(executor: Arc<E>, recorder: Recorder) -> Self {
        Self { executor, recorder }
    }

    /// Waits until every transition recorded so far is committed to the store.
    pub async fn flush(&self) -> Result<(), EngineError> {
        Ok(self.recorder.flush().await?)
    }

    /// Runs `playbook` with already resolved `inputs` (see [`Playbook::resolve_inputs`]) to the end, sending step
    /// transitions to `events` if given. A failed step fails the run but not the engine: only a store failure is
    /// an `Err`.
    pub async fn run(
        &self,
        playbook: Arc<Playbook>,
        inputs: Map<String, Value>,
        events: Option<mpsc::UnboundedSender<StepEvent>>,
    ) -> Result<RunReport, EngineError> {
        let run_id = uuid::Uuid::now_v7().to_string();
        let span = info_span!("run", run = %run_id, playbook = %playbook.name);
        RunState::new(self.clone(), playbook, inputs, run_id, events)
            .drive()
            .instrument(span)
            .await
    }
}

/// How a dispatched or resolved step ended.
enum Outcome {
    Succeeded(Value),
    Failed(StepError),
    Skipped(String),
}

struct Slot {
    status: Option<StepStatus>,
    waiting_on: usize,
    attempts: u32,
    dispatched: Option<Instant>,
    report: Option<StepReport>,
}

struct RunState<E> {
    engine: Engine<E>,
    playbook: Arc<Playbook>,
    inputs: Map<String, Value>,
    run_id: String,
    events: Option<mpsc::UnboundedSender<StepEvent>>,
    slots: Vec<Slot>,
    ctx: EvalContext,
    ready: VecDeque<usize>,
    resolved: VecDeque<(usize, Outcome)>,
}

impl<E: StepExecutor> RunState<E> {
    fn new(
        engine: Engine<E>,
        playbook: Arc<Playbook>,
        inputs: Map<String, Value>,
        run_id: String,
        events: Option<mpsc::UnboundedSender<StepEvent>>,
    ) -> Self {
        let ctx =
            EvalContext::with_shared_inputs(&SharedValue::new(&Value::Object(inputs.clone())));
        let slots = playbook
            .steps
            .iter()
            .map(|s| Slot {
                status: None,
                waiting_on: s.needs.len(),
                attempts: 0,
                dispatched: None,
                report: None,
            })
            .collect();
        let ready = playbook
            .topological_order()
            .iter()
            .copied()
            .filter(|&i| playbook.steps[i].needs.is_empty())
            .collect();
        Self {
            engine,
            playbook,
            inputs,
            run_id,
            events,
            slots,
            ctx,
            ready,
            resolved: VecDeque::new(),
        }
    }

    async fn drive(mut self) -> Result<RunReport, EngineError> {
        let recorder = self.engine.recorder.clone();
        recorder
            .run_started(RunRecord {
                id: self.run_id.clone(),
                playbook: self.playbook.name.clone(),
                playbook_version: self.playbook.version,
                status: RunStatus::Running,
                inputs: Value::Object(self.inputs.clone()),
                outputs: None,
                error: None,
                created_at: now_ms(),
                finished_at: None,
                steps: Vec::new(),
            })
            .await?;

        let mut running: JoinSet<(usize, Outcome)> = JoinSet::new();
        loop {
            while let Some(i) = self.ready.pop_front() {
                let alone = running.is_empty() && self.ready.is_empty() && self.resolved.is_empty();
                if let Some(task) = self.dispatch(i).await? {
                    // A panicking executor fails its step, wherever the step runs.
                    let task = AssertUnwindSafe(task).catch_unwind().map(move |result| {
                        result.unwrap_or_else(|_| {
                            (
                                i,
                                Outcome::Failed(StepError::new(
                                    "internal",
                                    "the step's executor panicked",
                                )),
                            )
                        })
                    });
                    if alone {
                        // The only step that can make progress (a chain): run it on this task rather than hand it
                        // to another worker thread and back, which costs two cross-thread wake-ups.
                        self.resolved.push_back(task.await);
                    } else {
                        running.spawn(task);
                    }
                }
            }
            if let Some((i, outcome)) = self.resolved.pop_front() {
                self.finish(i, outcome).await?;
                continue;
            }
            match running.join_next().await {
                Some(Ok((i, outcome))) => self.finish(i, outcome).await?,
                Some(Err(join_error)) => {
                    // A step task panicked or was cancelled: the executor is at fault, not the plugin. Find the
                    // step that never finished and fail it so the run still ends.
                    tracing::error!(error = %join_error, "step task ended abnormally");
                    if let Some(i) = self
                        .slots
                        .iter()
                        .position(|s| s.dispatched.is_some() && s.status.is_none())
                    {
                        let error = StepError::new(
                            "internal",
                            format!("step task ended abnormally: {join_error}"),
                        );
                        self.finish(i, Outcome::Failed(error)).await?;
                    }
                }
                None => break,
            }
        }
        self.complete().await
    }

    /// Decides what happens to step `i` now that everything it needs has finished: skipped, failed before it
    /// starts (its `if` or `with` cannot be evaluated), or a task that executes it.
    async fn dispatch(
        &mut self,
        i: usize,
    ) -> Result<
        Option<impl std::future::Future<Output = (usize, Outcome)> + Send + 'static>,
        EngineError,
    > {
        let playbook = self.playbook.clone();
        let step = &playbook.steps[i];
        self.slots[i].dispatched = Some(Instant::now());

        if let Some(&blocked) = step
            .needs
            .iter()
            .find(|&&n| self.slots[n].status != Some(StepStatus::Succeeded))
        {
            let need = &playbook.steps[blocked];
            let what = self.slots[blocked]
                .status
                .map_or("did not run", |s| match s {
                    StepStatus::Failed => "failed",
                    _ => "was skipped",
                });
            self.resolved.push_back((
                i,
                Outcome::Skipped(format!("needs `{}`, which {what}", need.id)),
            ));
            return Ok(None);
        }
        if let Some(condition) = &step.condition {
            match condition.eval_bool(&self.ctx) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!("condition `{}` is false", condition.source());
                    self.resolved.push_back((i, Outcome::Skipped(reason)));
                    return Ok(None);
                }
                Err(e) => {
                    self.resolved.push_back((
                        i,
                        Outcome::Failed(StepError::new("expression", format!("if: {e}"))),
                    ));
                    return Ok(None);
                }
            }
        }
        let input = match step.with.render(&self.ctx) {
            Ok(input) => input,
            Err(e) => {
                self.resolved.push_back((
                    i,
                    Outcome::Failed(StepError::new("expression", format!("with: {e}"))),
                ));
                return Ok(None);
            }
        };

        let attempt = 1;
        self.slots[i].attempts = attempt;
        self.engine
            .recorder
            .step(StepRecord {
                input: Some(input.clone()),
                started_at: Some(now_ms()),
                ..self.step_record(i, StepStatus::Running, attempt)
            })
            .await?;
        self.emit(i, StepStatus::Running, None);

        let call = StepCall {
            plugin: step.plugin.clone(),
            action: step.action.clone(),
            input,
            run_id: self.run_id.clone(),
            step_id: step.id.clone(),
            attempt,
            idempotency_key: format!("{}/{}", self.run_id, step.id),
        };
        let executor = self.engine.executor.clone();
        let span = info_span!("step", step = %step.id, action = %format_args!("{}.{}", step.plugin, step.action));
        Ok(Some(
            async move {
                match executor.execute(call).await {
                    Ok(output) => (i, Outcome::Succeeded(output)),
                    Err(error) => {
                        tracing::info!(kind = %error.kind, error = %error.message, "step failed");
                        (i, Outcome::Failed(error))
                    }
                }
            }
            .instrument(span),
        ))
    }

    /// Records how step `i` ended, makes its output visible to later expressions and readies its dependents.
    async fn finish(&mut self, i: usize, outcome: Outcome) -> Result<(), EngineError> {
        let playbook = self.playbook.clone();
        let step = &playbook.steps[i];
        let elapsed = self.slots[i]
            .dispatched
            .map_or(Duration::ZERO, |t| t.elapsed());
        let (status, output, error_kind, detail) = match outcome {
            Outcome::Succeeded(output) => (StepStatus::Succeeded, Some(output), None, None),
            Outcome::Failed(e) => (
                StepStatus::Failed,
                None,
                Some(e.kind.clone()),
                Some(e.to_string()),
            ),
            Outcome::Skipped(reason) => (StepStatus::Skipped, None, None, Some(reason)),
        };
        let attempts = self.slots[i].attempts;
        let shared = SharedValue::new(output.as_ref().unwrap_or(&Value::Null));
        self.ctx.set_step_shared(&step.id, status.as_str(), &shared);
        self.engine
            .recorder
            .step(StepRecord {
                output: output.clone(),
                error_kind,
                error: detail.clone(),
                finished_at: Some(now_ms()),
                ..self.step_record(i, status, attempts.max(1))
            })
            .await?;
        self.emit(i, status, detail.clone());
        let slot = &mut self.slots[i];
        slot.status = Some(status);
        slot.report = Some(StepReport {
            id: step.id.clone(),
            status,
            attempts,
            error: detail,
            output,
            elapsed,
        });
        for &d in playbook.dependents(i) {
            let waiting = &mut self.slots[d].waiting_on;
            *waiting = waiting.saturating_sub(1);
            if *waiting == 0 {
                self.ready.push_back(d);
            }
        }
        Ok(())
    }

    /// A record of step `i` in `status` with nothing but its identity filled in.
    fn step_record(&self, i: usize, status: StepStatus, attempt: u32) -> StepRecord {
        let step = &self.playbook.steps[i];
        StepRecord {
            run_id: self.run_id.clone(),
            step_id: step.id.clone(),
            position: i as u32,
            action: format!("{}.{}", step.plugin, step.action),
            status,
            attempt,
            input: None,
            output: None,
            error_kind: None,
            error: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn emit(&self, i: usize, status: StepStatus, detail: Option<String>) {
        if let Some(events) = &self.events {
            let step = &self.playbook.steps[i];
            let elapsed = match status {
                StepStatus::Running => Duration::ZERO,
                _ => self.slots[i]
                    .dispatched
                    .map_or(Duration::ZERO, |t| t.elapsed()),
            };
            let _ = events.send(StepEvent {
                run_id: self.run_id.clone(),
                step_id: step.id.clone(),
                action: format!("{}.{}", step.plugin, step.action),
                status,
                elapsed,
                detail,
            });
        }
    }

    /// Renders the outputs, records the end of the run and builds its report.
    async fn complete(mut self) -> Result<RunReport, EngineError> {
        let steps: Vec<StepReport> = self
            .slots
            .iter_mut()
            .zip(&self.playbook.steps)
            .map(|(slot, step)| {
                slot.report.take().unwrap_or_else(|| StepReport {
                    id: step.id.clone(),
                    status: StepStatus::Skipped,
                    attempts: 0,
                    error: Some("never became ready".into()),
                    output: None,
                    elapsed: Duration::ZERO,
                })
            })
            .collect();
        let failed: Vec<&str> = steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .map(|s| s.id.as_str())
            .collect();
        let (status, outputs, error) = if failed.is_empty() {
            match self.render_outputs() {
                Ok(outputs) => (RunStatus::Succeeded, outputs, None),
                Err(e) => (RunStatus::Failed, Map::new(), Some(e)),
            }
        } else {
            (
                RunStatus::Failed,
                Map::new(),
                Some(format!("step(s) failed: {}", failed.join(", "))),
            )
        };
        let recorded_outputs =
            (status == RunStatus::Succeeded).then(|| Value::Object(outputs.clone()));
        self.engine
            .recorder
            .run_finished(
                self.run_id.clone(),
                status,
                recorded_outputs,
                error.clone(),
                now_ms(),
            )
            .await?;
        tracing::info!(%status, "run finished");
        Ok(RunReport {
            id: self.run_id,
            playbook: self.playbook.name.clone(),
            status,
            outputs,
            error,
            steps,
        })
    }

    fn render_outputs(&self) -> Result<Map<String, Value>, String> {
        let mut outputs = Map::new();
        for (name, template) in &self.playbook.outputs {
            let value = template
                .render(&self.ctx)
                .map_err(|e| format!("output `{name}`: {e}"))?;
            outputs.insert(name.clone(), value);
        }
        Ok(outputs)
    }
}
