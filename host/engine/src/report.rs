//! What a run reports when it ends, and the live events it emits while it goes.

use std::time::Duration;

use qila_store::{RunStatus, StepStatus};
use serde::Serialize;
use serde_json::{Map, Value};

/// The result of a run, as `qila run --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The run's identifier.
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    /// The playbook's outputs (empty when the run failed).
    pub outputs: Map<String, Value>,
    /// Why the run failed, when no single step explains it (an output that cannot be rendered).
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
    /// `succeeded`, `failed` or `skipped`.
    pub status: StepStatus,
    /// How many times its action ran (0 when skipped).
    pub attempts: u32,
    /// `kind: message` when it failed, the reason when skipped.
    pub error: Option<String>,
    /// Its output, when it succeeded.
    #[serde(skip)]
    pub output: Option<Value>,
    /// How long it took, dispatch to end.
    #[serde(skip)]
    pub elapsed: Duration,
}

/// A transition of a step while a run goes on, for live displays.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// The run.
    pub run_id: String,
    /// The step's id.
    pub step_id: String,
    /// `plugin.action`.
    pub action: String,
    /// Its new status.
    pub status: StepStatus,
    /// Time since dispatch (zero for `running`).
    pub elapsed: Duration,
    /// The error or skip reason.
    pub detail: Option<String>,
}
