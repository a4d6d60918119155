//! Changes to tasks (a step of a run, or one item of it) as data: what the engine asks the store to record.

use serde_json::Value;

use crate::record::StepStatus;

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

/// A change to a task (see [`crate::command::ApplyTasks`]).
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
    /// Claims the task for `owner` until `lease_until`, starting its next attempt with `input`: it starts if the
    /// task is queued or waiting, or running under another worker's lease that has expired.
    Claim {
        /// The rendered input.
        input: Value,
        /// The worker.
        owner: String,
        /// Unix ms.
        lease_until: i64,
    },
    /// Moves a task that has not ended to a new state.
    Settle {
        /// Only if this worker holds it; the whole command fails with [`crate::StoreError::Conflict`] if it does
        /// not (a worker whose lease was taken over cannot record a result).
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

/// How a task ends or pauses: the fields of [`Change::Settle`] without the owner, borrowed.
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
    /// Moving to `status` with nothing else.
    pub fn to(status: StepStatus) -> Self {
        Self {
            status,
            output: None,
            error_kind: None,
            error: None,
            wake_at: None,
            input: None,
        }
    }

    /// Succeeded with `output`.
    pub fn succeeded(output: &'a Value) -> Self {
        Self {
            output: Some(output),
            ..Self::to(StepStatus::Succeeded)
        }
    }

    /// A failure of `kind` with `message`.
    pub fn failed(kind: &'a str, message: &'a str) -> Self {
        Self {
            error_kind: Some(kind),
            error: Some(message),
            ..Self::to(StepStatus::Failed)
        }
    }

    /// Waiting in a queue (a concurrency slot), with the reason.
    pub fn queued(reason: &'a str) -> Self {
        Self {
            error: Some(reason),
            ..Self::to(StepStatus::Queued)
        }
    }

    /// Waiting (for a child run, an approval, a timer), with the reason.
    pub fn waiting(reason: &'a str, wake_at: Option<i64>) -> Self {
        Self {
            error: Some(reason),
            wake_at,
            ..Self::to(StepStatus::Waiting)
        }
    }

    /// The same, recording the rendered input (a task that never ran).
    pub fn with_input(mut self, input: &'a Value) -> Self {
        self.input = Some(input);
        self
    }
}

impl TaskChange {
    /// Settles task `key` (of `shape`, used if its row does not exist yet) as `settle` says; with `owner`, only
    /// if that worker holds it.
    pub fn settle(
        key: TaskKey,
        shape: &TaskShape<'_>,
        owner: Option<&str>,
        settle: &Settle<'_>,
    ) -> Self {
        Self {
            key,
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
        }
    }

    /// Claims task `key` for `owner` until `lease_until` (unix ms), with `input`.
    pub fn claim(
        key: TaskKey,
        shape: &TaskShape<'_>,
        input: Value,
        owner: &str,
        lease_until: i64,
    ) -> Self {
        Self {
            key,
            position: shape.position,
            action: shape.action.to_owned(),
            change: Change::Claim {
                input,
                owner: owner.to_owned(),
                lease_until,
            },
        }
    }
}
