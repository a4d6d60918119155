//! The SIEM routes: ingest NDJSON events, search events, read and triage alerts, read dead letters and the
//! state of the detection rules.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use qila_siem::Siem;
use qila_store::{AlertFilter, AlertStatus, EventQuery, Role, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Body, Path, Query};

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn siem(state: &AppState) -> Result<&Siem, ApiError> {
    state.siem.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "the SIEM pack is not running on this server (see `qila serve --help`)",
        )
    })
}

fn search_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Query(q) => ApiError::invalid(format!("query {q}")),
        StoreError::BadCursor(m) => ApiError::invalid(m),
        other => other.into(),
    }
}

pub(crate) async fn ingest(
    State(s): State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> Response {
    if let Err(e) = caller.require(Role::Ingest) {
        return e.into_response();
    }
    let siem = match siem(&s) {
        Ok(siem) => siem,
        Err(e) => return e.into_response(),
    };
    let records = qila_siem::ndjson::records(&body);
    if records.is_empty() {
        return ApiError::invalid(
            "the body has no events: send one JSON object or log line per line (NDJSON)",
        )
        .into_response();
    }
    match siem.ingest("http", records).await {
        Ok(done) => (StatusCode::OK, Json(json!(done))).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    query: Option<String>,
    from: Option<String>,
    to: Option<String>,
    from_us: Option<i64>,
    to_us: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(crate) async fn search(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchParams>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let siem = siem(&s)?;
    let now = qila_store::now_us();
    let bound = |name, text: Option<&str>, us| {
        qila_store::query::time_bound(name, text, us, now)
            .map_err(|e| ApiError::invalid(e.to_string()))
    };
    let query = EventQuery {
        query: q.query.filter(|t| !t.trim().is_empty()),
        from_us: bound("from", q.from.as_deref(), q.from_us)?,
        to_us: bound("to", q.to.as_deref(), q.to_us)?,
        limit: q.limit.unwrap_or(100),
        cursor: q.cursor,
    };
    let page = siem
        .store()
        .search_events(&query)
        .await
        .map_err(search_error)?;
    Ok((StatusCode::OK, Json(json!(page))))
}

pub(crate) async fn event(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer {
    caller.require(Role::Viewer)?;
    match siem(&s)?.store().event(id).await? {
        Some(row) => Ok((StatusCode::OK, Json(json!(row)))),
        None => Err(ApiError::not_found(format!("no event {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertParams {
    status: Option<String>,
    rule: Option<String>,
    level: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

pub(crate) async fn alerts(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AlertParams>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            AlertStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "`status` must be open, acknowledged or closed, not `{s}`"
                ))
            })
        })
        .transpose()?;
    let filter = AlertFilter {
        status,
        rule_id: q.rule,
        level: q.level,
        limit: q.limit.unwrap_or(50).clamp(1, 1000),
        before: q.before,
    };
    let list = siem(&s)?.store().alerts(&filter).await?;
    Ok((StatusCode::OK, Json(json!({ "alerts": list }))))
}

pub(crate) async fn alert(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Answer {
    caller.require(Role::Viewer)?;
    let store = siem(&s)?.store();
    let Some(alert) = store.alert(&id).await? else {
        return Err(ApiError::not_found(format!("no alert {id}")));
    };
    let events = store.events_by_ids(&alert.event_ids).await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "alert": alert, "events": events })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    status: String,
}

pub(crate) async fn set_alert_status(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> Answer {
    caller.require(Role::Analyst)?;
    let StatusBody { status } = crate::routes::json_body(&body)?;
    let Some(status) = AlertStatus::parse(&status) else {
        return Err(ApiError::invalid(format!(
            "`status` must be open, acknowledged or closed, not `{status}`"
        )));
    };
    match siem(&s)?
        .store()
        .set_alert_status(&id, status, caller.name())
        .await?
    {
        Some(row) => Ok((StatusCode::OK, Json(json!(row)))),
        None => Err(ApiError::not_found(format!("no alert {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    limit: Option<u32>,
    before: Option<i64>,
}

pub(crate) async fn dead_letters(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<PageParams>,
) -> Answer {
    caller.require(Role::Engineer)?;
    let store = siem(&s)?.store();
    let list = store
        .dead_letters(q.limit.unwrap_or(100).clamp(1, 1000), q.before)
        .await?;
    let total = store.dead_letter_count().await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "dead_letters": list, "total": total })),
    ))
}

pub(crate) async fn status(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Viewer)?;
    let siem = siem(&s)?;
    let report = siem.rules();
    Ok((
        StatusCode::OK,
        Json(json!({
            "stats": siem.stats(),
            "rules": { "files": report.files, "loaded": report.loaded.len(), "failed": report.failed },
            "detectors": siem.detectors(),
        })),
    ))
}

pub(crate) async fn rules(State(s): State<AppState>, caller: Caller) -> Answer {
    caller.require(Role::Viewer)?;
    let report = siem(&s)?.rules();
    Ok((StatusCode::OK, Json(json!(report))))
}
