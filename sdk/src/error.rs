//! The error an action returns, mirroring the WIT `error` variant.

use std::fmt;

use crate::bindings::qila::plugin::types as wit;

/// Why an action or a host call failed.
///
/// The case tells the host what to do next: it retries [`Error::Transient`] (within the step's retry policy) and
/// fails the step at once on every other case. The message is shown to the playbook author, so write it for them:
/// say what was wrong and, where it helps, what would be right.
///
/// ```
/// use qila_sdk::Error;
///
/// let e = Error::invalid_input("`ip` is not an IPv4 or IPv6 address");
/// assert_eq!(e.to_string(), "invalid input: `ip` is not an IPv4 or IPv6 address");
/// assert!(!e.is_retryable());
/// assert!(Error::transient("upstream returned 503").is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input is not what the action accepts; retrying will not help.
    InvalidInput(String),
    /// Something the input names does not exist.
    NotFound(String),
    /// A passing failure (a timeout, a 503, a rate limit): the host may retry.
    Transient(String),
    /// The host or a remote system refused: a capability was not granted.
    Denied(String),
    /// Any other failure.
    Failed(String),
}

impl Error {
    /// An [`Error::InvalidInput`] with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    /// An [`Error::NotFound`] with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// An [`Error::Transient`] with `message`.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(message.into())
    }

    /// An [`Error::Denied`] with `message`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }

    /// An [`Error::Failed`] with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The message, without the case.
    pub fn message(&self) -> &str {
        match self {
            Self::InvalidInput(m)
            | Self::NotFound(m)
            | Self::Transient(m)
            | Self::Denied(m)
            | Self::Failed(m) => m,
        }
    }

    /// The case as it is spelled in the WIT contract: `invalid-input`, `not-found`, `transient`, `denied` or
    /// `failed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid-input",
            Self::NotFound(_) => "not-found",
            Self::Transient(_) => "transient",
            Self::Denied(_) => "denied",
            Self::Failed(_) => "failed",
        }
    }

    /// Whether the host may retry the step: true for [`Error::Transient`] only.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::InvalidInput(_) => "invalid input",
            Self::NotFound(_) => "not found",
            Self::Transient(_) => "transient failure",
            Self::Denied(_) => "denied",
            Self::Failed(_) => "failed",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidInput(m) => Self::InvalidInput(m),
            wit::Error::NotFound(m) => Self::NotFound(m),
            wit::Error::Transient(m) => Self::Transient(m),
            wit::Error::Denied(m) => Self::Denied(m),
            wit::Error::Failed(m) => Self::Failed(m),
        }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => Self::InvalidInput(m),
            Error::NotFound(m) => Self::NotFound(m),
            Error::Transient(m) => Self::Transient(m),
            Error::Denied(m) => Self::Denied(m),
            Error::Failed(m) => Self::Failed(m),
        }
    }
}

/// A JSON document that could not be read or written is a [`Error::Failed`]: use it for data from a remote system.
/// The SDK reports a bad action *input* as [`Error::InvalidInput`] itself, before the action runs.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(format!("JSON: {e}"))
    }
}
