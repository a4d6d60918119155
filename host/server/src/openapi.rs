//! The route table — every endpoint with its method, path, role and summary — and the OpenAPI 3.1 document built
//! from it. The router is checked against this table by a test, so the document cannot miss a route.

use serde_json::{Map, Value, json};

/// One endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// The path, with `{param}`s.
    pub path: &'static str,
    /// The role needed (`None`: no token; the webhook is authenticated by its secret).
    pub role: Option<&'static str>,
    /// What it does.
    pub summary: &'static str,
    /// The status of a successful answer.
    pub ok: u16,
    /// What the request body is, if it has one.
    pub body: Option<&'static str>,
}

const fn route(
    method: &'static str,
    path: &'static str,
    role: Option<&'static str>,
    ok: u16,
    summary: &'static str,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        role,
        summary,
        ok,
        body,
    }
}

/// Every endpoint of the API.
pub const ROUTES: &[Route] = &[
    route(
        "GET",
        "/api/v1/health",
        None,
        200,
        "Whether the server is up, and which part (store, SIEM writer, orchestrator) is degraded: always 200.",
        None,
    ),
    route(
        "GET",
        "/api/v1/health/live",
        None,
        200,
        "Liveness: the process serves requests.",
        None,
    ),
    route(
        "GET",
        "/api/v1/health/ready",
        None,
        200,
        "Readiness: every writer committed a probe write; 503 with Retry-After naming the degraded part otherwise.",
        None,
    ),
    route(
        "GET",
        "/api/v1/openapi.json",
        None,
        200,
        "This document.",
        None,
    ),
    route(
        "GET",
        "/api/v1/playbooks",
        Some("viewer"),
        200,
        "The latest version of each published playbook.",
        None,
    ),
    route(
        "POST",
        "/api/v1/playbooks",
        Some("engineer"),
        201,
        "Publish a playbook: a new immutable version unless the source and its plugins are unchanged (then 200).",
        Some(
            "The YAML (application/yaml), or {\"source\": YAML, \"file\": name} (application/json).",
        ),
    ),
    route(
        "GET",
        "/api/v1/playbooks/{name}",
        Some("viewer"),
        200,
        "The versions of a playbook, newest first.",
        None,
    ),
    route(
        "GET",
        "/api/v1/playbooks/{name}/versions/{version}",
        Some("viewer"),
        200,
        "One version, with its source.",
        None,
    ),
    route(
        "GET",
        "/api/v1/playbooks/{name}/hook",
        Some("engineer"),
        200,
        "The playbook's webhook path and secret.",
        None,
    ),
    route(
        "GET",
        "/api/v1/runs",
        Some("viewer"),
        200,
        "Runs, newest first; filter by playbook and status, page with `before` = the previous page's `next`.",
        None,
    ),
    route(
        "POST",
        "/api/v1/runs",
        Some("analyst"),
        201,
        "Start a run. With an `Idempotency-Key` header, the same request under the same key (per token, 24 h) answers the first run (200) instead of starting another; another request under it is 422.",
        Some("{\"playbook\": name, \"version\": n (optional), \"inputs\": {...}}"),
    ),
    route(
        "GET",
        "/api/v1/runs/{id}",
        Some("viewer"),
        200,
        "A run with its steps and approvals.",
        None,
    ),
    route(
        "POST",
        "/api/v1/runs/{id}/cancel",
        Some("analyst"),
        200,
        "Cancel a run that has not ended.",
        None,
    ),
    route(
        "POST",
        "/api/v1/runs/{id}/rerun",
        Some("analyst"),
        201,
        "Start a failed or cancelled run again, keeping the outputs of the steps that succeeded.",
        None,
    ),
    route(
        "GET",
        "/api/v1/runs/{id}/events",
        Some("viewer"),
        200,
        "Server-Sent Events: the run's transitions (after `Last-Event-ID` or `after`), live until it ends.",
        None,
    ),
    route(
        "POST",
        "/api/v1/runs/{id}/steps/{step}/approve",
        Some("viewer"),
        200,
        "Approve a pending approval (whoever the step's `approvers` names, or an admin; 403 for anyone else).",
        Some("{\"comment\": text} (optional)"),
    ),
    route(
        "POST",
        "/api/v1/runs/{id}/steps/{step}/deny",
        Some("viewer"),
        200,
        "Deny a pending approval (whoever the step's `approvers` names, or an admin; 403 for anyone else).",
        Some("{\"comment\": text} (optional)"),
    ),
    route(
        "GET",
        "/api/v1/approvals",
        Some("viewer"),
        200,
        "Pending approvals, oldest first (`all=true`: decided too).",
        None,
    ),
    route(
        "POST",
        "/api/v1/hooks/{playbook}",
        None,
        202,
        "Start a run from the playbook's webhook; authenticated by a Standard Webhooks signature (webhook-id, webhook-timestamp, webhook-signature), X-Hub-Signature-256 with X-GitHub-Delivery, or X-Qila-Hook-Secret. A signed delivery is accepted once (409 after).",
        Some("Any JSON: the run's inputs, or the input the playbook's `webhook.input` names."),
    ),
    route(
        "GET",
        "/api/v1/tokens",
        Some("admin"),
        200,
        "API tokens (never their secrets).",
        None,
    ),
    route(
        "POST",
        "/api/v1/tokens",
        Some("admin"),
        201,
        "Create a token; its secret is in this answer only.",
        Some("{\"name\": text, \"role\": \"admin\"|\"engineer\"|\"analyst\"|\"viewer\"}"),
    ),
    route(
        "DELETE",
        "/api/v1/tokens/{id}",
        Some("admin"),
        200,
        "Revoke a token.",
        None,
    ),
    route(
        "GET",
        "/api/v1/audit",
        Some("admin"),
        200,
        "The audit log after `after` (a seq), oldest first.",
        None,
    ),
    route(
        "GET",
        "/api/v1/plugins",
        Some("viewer"),
        200,
        "Every plugin the host runs (origin, version, digest, signer, capabilities asked, grants) and every file that failed to load.",
        None,
    ),
    route(
        "POST",
        "/api/v1/plugins",
        Some("admin"),
        201,
        "Install a signed plugin package: verified against the trusted vendor keys, its component's imports checked against its manifest, the grants in `X-Qila-Grants` (`all`, `none` or a JSON object within what it asks for) recorded.",
        Some("The package file (application/octet-stream)."),
    ),
    route(
        "POST",
        "/api/v1/plugins/{name}/grants",
        Some("admin"),
        200,
        "Replace an installed plugin's grants with `X-Qila-Grants`; new steps run under them.",
        None,
    ),
    route(
        "GET",
        "/api/v1/plugin-keys",
        Some("engineer"),
        200,
        "The vendor keys trusted to sign plugin packages.",
        None,
    ),
    route(
        "POST",
        "/api/v1/plugin-keys",
        Some("admin"),
        201,
        "Trust a vendor's public key.",
        Some("The `.pub` file's text: `qila-ed25519 <base64> <vendor>` (text/plain)."),
    ),
    route(
        "DELETE",
        "/api/v1/plugin-keys/{id}",
        Some("admin"),
        200,
        "Stop trusting a vendor key (installed plugins stay).",
        None,
    ),
    route(
        "GET",
        "/api/v1/secrets",
        Some("admin"),
        200,
        "The names of the stored secrets (never their values).",
        None,
    ),
    route(
        "POST",
        "/api/v1/secrets/{name}",
        Some("admin"),
        200,
        "Set a secret's value, sealed at rest.",
        Some("{\"value\": string}"),
    ),
    route(
        "DELETE",
        "/api/v1/secrets/{name}",
        Some("admin"),
        200,
        "Delete a secret.",
        None,
    ),
    route(
        "POST",
        "/api/v1/events",
        Some("ingest"),
        200,
        "Ingest events: one JSON object or log line per line (NDJSON; a JSON string line is a log line). Answers once they are stored, with how many were accepted and rejected (rejected records are kept as dead letters with the reason); 503 with Retry-After when the store is busy (nothing taken: send again).",
        Some("NDJSON or text lines (application/x-ndjson or text/plain)."),
    ),
    route(
        "GET",
        "/api/v1/events",
        Some("viewer"),
        200,
        "Search events with the query language of docs/search.md, newest first, paged by `cursor`.",
        None,
    ),
    route(
        "GET",
        "/api/v1/events/{id}",
        Some("viewer"),
        200,
        "One event, with its raw record and fields.",
        None,
    ),
    route(
        "GET",
        "/api/v1/alerts",
        Some("viewer"),
        200,
        "Alerts, newest first.",
        None,
    ),
    route(
        "GET",
        "/api/v1/alerts/{id}",
        Some("viewer"),
        200,
        "One alert and the events it is about.",
        None,
    ),
    route(
        "POST",
        "/api/v1/alerts/{id}/status",
        Some("analyst"),
        200,
        "Set an alert's status (open, acknowledged, closed); audited.",
        Some("{\"status\": \"open\" | \"acknowledged\" | \"closed\"}"),
    ),
    route(
        "GET",
        "/api/v1/dead-letters",
        Some("engineer"),
        200,
        "Records that could not be parsed, each with its source, location, reason and raw text, newest first.",
        None,
    ),
    route(
        "GET",
        "/api/v1/siem",
        Some("viewer"),
        200,
        "The SIEM's counters, the rules that loaded and those that did not (with the reasons), the detector plugins.",
        None,
    ),
    route(
        "GET",
        "/api/v1/rules",
        Some("viewer"),
        200,
        "The detection rules: every rule loaded and every one that could not be, with the reason.",
        None,
    ),
];

fn query_parameters(path: &str) -> Vec<(&'static str, &'static str)> {
    match path {
        "/api/v1/runs" => vec![
            ("playbook", "Only runs of this playbook."),
            ("status", "queued, running, succeeded, failed or cancelled."),
            ("before", "Only runs older than this run id (paging)."),
            ("limit", "At most this many (default 50, at most 1000)."),
        ],
        "/api/v1/runs/{id}/events" => {
            vec![("after", "Replay transitions after this seq (default 0).")]
        }
        "/api/v1/approvals" => vec![("all", "Include decided approvals.")],
        "/api/v1/events" => vec![
            (
                "query",
                "A query (docs/search.md), e.g. `source.ip = 10.0.0.0/8 and outcome = failure`.",
            ),
            (
                "from",
                "Only events at or after this time (RFC 3339, or relative: `-1h`, `-7d`).",
            ),
            ("to", "Only events before this time (RFC 3339 or relative)."),
            (
                "from_us",
                "Only events at or after this time, in unix microseconds (instead of `from`).",
            ),
            (
                "to_us",
                "Only events before this time, in unix microseconds (instead of `to`).",
            ),
            ("limit", "At most this many (default 100, at most 1000)."),
            ("cursor", "The `next_cursor` of the previous page."),
        ],
        "/api/v1/alerts" => vec![
            ("status", "open, acknowledged or closed."),
            ("rule", "Only alerts of this rule id."),
            ("level", "Only alerts of this level."),
            ("before", "Only alerts older than this alert id (paging)."),
            ("limit", "At most this many (default 50, at most 1000)."),
        ],
        "/api/v1/dead-letters" => vec![
            ("before", "Only dead letters older than this id (paging)."),
            ("limit", "At most this many (default 100, at most 1000)."),
        ],
        "/api/v1/audit" => vec![
            ("after", "Entries after this seq."),
            ("limit", "At most this many."),
        ],
        _ => Vec::new(),
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        parameters.extend(query_parameters(r.path).into_iter().map(|(name, description)| {
            // Counts, sequence numbers and unix microseconds are integers; every other parameter is text.
            let kind = if name == "limit" || name == "after" || name.ends_with("_us") { "integer" } else { "string" };
            json!({ "name": name, "in": "query", "required": false, "description": description, "schema": { "type": kind } })
        }));
        let mut responses = Map::new();
        responses.insert(r.ok.to_string(), json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } }));
        if r.path.ends_with("/events") {
            responses.insert(r.ok.to_string(), json!({ "description": "An event stream", "content": { "text/event-stream": { "schema": { "type": "string" } } } }));
        }
        for (code, what) in [
            ("400", "Malformed request"),
            ("401", "No valid token (or hook secret)"),
            ("403", "Role not enough"),
            ("404", "Not found"),
            ("409", "Conflict with the current state"),
            ("422", "Rejected playbook or inputs, with diagnostics"),
        ] {
            responses.insert(code.into(), json!({ "description": what, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
        }
        if r.body.is_some() {
            responses.insert("413".into(), json!({ "description": "Body too large", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
        }
        let mut operation = json!({
            "summary": r.summary,
            "operationId": format!("{} {}", r.method.to_lowercase(), r.path),
            "parameters": parameters,
            "responses": responses,
            "x-qila-role": r.role,
        });
        operation["security"] = match r.role {
            Some(_) => json!([{ "bearer": [] }]),
            None => json!([]),
        };
        if let Some(body) = r.body {
            operation["requestBody"] = json!({ "description": body, "required": !r.path.contains("/steps/"), "content": { "application/json": { "schema": {} } } });
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Qila API", "version": env!("CARGO_PKG_VERSION"), "description": "See docs/api.md." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                        "code": { "type": "string", "enum": ["unauthorized", "forbidden", "not_found", "invalid", "conflict", "too_large", "internal"] },
                        "message": { "type": "string" },
                        "diagnostics": { "type": "array", "items": { "type": "object", "properties": {
                            "file": { "type": "string" }, "line": { "type": "integer" }, "column": { "type": "integer" }, "message": { "type": "string" } } } }
                    } } }
                }
            }
        }
    })
}
