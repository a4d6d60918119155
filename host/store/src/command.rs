//! The orchestrator's writes, as data: each command is a struct saying what is to be recorded, executed with
//! [`Store::execute`](crate::Store::execute) in one transaction that is committed before it answers. The engine
//! composes no SQL and holds no connection; how a command is written (its statements, on which database) is the
//! store's business alone.

use serde_json::{Value, json};

use crate::error::StoreError;
use crate::journal::Tx;
use crate::keys::{self, RunKey};
use crate::record::{ApprovalRow, RunRow, RunStatus, VersionRow};
use crate::task::{TaskChange, TaskKey};
use crate::write;

mod sealed {
    pub trait Sealed {}
}

/// A write the store executes in one transaction. Implemented by the commands of this module only.
pub trait Command: sealed::Sealed + Send + 'static {
    /// What executing it answers, once committed.
    type Output: Send + 'static;

    /// Writes the command in `tx`. Called by the store only.
    #[doc(hidden)]
    fn apply(self, tx: &Tx<'_>) -> Result<Self::Output, StoreError>;
}

macro_rules! command {
    ($name:ty => $output:ty, |$self:ident, $tx:ident| $body:block) => {
        impl sealed::Sealed for $name {}
        impl Command for $name {
            type Output = $output;
            fn apply($self, $tx: &Tx<'_>) -> Result<$output, StoreError> $body
        }
    };
}

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    /// Who did it.
    pub actor: String,
    /// What, e.g. `run.start`.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details.
    pub detail: Option<Value>,
}

impl Audit {
    /// An entry of `actor` doing `action` to `target`.
    pub fn new(actor: &str, action: &str, target: &str, detail: Option<Value>) -> Self {
        Self {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        }
    }

    fn write(&self, tx: &Tx<'_>) -> Result<(), StoreError> {
        write::audit(
            tx,
            &self.actor,
            &self.action,
            &self.target,
            self.detail.as_ref(),
        )
    }
}

/// What must hold for a run to be created, checked in the creating transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateGuard {
    /// The run key is not held by a live earlier run; it is claimed for the new one.
    RunKey(RunKey),
    /// The schedule's next firing is still `expected`; it moves to `next` (one run per firing, whichever
    /// process fires it).
    ScheduleTick {
        /// The playbook.
        playbook: String,
        /// The schedule's index among the playbook's.
        idx: i64,
        /// The firing this run stands for, unix ms.
        expected: i64,
        /// The firing after it.
        next: i64,
    },
}

/// Creates a run, audited as `run.start` by `actor`; a re-run (`run.rerun_of`) keeps the succeeded tasks of the
/// run it repeats; a child run settles its `parent` task in the same transaction. Answers false, creating
/// nothing, when the guard does not hold.
#[derive(Debug, Clone)]
pub struct CreateRun {
    /// The new run.
    pub run: RunRow,
    /// What must hold.
    pub guard: Option<CreateGuard>,
    /// The parent's task, settled (waiting for the child, or done).
    pub parent: Option<TaskChange>,
    /// Who starts it.
    pub actor: String,
}

command!(CreateRun => bool, |self, tx| {
    let guarded = match &self.guard {
        None => true,
        Some(CreateGuard::RunKey(key)) => keys::claim_run_key(tx, key, &self.run.id)?,
        Some(CreateGuard::ScheduleTick { playbook, idx, expected, next }) => {
            write::advance_schedule(tx, playbook, *idx, *expected, *next)?
        }
    };
    if !guarded {
        return Ok(false);
    }
    let row = &self.run;
    write::insert_run(tx, row)?;
    if let Some(from) = &row.rerun_of {
        write::copy_succeeded_steps(tx, from, &row.id)?;
    }
    let detail = json!({
        "playbook": row.playbook, "version": row.version, "trigger": row.trigger.as_str(),
        "rerun_of": row.rerun_of, "parent_run": row.parent_run,
    });
    write::audit(tx, &self.actor, "run.start", &row.id, Some(&detail))?;
    if let Some(parent) = &self.parent {
        write::settle(tx, parent)?;
    }
    Ok(true)
});

/// Moves a queued run to running; false if it was not queued.
#[derive(Debug, Clone)]
pub struct StartQueuedRun {
    /// The run.
    pub run: String,
}

command!(StartQueuedRun => bool, |self, tx| { write::start_queued_run(tx, &self.run) });

/// Ends a run that has not ended yet and, in the same transaction, the parent's task waiting for it; false if it
/// had ended.
#[derive(Debug, Clone)]
pub struct FinishRun {
    /// The run.
    pub run: String,
    /// How it ended.
    pub status: RunStatus,
    /// Its outputs.
    pub outputs: Option<Value>,
    /// Its error.
    pub error: Option<String>,
    /// The parent's waiting task, settled.
    pub parent: Option<TaskChange>,
}

command!(FinishRun => bool, |self, tx| {
    if !write::finish_run(tx, &self.run, self.status, self.outputs.as_ref(), self.error.as_deref())? {
        return Ok(false);
    }
    if let Some(parent) = &self.parent {
        write::settle(tx, parent)?;
    }
    Ok(true)
});

/// A cron schedule of a published playbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    /// Its index among the playbook's schedules.
    pub idx: i64,
    /// The cron expression.
    pub cron: String,
    /// Its next firing, unix ms (kept if the expression did not change).
    pub next_fire_at: i64,
}

/// Publishes a playbook version (numbered one above the latest), replaces its schedules and, for a playbook
/// with a webhook, keeps its webhook secret or stores `fresh_hook_secret`; audited as `playbook.publish`.
/// Answers the version's number and, with a webhook, the stored (sealed) secret.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The version (its number is assigned).
    pub version: VersionRow,
    /// Every schedule the version declares.
    pub schedules: Vec<ScheduleSpec>,
    /// A new sealed webhook secret, used if the playbook has none: `Some` when it has a webhook trigger.
    pub fresh_hook_secret: Option<String>,
    /// Who publishes.
    pub actor: String,
}

command!(Publish => (i64, Option<String>), |self, tx| {
    let v = &self.version;
    let version = write::insert_version(tx, v)?;
    for s in &self.schedules {
        write::upsert_schedule(tx, &v.name, s.idx, &s.cron, s.next_fire_at)?;
    }
    write::drop_schedules(tx, &v.name, self.schedules.len() as i64)?;
    let secret = match &self.fresh_hook_secret {
        Some(fresh) => Some(write::ensure_hook(tx, &v.name, fresh)?),
        None => None,
    };
    let target = format!("{}@v{version}", v.name);
    let detail = json!({ "digest": v.digest, "plugins": v.plugins });
    write::audit(tx, &self.actor, "playbook.publish", &target, Some(&detail))?;
    Ok((version, secret))
});

/// Applies task changes (settles before claims). Answers, for each change in order, the attempt a claim
/// started or a settle recorded, or `None` if the row had moved on (ended, or held by another live worker). A
/// guarded settle that finds its row moved on fails the command with [`StoreError::Conflict`], keeping none of it.
#[derive(Debug, Clone)]
pub struct ApplyTasks(pub Vec<TaskChange>);

command!(ApplyTasks => Vec<Option<i64>>, |self, tx| { write::apply_tasks(tx, &self.0) });

/// Counts one more start that resumed running run `run` and in which it did work (see
/// [`RunRow::resumes`](crate::RunRow::resumes)).
#[derive(Debug, Clone)]
pub struct CountResume {
    /// The run.
    pub run: String,
}

command!(CountResume => (), |self, tx| { write::count_resume(tx, &self.run) });

/// Takes back the start counted against each run: the process stopped by choice, it did not die.
#[derive(Debug, Clone)]
pub struct UncountResumes {
    /// The runs.
    pub runs: Vec<String>,
}

command!(UncountResumes => (), |self, tx| { write::uncount_resumes(tx, &self.runs) });

/// Run `run` came to rest (a step ended, or it only waits): it no longer counts as dying under its process.
#[derive(Debug, Clone)]
pub struct ResetResumes {
    /// The run.
    pub run: String,
}

command!(ResetResumes => (), |self, tx| { write::reset_resumes(tx, &self.run) });

/// Asks a run to cancel, audited as `run.cancel` by `actor`; false if it has ended already.
#[derive(Debug, Clone)]
pub struct RequestCancel {
    /// The run.
    pub run: String,
    /// Who asks.
    pub actor: String,
}

command!(RequestCancel => bool, |self, tx| {
    let requested = write::request_cancel(tx, &self.run)?;
    if requested {
        write::audit(tx, &self.actor, "run.cancel", &self.run, None)?;
    }
    Ok(requested)
});

/// Asks every unfinished child run of `parent` to cancel; answers their ids.
#[derive(Debug, Clone)]
pub struct CancelChildren {
    /// The parent run.
    pub parent: String,
}

command!(CancelChildren => Vec<String>, |self, tx| { write::cancel_children(tx, &self.parent) });

/// Records the approval a `core.approval` task asks for (once) and settles the task as waiting for it; false if
/// the task had ended.
#[derive(Debug, Clone)]
pub struct RequestApproval {
    /// The approval.
    pub approval: ApprovalRow,
    /// The task, waiting.
    pub task: TaskChange,
}

command!(RequestApproval => bool, |self, tx| {
    write::insert_approval(tx, &self.approval)?;
    write::settle(tx, &self.task)
});

/// How an approval was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An approver approved.
    Approved,
    /// An approver denied.
    Denied,
    /// It expired and took its default.
    Expired,
}

impl Decision {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }
}

/// Decides a pending approval, settles its task, and writes `audit`; false (nothing written) if it was decided
/// already.
#[derive(Debug, Clone)]
pub struct DecideApproval {
    /// The approval's task.
    pub key: TaskKey,
    /// The decision.
    pub decision: Decision,
    /// Who decided.
    pub by: String,
    /// Their comment.
    pub comment: Option<String>,
    /// The task, settled.
    pub task: TaskChange,
    /// The audit entry.
    pub audit: Option<Audit>,
}

command!(DecideApproval => bool, |self, tx| {
    if !write::decide_approval(tx, &self.key, self.decision.as_str(), &self.by, self.comment.as_deref())? {
        return Ok(false);
    }
    write::settle(tx, &self.task)?;
    if let Some(audit) = &self.audit {
        audit.write(tx)?;
    }
    Ok(true)
});

/// Moves a schedule's next firing from `expected` to `next` (with `audit`); false if someone else moved it.
#[derive(Debug, Clone)]
pub struct AdvanceSchedule {
    /// The playbook.
    pub playbook: String,
    /// The schedule's index.
    pub idx: i64,
    /// Its next firing as read, unix ms.
    pub expected: i64,
    /// Its new next firing.
    pub next: i64,
    /// The audit entry, written if it moved.
    pub audit: Option<Audit>,
}

command!(AdvanceSchedule => bool, |self, tx| {
    let moved = write::advance_schedule(tx, &self.playbook, self.idx, self.expected, self.next)?;
    if moved && let Some(audit) = &self.audit {
        audit.write(tx)?;
    }
    Ok(moved)
});

/// Extends the leases of every task `owner` is running to `until` (unix ms); answers how many.
#[derive(Debug, Clone)]
pub struct RenewLeases {
    /// The worker.
    pub owner: String,
    /// The new end of the leases.
    pub until: i64,
}

command!(RenewLeases => u64, |self, tx| { write::renew_leases(tx, &self.owner, self.until) });

/// Writes an entry of the audit log on its own.
#[derive(Debug, Clone)]
pub struct WriteAudit(pub Audit);

command!(WriteAudit => (), |self, tx| { self.0.write(tx) });
