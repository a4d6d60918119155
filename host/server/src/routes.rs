//! The handlers of the JSON routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use crate::extract::{Body, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use qila_engine::{Approver, PublishError, StartRun, Started};
use qila_store::{Role, RunFilter, RunKey, RunStatus, TriggerKind, VersionRow};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(value: Value) -> Answer {
    Ok((StatusCode::OK, Json(value)))
}

/// Parses a JSON body, saying where it is malformed.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::invalid(format!("the request needs a JSON body: {e}")));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON for this request: {e}")))
}

fn version_summary(v: &VersionRow) -> Value {
    json!({
        "name": v.name, "version": v.version, "digest": v.digest, "plugins": v.plugins, "triggers": v.triggers,
        "published_at": v.published_at, "published_by": v.published_by,
    })
}

/// The state of each part: the store's writers, the SIEM's writer, the orchestrator (whose writes go through the
/// journal), and whether all are ok.
fn parts(state: &AppState, store: &qila_store::StoreHealth) -> (bool, Value) {
    let status = |ok: bool| if ok { "ok" } else { "degraded" };
    let siem = state.siem.as_ref().map(|siem| siem.health());
    let siem_ok = siem.as_ref().is_none_or(qila_siem::SiemHealth::ok);
    let orchestrator_ok = store.journal.ok;
    let ok = store.ok() && siem_ok && orchestrator_ok;
    let mut parts = json!({
        "store": { "status": status(store.ok()), "journal": store.journal, "events": store.events },
        "orchestrator": {
            "status": status(orchestrator_ok),
            "active_runs": state.orchestrator.active_runs(),
            "journal": store.journal,
        },
    });
    parts["siem"] = match siem {
        Some(siem) => json!({ "status": status(siem_ok), "writer": siem }),
        None => json!({ "status": "off" }),
    };
    (ok, parts)
}

/// The names of the degraded parts, for a message.
fn degraded(parts: &Value) -> String {
    let names: Vec<&str> = ["store", "siem", "orchestrator"]
        .into_iter()
        .filter(|p| parts[*p]["status"] == "degraded")
        .collect();
    names.join(", ")
}

/// `GET /api/v1/health`: always 200 while the process serves; the body says what the writers last saw (no
/// database access, so it answers at once whatever the store does).
pub(crate) async fn health(State(s): State<AppState>) -> Json<Value> {
    let (ok, parts) = parts(&s, &s.orchestrator.store().health());
    Json(json!({ "status": if ok { "ok" } else { "degraded" }, "parts": parts }))
}

/// `GET /api/v1/health/live`: the process serves requests.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /api/v1/health/ready`: every writer commits a probe write (at most one a second, shared by concurrent
/// callers); 503 with `Retry-After` and the degraded parts otherwise.
pub(crate) async fn ready(State(s): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let store = s.orchestrator.store().probe().await;
    let (ok, parts) = parts(&s, &store);
    if ok {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ready", "parts": parts })),
        )
            .into_response();
    }
    let message = format!("not ready: degraded: {}", degraded(&parts));
    let body = json!({
        "error": { "code": "unavailable", "message": message },
        "status": "degraded",
        "parts": parts,
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        crate::error::STORE_RETRY_AFTER_SECS.into(),
    );
    response
}

pub(crate) async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

pub(crate) async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint; see /api/v1/openapi.json")
}

pub(crate) async fn wrong_method() -> ApiError {
    ApiError::method_not_allowed(
        "this endpoint does not take this method (see the Allow header and /api/v1/openapi.json)",
    )
}

pub(crate) async fn list_playbooks(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Viewer)?;
    let list: Vec<Value> = s
        .orchestrator
        .store()
        .playbooks()
        .await?
        .iter()
        .map(version_summary)
        .collect();
    ok(json!({ "playbooks": list }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    source: String,
    file: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct FileQuery {
    file: Option<String>,
}

pub(crate) async fn publish(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Engineer)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (source, file) = if is_json {
        let body: PublishBody = json_body(&body)?;
        (
            body.source,
            body.file.unwrap_or_else(|| "playbook.yaml".into()),
        )
    } else {
        let file = q.file.unwrap_or_else(|| "playbook.yaml".into());
        // Not UTF-8: a diagnostic at the first bad sequence (its line, column and byte offset).
        let text = qila_model::source_text(&body, &file)
            .map_err(|d| ApiError::from(PublishError::Invalid(d)))?;
        (text.to_owned(), file)
    };
    let published = s
        .orchestrator
        .publish(&source, &file, caller.name())
        .await?;
    s.hooks.forget(&published.version.name);
    let mut answer = version_summary(&published.version);
    answer["created"] = json!(published.created);
    let scheme = crate::hooks::webhook_scheme(&published.version.triggers["webhook"]["signature"]);
    if let Some(secret) = published
        .hook_secret
        .map(|secret| crate::hooks::secret_for_senders(scheme, &secret))
    {
        answer["hook"] = json!({ "path": format!("/api/v1/hooks/{}", published.version.name), "secret": secret });
        answer["hook_secret"] = json!(secret);
    }
    let status = if published.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer)))
}

pub(crate) async fn playbook_versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let versions = s.orchestrator.store().versions(&name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!(
            "no playbook named `{name}` has been published"
        )));
    }
    ok(
        json!({ "name": name, "versions": versions.iter().map(version_summary).collect::<Vec<_>>() }),
    )
}

pub(crate) async fn playbook_version(
    State(s): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let number: i64 = version
        .parse()
        .map_err(|_| ApiError::invalid(format!("`{version}` is not a version number")))?;
    let v = s
        .orchestrator
        .store()
        .version(&name, number)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("playbook `{name}` has no version {number}")))?;
    let mut answer = version_summary(&v);
    answer["source"] = json!(v.source);
    ok(answer)
}

pub(crate) async fn playbook_hook(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer {
    caller.require(Role::Engineer)?;
    let store = s.orchestrator.store();
    let secret = store.hook_secret(&name).await?.ok_or_else(|| {
        ApiError::not_found(format!("playbook `{name}` has no webhook (`on: webhook`)"))
    })?;
    let scheme = store
        .latest_version(&name)
        .await?
        .and_then(|v| crate::hooks::webhook_scheme(&v.triggers["webhook"]["signature"]));
    let path = format!("/api/v1/hooks/{name}");
    ok(json!({
        "path": path, "url_path": path, "secret": crate::hooks::secret_for_senders(scheme, &secret),
        "signature": scheme,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    playbook: String,
    version: Option<i64>,
    #[serde(default)]
    inputs: Value,
    /// TLP marks on the inputs: `{"<input>": "red", "*": "amber"}`.
    #[serde(default)]
    tlp: std::collections::BTreeMap<String, String>,
}

/// The longest `Idempotency-Key` taken.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The `Idempotency-Key` of a request: `Ok(None)` without one; `400` unless it is 1 to 255 visible ASCII
/// characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = || {
        ApiError::invalid(format!(
            "Idempotency-Key must be one header of 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters (a UUID \
             is a good key)"
        ))
    };
    if values.next().is_some() {
        return Err(bad());
    }
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(key.to_owned()))
}

/// `value` with every object's members in key order, so that equal requests have one fingerprint.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: std::collections::BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

pub(crate) async fn start_run(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Analyst)?;
    let idempotency = idempotency_key(&headers)?;
    let body: StartBody = json_body(&body)?;
    let tlp = body
        .tlp
        .iter()
        .map(|(input, level)| {
            level
                .parse::<qila_model::Tlp>()
                .map(|l| (input.clone(), l))
                .map_err(|e| ApiError::invalid(format!("tlp.{input}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let fingerprint = json!({
        "playbook": body.playbook, "version": body.version, "inputs": canonical(&body.inputs), "tlp": body.tlp,
    });
    let request = StartRun {
        playbook: body.playbook,
        version: body.version,
        inputs: body.inputs,
        trigger: TriggerKind::Manual,
        actor: caller.name().to_owned(),
        tlp,
    };
    let Some(key) = idempotency else {
        let run = s.orchestrator.start_run(request).await?;
        return Ok((StatusCode::CREATED, Json(json!(run))));
    };
    // Keys are the caller's: under each API token, a key names one request.
    let key = RunKey {
        scope: format!("token:{}", caller.0.id),
        key,
        fingerprint: hex::encode(Sha256::digest(fingerprint.to_string().as_bytes())),
        expires_at: qila_store::now_ms() + s.windows.idempotency.as_millis() as i64,
    };
    match s.orchestrator.start_run_once(request, key.clone()).await? {
        Started::New(run) => Ok((StatusCode::CREATED, Json(json!(run)))),
        Started::Existing(first) if first.same_request => {
            let run = s
                .orchestrator
                .store()
                .run(&first.run_id)
                .await?
                .ok_or_else(|| {
                    ApiError::internal(format!(
                        "run {} of an idempotency key is missing",
                        first.run_id
                    ))
                })?;
            let mut answer = json!(run);
            answer["idempotent_replayed"] = json!(true);
            ok(answer)
        }
        Started::Existing(first) => Err(ApiError::unprocessable(format!(
            "Idempotency-Key `{}` was used for another request (run {}) within the last {} h; a key names one \
             request: send this one under a new key",
            key.key,
            first.run_id,
            s.windows.idempotency.as_secs() / 3600
        ))),
    }
}

#[derive(Deserialize)]
pub(crate) struct RunQuery {
    playbook: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

pub(crate) async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<RunQuery>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(format!(
                "`{text}` is not a run status; use queued, running, succeeded, failed or cancelled"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let runs = s
        .orchestrator
        .store()
        .runs(&RunFilter {
            playbook: q.playbook,
            status,
            before: q.before,
            limit,
        })
        .await?;
    let next = (runs.len() as u32 == limit)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    ok(json!({ "runs": runs, "next": next }))
}

pub(crate) async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let store = s.orchestrator.store();
    let run = store
        .run(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run `{id}`")))?;
    let steps = store.steps(&id).await?;
    let approvals = store.run_approvals(&id).await?;
    ok(json!({ "run": run, "steps": steps, "approvals": approvals }))
}

pub(crate) async fn cancel_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Analyst)?;
    let run = s.orchestrator.cancel(&id, caller.name()).await?;
    ok(json!(run))
}

pub(crate) async fn rerun(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Analyst)?;
    let run = s.orchestrator.rerun(&id, caller.name()).await?;
    Ok((StatusCode::CREATED, Json(json!(run))))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

async fn decide(
    s: AppState,
    caller: Caller,
    run: String,
    step: String,
    approve: bool,
    body: Bytes,
) -> Answer {
    // Who may decide is what the step's `approvers` say (and admins); the orchestrator checks it. Any token but
    // an ingest token may be named there.
    caller.require(Role::Viewer)?;
    let body: DecisionBody = json_body(&body)?;
    let approver = Approver {
        name: caller.0.name.clone(),
        role: caller.0.role.as_str().to_owned(),
    };
    let approval = s
        .orchestrator
        .decide(&run, &step, approve, body.comment, &approver)
        .await?;
    ok(json!(approval))
}

pub(crate) async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    Path((run, step)): Path<(String, String)>,
    Body(body): Body,
) -> Answer {
    decide(s, caller, run, step, true, body).await
}

pub(crate) async fn deny(
    State(s): State<AppState>,
    caller: Caller,
    Path((run, step)): Path<(String, String)>,
    Body(body): Body,
) -> Answer {
    decide(s, caller, run, step, false, body).await
}

#[derive(Deserialize)]
pub(crate) struct ApprovalQuery {
    all: Option<bool>,
    limit: Option<u32>,
}

pub(crate) async fn approvals(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ApprovalQuery>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let list = s
        .orchestrator
        .store()
        .approvals(q.all.unwrap_or(false), q.limit.unwrap_or(1000))
        .await?;
    ok(json!({ "approvals": list }))
}

pub(crate) async fn list_tokens(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Admin)?;
    ok(json!({ "tokens": s.orchestrator.store().tokens().await? }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: String,
}

pub(crate) async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Admin)?;
    let body: TokenBody = json_body(&body)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(format!(
            "`{}` is not a role; use admin, engineer, analyst, viewer or ingest",
            body.role
        ))
    })?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::invalid(
            "a token's name must be 1 to 100 characters",
        ));
    }
    let (info, token) = s
        .orchestrator
        .store()
        .create_token(&body.name, role, caller.name())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "id": info.id, "name": info.name, "role": info.role })),
    ))
}

pub(crate) async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Admin)?;
    if !s
        .orchestrator
        .store()
        .revoke_token(&id, caller.name())
        .await?
    {
        return Err(ApiError::not_found(format!("no live token `{id}`")));
    }
    ok(json!({ "revoked": id }))
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Answer {
    caller.require(Role::Admin)?;
    let entries = s
        .orchestrator
        .store()
        .audit_log(q.after.unwrap_or(0), q.limit.unwrap_or(1000))
        .await?;
    ok(json!({ "entries": entries }))
}
