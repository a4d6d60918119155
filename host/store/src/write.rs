//! Statements the engine composes inside [`Journal::write`](crate::Journal::write) transactions.
//!
//! Each function takes the writer's connection, so several of them commit together: finishing a step and
//! claiming the next one cost one commit.

use serde_json::Value;
use sqlx::{Row, SqliteConnection};

use crate::error::StoreError;
use crate::record::{ApprovalRow, RunRow, RunStatus, StepStatus, VersionRow, now_ms, now_us};

type Conn = SqliteConnection;

fn text(value: &Value) -> String {
    value.to_string()
}

/// Stores a new version of a playbook, numbered one above the latest; returns its number.
pub async fn insert_version(c: &mut Conn, v: &VersionRow) -> Result<i64, StoreError> {
    let version: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM playbook_versions WHERE name = ?",
    )
    .bind(&v.name)
    .fetch_one(&mut *c)
    .await?;
    sqlx::query(
        "INSERT INTO playbook_versions (name, version, source, digest, plugins, triggers, published_at, published_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&v.name)
    .bind(version)
    .bind(&v.source)
    .bind(&v.digest)
    .bind(text(&v.plugins))
    .bind(text(&v.triggers))
    .bind(v.published_at)
    .bind(&v.published_by)
    .execute(&mut *c)
    .await?;
    Ok(version)
}

/// Stores a new run.
pub async fn insert_run(c: &mut Conn, r: &RunRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO runs (id, playbook, version, status, inputs, outputs, error, trigger, started_by, parent_run, \
         parent_step, parent_item, parent_wait, rerun_of, cancel_requested, created_at, started_at, finished_at, tlp) \
         VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL, ?)",
    )
    .bind(&r.id)
    .bind(&r.playbook)
    .bind(r.version)
    .bind(r.status.as_str())
    .bind(text(&r.inputs))
    .bind(r.trigger.as_str())
    .bind(&r.started_by)
    .bind(&r.parent_run)
    .bind(&r.parent_step)
    .bind(r.parent_item)
    .bind(r.parent_wait as i64)
    .bind(&r.rerun_of)
    .bind(r.created_at)
    .bind(r.started_at)
    .bind(r.tlp.as_ref().map(text))
    .execute(&mut *c)
    .await?;
    transition(c, &r.id, None, -1, r.status.as_str(), 0, None).await
}

/// Moves a queued run to running; false if it was not queued.
pub async fn start_queued_run(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
    )
    .bind(now_ms())
    .bind(id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1;
    if done {
        transition(c, id, None, -1, "running", 0, None).await?;
    }
    Ok(done)
}

/// Ends a run that has not ended yet; false if it had.
pub async fn finish_run(
    c: &mut Conn,
    id: &str,
    status: RunStatus,
    outputs: Option<&Value>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE runs SET status = ?, outputs = ?, error = ?, finished_at = ? \
         WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(status.as_str())
    .bind(outputs.map(text))
    .bind(error)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1;
    if done {
        transition(c, id, None, -1, status.as_str(), 0, error).await?;
    }
    Ok(done)
}

/// Counts one more start that resumed running run `id` and in which it did work (see [`RunRow::resumes`]).
pub async fn count_resume(c: &mut Conn, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET resumes = resumes + 1 WHERE id = ? AND status = 'running'")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Takes back the start counted against each of `ids`: the process stopped gracefully, it did not die.
pub async fn uncount_resume(c: &mut Conn, ids: &[String]) -> Result<(), StoreError> {
    for id in ids {
        sqlx::query("UPDATE runs SET resumes = resumes - 1 WHERE id = ? AND resumes > 0")
            .bind(id)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Run `id` came to rest (a step ended, or it only waits): it no longer counts as dying under its process.
pub async fn reset_resumes(c: &mut Conn, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE runs SET resumes = 0 WHERE id = ? AND resumes <> 0")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Marks a run for cancellation; false if it has ended already.
pub async fn request_cancel(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE runs SET cancel_requested = 1 WHERE id = ? AND status IN ('queued', 'running')",
    )
    .bind(id)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// Appends to the transition history.
pub async fn transition(
    c: &mut Conn,
    run: &str,
    step: Option<&str>,
    item: i64,
    status: &str,
    attempt: i64,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transitions (run_id, step_id, item, status, attempt, at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(run)
    .bind(step)
    .bind(item)
    .bind(status)
    .bind(attempt)
    .bind(now_us())
    .bind(detail)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Identifies a task: a step of a run, or one item of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskKey {
    /// The run.
    pub run: String,
    /// The step.
    pub step: String,
    /// -1, or the item's index.
    pub item: i64,
}

/// What a task row is created with.
#[derive(Debug, Clone)]
pub struct TaskShape<'a> {
    /// The step's index in its playbook.
    pub position: i64,
    /// `plugin.action`.
    pub action: &'a str,
}

pub(crate) type Args = sqlx::sqlite::SqliteArguments<'static>;

fn add<T>(args: &mut Args, value: T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'static,
{
    use sqlx::Arguments;
    args.add(value)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))
}

/// A change to a task, for [`apply`] and [`Journal::apply`](crate::Journal::apply).
#[derive(Debug, Clone)]
pub struct TaskChange {
    /// The task.
    pub key: TaskKey,
    /// The step's index in its playbook.
    pub position: i64,
    /// `plugin.action`.
    pub action: String,
    /// What changes.
    pub change: Change,
}

/// What a [`TaskChange`] does.
#[derive(Debug, Clone)]
pub enum Change {
    /// Claims the task for `owner` until `lease_until`, starting its next attempt with `input` (see [`claim`]).
    Claim {
        /// The rendered input.
        input: Value,
        /// The worker.
        owner: String,
        /// Unix ms.
        lease_until: i64,
    },
    /// Moves the task to a new state (see [`settle`]).
    Settle {
        /// Only if this worker holds it; the whole request fails with [`StoreError::Conflict`] if it does not.
        owner: Option<String>,
        /// The new status.
        status: StepStatus,
        /// Its output.
        output: Option<Value>,
        /// The input, when the task never ran.
        input: Option<Value>,
        /// The error kind.
        error_kind: Option<String>,
        /// The error, or the reason for a skip.
        error: Option<String>,
        /// When a waiting task's timer fires.
        wake_at: Option<i64>,
    },
}

/// Every task change of a batch, in four statements whose text never changes (so SQLite parses them once):
/// guarded settles, the guard (fails the transaction if one of them changed nothing), other settles, claims.
/// Settles go before claims; a batch never claims a task and then settles it.
pub(crate) const BATCH_SQL: &str = concat!(
    "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, output, ",
    "error_kind, error, wake_at, finished_at, lease_owner, changed_at) ",
    "SELECT value ->> '$.run', value ->> '$.step', value ->> '$.item', value ->> '$.position', value ->> '$.action', ",
    "value ->> '$.status', 0, value ->> '$.input', value ->> '$.output', value ->> '$.kind', value ->> '$.error', ",
    "value ->> '$.wake_at', value ->> '$.finished_at', value ->> '$.owner', ? FROM json_each(?) WHERE true ",
    "ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, ",
    "input = COALESCE(excluded.input, steps.input), output = excluded.output, error_kind = excluded.error_kind, ",
    "error = excluded.error, wake_at = excluded.wake_at, finished_at = excluded.finished_at, ",
    "lease_owner = NULL, lease_until = NULL ",
    "WHERE steps.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled') ",
    "AND (excluded.lease_owner IS NULL OR steps.lease_owner = excluded.lease_owner) ",
    "RETURNING run_id, step_id, item, attempt;\n",
    "INSERT INTO lease_guard (ok) SELECT 0 WHERE changes() < ?;\n",
    "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, output, ",
    "error_kind, error, wake_at, finished_at, lease_owner, changed_at) ",
    "SELECT value ->> '$.run', value ->> '$.step', value ->> '$.item', value ->> '$.position', value ->> '$.action', ",
    "value ->> '$.status', 0, value ->> '$.input', value ->> '$.output', value ->> '$.kind', value ->> '$.error', ",
    "value ->> '$.wake_at', value ->> '$.finished_at', value ->> '$.owner', ? FROM json_each(?) WHERE true ",
    "ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, ",
    "input = COALESCE(excluded.input, steps.input), output = excluded.output, error_kind = excluded.error_kind, ",
    "error = excluded.error, wake_at = excluded.wake_at, finished_at = excluded.finished_at, ",
    "lease_owner = NULL, lease_until = NULL ",
    "WHERE steps.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled') ",
    "AND (excluded.lease_owner IS NULL OR steps.lease_owner = excluded.lease_owner) ",
    "RETURNING run_id, step_id, item, attempt;\n",
    "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, ",
    "lease_owner, lease_until, started_at, changed_at) ",
    "SELECT value ->> '$.run', value ->> '$.step', value ->> '$.item', value ->> '$.position', value ->> '$.action', ",
    "'running', 1, value ->> '$.input', value ->> '$.owner', value ->> '$.lease_until', ?, ? FROM json_each(?) WHERE true ",
    "ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = 'running', attempt = steps.attempt + 1, ",
    "input = excluded.input, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, ",
    "wake_at = NULL, error = NULL, changed_at = excluded.changed_at, ",
    "started_at = COALESCE(steps.started_at, excluded.started_at) ",
    "WHERE steps.status IN ('queued', 'waiting') ",
    "OR (steps.status = 'running' AND (steps.lease_owner IS NOT excluded.lease_owner OR steps.lease_until < ?)) ",
    "RETURNING run_id, step_id, item, attempt;\n",
);

/// The name of the guard's constraint, as it appears in the database's error.
pub(crate) const GUARD_NAME: &str = "lease_lost";

/// The arguments of [`BATCH_SQL`] for `changes`.
pub(crate) fn batch_args<'c>(
    changes: impl Iterator<Item = &'c TaskChange>,
) -> Result<Args, StoreError> {
    let (now, now_micros) = (now_ms(), now_us());
    let (mut guarded, mut unguarded, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    for change in changes {
        let key = &change.key;
        let mut row = serde_json::json!({
            "run": key.run, "step": key.step, "item": key.item, "position": change.position, "action": change.action,
        });
        match &change.change {
            Change::Claim {
                input,
                owner,
                lease_until,
            } => {
                row["input"] = Value::String(text(input));
                row["owner"] = Value::String(owner.clone());
                row["lease_until"] = Value::from(*lease_until);
                claims.push(row);
            }
            Change::Settle {
                owner,
                status,
                output,
                input,
                error_kind,
                error,
                wake_at,
            } => {
                row["status"] = Value::from(status.as_str());
                row["input"] = input
                    .as_ref()
                    .map_or(Value::Null, |v| Value::String(text(v)));
                row["output"] = output
                    .as_ref()
                    .map_or(Value::Null, |v| Value::String(text(v)));
                row["kind"] = error_kind.clone().map_or(Value::Null, Value::String);
                row["error"] = error.clone().map_or(Value::Null, Value::String);
                row["wake_at"] = wake_at.map_or(Value::Null, Value::from);
                row["finished_at"] = if status.is_terminal() {
                    Value::from(now)
                } else {
                    Value::Null
                };
                row["owner"] = owner.clone().map_or(Value::Null, Value::String);
                if owner.is_some() {
                    guarded.push(row);
                } else {
                    unguarded.push(row);
                }
            }
        }
    }
    let guarded_count = guarded.len() as i64;
    let mut args = Args::default();
    add(&mut args, now_micros)?;
    add(&mut args, Value::Array(guarded).to_string())?;
    add(&mut args, guarded_count)?;
    add(&mut args, now_micros)?;
    add(&mut args, Value::Array(unguarded).to_string())?;
    add(&mut args, now)?;
    add(&mut args, now_micros)?;
    add(&mut args, Value::Array(claims).to_string())?;
    add(&mut args, now)?;
    Ok(args)
}

/// Maps what [`BATCH_SQL`] returned to each change: the attempt it started or recorded, or `None`.
pub(crate) fn batch_answers(
    changes: &[TaskChange],
    returned: &std::collections::HashMap<(bool, String, String, i64), i64>,
) -> Vec<Option<i64>> {
    changes
        .iter()
        .map(|c| {
            let claim = matches!(c.change, Change::Claim { .. });
            returned
                .get(&(claim, c.key.run.clone(), c.key.step.clone(), c.key.item))
                .copied()
        })
        .collect()
}

/// Runs [`BATCH_SQL`] (optionally wrapped in `BEGIN IMMEDIATE` ... `COMMIT`) in one round trip; returns, by
/// (is a claim, run, step, item), the attempt of every row it changed.
pub(crate) async fn run_batch(
    c: &mut Conn,
    args: Args,
    transaction: bool,
) -> Result<std::collections::HashMap<(bool, String, String, i64), i64>, StoreError> {
    use futures_util::TryStreamExt;
    use sqlx::Either;
    static WRAPPED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql: &str = if transaction {
        WRAPPED.get_or_init(|| format!("BEGIN IMMEDIATE;\n{BATCH_SQL}COMMIT;"))
    } else {
        BATCH_SQL
    };
    // The statement that returns claims is the fourth of BATCH_SQL (the fifth after BEGIN).
    let claims_statement = if transaction { 4 } else { 3 };
    let mut returned = std::collections::HashMap::new();
    let mut statement = 0;
    // SQLite's driver runs every statement of one query in one message to its worker thread, and keeps them
    // prepared; sqlx 0.8 marks `fetch_many` deprecated because other drivers cannot, but a round trip to that
    // thread costs more than the statements themselves.
    #[allow(deprecated)]
    let mut stream = sqlx::query_with(sql, args).fetch_many(&mut *c);
    while let Some(item) = stream.try_next().await.map_err(|e| conflict(e.into()))? {
        match item {
            Either::Right(row) => {
                let key = (
                    statement == claims_statement,
                    row.try_get::<String, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<i64, _>(2)?,
                );
                returned.insert(key, row.try_get::<i64, _>(3)?);
            }
            Either::Left(_) => statement += 1,
        }
    }
    Ok(returned)
}

/// Applies task changes in one round trip, inside the caller's transaction. For each, in order: the attempt a
/// claim started or a settle recorded, or `None` if the row had moved on (ended, or held by another live worker).
/// A guarded settle (one with an `owner`) that finds its row moved on fails the whole call with
/// [`StoreError::Conflict`]; roll back.
pub async fn apply(c: &mut Conn, changes: &[TaskChange]) -> Result<Vec<Option<i64>>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let returned = run_batch(c, batch_args(changes.iter())?, false).await?;
    Ok(batch_answers(changes, &returned))
}

/// Turns the guard's constraint failure into a conflict.
pub(crate) fn conflict(e: StoreError) -> StoreError {
    match &e {
        StoreError::Database(sqlx::Error::Database(db)) if db.message().contains(GUARD_NAME) => {
            StoreError::Conflict(
                "a task changed under this worker (its lease was taken over, or it ended)".into(),
            )
        }
        _ => e,
    }
}

/// Claims a task for `owner` until `lease_until`, starting its next attempt with `input`; returns that attempt's
/// number, or `None` if the task has ended already (or another live worker holds it).
pub async fn claim(
    c: &mut Conn,
    key: &TaskKey,
    shape: &TaskShape<'_>,
    input: &Value,
    owner: &str,
    lease_until: i64,
) -> Result<Option<i64>, StoreError> {
    let change = TaskChange {
        key: key.clone(),
        position: shape.position,
        action: shape.action.to_owned(),
        change: Change::Claim {
            input: input.clone(),
            owner: owner.to_owned(),
            lease_until,
        },
    };
    Ok(apply(c, &[change]).await?.pop().flatten())
}

/// How a task ends or pauses.
#[derive(Debug, Clone)]
pub struct Settle<'a> {
    /// The new status.
    pub status: StepStatus,
    /// Its output (succeeded).
    pub output: Option<&'a Value>,
    /// The error kind (failed, or waiting to retry).
    pub error_kind: Option<&'a str>,
    /// The error, or the reason for a skip.
    pub error: Option<&'a str>,
    /// When a waiting task's timer fires.
    pub wake_at: Option<i64>,
    /// The rendered input, when the task never ran (kept for the record).
    pub input: Option<&'a Value>,
}

impl<'a> Settle<'a> {
    /// A failure of `kind` with `message`.
    pub fn failed(kind: &'a str, message: &'a str) -> Self {
        Self {
            status: StepStatus::Failed,
            output: None,
            error_kind: Some(kind),
            error: Some(message),
            wake_at: None,
            input: None,
        }
    }

    /// Waiting in a queue (a concurrency slot), with the reason.
    pub fn queued(reason: &'a str) -> Self {
        Self {
            status: StepStatus::Queued,
            output: None,
            error_kind: None,
            error: Some(reason),
            wake_at: None,
            input: None,
        }
    }

    /// The same, recording the rendered input (a task that never ran).
    pub fn with_input(mut self, input: &'a Value) -> Self {
        self.input = Some(input);
        self
    }
}

/// Moves a task that has not ended to `settle.status`. With `owner`, only if that worker holds it (a worker whose
/// lease was taken over cannot record a result); without, whoever holds it. Returns false if nothing changed
/// (with `owner`, the failed guard has aborted the statement batch: roll back the transaction).
pub async fn settle(
    c: &mut Conn,
    key: &TaskKey,
    shape: &TaskShape<'_>,
    owner: Option<&str>,
    settle: &Settle<'_>,
) -> Result<bool, StoreError> {
    let change = TaskChange {
        key: key.clone(),
        position: shape.position,
        action: shape.action.to_owned(),
        change: Change::Settle {
            owner: owner.map(str::to_owned),
            status: settle.status,
            output: settle.output.cloned(),
            input: settle.input.cloned(),
            error_kind: settle.error_kind.map(str::to_owned),
            error: settle.error.map(str::to_owned),
            wake_at: settle.wake_at,
        },
    };
    match apply(c, &[change]).await {
        Ok(answers) => Ok(answers.first().copied().flatten().is_some()),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Extends the leases of every task `owner` is running.
pub async fn renew_leases(c: &mut Conn, owner: &str, until: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query(
            "UPDATE steps SET lease_until = ? WHERE lease_owner = ? AND status = 'running'",
        )
        .bind(until)
        .bind(owner)
        .execute(&mut *c)
        .await?
        .rows_affected(),
    )
}

/// Records the approval a `core.approval` task asks for (once: a second call changes nothing).
pub async fn insert_approval(c: &mut Conn, a: &ApprovalRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approvals (run_id, step_id, item, message, approvers, default_approve, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(&a.run_id)
    .bind(&a.step_id)
    .bind(a.item)
    .bind(&a.message)
    .bind(serde_json::to_string(&a.approvers).unwrap_or_else(|_| "[]".into()))
    .bind(a.default_approve as i64)
    .bind(a.expires_at)
    .bind(a.created_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Decides a pending approval; false if it was decided already.
pub async fn decide_approval(
    c: &mut Conn,
    key: &TaskKey,
    decision: &str,
    by: &str,
    comment: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE approvals SET decision = ?, decided_by = ?, comment = ?, decided_at = ? \
         WHERE run_id = ? AND step_id = ? AND item = ? AND decision IS NULL",
    )
    .bind(decision)
    .bind(by)
    .bind(comment)
    .bind(now_ms())
    .bind(&key.run)
    .bind(&key.step)
    .bind(key.item)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// Sets (or replaces) the schedule `idx` of `playbook`.
pub async fn upsert_schedule(
    c: &mut Conn,
    playbook: &str,
    idx: i64,
    cron: &str,
    next_fire_at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO schedules (playbook, idx, cron, next_fire_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (playbook, idx) DO UPDATE SET next_fire_at = CASE WHEN schedules.cron = excluded.cron \
         THEN schedules.next_fire_at ELSE excluded.next_fire_at END, cron = excluded.cron",
    )
    .bind(playbook)
    .bind(idx)
    .bind(cron)
    .bind(next_fire_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Drops the schedules of `playbook` from index `from` on.
pub async fn drop_schedules(c: &mut Conn, playbook: &str, from: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM schedules WHERE playbook = ? AND idx >= ?")
        .bind(playbook)
        .bind(from)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Moves a schedule's next firing from `expected` to `next`; false if someone else moved it (no double firing).
pub async fn advance_schedule(
    c: &mut Conn,
    playbook: &str,
    idx: i64,
    expected: i64,
    next: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE schedules SET next_fire_at = ? WHERE playbook = ? AND idx = ? AND next_fire_at = ?",
    )
    .bind(next)
    .bind(playbook)
    .bind(idx)
    .bind(expected)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1)
}

/// The webhook secret of `playbook` as stored (sealed: open it with [`crate::Vault::open_text`] under
/// [`crate::hook_secret_name`]), stored from `fresh_sealed` if it has none.
pub async fn ensure_hook(
    c: &mut Conn,
    playbook: &str,
    fresh_sealed: &str,
) -> Result<String, StoreError> {
    sqlx::query(
        "INSERT INTO hooks (playbook, secret, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(playbook)
    .bind(fresh_sealed)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    let row = sqlx::query("SELECT secret FROM hooks WHERE playbook = ?")
        .bind(playbook)
        .fetch_one(&mut *c)
        .await?;
    Ok(row.try_get("secret")?)
}

/// Appends to the audit log.
pub async fn audit(
    c: &mut Conn,
    actor: &str,
    action: &str,
    target: &str,
    detail: Option<&Value>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.map(text))
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Copies the tasks of run `from` that succeeded into run `to` (a re-run keeps them); returns how many.
pub async fn copy_succeeded_steps(c: &mut Conn, from: &str, to: &str) -> Result<u64, StoreError> {
    let copied = sqlx::query(
        "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, output, started_at, \
         finished_at, changed_at) SELECT ?, step_id, item, position, action, status, attempt, input, output, \
         started_at, finished_at, ? FROM steps WHERE run_id = ? AND status = 'succeeded'",
    )
    .bind(to)
    .bind(now_us())
    .bind(from)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if copied > 0 {
        let detail = format!("kept {copied} succeeded task(s) from run {from}");
        transition(c, to, None, -1, "running", 0, Some(&detail)).await?;
    }
    Ok(copied)
}

/// Asks every unfinished child run of `parent` to cancel; returns their ids.
pub async fn cancel_children(c: &mut Conn, parent: &str) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "UPDATE runs SET cancel_requested = 1 WHERE parent_run = ? AND status IN ('queued', 'running') RETURNING id",
    )
    .bind(parent)
    .fetch_all(&mut *c)
    .await?)
}
