//! The API's error answer: `{"error": {"code", "message", "diagnostics"?}}` with a matching status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qila_engine::{ActionError, EngineError, PublishError, StartError};
use qila_model::Diagnostics;
use qila_store::StoreError;
use serde_json::{Value, json};

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Option<Vec<Value>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            diagnostics: None,
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
        Self::internal(e)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::internal(e)
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(d) => {
                Self::diagnostics(format!("the playbook has {} problem(s)", d.len()), &d)
            }
            PublishError::Engine(e) => Self::internal(e),
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
            StartError::Engine(e) => Self::internal(e),
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
            ActionError::Engine(e) => Self::internal(e),
        }
    }
}
