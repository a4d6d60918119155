//! Statements the engine composes inside [`Journal::write`](crate::Journal::write) transactions.
//!
//! Each function takes the writer's connection, so several of them commit together: finishing a step and
//! claiming the next one cost one commit.

use serde_json::Value;
use sqlx::{Row, SqliteConnection};

use crate::error::StoreError;
use crate::record::{
    ApprovalRow, RunRow, RunStatus, StepStatus, VersionRow, now_ms, now_us,
};

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
         parent_step, parent_item, parent_wait, rerun_of, cancel_requested, created_at, started_at, finished_at) \
         VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL)",
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
    .execute(&mut *c)
    .await?;
    transition(c, &r.id, None, -1, r.status.as_str(), 0, None).await
}

/// Moves a queued run to running; false if it was not queued.
pub async fn start_queued_run(c: &mut Conn, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'")
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

const CLAIM_SQL: &str = "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, \
     lease_owner, lease_until, started_at, changed_at) VALUES (?, ?, ?, ?, ?, 'running', 1, ?, ?, ?, ?, ?) \
     ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = 'running', attempt = steps.attempt + 1, \
     input = excluded.input, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, \
     wake_at = NULL, error = NULL, changed_at = excluded.changed_at, \
     started_at = COALESCE(steps.started_at, excluded.started_at) \
     WHERE steps.status IN ('queued', 'waiting') \
        OR (steps.status = 'running' AND (steps.lease_owner IS NOT excluded.lease_owner OR steps.lease_until < ?)) \
     RETURNING attempt";

const SETTLE_SQL: &str = "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, output, \
     error_kind, error, wake_at, finished_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, \
     input = COALESCE(excluded.input, steps.input), output = excluded.output, error_kind = excluded.error_kind, \
     error = excluded.error, wake_at = excluded.wake_at, finished_at = excluded.finished_at, \
     lease_owner = NULL, lease_until = NULL \
     WHERE steps.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled') \
       AND (? IS NULL OR steps.lease_owner = ?) \
     RETURNING attempt";

type Args = sqlx::sqlite::SqliteArguments<'static>;

fn add<T>(args: &mut Args, value: T) -> Result<(), StoreError>
where
    T: sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 'static,
{
    use sqlx::Arguments;
    args.add(value)
        .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))
}

/// A change to a task, for [`apply`].
#[derive(Debug, Clone)]
pub enum TaskWrite<'a> {
    /// Claims the task for `owner` until `lease_until`, starting its next attempt with `input` (see [`claim`]).
    Claim {
        /// The task.
        key: &'a TaskKey,
        /// Its step.
        shape: TaskShape<'a>,
        /// The rendered input.
        input: &'a Value,
        /// The worker.
        owner: &'a str,
        /// Unix ms.
        lease_until: i64,
    },
    /// Moves the task to a new state (see [`settle`]).
    Settle {
        /// The task.
        key: &'a TaskKey,
        /// Its step.
        shape: TaskShape<'a>,
        /// Only if this worker holds it.
        owner: Option<&'a str>,
        /// The new state.
        settle: Settle<'a>,
    },
}

fn bind_write(args: &mut Args, write: &TaskWrite<'_>) -> Result<&'static str, StoreError> {
    let now = now_ms();
    match write {
        TaskWrite::Claim { key, shape, input, owner, lease_until } => {
            add(args, key.run.clone())?;
            add(args, key.step.clone())?;
            add(args, key.item)?;
            add(args, shape.position)?;
            add(args, shape.action.to_owned())?;
            add(args, text(input))?;
            add(args, owner.to_string())?;
            add(args, *lease_until)?;
            add(args, now)?;
            add(args, now_us())?;
            add(args, now)?;
            Ok(CLAIM_SQL)
        }
        TaskWrite::Settle { key, shape, owner, settle } => {
            add(args, key.run.clone())?;
            add(args, key.step.clone())?;
            add(args, key.item)?;
            add(args, shape.position)?;
            add(args, shape.action.to_owned())?;
            add(args, settle.status.as_str())?;
            add(args, settle.input.map(text))?;
            add(args, settle.output.map(text))?;
            add(args, settle.error_kind.map(str::to_owned))?;
            add(args, settle.error.map(str::to_owned))?;
            add(args, settle.wake_at)?;
            add(args, settle.status.is_terminal().then(|| now))?;
            add(args, now_us())?;
            add(args, owner.map(str::to_owned))?;
            add(args, owner.map(str::to_owned))?;
            Ok(SETTLE_SQL)
        }
    }
}

/// Applies several task changes in one round trip to the database (one multi-statement query). For each, in
/// order: the attempt a claim started or the attempt a settle recorded, or `None` if the row had moved on (ended,
/// or held by another live worker).
pub async fn apply(c: &mut Conn, writes: &[TaskWrite<'_>]) -> Result<Vec<Option<i64>>, StoreError> {
    use futures_util::TryStreamExt;
    use sqlx::Either;
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = Args::default();
    let mut sql = String::new();
    for write in writes {
        sql.push_str(bind_write(&mut args, write)?);
        sql.push_str(";\n");
    }
    let mut results = Vec::with_capacity(writes.len());
    let mut returned: Option<i64> = None;
    // SQLite's driver runs every statement of one query in one message to its worker thread; sqlx 0.8 marks
    // `fetch_many` deprecated because other drivers cannot, but a round trip to that thread costs more than the
    // statements themselves, so a flush of many task changes is one message here.
    #[allow(deprecated)]
    let mut stream = sqlx::query_with(&sql, args).fetch_many(&mut *c);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Right(row) => returned = Some(row.try_get(0)?),
            Either::Left(_) => results.push(returned.take()),
        }
    }
    drop(stream);
    if results.len() != writes.len() {
        return Err(StoreError::Commit(format!(
            "{} task changes sent, {} answered",
            writes.len(),
            results.len()
        )));
    }
    Ok(results)
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
    let write = TaskWrite::Claim { key, shape: shape.clone(), input, owner, lease_until };
    Ok(apply(c, std::slice::from_ref(&write)).await?.pop().flatten())
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

/// Moves a task that has not ended to `settle.status`. With `owner`, only if that worker holds it (a worker whose
/// lease was taken over cannot record a result); without, whoever holds it. Returns false if nothing changed.
pub async fn settle(
    c: &mut Conn,
    key: &TaskKey,
    shape: &TaskShape<'_>,
    owner: Option<&str>,
    settle: &Settle<'_>,
) -> Result<bool, StoreError> {
    let write = TaskWrite::Settle { key, shape: shape.clone(), owner, settle: settle.clone() };
    Ok(apply(c, std::slice::from_ref(&write)).await?.pop().flatten().is_some())
}

/// Extends the leases of every task `owner` is running.
pub async fn renew_leases(c: &mut Conn, owner: &str, until: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("UPDATE steps SET lease_until = ? WHERE lease_owner = ? AND status = 'running'")
        .bind(until)
        .bind(owner)
        .execute(&mut *c)
        .await?
        .rows_affected())
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

/// The webhook secret of `playbook`, created from `fresh` if it has none.
pub async fn ensure_hook(c: &mut Conn, playbook: &str, fresh: &str) -> Result<String, StoreError> {
    sqlx::query("INSERT INTO hooks (playbook, secret, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
        .bind(playbook)
        .bind(fresh)
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
