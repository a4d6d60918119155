//! The statements of the journal's commands, on SQLite. Each takes the transaction it runs in, so a command
//! composes several: finishing a step and claiming the next one cost one commit.

use crate::sql::args;
use serde_json::Value;

use crate::error::StoreError;
use crate::journal::Tx;
use crate::record::{ApprovalRow, RunRow, RunStatus, VersionRow, now_ms, now_us};
use crate::task::{Change, TaskChange, TaskKey};

fn text(value: &Value) -> String {
    value.to_string()
}

/// Stores a new version of a playbook, numbered one above the latest; returns its number.
pub(crate) fn insert_version(tx: &Tx<'_>, v: &VersionRow) -> Result<i64, StoreError> {
    let version = tx
        .row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM playbook_versions WHERE name = ?",
            args![&v.name],
            |r| r.get::<i64>(0),
        )?
        .unwrap_or(1);
    tx.exec(
        "INSERT INTO playbook_versions (name, version, source, digest, plugins, triggers, published_at, published_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        args![
            v.name,
            version,
            v.source,
            v.digest,
            text(&v.plugins),
            text(&v.triggers),
            v.published_at,
            v.published_by
        ],
    )?;
    Ok(version)
}

/// Stores a new run.
pub(crate) fn insert_run(tx: &Tx<'_>, r: &RunRow) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO runs (id, playbook, version, status, inputs, outputs, error, trigger, started_by, parent_run, \
         parent_step, parent_item, parent_wait, rerun_of, cancel_requested, created_at, started_at, finished_at, tlp) \
         VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, FALSE, ?, ?, NULL, ?)",
        args![
            r.id,
            r.playbook,
            r.version,
            r.status.as_str(),
            text(&r.inputs),
            r.trigger.as_str(),
            r.started_by,
            r.parent_run,
            r.parent_step,
            r.parent_item,
            r.parent_wait as i64,
            r.rerun_of,
            r.created_at,
            r.started_at,
            r.tlp.as_ref().map(text),
        ],
    )?;
    run_transition(tx, &r.id, r.status.as_str(), None)
}

/// Moves a queued run to running; false if it was not queued.
pub(crate) fn start_queued_run(tx: &Tx<'_>, id: &str) -> Result<bool, StoreError> {
    let done = tx.exec(
        "UPDATE runs SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'",
        args![now_ms(), id],
    )? == 1;
    if done {
        run_transition(tx, id, "running", None)?;
    }
    Ok(done)
}

/// Ends a run that has not ended yet; false if it had.
pub(crate) fn finish_run(
    tx: &Tx<'_>,
    id: &str,
    status: RunStatus,
    outputs: Option<&Value>,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let done = tx.exec(
        "UPDATE runs SET status = ?, outputs = ?, error = ?, finished_at = ? \
         WHERE id = ? AND status IN ('queued', 'running')",
        args![status.as_str(), outputs.map(text), error, now_ms(), id],
    )? == 1;
    if done {
        run_transition(tx, id, status.as_str(), error)?;
    }
    Ok(done)
}

/// Counts one more start that resumed running run `id` and in which it did work.
pub(crate) fn count_resume(tx: &Tx<'_>, id: &str) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE runs SET resumes = resumes + 1 WHERE id = ? AND status = 'running'",
        args![id],
    )?;
    Ok(())
}

/// Takes back the start counted against each of `ids`.
pub(crate) fn uncount_resumes(tx: &Tx<'_>, ids: &[String]) -> Result<(), StoreError> {
    for id in ids {
        tx.exec(
            "UPDATE runs SET resumes = resumes - 1 WHERE id = ? AND resumes > 0",
            args![id],
        )?;
    }
    Ok(())
}

/// Run `id` came to rest: it no longer counts as dying under its process.
pub(crate) fn reset_resumes(tx: &Tx<'_>, id: &str) -> Result<(), StoreError> {
    tx.exec(
        "UPDATE runs SET resumes = 0 WHERE id = ? AND resumes <> 0",
        args![id],
    )?;
    Ok(())
}

/// Marks a run for cancellation; false if it has ended already.
pub(crate) fn request_cancel(tx: &Tx<'_>, id: &str) -> Result<bool, StoreError> {
    Ok(tx.exec(
        "UPDATE runs SET cancel_requested = TRUE WHERE id = ? AND status IN ('queued', 'running')",
        args![id],
    )? == 1)
}

/// Appends a change of a run's status to the transition history (tasks' changes are appended by triggers).
fn run_transition(
    tx: &Tx<'_>,
    run: &str,
    status: &str,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO transitions (run_id, step_id, item, status, attempt, at, detail) VALUES (?, NULL, -1, ?, 0, ?, ?)",
        args![run, status, now_us(), detail],
    )?;
    Ok(())
}

const SETTLE_SQL: &str = "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, \
     output, error_kind, error, wake_at, finished_at, lease_owner, changed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
     ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = excluded.status, changed_at = excluded.changed_at, \
     input = COALESCE(excluded.input, steps.input), output = excluded.output, error_kind = excluded.error_kind, \
     error = excluded.error, wake_at = excluded.wake_at, finished_at = excluded.finished_at, \
     lease_owner = NULL, lease_until = NULL \
     WHERE steps.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled') \
     AND (excluded.lease_owner IS NULL OR steps.lease_owner = excluded.lease_owner) \
     RETURNING attempt";

const CLAIM_SQL: &str = "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, \
     lease_owner, lease_until, started_at, changed_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (run_id, step_id, item) DO UPDATE SET status = 'running', attempt = steps.attempt + 1, \
     input = excluded.input, lease_owner = excluded.lease_owner, lease_until = excluded.lease_until, \
     wake_at = NULL, error = NULL, changed_at = excluded.changed_at, \
     started_at = COALESCE(steps.started_at, excluded.started_at) \
     WHERE steps.status IN ('queued', 'waiting') \
     OR (steps.status = 'running' AND (steps.lease_owner IS DISTINCT FROM excluded.lease_owner OR steps.lease_until < ?9)) \
     RETURNING attempt";

/// Applies task changes, settles before claims (a command never claims a task and then settles it). For each,
/// in order: the attempt a claim started or a settle recorded, or `None` if the row had moved on (ended, or held
/// by another live worker). A guarded settle (one with an `owner`) that finds its row moved on fails with
/// [`StoreError::Conflict`]: the command's savepoint is rolled back.
pub(crate) fn apply_tasks(
    tx: &Tx<'_>,
    changes: &[TaskChange],
) -> Result<Vec<Option<i64>>, StoreError> {
    let (now, now_micros) = (now_ms(), now_us());
    let mut answers = vec![None; changes.len()];
    let settles = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.change, Change::Settle { .. }));
    let claims = changes
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.change, Change::Claim { .. }));
    for (i, c) in settles.chain(claims) {
        let key = &c.key;
        answers[i] = match &c.change {
            Change::Claim {
                input,
                owner,
                lease_until,
            } => tx.row(
                CLAIM_SQL,
                args![
                    key.run,
                    key.step,
                    key.item,
                    c.position,
                    c.action,
                    text(input),
                    owner,
                    lease_until,
                    now,
                    now_micros
                ],
                |r| r.get::<i64>(0),
            )?,
            Change::Settle {
                owner,
                status,
                output,
                input,
                error_kind,
                error,
                wake_at,
            } => {
                let finished_at = status.is_terminal().then_some(now);
                let attempt = tx.row(
                    SETTLE_SQL,
                    args![
                        key.run,
                        key.step,
                        key.item,
                        c.position,
                        c.action,
                        status.as_str(),
                        input.as_ref().map(text),
                        output.as_ref().map(text),
                        error_kind,
                        error,
                        wake_at,
                        finished_at,
                        owner,
                        now_micros
                    ],
                    |r| r.get::<i64>(0),
                )?;
                if attempt.is_none() && owner.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "task {}/{}[{}] changed under this worker (its lease was taken over, or it ended)",
                        key.run, key.step, key.item
                    )));
                }
                attempt
            }
        };
    }
    Ok(answers)
}

/// Applies one settle, unguarded; false if the task had ended already.
pub(crate) fn settle(tx: &Tx<'_>, change: &TaskChange) -> Result<bool, StoreError> {
    Ok(apply_tasks(tx, std::slice::from_ref(change))?
        .first()
        .copied()
        .flatten()
        .is_some())
}

/// Extends the leases of every task `owner` is running.
pub(crate) fn renew_leases(tx: &Tx<'_>, owner: &str, until: i64) -> Result<u64, StoreError> {
    Ok(tx.exec(
        "UPDATE steps SET lease_until = ? WHERE lease_owner = ? AND status = 'running'",
        args![until, owner],
    )? as u64)
}

/// Records the approval a `core.approval` task asks for (once: a second call changes nothing).
pub(crate) fn insert_approval(tx: &Tx<'_>, a: &ApprovalRow) -> Result<(), StoreError> {
    let approvers =
        serde_json::to_string(&a.approvers).map_err(|e| StoreError::Invalid(e.to_string()))?;
    tx.exec(
        "INSERT INTO approvals (run_id, step_id, item, message, approvers, default_approve, expires_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        args![
            a.run_id,
            a.step_id,
            a.item,
            a.message,
            approvers,
            a.default_approve as i64,
            a.expires_at,
            a.created_at
        ],
    )?;
    Ok(())
}

/// Decides a pending approval; false if it was decided already.
pub(crate) fn decide_approval(
    tx: &Tx<'_>,
    key: &TaskKey,
    decision: &str,
    by: &str,
    comment: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(tx.exec(
        "UPDATE approvals SET decision = ?, decided_by = ?, comment = ?, decided_at = ? \
         WHERE run_id = ? AND step_id = ? AND item = ? AND decision IS NULL",
        args![decision, by, comment, now_ms(), key.run, key.step, key.item],
    )? == 1)
}

/// Sets (or replaces) the schedule `idx` of `playbook`.
pub(crate) fn upsert_schedule(
    tx: &Tx<'_>,
    playbook: &str,
    idx: i64,
    cron: &str,
    next_fire_at: i64,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO schedules (playbook, idx, cron, next_fire_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (playbook, idx) DO UPDATE SET next_fire_at = CASE WHEN schedules.cron = excluded.cron \
         THEN schedules.next_fire_at ELSE excluded.next_fire_at END, cron = excluded.cron",
        args![playbook, idx, cron, next_fire_at],
    )?;
    Ok(())
}

/// Drops the schedules of `playbook` from index `from` on.
pub(crate) fn drop_schedules(tx: &Tx<'_>, playbook: &str, from: i64) -> Result<(), StoreError> {
    tx.exec(
        "DELETE FROM schedules WHERE playbook = ? AND idx >= ?",
        args![playbook, from],
    )?;
    Ok(())
}

/// Moves a schedule's next firing from `expected` to `next`; false if someone else moved it (no double firing).
pub(crate) fn advance_schedule(
    tx: &Tx<'_>,
    playbook: &str,
    idx: i64,
    expected: i64,
    next: i64,
) -> Result<bool, StoreError> {
    Ok(tx.exec(
        "UPDATE schedules SET next_fire_at = ? WHERE playbook = ? AND idx = ? AND next_fire_at = ?",
        args![next, playbook, idx, expected],
    )? == 1)
}

/// The webhook secret of `playbook` as stored (sealed), stored from `fresh_sealed` if it has none.
pub(crate) fn ensure_hook(
    tx: &Tx<'_>,
    playbook: &str,
    fresh_sealed: &str,
) -> Result<String, StoreError> {
    tx.exec(
        "INSERT INTO hooks (playbook, secret, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        args![playbook, fresh_sealed, now_ms()],
    )?;
    tx.row(
        "SELECT secret FROM hooks WHERE playbook = ?",
        args![playbook],
        |r| r.get(0),
    )?
    .ok_or_else(|| StoreError::Corrupt {
        table: "hooks",
        message: format!("the secret of `{playbook}` vanished while it was written"),
    })
}

/// Appends to the audit log.
pub(crate) fn audit(
    tx: &Tx<'_>,
    actor: &str,
    action: &str,
    target: &str,
    detail: Option<&Value>,
) -> Result<(), StoreError> {
    tx.exec(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        args![now_ms(), actor, action, target, detail.map(text)],
    )?;
    Ok(())
}

/// Copies the tasks of run `from` that succeeded into run `to` (a re-run keeps them); returns how many.
pub(crate) fn copy_succeeded_steps(tx: &Tx<'_>, from: &str, to: &str) -> Result<u64, StoreError> {
    let copied = tx.exec(
        "INSERT INTO steps (run_id, step_id, item, position, action, status, attempt, input, output, started_at, \
         finished_at, changed_at) SELECT CAST(? AS TEXT), step_id, item, position, action, status, attempt, input, \
         output, started_at, finished_at, CAST(? AS BIGINT) FROM steps WHERE run_id = ? AND status = 'succeeded'",
        args![to, now_us(), from],
    )? as u64;
    if copied > 0 {
        let detail = format!("kept {copied} succeeded task(s) from run {from}");
        run_transition(tx, to, "running", Some(&detail))?;
    }
    Ok(copied)
}

/// Asks every unfinished child run of `parent` to cancel; returns their ids.
pub(crate) fn cancel_children(tx: &Tx<'_>, parent: &str) -> Result<Vec<String>, StoreError> {
    tx.rows(
        "UPDATE runs SET cancel_requested = TRUE WHERE parent_run = ? AND status IN ('queued', 'running') RETURNING id",
        args![parent],
        |r| r.get(0),
    )
}
