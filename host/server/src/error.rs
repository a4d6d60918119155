//! The API's error answer: `{"error": {"code", "message", "diagnostics"?}}` with a matching status, and the
//! safety net that gives any other error answer that shape.
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
pub const STORE_RETRY_AFTER_SECS: u64 = 2;
/// The `Retry-After` (seconds) of a `503` while the SIEM's queue is full.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    diagnostics: Option<Vec<Value>>,
    /// Seconds, for `Retry-After`.
    retry_after: Option<u64>,
}

/// The `code` of an error answer with `status` (for answers made outside a handler: the edge, the safety net).
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "too_large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    }
}

/// A size for a message: `4 MiB`, `512 KiB`, `300 bytes`.
pub(crate) fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
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

    /// 408: the request did not arrive in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
    }

    /// 503 with `Retry-After`: a shared budget is spent for now.
    pub fn busy(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
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
            retry_after: None,
        }
    }

    /// 400 with one diagnostic per problem (malformed input whose place is known).
    pub(crate) fn malformed_at(message: impl Into<String>, diagnostics: &Diagnostics) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            ..Self::diagnostics(message, diagnostics)
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
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            ErrorKind::Unavailable => {
                tracing::warn!(error = %e, "the store cannot serve a request at the moment");
                Self::busy(
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
            SiemError::Busy => Self::busy(e.to_string(), BUSY_RETRY_AFTER_SECS),
            SiemError::Unavailable(_) => {
                tracing::warn!(error = %e, "events refused: the store cannot write");
                Self::busy(e.to_string(), STORE_RETRY_AFTER_SECS)
            }
            SiemError::Store(e) => e.into(),
            SiemError::Stopped => Self::busy(e.to_string(), STORE_RETRY_AFTER_SECS),
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

/// Gives every error answer (`4xx`, `5xx`) that is not JSON the API's shape, keeping its status, its headers and
/// (as the message) its text: the answers axum makes itself never reach a client bare.
pub(crate) async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let body = json!({ "error": { "code": code_for(status), "message": text } }).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}
