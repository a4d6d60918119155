//! The API's error answer: `{"error": {"code", "message", "diagnostics"?}}` with a matching status.
//!
//! A store error answers by its kind ([`qila_store::ErrorKind`]): a store that cannot write at the moment is
//! `503 unavailable` with `Retry-After` (the request may be sent again as it is), a bad request `400`, a lost race
//! `409`, anything else `500` (logged, with a generic message).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qila_engine::{ActionError, EngineError, PublishError, StartError};
use qila_model::Diagnostics;
use qila_siem::SiemError;
use qila_store::{ErrorKind, StoreError};
use serde_json::{Value, json};

/// The `Retry-After` (seconds) of a `503` while the store cannot write.
pub const STORE_RETRY_AFTER_SECS: u32 = 2;
/// The `Retry-After` (seconds) of a `503` while the SIEM's queue is full.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Option<Vec<Value>>,
    /// `Retry-After`, in seconds.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            diagnostics: None,
            retry_after: None,
        }
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 503: the server lacks what the request needs.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 with `Retry-After: seconds`: the server cannot do this now, and the same request may succeed later.
    pub fn retry_later(message: impl Into<String>, seconds: u32) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(seconds);
        e
    }

    /// 422 with a message (a package or grant that breaks a rule).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid", message)
    }

    /// An extractor's refusal (a malformed query or path, an unreadable or too large body) in the API's shape.
    pub(crate) fn rejected(status: StatusCode, text: String) -> Self {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(format!("{text}; the limit is in the server's options"))
        } else if status.is_server_error() {
            Self::internal(text)
        } else {
            Self::new(status, "invalid", text)
        }
    }

    /// 500: the message is logged, the client sees a generic one.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server's log",
        )
    }

    /// 422 with one diagnostic per problem.
    pub fn diagnostics(message: impl Into<String>, diagnostics: &Diagnostics) -> Self {
        let list = diagnostics
            .iter()
            .map(|d| {
                json!({ "file": d.file, "line": d.line, "column": d.col, "message": d.message, "text": d.to_string() })
            })
            .collect();
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
            diagnostics: Some(list),
            retry_after: None,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.diagnostics {
            error["diagnostics"] = Value::Array(d);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            ErrorKind::Unavailable => {
                tracing::warn!(error = %e, "the store cannot serve a request at the moment");
                Self::retry_later(
                    format!(
                        "the store cannot do this at the moment ({e}); nothing of the request was kept: send it \
                         again after the Retry-After delay"
                    ),
                    STORE_RETRY_AFTER_SECS,
                )
            }
            ErrorKind::Invalid => Self::invalid(e.to_string()),
            ErrorKind::Conflict => Self::conflict(e.to_string()),
            ErrorKind::Internal => Self::internal(e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            other => Self::internal(other),
        }
    }
}

impl From<SiemError> for ApiError {
    fn from(e: SiemError) -> Self {
        match e {
            SiemError::Busy => Self::retry_later(e.to_string(), BUSY_RETRY_AFTER_SECS),
            SiemError::Unavailable(_) => {
                tracing::warn!(error = %e, "events refused: the store cannot write");
                Self::retry_later(e.to_string(), STORE_RETRY_AFTER_SECS)
            }
            SiemError::Store(e) => e.into(),
            SiemError::Stopped => Self::retry_later(e.to_string(), STORE_RETRY_AFTER_SECS),
            SiemError::Write(_) => Self::internal(e),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(d) => {
                Self::diagnostics(format!("the playbook has {} problem(s)", d.len()), &d)
            }
            PublishError::Engine(e) => e.into(),
        }
    }
}

impl From<StartError> for ApiError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownPlaybook(_) | StartError::UnknownVersion { .. } => {
                Self::not_found(e.to_string())
            }
            StartError::NotTriggerable { .. } | StartError::PluginChanged(_) => {
                Self::conflict(e.to_string())
            }
            StartError::Inputs(d) => Self::diagnostics("the inputs do not match the playbook", &d),
            StartError::Engine(e) => e.into(),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound(m) => Self::not_found(m),
            ActionError::Conflict(m) => Self::conflict(m),
            ActionError::Forbidden(m) => Self::forbidden(m),
            ActionError::Start(e) => e.into(),
            ActionError::Engine(e) => e.into(),
        }
    }
}
