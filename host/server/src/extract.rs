//! axum's extractors with their refusals answered in the API's error shape (`{"error": {...}}`) instead of text,
//! and the reading of request bodies: within the route's size limit ([`BodyLimit`]), before the request's
//! deadline ([`RequestDeadline`]), and, for bodies read before their sender is authenticated, within the
//! server's budget of unverified bytes ([`Budget`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::edge::RequestDeadline;
use crate::error::{ApiError, size};

/// The largest body a route takes (a request extension; the server's `max_body_bytes` unless the route sets its
/// own) and the setting that changes it, named in the `413` answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit {
    pub bytes: usize,
    pub setting: &'static str,
}

/// The raw body, within the route's size limit (`413 too_large` past it) and the request's deadline (`408`).
pub(crate) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read(req, None).await.map(|(body, _)| Body(body))
    }
}

/// The bytes of request bodies that may be held at once before their senders are authenticated (the bodies of
/// signed webhooks, whose signature covers the body).
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    bytes: usize,
}

impl Budget {
    pub(crate) fn new(bytes: usize) -> Self {
        // A semaphore holds at most `usize::MAX >> 3` permits; and a body's permits are taken as one `u32`.
        let bytes = bytes.clamp(1, u32::MAX as usize);
        Self {
            permits: Arc::new(Semaphore::new(bytes)),
            bytes,
        }
    }

    fn take(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        u32::try_from(n)
            .ok()
            .and_then(|n| self.permits.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ApiError::busy(
                    format!(
                        "the server is reading {} of unverified request bodies (the limit, `unverified_body_budget`); \
                         send again in a moment",
                        size(self.bytes)
                    ),
                    1,
                )
            })
    }
}

/// What a body read under a [`Budget`] holds of it until dropped.
pub(crate) struct Held(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

/// Reads the body of `req` under its route's limit and deadline, holding its bytes in `budget` if given (`503`
/// with `Retry-After` when the budget cannot take them).
pub(crate) async fn read(req: Request, budget: Option<&Budget>) -> Result<(Bytes, Held), ApiError> {
    let limit = req
        .extensions()
        .get::<BodyLimit>()
        .copied()
        .unwrap_or(BodyLimit {
            bytes: crate::ServerOptions::default().max_body_bytes,
            setting: "max_body",
        });
    let deadline = req.extensions().get::<RequestDeadline>().copied();
    let too_large = |what: String| {
        ApiError::too_large(format!(
            "{what}; this route takes at most {} (the limit, `{}`)",
            size(limit.bytes),
            limit.setting
        ))
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut held = Vec::new();
    if let Some(n) = declared {
        if n > limit.bytes as u64 {
            return Err(too_large(format!("the body is {n} bytes")));
        }
        if let Some(budget) = budget {
            held.push(budget.take(n as usize)?);
        }
    }
    let mut body = req.into_body();
    let collect = async {
        let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::invalid(format!("the request's body could not be read: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit.bytes {
                return Err(too_large("the body is larger".into()));
            }
            if declared.is_none()
                && let Some(budget) = budget
                && !data.is_empty()
            {
                held.push(budget.take(data.len())?);
            }
            bytes.extend_from_slice(&data);
        }
        Ok(Bytes::from(bytes))
    };
    let bytes = match deadline {
        Some(d) => tokio::time::timeout_at(d.at, collect).await.map_err(|_| {
            ApiError::timeout(format!(
                "the request's body did not arrive within {} s of its first byte (the limit, `request_timeout`)",
                d.timeout.as_secs_f64()
            ))
        })??,
        None => collect.await?,
    };
    Ok((bytes, Held(held)))
}

/// The query string, deserialized (`400 invalid` when it does not fit).
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))
    }
}

/// The path's parameters (`400 invalid` when they are not valid UTF-8 after decoding).
pub(crate) struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))
    }
}
