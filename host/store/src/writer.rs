//! The group-commit writer: one task that commits every transition received since its last commit in one
//! transaction.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::record::{RunRecord, RunStatus, StepRecord};

/// How many messages may wait for the writer before senders wait too (back-pressure, not loss).
const CHANNEL_CAPACITY: usize = 16 * 1024;
/// The most messages committed in one transaction.
const MAX_BATCH: usize = 8 * 1024;
/// How long the writer gathers transitions before it commits, unless someone waits on a flush. Committing many
/// transitions at once costs little more than committing one, and keeps the writer off the CPU the engine needs.
const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);
/// Rows per multi-row statement (SQLite allows 32,766 bound parameters; steps have 12 columns).
const ROWS_PER_STATEMENT: usize = 512;

enum Message {
    RunStarted(RunRecord),
    Step(StepRecord),
    RunFinished {
        id: String,
        status: RunStatus,
        outputs: Option<Value>,
        error: Option<String>,
        finished_at: i64,
    },
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Sends run and step transitions to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
}

impl Recorder {
    pub(crate) fn spawn(pool: SqlitePool) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(write_loop(pool, rx));
        Self { tx }
    }

    async fn send(&self, message: Message) -> Result<(), StoreError> {
        self.tx
            .send(message)
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Records a new run (its `steps` are ignored; record them with [`Recorder::step`]).
    pub async fn run_started(&self, run: RunRecord) -> Result<(), StoreError> {
        self.send(Message::RunStarted(run)).await
    }

    /// Records a step transition; a later record for the same step replaces the earlier one, keeping its
    /// `input` and `started_at` when the later one has none.
    pub async fn step(&self, step: StepRecord) -> Result<(), StoreError> {
        self.send(Message::Step(step)).await
    }

    /// Records the end of a run.
    pub async fn run_finished(
        &self,
        id: String,
        status: RunStatus,
        outputs: Option<Value>,
        error: Option<String>,
        finished_at: i64,
    ) -> Result<(), StoreError> {
        self.send(Message::RunFinished {
            id,
            status,
            outputs,
            error,
            finished_at,
        })
        .await
    }

    /// Waits until everything sent before this call is committed, and reports a failed commit.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(Message::Flush(done)).await?;
        wait.await
            .map_err(|_| StoreError::WriterGone)?
            .map_err(|message| StoreError::Corrupt {
                table: "runs",
                message,
            })
    }
}

async fn write_loop(pool: SqlitePool, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !batch.iter().any(|m| matches!(m, Message::Flush(_))) && batch.len() < MAX_BATCH {
            tokio::time::sleep(COMMIT_WINDOW).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
        }
        let mut flushes = Vec::new();
        let mut commit = Commit::default();
        for message in batch.drain(..) {
            match message {
                Message::Flush(done) => flushes.push(done),
                other => commit.add(other),
            }
        }
        let result = if commit.is_empty() {
            Ok(())
        } else {
            commit.write(&pool).await
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot record run state");
        }
        for done in flushes {
            let _ = done.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

/// The transitions of one batch, coalesced: one row per run and per step.
#[derive(Default)]
struct Commit {
    started: Vec<RunRecord>,
    steps: Vec<StepRecord>,
    step_index: HashMap<(String, String), usize>,
    finished: Vec<Message>,
}

impl Commit {
    fn is_empty(&self) -> bool {
        self.started.is_empty() && self.steps.is_empty() && self.finished.is_empty()
    }

    fn add(&mut self, message: Message) {
        match message {
            Message::RunStarted(run) => self.started.push(run),
            Message::Step(step) => {
                let key = (step.run_id.clone(), step.step_id.clone());
                match self.step_index.get(&key) {
                    Some(&i) => {
                        let earlier = &mut self.steps[i];
                        let input = step.input.or_else(|| earlier.input.take());
                        let started_at = step.started_at.or(earlier.started_at);
                        *earlier = StepRecord {
                            input,
                            started_at,
                            ..step
                        };
                    }
                    None => {
                        self.step_index.insert(key, self.steps.len());
                        self.steps.push(step);
                    }
                }
            }
            finished @ Message::RunFinished { .. } => self.finished.push(finished),
            Message::Flush(_) => {}
        }
    }

    async fn write(self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        for chunk in self.started.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO runs (id, playbook, playbook_version, status, inputs, created_at) ",
            );
            q.push_values(chunk, |mut row, run| {
                row.push_bind(&run.id)
                    .push_bind(&run.playbook)
                    .push_bind(run.playbook_version as i64)
                    .push_bind(run.status.as_str())
                    .push_bind(run.inputs.to_string())
                    .push_bind(run.created_at);
            });
            q.push(" ON CONFLICT (id) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        for chunk in self.steps.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO steps (run_id, step_id, position, action, status, attempt, input, output, error_kind, \
                 error, started_at, finished_at) ",
            );
            q.push_values(chunk, |mut row, s| {
                row.push_bind(&s.run_id)
                    .push_bind(&s.step_id)
                    .push_bind(s.position as i64)
                    .push_bind(&s.action)
                    .push_bind(s.status.as_str())
                    .push_bind(s.attempt as i64)
                    .push_bind(s.input.as_ref().map(Value::to_string))
                    .push_bind(s.output.as_ref().map(Value::to_string))
                    .push_bind(&s.error_kind)
                    .push_bind(&s.error)
                    .push_bind(s.started_at)
                    .push_bind(s.finished_at);
            });
            q.push(
                " ON CONFLICT (run_id, step_id) DO UPDATE SET status = excluded.status, attempt = excluded.attempt, \
                 input = COALESCE(excluded.input, steps.input), output = excluded.output, \
                 error_kind = excluded.error_kind, error = excluded.error, \
                 started_at = COALESCE(excluded.started_at, steps.started_at), finished_at = excluded.finished_at",
            );
            q.build().execute(&mut *tx).await?;
        }
        for message in &self.finished {
            if let Message::RunFinished {
                id,
                status,
                outputs,
                error,
                finished_at,
            } = message
            {
                sqlx::query("UPDATE runs SET status = ?, outputs = ?, error = ?, finished_at = ? WHERE id = ?")
                    .bind(status.as_str())
                    .bind(outputs.as_ref().map(Value::to_string))
                    .bind(error)
                    .bind(finished_at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }
}
