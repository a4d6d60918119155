//! Webhooks: `POST /api/v1/hooks/{playbook}`, authenticated by the playbook's secret or an HMAC of the body.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Body, Path};

/// How long a webhook's secret and settings are kept in memory (publishing through this server forgets them at
/// once).
const TTL: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Hook {
    secret: String,
    signature_required: bool,
    fetched: Instant,
}

/// Webhook secrets, so a webhook costs no database read.
#[derive(Default)]
pub(crate) struct HookCache(RwLock<HashMap<String, Hook>>);

impl HookCache {
    pub(crate) fn forget(&self, playbook: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(playbook);
    }

    async fn get(&self, state: &AppState, playbook: &str) -> Result<Hook, ApiError> {
        if let Some(hook) = self
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(playbook)
            && hook.fetched.elapsed() < TTL
        {
            return Ok(hook.clone());
        }
        let store = state.orchestrator.store();
        let latest = store.latest_version(playbook).await?;
        let webhook = latest
            .as_ref()
            .map(|v| &v.triggers["webhook"])
            .filter(|w| w.is_object() || **w == Value::Bool(true));
        let (Some(webhook), Some(secret)) = (webhook, store.hook_secret(playbook).await?) else {
            return Err(ApiError::not_found(format!(
                "no published playbook `{playbook}` with `on: webhook`"
            )));
        };
        let hook = Hook {
            secret,
            signature_required: signature_required(&webhook["signature"]),
            fetched: Instant::now(),
        };
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(playbook.to_owned(), hook.clone());
        Ok(hook)
    }
}

/// Whether a webhook's `signature` setting (as the published version's trigger summary records it: `true`, or
/// the scheme's name) requires an HMAC. Anything but an explicit "no" requires it: misreading it must not let
/// a bare secret through.
fn signature_required(setting: &Value) -> bool {
    match setting {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "none" | "false" | "no"
        ),
        _ => true,
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request against the hook's secret.
fn verify(hook: &Hook, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if let Some(signature) = header(headers, "x-qila-signature") {
        let hex_digest = signature.strip_prefix("sha256=").unwrap_or(signature);
        let expected = hex::decode(hex_digest.trim())
            .map_err(|_| ApiError::unauthorized("X-Qila-Signature must be `sha256=<hex>`"))?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(hook.secret.as_bytes()).map_err(ApiError::internal)?;
        mac.update(body);
        return mac
            .verify_slice(&expected)
            .map_err(|_| ApiError::unauthorized("the X-Qila-Signature does not match the body"));
    }
    if hook.signature_required {
        return Err(ApiError::unauthorized(
            "this webhook requires `X-Qila-Signature: sha256=<HMAC-SHA256 of the body with the hook's secret>`",
        ));
    }
    let given = header(headers, "x-qila-hook-secret").or_else(|| {
        header(headers, "authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    });
    match given {
        Some(given) if bool::from(given.trim().as_bytes().ct_eq(hook.secret.as_bytes())) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the webhook secret is wrong")),
        None => Err(ApiError::unauthorized(
            "send the webhook's secret in X-Qila-Hook-Secret, or sign the body in X-Qila-Signature",
        )),
    }
}

pub(crate) async fn hook(
    State(s): State<AppState>,
    Path(playbook): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hook = s.hooks.get(&s, &playbook).await?;
    verify(&hook, &headers, &body)?;
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the webhook's body is not JSON: {e}")))?
    };
    let run = s.orchestrator.webhook(&playbook, payload).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run.id, "status": run.status })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(signature_required: bool) -> Hook {
        Hook {
            secret: "s3cret".into(),
            signature_required,
            fetched: Instant::now(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn any_signature_setting_but_an_explicit_no_requires_the_hmac() {
        for no in [json!(null), json!(false), json!(""), json!("none")] {
            assert!(!signature_required(&no), "{no}");
        }
        for yes in [
            json!(true),
            json!("hmac-sha256"),
            json!("HMAC-SHA256"),
            json!({"alg": "x"}),
        ] {
            assert!(signature_required(&yes), "{yes}");
        }
    }

    #[test]
    fn a_secret_or_a_signature_is_checked_and_a_required_signature_is_enforced() {
        let body = br#"{"a":1}"#;
        let plain = hook(false);
        assert!(verify(&plain, &headers(&[("x-qila-hook-secret", "s3cret")]), body).is_ok());
        assert!(
            verify(
                &plain,
                &headers(&[("authorization", "Bearer s3cret")]),
                body
            )
            .is_ok()
        );
        assert!(verify(&plain, &headers(&[("x-qila-hook-secret", "s3cre")]), body).is_err());
        assert!(verify(&plain, &headers(&[]), body).is_err());
        assert!(verify(&plain, &headers(&[("x-qila-signature", &sign(body))]), body).is_ok());
        // A wrong signature is refused even with the right secret next to it.
        let both = headers(&[
            ("x-qila-signature", &sign(b"other")),
            ("x-qila-hook-secret", "s3cret"),
        ]);
        assert!(verify(&plain, &both, body).is_err());

        let signed = hook(true);
        let refused = verify(&signed, &headers(&[("x-qila-hook-secret", "s3cret")]), body);
        assert_eq!(refused.unwrap_err().status(), StatusCode::UNAUTHORIZED);
        assert!(
            verify(
                &signed,
                &headers(&[("x-qila-signature", &sign(body))]),
                body
            )
            .is_ok()
        );
        for garbage in ["sha256=zz", "sha256=", "", "md5=abcd", "sha256=00"] {
            assert!(verify(&signed, &headers(&[("x-qila-signature", garbage)]), body).is_err());
        }
    }
}
