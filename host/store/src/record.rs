//! The rows the store keeps about playbook versions, runs and their tasks, and how they are decoded.

use crate::sql::RowRef;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StoreError;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Waiting for a slot under its playbook's concurrency limit.
    Queued,
    /// Steps are running or waiting (on a timer, an approval, a child run, a concurrency slot).
    Running,
    /// Every step succeeded, was skipped or had its failure handled, and the outputs were rendered.
    Succeeded,
    /// A step failed unhandled, or the outputs could not be rendered.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// The state of a step (or of one item of a `for_each` step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Waiting for a concurrency slot or rate budget.
    Queued,
    /// Claimed by a worker, which executes it.
    Running,
    /// Waiting durably: a retry backoff, a sleep, an approval, a child run.
    Waiting,
    /// It returned an output.
    Succeeded,
    /// It returned an error or broke a limit, with no attempt left.
    Failed,
    /// Its condition was false, or a step it needs did not succeed.
    Skipped,
    /// Its run was cancelled before it ended.
    Cancelled,
}

impl StepStatus {
    /// Whether the step has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident = $text:literal),* $(,)? }) => {
        impl $ty {
            /// The lower-case name stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
            /// Parses the stored name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some(Self::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
text_enum!(RunStatus { Queued = "queued", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" });
text_enum!(StepStatus {
    Queued = "queued", Running = "running", Waiting = "waiting", Succeeded = "succeeded", Failed = "failed",
    Skipped = "skipped", Cancelled = "cancelled"
});

/// A published, immutable playbook version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// Playbook name.
    pub name: String,
    /// 1, 2, ... in order of publication.
    pub version: i64,
    /// The YAML source as published.
    pub source: String,
    /// SHA-256 of the source, hex.
    pub digest: String,
    /// Plugin name to the SHA-256 of its component, pinned at publication.
    pub plugins: Value,
    /// A summary of the playbook's triggers.
    pub triggers: Value,
    /// Unix milliseconds.
    pub published_at: i64,
    /// Who published it.
    pub published_by: String,
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// Through the API or the CLI.
    Manual,
    /// By a POST to the playbook's webhook.
    Webhook,
    /// By its cron schedule.
    Schedule,
    /// By an internal event (an alert created, a case changed).
    Event,
    /// As a re-run of a failed run.
    Rerun,
    /// By a `core.playbook` step of another run.
    Playbook,
}
text_enum!(TriggerKind { Manual = "manual", Webhook = "webhook", Schedule = "schedule", Event = "event", Rerun = "rerun", Playbook = "playbook" });

/// A run of a playbook version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// UUIDv7.
    pub id: String,
    /// Playbook name.
    pub playbook: String,
    /// The exact version it runs.
    pub version: i64,
    /// Where it is.
    pub status: RunStatus,
    /// Resolved inputs.
    pub inputs: Value,
    /// TLP marks the caller put on the inputs (`{"<input>": "red", "*": "amber"}`), if any.
    pub tlp: Option<Value>,
    /// Rendered outputs, once succeeded.
    pub outputs: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// How it was started.
    pub trigger: TriggerKind,
    /// Who or what started it.
    pub started_by: String,
    /// The run whose `core.playbook` step started this one.
    pub parent_run: Option<String>,
    /// That step.
    pub parent_step: Option<String>,
    /// That step's item (-1 for none).
    pub parent_item: Option<i64>,
    /// Whether the parent step waits for this run.
    pub parent_wait: bool,
    /// The failed run this one re-runs.
    pub rerun_of: Option<String>,
    /// A user asked to cancel it.
    pub cancel_requested: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When it left the queue.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Process starts in a row that resumed it while it was in flight and died before it came to rest (internal:
    /// not part of the API's run).
    #[serde(skip)]
    pub resumes: i64,
}

/// A task: a step of a run, or one item of a `for_each` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRow {
    /// The run.
    pub run_id: String,
    /// The step's id in its playbook.
    pub step_id: String,
    /// -1 for a step; the item's index for an item of a `for_each` step.
    pub item: i64,
    /// The step's index in its playbook.
    pub position: i64,
    /// `plugin.action`.
    pub action: String,
    /// Where it is.
    pub status: StepStatus,
    /// Attempts started so far.
    pub attempt: i64,
    /// The rendered input.
    pub input: Option<Value>,
    /// The output, once succeeded.
    pub output: Option<Value>,
    /// The error's kind, once failed (also kept while waiting to retry).
    pub error_kind: Option<String>,
    /// The error.
    pub error: Option<String>,
    /// The worker that holds it, while running.
    pub lease_owner: Option<String>,
    /// Until when the worker holds it.
    pub lease_until: Option<i64>,
    /// When a waiting step's timer fires.
    pub wake_at: Option<i64>,
    /// Unix milliseconds of the first attempt.
    pub started_at: Option<i64>,
    /// Unix milliseconds of its end.
    pub finished_at: Option<i64>,
}

/// One entry of the transition history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Increases with every transition of every run.
    pub seq: i64,
    /// The run.
    pub run_id: String,
    /// The step, or none for a transition of the run itself.
    pub step_id: Option<String>,
    /// The item (-1 for none).
    pub item: i64,
    /// The new status (of the step, or of the run).
    pub status: String,
    /// The attempt.
    pub attempt: i64,
    /// Unix microseconds.
    pub at_us: i64,
    /// What happened: an error, a reason for a skip, a retry's delay.
    pub detail: Option<String>,
}

/// An approval asked by a `core.approval` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRow {
    /// The run.
    pub run_id: String,
    /// The step.
    pub step_id: String,
    /// The item (-1 for none).
    pub item: i64,
    /// What the approver is asked.
    pub message: String,
    /// `role:<role>` or `user:<token name>` entries.
    pub approvers: Vec<String>,
    /// The decision taken when it expires.
    pub default_approve: bool,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// `approved`, `denied` or `expired`, once decided.
    pub decision: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The approver's comment.
    pub comment: Option<String>,
    /// Unix milliseconds.
    pub decided_at: Option<i64>,
}

pub(crate) fn json(
    row: &RowRef<'_>,
    column: &str,
    table: &'static str,
) -> Result<Value, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        table,
        message: format!("{column}: {e}"),
    })
}

pub(crate) fn json_opt(
    row: &RowRef<'_>,
    column: &str,
    table: &'static str,
) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            table,
            message: format!("{column}: {e}"),
        })
    })
    .transpose()
}

fn parse_enum<T>(
    row: &RowRef<'_>,
    column: &str,
    table: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.try_get(column)?;
    parse(&text).ok_or_else(|| StoreError::Corrupt {
        table,
        message: format!("{column}: unknown value `{text}`"),
    })
}

impl VersionRow {
    pub(crate) fn from_row(row: &RowRef<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            source: row.try_get("source")?,
            digest: row.try_get("digest")?,
            plugins: json(row, "plugins", "playbook_versions")?,
            triggers: json(row, "triggers", "playbook_versions")?,
            published_at: row.try_get("published_at")?,
            published_by: row.try_get("published_by")?,
        })
    }
}

/// A run that has not ended, as a starting process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedRun {
    /// The run.
    pub id: String,
    /// `queued` or `running`.
    pub status: RunStatus,
    /// Its playbook.
    pub playbook: String,
    /// Starts in a row that resumed it and died before it came to rest ([`RunRow::resumes`]).
    pub resumes: i64,
}

impl RunRow {
    pub(crate) fn from_row(row: &RowRef<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            id: row.try_get("id")?,
            playbook: row.try_get("playbook")?,
            version: row.try_get("version")?,
            status: parse_enum(row, "status", "runs", RunStatus::parse)?,
            inputs: json(row, "inputs", "runs")?,
            tlp: json_opt(row, "tlp", "runs")?,
            outputs: json_opt(row, "outputs", "runs")?,
            error: row.try_get("error")?,
            trigger: parse_enum(row, "trigger", "runs", TriggerKind::parse)?,
            started_by: row.try_get("started_by")?,
            parent_run: row.try_get("parent_run")?,
            parent_step: row.try_get("parent_step")?,
            parent_item: row.try_get("parent_item")?,
            parent_wait: row.try_get::<i64>("parent_wait")? != 0,
            rerun_of: row.try_get("rerun_of")?,
            cancel_requested: row.try_get::<i64>("cancel_requested")? != 0,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            resumes: row.try_get("resumes")?,
        })
    }
}

impl StepRow {
    pub(crate) fn from_row(row: &RowRef<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            run_id: row.try_get("run_id")?,
            step_id: row.try_get("step_id")?,
            item: row.try_get("item")?,
            position: row.try_get("position")?,
            action: row.try_get("action")?,
            status: parse_enum(row, "status", "steps", StepStatus::parse)?,
            attempt: row.try_get("attempt")?,
            input: json_opt(row, "input", "steps")?,
            output: json_opt(row, "output", "steps")?,
            error_kind: row.try_get("error_kind")?,
            error: row.try_get("error")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until: row.try_get("lease_until")?,
            wake_at: row.try_get("wake_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

impl Transition {
    pub(crate) fn from_row(row: &RowRef<'_>) -> Result<Self, StoreError> {
        Ok(Self {
            seq: row.try_get("seq")?,
            run_id: row.try_get("run_id")?,
            step_id: row.try_get("step_id")?,
            item: row.try_get("item")?,
            status: row.try_get("status")?,
            attempt: row.try_get("attempt")?,
            at_us: row.try_get("at")?,
            detail: row.try_get("detail")?,
        })
    }
}

impl ApprovalRow {
    pub(crate) fn from_row(row: &RowRef<'_>) -> Result<Self, StoreError> {
        let approvers = json(row, "approvers", "approvals")?;
        let approvers = serde_json::from_value(approvers).map_err(|e| StoreError::Corrupt {
            table: "approvals",
            message: format!("approvers: {e}"),
        })?;
        Ok(Self {
            run_id: row.try_get("run_id")?,
            step_id: row.try_get("step_id")?,
            item: row.try_get("item")?,
            message: row.try_get("message")?,
            approvers,
            default_approve: row.try_get::<i64>("default_approve")? != 0,
            expires_at: row.try_get("expires_at")?,
            created_at: row.try_get("created_at")?,
            decision: row.try_get("decision")?,
            decided_by: row.try_get("decided_by")?,
            comment: row.try_get("comment")?,
            decided_at: row.try_get("decided_at")?,
        })
    }
}
