//! What is recorded about runs and steps.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Steps are still running or waiting.
    Running,
    /// Every step succeeded or was skipped, and the outputs were rendered.
    Succeeded,
    /// A step failed, or the outputs could not be rendered.
    Failed,
}

/// The state of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Its plugin is running.
    Running,
    /// It returned an output.
    Succeeded,
    /// It returned an error or broke a limit.
    Failed,
    /// Its condition was false, or a step it needs did not succeed.
    Skipped,
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
text_enum!(RunStatus { Running = "running", Succeeded = "succeeded", Failed = "failed" });
text_enum!(StepStatus { Running = "running", Succeeded = "succeeded", Failed = "failed", Skipped = "skipped" });

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Its identifier (a UUIDv7).
    pub id: String,
    /// The playbook's name.
    pub playbook: String,
    /// The playbook's version.
    pub playbook_version: u32,
    /// Where it stands.
    pub status: RunStatus,
    /// The resolved inputs.
    pub inputs: Value,
    /// The outputs, once succeeded.
    pub outputs: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started (unix ms).
    pub created_at: i64,
    /// When it ended (unix ms).
    pub finished_at: Option<i64>,
    /// Its steps in playbook order (empty in listings).
    pub steps: Vec<StepRecord>,
}

/// A step of a run as stored; also the message the engine sends to record a transition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// The run it belongs to.
    pub run_id: String,
    /// The step's id in the playbook.
    pub step_id: String,
    /// The step's index in the playbook.
    pub position: u32,
    /// `plugin.action`.
    pub action: String,
    /// Where it stands.
    pub status: StepStatus,
    /// The attempt this record describes, from 1.
    pub attempt: u32,
    /// The rendered input.
    pub input: Option<Value>,
    /// The output.
    pub output: Option<Value>,
    /// The error's kind (`transient`, `timeout`, `denied`, ...).
    pub error_kind: Option<String>,
    /// The error's message.
    pub error: Option<String>,
    /// When the attempt started (unix ms).
    pub started_at: Option<i64>,
    /// When it ended (unix ms).
    pub finished_at: Option<i64>,
}
