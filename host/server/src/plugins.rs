//! Plugin administration over HTTP: installed plugins and their grants, trusted vendor keys, secrets.
//!
//! Installing needs the sandbox (to load and check the component), which this crate does not depend on: the
//! binary lends it through [`PluginAdmin`]. Trusted keys and secret names are plain store reads and writes.

use std::future::Future;
use std::pin::Pin;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use qila_store::{Role, TrustedKeyRow, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Body, Path};
use crate::routes::json_body;

/// A boxed future answered by [`PluginAdmin`].
pub type AdminFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// What an administrator grants at install.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantChoice {
    /// Everything the package asks for.
    All,
    /// Nothing but computation.
    Nothing,
    /// Exactly these grants (a JSON object of the grants' shape), which must be within what it asks for.
    Exactly(Value),
}

/// The plugin operations the binary lends the server.
pub trait PluginAdmin: Send + Sync + 'static {
    /// Every plugin the host runs (origin, version, digest, signer, grants, capabilities) and every file that
    /// failed to load.
    fn list(&self) -> AdminFuture<'_, Value>;
    /// Verifies a package against the trusted keys, checks its component against its manifest, records the
    /// grants, and puts the plugin in use. Answers what was installed.
    fn install(&self, package: Bytes, grants: GrantChoice, actor: String)
    -> AdminFuture<'_, Value>;
    /// Replaces the grants of an installed plugin (within what it asks for) and applies them to new steps.
    fn regrant(&self, name: String, grants: GrantChoice, actor: String) -> AdminFuture<'_, Value>;
    /// Sets a secret's value (sealed at rest) and makes it available to the plugins granted it.
    fn set_secret(&self, name: String, value: String, actor: String) -> AdminFuture<'_, ()>;
    /// Deletes a secret; false when there was none.
    fn delete_secret(&self, name: String, actor: String) -> AdminFuture<'_, bool>;
}

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn admin(s: &AppState) -> Result<&dyn PluginAdmin, ApiError> {
    s.plugins.as_deref().ok_or_else(|| {
        ApiError::unavailable("this server was started without plugin administration")
    })
}

/// The grants a request asks for: the `X-Qila-Grants` header (`all`, `none`, or a JSON object).
fn grant_choice(headers: &HeaderMap) -> Result<GrantChoice, ApiError> {
    let Some(value) = headers.get("x-qila-grants") else {
        return Err(ApiError::invalid(
            "say what to grant in the `X-Qila-Grants` header: `all`, `none`, or a JSON object such as \
             {\"egress\": [\"api.example.com:443\"], \"secrets\": [\"api_key\"], \"tlp\": \"amber\"}",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("the `X-Qila-Grants` header is not text"))?
        .trim();
    match text {
        "all" => Ok(GrantChoice::All),
        "none" => Ok(GrantChoice::Nothing),
        json_text => serde_json::from_str::<Value>(json_text)
            .ok()
            .filter(Value::is_object)
            .map(GrantChoice::Exactly)
            .ok_or_else(|| {
                ApiError::invalid("`X-Qila-Grants` must be `all`, `none` or a JSON object")
            }),
    }
}

pub(crate) async fn list(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Viewer)?;
    Ok((StatusCode::OK, Json(admin(&s)?.list().await?)))
}

pub(crate) async fn install(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Admin)?;
    let grants = grant_choice(&headers)?;
    if body.is_empty() {
        return Err(ApiError::invalid(
            "send the package file as the request body (application/octet-stream)",
        ));
    }
    let installed = admin(&s)?
        .install(body, grants, caller.name().to_owned())
        .await?;
    Ok((StatusCode::CREATED, Json(installed)))
}

pub(crate) async fn regrant(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    caller.require(Role::Admin)?;
    let grants = grant_choice(&headers)?;
    let plugin = admin(&s)?
        .regrant(name, grants, caller.name().to_owned())
        .await?;
    Ok((StatusCode::OK, Json(plugin)))
}

pub(crate) async fn keys(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Engineer)?;
    let keys = s.orchestrator.store().trusted_keys().await?;
    Ok((StatusCode::OK, Json(json!({ "keys": keys }))))
}

pub(crate) async fn trust(State(s): State<AppState>, caller: Caller, Body(body): Body) -> Answer {
    caller.require(Role::Admin)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("the body must be a public key file's text"))?;
    let key = qila_package::PublicKey::parse(text).map_err(|e| ApiError::invalid(e.to_string()))?;
    let row = TrustedKeyRow {
        id: key.id(),
        public_key: key.to_text().trim().to_owned(),
        vendor: key.vendor().to_owned(),
        added_by: caller.name().to_owned(),
        added_at: now_ms(),
    };
    s.orchestrator.store().trust_key(row.clone()).await?;
    tracing::info!(key = %row.id, vendor = %row.vendor, by = %row.added_by, "vendor key trusted");
    Ok((StatusCode::CREATED, Json(json!(row))))
}

pub(crate) async fn distrust(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Admin)?;
    if s.orchestrator
        .store()
        .distrust_key(&id, caller.name())
        .await?
    {
        Ok((StatusCode::OK, Json(json!({ "id": id, "trusted": false }))))
    } else {
        Err(ApiError::not_found(format!(
            "no trusted key with id `{id}`"
        )))
    }
}

pub(crate) async fn secrets(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Admin)?;
    let names = s.orchestrator.store().secrets().await?;
    Ok((StatusCode::OK, Json(json!({ "secrets": names }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

pub(crate) async fn set_secret(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Admin)?;
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(ApiError::invalid(format!(
            "`{name}` is not a secret name: use letters, digits, `_`, `-` and `.`, at most 128"
        )));
    }
    let body: SecretBody = json_body(&body)?;
    admin(&s)?
        .set_secret(name.clone(), body.value, caller.name().to_owned())
        .await?;
    Ok((StatusCode::OK, Json(json!({ "name": name }))))
}

pub(crate) async fn delete_secret(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer {
    caller.require(Role::Admin)?;
    if admin(&s)?
        .delete_secret(name.clone(), caller.name().to_owned())
        .await?
    {
        Ok((
            StatusCode::OK,
            Json(json!({ "name": name, "deleted": true })),
        ))
    } else {
        Err(ApiError::not_found(format!("no secret named `{name}`")))
    }
}
