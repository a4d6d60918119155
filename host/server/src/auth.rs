//! Who is calling: the bearer token, checked against the store, and the role a route needs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use qila_store::{Role, TokenInfo};

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub TokenInfo);

impl Caller {
    /// Refuses the request (403) unless the caller's role allows `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.0.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the {needed} role; token `{}` has role {}",
                self.0.name, self.0.role
            )))
        }
    }

    /// The name the audit log records.
    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "send an API token: `Authorization: Bearer TOKEN` (see `qila token create`)",
            ));
        };
        match state.orchestrator.store().authenticate(token).await? {
            Some(info) => Ok(Caller(info)),
            None => Err(ApiError::unauthorized(
                "the API token is not valid (unknown or revoked)",
            )),
        }
    }
}
