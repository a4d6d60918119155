//! What can go wrong when asking the orchestrator for something.

use qila_model::Diagnostics;
use qila_store::StoreError;

/// A failure of the engine itself (the store stopped), as opposed to a failed run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Run state could not be read or recorded.
    #[error("cannot record the run: {0}")]
    Store(#[from] StoreError),
    /// A stored playbook version no longer parses (the binary changed under it).
    #[error("{0}")]
    Corrupt(String),
}

/// Why a playbook could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The playbook has errors; each names its place and cause.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> Self {
        Self::Engine(EngineError::Store(e))
    }
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No playbook of that name has been published.
    #[error("no playbook named `{0}` has been published")]
    UnknownPlaybook(String),
    /// The playbook has no such version.
    #[error("playbook `{name}` has no version {version}")]
    UnknownVersion {
        /// The playbook.
        name: String,
        /// The version asked for.
        version: i64,
    },
    /// The trigger is not one the playbook declares (e.g. `on: { manual: false }`, or no webhook).
    #[error("playbook `{name}` cannot be started by {trigger}: {hint}")]
    NotTriggerable {
        /// The playbook.
        name: String,
        /// The trigger refused.
        trigger: &'static str,
        /// What the playbook declares instead.
        hint: String,
    },
    /// The inputs do not match the playbook's declared inputs.
    #[error("{0}")]
    Inputs(Diagnostics),
    /// A plugin the version pinned is missing or has another digest now.
    #[error("{0}")]
    PluginChanged(String),
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        Self::Engine(EngineError::Store(e))
    }
}

/// Why an action on a run (cancel, re-run, approve) was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such run, step or approval.
    #[error("{0}")]
    NotFound(String),
    /// The run or approval is not in a state that allows it (e.g. cancelling a finished run).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do it (e.g. an approver without the required role).
    #[error("{0}")]
    Forbidden(String),
    /// The run could not be started.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        Self::Engine(EngineError::Store(e))
    }
}
