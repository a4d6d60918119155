//! Webhooks: `POST /api/v1/hooks/{playbook}`, authenticated before the body is read wherever the credentials
//! allow it, and accepted once per delivery.
//!
//! The order of the checks is the point:
//! 1. the headers alone ([`verify::presented`]): the scheme's headers are there and well formed, a Standard
//!    Webhooks timestamp is fresh. Refusals here are the same for every playbook name;
//! 2. the hook (cached, including "no such hook"), and whether it takes this scheme;
//! 3. a bare secret is checked now, before the body; a signature covers the body, so the body is read first,
//!    within the route's limit and the server's budget of unverified bytes ([`crate::extract::Budget`]);
//! 4. the secret or signature; an unknown playbook, a playbook without `on: webhook`, a scheme the playbook does
//!    not take and a wrong secret or signature all get the same `401` after the same work;
//! 5. the delivery id (`webhook-id`, `X-GitHub-Delivery`) is claimed with the run, in one transaction: the same
//!    delivery again, at the same moment or after a restart, is refused (`409`) and starts nothing.

mod verify;

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use qila_engine::Started;
use qila_model::{Diagnostic, Diagnostics, Pos, WebhookSignature};
use qila_store::{RunKey, now_ms};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{self, Path};

pub(crate) use verify::whsec;

/// How long a webhook's secret and settings are kept in memory (publishing through this server forgets them at
/// once).
const TTL: Duration = Duration::from_secs(10);
/// The most playbook names (known or not) the cache holds.
const CACHE_CAP: usize = 4096;

/// The one answer to credentials that do not open a webhook, whatever the reason.
const REFUSED: &str = "the webhook was refused: no published playbook of this name takes webhooks with these \
                       credentials (it does not exist, declares no `on: webhook`, requires another signature \
                       scheme, or the secret or signature is wrong); see docs/api.md, Webhooks";

/// What the server needs of a playbook's webhook.
#[derive(Clone)]
struct Hook {
    secret: String,
    /// The scheme it requires; `None` when its recorded setting is not understood (then nothing opens it).
    signature: Option<WebhookSignature>,
    /// Whether it declares `input:` (the body, any JSON, goes into that input) rather than taking the body's
    /// members as its inputs.
    takes_any_json: bool,
}

#[derive(Clone)]
struct Cached {
    hook: Option<Hook>,
    fetched: Instant,
}

/// Webhook secrets and the names that have none, so a webhook costs no database read.
#[derive(Default)]
pub(crate) struct HookCache(RwLock<HashMap<String, Cached>>);

impl HookCache {
    pub(crate) fn forget(&self, playbook: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(playbook);
    }

    async fn get(&self, state: &AppState, playbook: &str) -> Result<Option<Hook>, ApiError> {
        if let Some(cached) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(playbook)
            && cached.fetched.elapsed() < TTL
        {
            return Ok(cached.hook.clone());
        }
        let store = state.orchestrator.store();
        // Both reads always, so that a name without a webhook costs what one with a webhook does.
        let (latest, secret) = (
            store.latest_version(playbook).await?,
            store.hook_secret(playbook).await?,
        );
        let webhook = latest
            .as_ref()
            .map(|v| &v.triggers["webhook"])
            .filter(|w| w.is_object() || **w == Value::Bool(true));
        let hook = match (webhook, secret) {
            (Some(webhook), Some(secret)) => Some(Hook {
                secret,
                signature: webhook_scheme(&webhook["signature"]),
                takes_any_json: webhook["input"].is_string(),
            }),
            _ => None,
        };
        let mut cache = self.0.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_CAP {
            cache.retain(|_, c| c.fetched.elapsed() < TTL);
            if cache.len() >= CACHE_CAP {
                cache.clear();
            }
        }
        cache.insert(
            playbook.to_owned(),
            Cached {
                hook: hook.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(hook)
    }
}

/// The signature scheme a published version's trigger summary records (`"standard-webhooks"`, `"hmac-sha256"`,
/// `"none"`; `true`/`false` from versions published before the schemes had names). `None` for anything else:
/// a setting not understood must not let a bare secret through.
pub fn webhook_scheme(setting: &Value) -> Option<WebhookSignature> {
    match setting {
        Value::Null | Value::Bool(false) => Some(WebhookSignature::None),
        Value::Bool(true) => Some(WebhookSignature::HmacSha256),
        other => serde_json::from_value(other.clone()).ok(),
    }
}

/// A playbook's webhook secret in the form its scheme's senders take: `whsec_<base64>` for Standard Webhooks,
/// else as stored.
pub fn secret_for_senders(scheme: Option<WebhookSignature>, secret: &str) -> String {
    match scheme {
        Some(WebhookSignature::StandardWebhooks) => whsec(secret),
        _ => secret.to_owned(),
    }
}

fn refused() -> ApiError {
    ApiError::unauthorized(REFUSED)
}

pub(crate) async fn hook(
    State(s): State<AppState>,
    Path(playbook): Path<String>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = now_ms();
    let tolerance = s.windows.tolerance.as_secs() as i64;
    let presented = verify::presented(request.headers(), now / 1000, tolerance)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let hook = s.hooks.get(&s, &playbook).await?;
    let opens = hook.as_ref().filter(|h| {
        h.signature
            .is_some_and(|scheme| presented.accepted_by(scheme))
    });
    let key = opens.map(|h| h.secret.as_bytes());
    let body = if presented.signs_body() {
        let (body, held) = extract::read(request, Some(&s.budget)).await?;
        let genuine = verify::verify(key, &presented, &body);
        drop(held);
        if !genuine {
            return Err(refused());
        }
        body
    } else {
        if !verify::verify(key, &presented, &[]) {
            return Err(refused());
        }
        extract::read(request, None).await?.0
    };
    let Some(hook) = opens else {
        return Err(refused());
    };
    let payload = payload(&body, hook.takes_any_json)?;
    let delivery = match &presented {
        verify::Presented::Standard { id, timestamp, .. } => Some((
            format!("webhook-id:{id}"),
            (timestamp + tolerance + 1) * 1000,
        )),
        verify::Presented::Hub { delivery, .. } => Some((
            format!("delivery:{delivery}"),
            now + s.windows.delivery.as_millis() as i64,
        )),
        verify::Presented::Secret(_) => None,
    };
    let run = match delivery {
        None => s.orchestrator.webhook(&playbook, payload).await?,
        Some((key, expires_at)) => {
            let key = RunKey {
                scope: format!("hook:{playbook}"),
                key,
                fingerprint: hex::encode(Sha256::digest(&body)),
                expires_at,
            };
            match s
                .orchestrator
                .webhook_once(&playbook, payload, key.clone())
                .await?
            {
                Started::New(run) => *run,
                Started::Existing(first) => {
                    return Err(ApiError::conflict(format!(
                        "this delivery (`{}`) was already accepted: it started run {}; a delivery is accepted \
                         once",
                        key.key, first.run_id
                    )));
                }
            }
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run.id, "status": run.status })),
    ))
}

/// The body as the run's payload: JSON (empty is `{}`), and an object unless the webhook declares `input:`.
/// Errors name the line and column in the body.
fn payload(body: &[u8], takes_any_json: bool) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    let at = |line: usize, col: usize, message: String| {
        Diagnostics(vec![Diagnostic::new("body", Pos { line, col }, message)])
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        let d = at(
            e.line().max(1),
            e.column().max(1),
            format!("the body is not JSON: {e}"),
        );
        ApiError::malformed_at("the webhook's body is not JSON", &d)
    })?;
    if takes_any_json || value.is_object() {
        return Ok(value);
    }
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let line = 1 + body[..start].iter().filter(|&&b| b == b'\n').count();
    let col = 1 + start
        - body[..start]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
    let kind = match value {
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "null",
    };
    let d = at(
        line,
        col,
        format!(
            "the body must be a JSON object (its members are the run's inputs), not {kind}; a playbook that \
             declares `on.webhook.input` takes any JSON into that input"
        ),
    );
    Err(ApiError::diagnostics(
        "the webhook's body is not a payload this playbook takes",
        &d,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_settings_map_to_schemes_and_anything_else_to_none() {
        assert_eq!(webhook_scheme(&json!(null)), Some(WebhookSignature::None));
        assert_eq!(webhook_scheme(&json!(false)), Some(WebhookSignature::None));
        assert_eq!(webhook_scheme(&json!("none")), Some(WebhookSignature::None));
        assert_eq!(
            webhook_scheme(&json!(true)),
            Some(WebhookSignature::HmacSha256)
        );
        assert_eq!(
            webhook_scheme(&json!("hmac-sha256")),
            Some(WebhookSignature::HmacSha256)
        );
        assert_eq!(
            webhook_scheme(&json!("standard-webhooks")),
            Some(WebhookSignature::StandardWebhooks)
        );
        for unknown in [json!("md5"), json!({"alg": "x"}), json!(3)] {
            assert_eq!(webhook_scheme(&unknown), None, "{unknown}");
        }
    }

    #[tokio::test]
    async fn a_payload_that_is_not_an_object_is_refused_at_its_position() {
        let answer = |e: ApiError| async move {
            let response = axum::response::IntoResponse::into_response(e);
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        };
        let (status, body) = answer(payload(b"\n\n   [1, 2]", false).unwrap_err()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let d = &body["error"]["diagnostics"][0];
        assert_eq!(
            (d["line"].as_u64(), d["column"].as_u64()),
            (Some(3), Some(4)),
            "{body}"
        );
        assert!(
            d["text"]
                .as_str()
                .unwrap()
                .starts_with("body:3:4: the body must be a JSON object"),
            "{d}"
        );
        let (status, body) = answer(payload(b"{\"a\":\n 1,}", false).unwrap_err()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["diagnostics"][0]["line"], 2, "{body}");
        assert!(
            payload(b"[1]", true).is_ok(),
            "a declared input takes any JSON"
        );
        assert_eq!(payload(b"  ", false).unwrap(), json!({}));
    }
}
