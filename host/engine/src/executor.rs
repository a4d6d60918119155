//! The boundary between the engine and whatever executes a step.

use std::future::Future;

use serde_json::Value;

/// One execution of one step: which action, with which rendered input, where in which run.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCall {
    /// The plugin that provides the action.
    pub plugin: String,
    /// The action's name within its plugin.
    pub action: String,
    /// The rendered `with` of the step.
    pub input: Value,
    /// The run's identifier.
    pub run_id: String,
    /// The step's identifier.
    pub step_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Stable across attempts of this step in this run.
    pub idempotency_key: String,
}

/// Why a step failed, as the executor classifies it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StepError {
    /// A short kebab-case class: `invalid-input`, `transient`, `denied`, `timeout`, `memory-limit`, ...
    pub kind: String,
    /// What happened.
    pub message: String,
}

impl StepError {
    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// Executes steps. Implemented by the sandbox in the `qila` binary, and by test doubles in this crate's tests.
pub trait StepExecutor: Send + Sync + 'static {
    /// Executes one step and returns its output.
    fn execute(&self, call: StepCall) -> impl Future<Output = Result<Value, StepError>> + Send;
}
