//! Errors of loading and invoking plugins.

use std::path::PathBuf;
use std::time::Duration;

/// Failure to set up the sandbox or to load a plugin. Invocation failures are [`InvokeError`]s.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The wasmtime engine could not be created with the requested configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// A file could not be read or written.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// The bytes are not a WebAssembly component (a core module, or not WebAssembly at all).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component failed to compile or link against the `qila:plugin/action-plugin` world.
    #[error("plugin does not fit the qila:plugin@0.1.0 contract: {0}")]
    Contract(String),
    /// The plugin's `describe` export failed or returned an invalid manifest.
    #[error("plugin manifest is invalid: {0}")]
    Manifest(String),
    /// A detector's `detect` call failed: it trapped, hit a limit, returned its own error, or returned findings
    /// that break the contract (an event index out of range, an unknown level or rule, oversized output).
    #[error("detector `{plugin}`: {error}")]
    Detect {
        /// The detector's name.
        plugin: String,
        /// How the call failed; `error.kind` is [`ErrorKind::InvalidOutput`] for findings that break the contract.
        error: InvokeError,
    },
}

impl SandboxError {
    /// How a `detect` call failed, for [`SandboxError::Detect`]; `None` for loading errors.
    pub fn detect_kind(&self) -> Option<ErrorKind> {
        match self {
            SandboxError::Detect { error, .. } => Some(error.kind),
            _ => None,
        }
    }
}

/// How an invocation failed: the plugin's own typed error, or a limit the host enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The input does not match the action's schema, or the plugin rejected it.
    InvalidInput,
    /// The plugin or action does not exist, or the plugin reported a missing resource.
    NotFound,
    /// A passing failure: retrying may help.
    Transient,
    /// A capability was not granted, or a remote system refused.
    Denied,
    /// Any other failure reported by the plugin.
    Failed,
    /// The plugin used more CPU time than its limit.
    CpuLimit,
    /// The invocation took longer than its wall-clock timeout.
    Timeout,
    /// The plugin tried to grow its memory beyond its limit.
    MemoryLimit,
    /// The plugin exhausted its call stack.
    StackOverflow,
    /// The plugin returned more output than its limit.
    OutputTooLarge,
    /// The plugin returned output that is not JSON or breaks the action's output schema.
    InvalidOutput,
    /// The plugin trapped (a panic, an `unreachable`, an out-of-bounds access).
    Trap,
}

impl ErrorKind {
    /// Whether the engine may retry an invocation that failed this way.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::Timeout)
    }

    /// The kebab-case name used in run records and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Transient => "transient",
            ErrorKind::Denied => "denied",
            ErrorKind::Failed => "failed",
            ErrorKind::CpuLimit => "cpu-limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::MemoryLimit => "memory-limit",
            ErrorKind::StackOverflow => "stack-overflow",
            ErrorKind::OutputTooLarge => "output-too-large",
            ErrorKind::InvalidOutput => "invalid-output",
            ErrorKind::Trap => "trap",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed invocation: what kind of failure and a message for the run record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct InvokeError {
    /// How it failed.
    pub kind: ErrorKind,
    /// What happened, for people; never contains a secret's value.
    pub message: String,
}

impl InvokeError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn cpu(limit: Duration) -> Self {
        Self::new(
            ErrorKind::CpuLimit,
            format!("plugin used more than its CPU limit of {limit:?}"),
        )
    }

    pub(crate) fn timeout(limit: Duration) -> Self {
        Self::new(
            ErrorKind::Timeout,
            format!("plugin did not finish within its timeout of {limit:?}"),
        )
    }
}

/// A limit the host enforced from inside wasm execution; carried through wasmtime's error chain and recovered by
/// downcasting.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitTrap {
    #[error("CPU limit exceeded")]
    Cpu,
    #[error("memory limit of {limit} bytes exceeded (asked for {desired} bytes)")]
    Memory { limit: usize, desired: usize },
}
