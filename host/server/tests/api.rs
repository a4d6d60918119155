//! The API over real HTTP: a real store in a temporary directory, the real orchestrator, and an executor that
//! echoes its input (or fails, for `t.fail`).

mod support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use qila_model::StaticCatalog;
use qila_store::{Role, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

struct Server {
    base: String,
    http: reqwest::Client,
    admin: String,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(qila_server::ServerOptions::default()).await
    }

    async fn start_with(options: qila_server::ServerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let catalog = StaticCatalog::new()
            .with("t", "echo", json!({"type": "object"}))
            .with("t", "fail", json!({}))
            .with("t", "slow", json!({}));
        let (base, admin) = support::serve(&store, catalog, options).await;
        Self {
            base,
            http: reqwest::Client::new(),
            admin,
            store,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn token(&self, role: Role) -> String {
        self.store
            .create_token(&format!("{role}-user"), role, "test")
            .await
            .unwrap()
            .1
    }

    async fn publish(&self, yaml: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/api/v1/playbooks",
            Some(&self.admin),
            Some(json!({"source": yaml, "file": "p.yaml"})),
        )
        .await
    }

    async fn wait_for(&self, run: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let (_, body) = self
                .call(
                    "GET",
                    &format!("/api/v1/runs/{run}"),
                    Some(&self.admin),
                    None,
                )
                .await;
            if pred(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run} never reached the expected state");
    }
}

const APPROVE: &str = r#"name: gate
version: 1
on:
  webhook: {}
inputs:
  ip: { type: string }
steps:
  approve:
    uses: core.approval
    with: { message: "Block ${{ inputs.ip }}?", approvers: ["role:analyst"] }
  block:
    needs: [approve]
    if: "${{ steps.approve.output.approved }}"
    uses: t.echo
    with: { ip: "${{ inputs.ip }}" }
outputs:
  blocked: "${{ steps.block.status == 'succeeded' }}"
"#;

fn terminal(body: &Value) -> bool {
    matches!(
        body["run"]["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_roles_guard_every_route() {
    let s = Server::start().await;
    let (status, body) = s.call("GET", "/api/v1/runs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = s
        .call("GET", "/api/v1/runs", Some("qila_00000000_forged"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let viewer = s.token(Role::Viewer).await;
    let (status, _) = s.call("GET", "/api/v1/runs", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&viewer),
            Some(json!({"playbook": "gate"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("analyst")
    );
    let analyst = s.token(Role::Analyst).await;
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/playbooks",
            Some(&analyst),
            Some(json!({"source": APPROVE})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.call("GET", "/api/v1/audit", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .call("GET", "/api/v1/nothing-here", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no such endpoint")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_playbook_is_refused_with_its_line_numbers() {
    let s = Server::start().await;
    let (status, body) = s
        .publish("name: broken\nversion: 1\nsteps:\n  a:\n    uses: t.nope\n")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let diagnostic = &body["error"]["diagnostics"][0];
    assert_eq!(diagnostic["line"], 5);
    assert_eq!(diagnostic["file"], "p.yaml");
    assert!(diagnostic["message"].as_str().unwrap().contains("nope"));
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/playbooks",
            Some(&s.admin),
            Some(json!({"sauce": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("sauce"));
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_start_list_and_page_runs() {
    let s = Server::start().await;
    let yaml = "name: hello\nversion: 1\ninputs:\n  who: { type: string, default: world }\nsteps:\n  a:\n    uses: t.echo\n    with: { hi: \"${{ inputs.who }}\" }\noutputs:\n  said: \"${{ steps.a.output.hi }}\"\n";
    let (status, body) = s.publish(yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], 1);
    let (status, body) = s.publish(yaml).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["created"], false);
    let analyst = s.token(Role::Analyst).await;
    let mut ids = Vec::new();
    for who in ["a", "b", "c"] {
        let (status, run) = s
            .call(
                "POST",
                "/api/v1/runs",
                Some(&analyst),
                Some(json!({"playbook": "hello", "inputs": {"who": who}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let done = s.wait_for(&ids[2], terminal).await;
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(done["run"]["outputs"]["said"], "c");
    assert_eq!(done["steps"][0]["attempt"], 1);
    let (_, page) = s
        .call(
            "GET",
            "/api/v1/runs?playbook=hello&limit=2",
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, rest) = s
        .call(
            "GET",
            &format!("/api/v1/runs?playbook=hello&limit=2&before={next}"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(rest["runs"][0]["id"], ids[0].as_str());
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&analyst),
            Some(json!({"playbook": "hello", "inputs": {"nobody": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nobody")
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&analyst),
            Some(json!({"playbook": "nosuch"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .call("GET", "/api/v1/runs?status=sleeping", Some(&analyst), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_take_the_secret_or_an_hmac_and_an_analyst_approves() {
    let s = Server::start().await;
    let (status, published) = s.publish(APPROVE).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let secret = published["hook"]["secret"].as_str().unwrap().to_owned();
    let (_, hook) = s
        .call("GET", "/api/v1/playbooks/gate/hook", Some(&s.admin), None)
        .await;
    assert_eq!(hook["secret"], secret.as_str());

    let post = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let mut req = s.http.post(s.url("/api/v1/hooks/gate")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let resp = post(vec![], r#"{"ip": "9.9.9.9"}"#).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post(
        vec![("x-qila-hook-secret", "wrong".into())],
        r#"{"ip": "9.9.9.9"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = r#"{"ip": "9.9.9.9"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"{\"ip\": \"9.9.9.8\"}");
    let wrong_sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let resp = post(
        vec![
            ("x-qila-signature", wrong_sig),
            ("x-github-delivery", "d-0".into()),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    // Without its delivery id, a signed webhook is refused: it is the key a delivery is accepted once under.
    let resp = post(vec![("x-hub-signature-256", sig.clone())], body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let refusal: Value = resp.json().await.unwrap();
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-GitHub-Delivery"),
        "{refusal}"
    );
    let signed_by = |delivery: &'static str| {
        vec![
            ("x-hub-signature-256", sig.clone()),
            ("x-github-delivery", delivery.to_owned()),
        ]
    };
    let resp = post(signed_by("d-1"), body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let signed: Value = resp.json().await.unwrap();
    // The same delivery again is refused and starts nothing; another delivery of the same body is a new run.
    let resp = post(signed_by("d-1"), body).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let again: Value = resp.json().await.unwrap();
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains(signed["run_id"].as_str().unwrap()),
        "{again}"
    );
    let resp = post(
        vec![("x-qila-hook-secret", secret.clone())],
        r#"{"ip": "1.1.1.1"}"#,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let plain: Value = resp.json().await.unwrap();
    let resp = post(vec![("x-qila-hook-secret", secret.clone())], "not json")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let run = signed["run_id"].as_str().unwrap().to_owned();
    s.wait_for(&run, |b| b["steps"][0]["status"] == "waiting")
        .await;
    let (_, pending) = s
        .call("GET", "/api/v1/approvals", Some(&s.admin), None)
        .await;
    assert_eq!(pending["approvals"].as_array().unwrap().len(), 2);

    let viewer = s.token(Role::Viewer).await;
    let path = format!("/api/v1/runs/{run}/steps/approve/approve");
    let (status, _) = s.call("POST", &path, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let engineer = s.token(Role::Engineer).await;
    let (status, body) = s.call("POST", &path, Some(&engineer), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an engineer is not named by role:analyst: {body}"
    );
    let analyst = s.token(Role::Analyst).await;
    let (status, body) = s
        .call(
            "POST",
            &path,
            Some(&analyst),
            Some(json!({"comment": "seen it"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["decision"], "approved");
    let (status, _) = s.call("POST", &path, Some(&analyst), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let done = s.wait_for(&run, terminal).await;
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(done["run"]["outputs"]["blocked"], true);

    let other = plain["run_id"].as_str().unwrap().to_owned();
    s.wait_for(&other, |b| b["steps"][0]["status"] == "waiting")
        .await;
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{other}/steps/approve/deny"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = s.wait_for(&other, terminal).await;
    assert_eq!(done["run"]["outputs"]["blocked"], false);

    let (_, audit) = s.call("GET", "/api/v1/audit", Some(&s.admin), None).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "playbook.publish",
        "run.start",
        "approval.approve",
        "approval.deny",
        "token.create",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_rerun() {
    let s = Server::start().await;
    let slow = "name: slow\nversion: 1\nsteps:\n  a:\n    uses: t.slow\n";
    s.publish(slow).await;
    let (_, run) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "slow"})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_for(&id, |b| b["steps"][0]["status"] == "running")
        .await;
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = s.wait_for(&id, terminal).await;
    assert_eq!(done["run"]["status"], "cancelled");
    assert_eq!(done["steps"][0]["status"], "cancelled");
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/cancel"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let failing = "name: half\nversion: 1\nsteps:\n  a:\n    uses: t.echo\n    with: { n: 1 }\n  b:\n    uses: t.fail\n    needs: [a]\n";
    s.publish(failing).await;
    let (_, run) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "half"})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let done = s.wait_for(&id, terminal).await;
    assert_eq!(done["run"]["status"], "failed");
    let (status, again) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/rerun"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["rerun_of"], id.as_str());
    let again_id = again["id"].as_str().unwrap().to_owned();
    let done = s.wait_for(&again_id, terminal).await;
    let a = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["step_id"] == "a")
        .unwrap()
        .clone();
    assert_eq!(a["output"], json!({"n": 1}), "a's output is kept");
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{again_id}/rerun"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the re-run failed again, so it can be re-run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_replays_and_follows_a_run_to_its_end() {
    let s = Server::start().await;
    s.publish(APPROVE).await;
    let (_, run) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "gate", "inputs": {"ip": "9.9.9.9"}})),
        )
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_for(&id, |b| b["steps"][0]["status"] == "waiting")
        .await;
    let stream = s
        .http
        .get(s.url(&format!("/api/v1/runs/{id}/events")))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let reader = tokio::spawn(async move { stream.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/runs/{id}/steps/approve/approve"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    let transitions: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.get("seq").is_some())
        .collect();
    let statuses: Vec<(String, String)> = transitions
        .iter()
        .map(|t| {
            (
                t["step_id"].as_str().unwrap_or("(run)").to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("approve".into(), "waiting".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("approve".into(), "succeeded".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("block".into(), "succeeded".into())),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().unwrap(),
        &("(run)".to_owned(), "succeeded".to_owned())
    );
    assert!(text.contains("event: end"));
    let seqs: Vec<i64> = transitions
        .iter()
        .map(|t| t["seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {seqs:?}"
    );
    // Resuming after an event id replays only what came after it.
    let after = seqs[seqs.len() - 2];
    let tail = s
        .http
        .get(s.url(&format!("/api/v1/runs/{id}/events")))
        .bearer_auth(&s.admin)
        .header("last-event-id", after.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(tail.matches("event: transition").count(), 1, "{tail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_created_listed_and_revoked_by_an_admin() {
    let s = Server::start().await;
    let (status, created) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            Some(json!({"name": "soc-bot", "role": "analyst"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, _) = s.call("GET", "/api/v1/approvals", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s.call("GET", "/api/v1/tokens", Some(&s.admin), None).await;
    assert!(
        !list.to_string().contains(&token),
        "secrets are never listed"
    );
    let id = created["id"].as_str().unwrap();
    let (status, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{id}"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.call("GET", "/api/v1/approvals", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_every_route_and_every_route_is_served() {
    let s = Server::start().await;
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for route in qila_server::openapi::ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the document",
            route.method,
            route.path
        );
        // Served: without a token, a guarded route answers 401, never the router's 404.
        let path = route.path.replace('{', "x").replace('}', "");
        let (status, body) = s.call(route.method, &path, None, None).await;
        let no_route = body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such endpoint"));
        assert!(
            !no_route && status != StatusCode::METHOD_NOT_ALLOWED,
            "{} {path}: {status} {body}",
            route.method
        );
        if route.role.is_some() {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {path}", route.method);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_json_errors_and_nothing_panics() {
    let s = Server::start().await;
    let analyst = s.token(Role::Analyst).await;
    let error_code = |body: &Value| body["error"]["code"].as_str().map(str::to_owned);
    // A query that does not fit.
    let (status, body) = s
        .call("GET", "/api/v1/runs?limit=many", Some(&analyst), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body).as_deref(), Some("invalid"));
    let (status, body) = s
        .call("GET", "/api/v1/audit?after=x", Some(&s.admin), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A method the endpoint does not take.
    let (status, body) = s.call("DELETE", "/api/v1/runs", Some(&analyst), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(error_code(&body).as_deref(), Some("invalid"));
    // A body past the limit (1 MiB by default), before and after authentication.
    // (A connection whose request body was refused unread is closed: these get a client of their own.)
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = "x".repeat(1024 * 1024 + 10);
    let resp = once
        .post(s.url("/api/v1/playbooks"))
        .bearer_auth(&s.admin)
        .header("content-type", "application/yaml")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body).as_deref(), Some("too_large"));
    let resp = once
        .post(s.url("/api/v1/playbooks"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "the token is checked first"
    );
    // Bodies that are not what the route takes.
    for (path, body) in [
        ("/api/v1/runs", "[1, 2"),
        ("/api/v1/runs", "{\"playbook\": 7}"),
        ("/api/v1/runs", "{\"playbook\": \"x\", \"extra\": 1}"),
        ("/api/v1/tokens", "{\"name\": \"\", \"role\": \"viewer\"}"),
        ("/api/v1/runs/nope/steps/a/approve", "{\"comment\": 5}"),
    ] {
        let resp = s
            .http
            .post(s.url(path))
            .bearer_auth(&s.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(error_code(&answer).as_deref(), Some("invalid"), "{answer}");
    }
    // Odd paths and ids.
    for path in [
        "/api/v1/runs/%FF%FE",
        "/api/v1/runs/..%2F..%2Fetc",
        "/api/v1/playbooks/x/versions/99999999999999999999",
        "/api/v1/playbooks/x/versions/-1",
        "/api/v1/runs/x/events?after=-5",
    ] {
        let (status, body) = s.call("GET", path, Some(&s.admin), None).await;
        assert!(
            matches!(status.as_u16(), 400 | 404),
            "{path}: {status} {body}"
        );
        assert!(error_code(&body).is_some(), "{path}: {body}");
    }
    // Webhooks: an unknown playbook, a playbook without `on: webhook`, garbage signatures.
    s.publish("name: plain\nversion: 1\nsteps:\n  a:\n    uses: t.echo\n")
        .await;
    for path in ["/api/v1/hooks/none", "/api/v1/hooks/plain"] {
        let resp = s
            .http
            .post(s.url(path))
            .header("x-qila-signature", "sha256=zz")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(
            error_code(&answer).as_deref(),
            Some("unauthorized"),
            "{answer}"
        );
    }
    let (status, _) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_requires_a_signature_refuses_the_bare_secret() {
    let s = Server::start().await;
    let yaml = "name: signed\nversion: 1\non:\n  webhook: { signature: hmac-sha256 }\nsteps:\n  a:\n    uses: t.echo\n";
    let (status, published) = s.publish(yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let secret = published["hook_secret"].as_str().unwrap().to_owned();
    assert_eq!(published["hook"]["secret"], secret.as_str());
    let (_, hook) = s
        .call("GET", "/api/v1/playbooks/signed/hook", Some(&s.admin), None)
        .await;
    assert_eq!(hook["url_path"], "/api/v1/hooks/signed");
    let resp = s
        .http
        .post(s.url("/api/v1/hooks/signed"))
        .header("x-qila-hook-secret", &secret)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let body = "{}";
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let resp = s
        .http
        .post(s.url("/api/v1/hooks/signed"))
        .header(
            "x-qila-signature",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        )
        .header("x-qila-delivery", "first")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run: Value = resp.json().await.unwrap();
    let done = s.wait_for(run["run_id"].as_str().unwrap(), terminal).await;
    assert_eq!(done["run"]["status"], "succeeded");
    assert_eq!(done["run"]["trigger"], "webhook");
    // Webhook payloads have their own limit (4 MiB by default): 2 MiB is read (and its signature checked), 5 MiB is
    // refused.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (size, expected) in [
        (2 << 20, StatusCode::UNAUTHORIZED),
        (5 << 20, StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let sent = once
            .post(s.url("/api/v1/hooks/signed"))
            .header("x-qila-signature", format!("sha256={}", "0".repeat(64)))
            .header("x-qila-delivery", "big")
            .body(format!("\"{}\"", "x".repeat(size)))
            .send()
            .await;
        match sent {
            Ok(resp) => assert_eq!(resp.status(), expected, "{size} bytes"),
            // The server may answer 413 from the Content-Length and close the connection while the client is still
            // writing the oversized body: the client then sees the write fail instead of the answer. Refused either
            // way; a body within the limit must always get an answer.
            Err(e) if expected == StatusCode::PAYLOAD_TOO_LARGE && e.is_request() => {}
            Err(e) => panic!("{size} bytes: {e}"),
        }
    }
}

#[tokio::test]
async fn plugin_keys_and_secrets_routes_check_roles_and_input() {
    let s = Server::start().await;
    let viewer = s.token(Role::Viewer).await;
    let engineer = s.token(Role::Engineer).await;
    // Without the binary's plugin administration, installing answers 503 in the API's error shape.
    let (status, body) = s.call("GET", "/api/v1/plugins", Some(&viewer), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _) = s
        .call("POST", "/api/v1/plugins", Some(&engineer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Keys: an engineer reads, only an admin trusts; a malformed key says what a key file looks like.
    let key = qila_package::SigningKey::generate().unwrap();
    let public = key.public("Acme Corp").to_text();
    let trust = |token: String, text: String| {
        let http = s.http.clone();
        let url = s.url("/api/v1/plugin-keys");
        async move {
            let resp = http
                .post(url)
                .bearer_auth(token)
                .body(text)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, _) = trust(engineer.clone(), public.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = trust(s.admin.clone(), "ssh-ed25519 AAAA".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("qila-ed25519"),
        "{body}"
    );
    let (status, body) = trust(s.admin.clone(), public).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], key.id());
    let (status, body) = s
        .call("GET", "/api/v1/plugin-keys", Some(&engineer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"][0]["vendor"], "Acme Corp");
    let path = format!("/api/v1/plugin-keys/{}", key.id());
    let (status, _) = s.call("DELETE", &path, Some(&s.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.call("DELETE", &path, Some(&s.admin), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Secrets are admin-only, and a bad name is refused before anything is stored.
    let (status, _) = s
        .call("GET", "/api/v1/secrets", Some(&engineer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/secrets/bad%20name",
            Some(&s.admin),
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s.call("GET", "/api/v1/secrets", Some(&s.admin), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["secrets"], json!([]));
    let log = s.store.audit_log(0, 100).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"plugin.trust") && actions.contains(&"plugin.distrust"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn tlp_marks_on_a_run_are_checked_and_recorded() {
    let s = Server::start().await;
    s.publish("name: p\nversion: 1\ninputs:\n  ip: { type: string }\nsteps:\n  a: { uses: t.echo, with: { v: \"${{ inputs.ip }}\" } }\n")
        .await;
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "p", "inputs": {"ip": "192.0.2.1"}, "tlp": {"ip": "orange"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tlp.ip"),
        "{body}"
    );
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "p", "inputs": {"ip": "192.0.2.1"}, "tlp": {"ip": "TLP:AMBER+STRICT"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["tlp"], json!({"ip": "amber+strict"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn whoever_approvers_names_may_decide_and_nobody_else() {
    let s = Server::start().await;
    let engineer = s.token(Role::Engineer).await;
    let viewer = s.token(Role::Viewer).await;
    let analyst = s.token(Role::Analyst).await;
    let ingest = s.token(Role::Ingest).await;
    let yaml = r#"name: gates
version: 1
steps:
  by-role:
    uses: core.approval
    with: { message: "engineers decide", approvers: ["role:engineer"] }
  by-name:
    uses: core.approval
    with: { message: "the named viewer decides", approvers: ["user:viewer-user"] }
"#;
    let (status, body) = s.publish(yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/runs",
            Some(&s.admin),
            Some(json!({"playbook": "gates"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run = body["id"].as_str().unwrap().to_owned();
    s.wait_for(&run, |b| {
        b["approvals"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let path = |step: &str| format!("/api/v1/runs/{run}/steps/{step}/approve");
    for (step, token, expected) in [
        ("by-role", &analyst, StatusCode::FORBIDDEN),
        ("by-role", &viewer, StatusCode::FORBIDDEN),
        ("by-role", &ingest, StatusCode::FORBIDDEN),
        ("by-name", &analyst, StatusCode::FORBIDDEN),
        ("by-name", &engineer, StatusCode::FORBIDDEN),
        ("by-role", &engineer, StatusCode::OK),
        ("by-name", &viewer, StatusCode::OK),
    ] {
        let (status, body) = s.call("POST", &path(step), Some(token), None).await;
        assert_eq!(status, expected, "{step}: {body}");
        if status == StatusCode::FORBIDDEN {
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    let done = s
        .wait_for(&run, |b| b["run"]["status"] == "succeeded")
        .await;
    assert_eq!(done["run"]["status"], "succeeded");
}

/// Sends raw bytes on a fresh connection and reads until the server closes it (or 5 s pass): the whole answer.
async fn raw(s: &Server, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and JSON body of a raw HTTP/1.1 answer; panics unless the body is `{"error": ...}` JSON.
fn json_answer(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {answer:?}"));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"));
    assert!(json["error"]["message"].is_string(), "{answer}");
    (status, json)
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_heads_are_refused_in_json_by_the_edge_and_413_names_the_limit() {
    let mut options = qila_server::ServerOptions::default();
    options.edge.header_timeout = Duration::from_secs(1);
    let s = Server::start_with(options).await;
    let long_path = format!(
        "GET /api/v1/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(9000)
    );
    let huge_header = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(40_000));
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(101));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (long_path.into_bytes(), 414),
        (huge_header.into_bytes(), 431),
        (many.into_bytes(), 431),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"G@T / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/9.9\r\n\r\n".to_vec(), 505),
        (b"GET / HTTP/1.1\r\nX\xff: 1\r\n\r\n".to_vec(), 400),
        (
            b"POST /api/v1/runs HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
                .to_vec(),
            400,
        ),
        (b"GET / HTTP/1.1\r\nHost: x".to_vec(), 408),
    ];
    for (bytes, status) in cases {
        let answer = raw(&s, &bytes).await;
        let (got, _) = json_answer(&answer);
        assert_eq!(
            got,
            status,
            "{:?} -> {answer}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
        );
    }
    // A body over its route's limit: 413, naming the limit and its setting.
    let big = "x".repeat(2 << 20);
    let resp = s
        .http
        .post(s.url("/api/v1/runs"))
        .bearer_auth(&s.admin)
        .body(big)
        .send()
        .await;
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: Value = resp.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("1 MiB") && message.contains("max_body"),
            "{message}"
        );
    }
    // A token's bad role lists every role.
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&s.admin),
            Some(json!({"name": "n", "role": "root"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ingest"),
        "{body}"
    );
    let (status, _) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_503_in_json() {
    use tokio::io::AsyncWriteExt;
    let mut options = qila_server::ServerOptions::default();
    options.edge.max_connections = 2;
    let s = Server::start_with(options).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /api/v1/health HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = raw(&s, b"GET /api/v1/health HTTP/1.1\r\n\r\n").await;
    let (status, body) = json_answer(&answer);
    assert_eq!(status, 503, "{body}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "served again once they left");
}

fn standard_headers(
    secret_key: &[u8],
    id: &str,
    ts: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    use base64::Engine;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_playbooks_are_refused_exactly_as_wrong_credentials_are() {
    let s = Server::start().await;
    let (_, published) = s.publish(APPROVE).await;
    let secret = published["hook"]["secret"].as_str().unwrap().to_owned();
    let yaml = "name: stdhook\nversion: 1\non:\n  webhook: { signature: standard-webhooks }\nsteps:\n  a:\n    uses: t.echo\n";
    s.publish(yaml).await;
    let post = |path: &'static str, headers: Vec<(&'static str, String)>| {
        let mut req = s.http.post(s.url(path)).body(r#"{"ip":"1.2.3.4"}"#);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    let now = qila_store::now_ms() / 1000;
    let hub = vec![
        ("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
        ("x-github-delivery", "d".into()),
    ];
    let answers = vec![
        post(
            "/api/v1/hooks/no-such-playbook",
            vec![("x-qila-hook-secret", secret.clone())],
        )
        .await,
        post(
            "/api/v1/hooks/gate",
            vec![("x-qila-hook-secret", "wrong".into())],
        )
        .await,
        post(
            "/api/v1/hooks/stdhook",
            vec![("x-qila-hook-secret", secret.clone())],
        )
        .await,
        post("/api/v1/hooks/no-such-playbook", hub.clone()).await,
        post("/api/v1/hooks/gate", hub).await,
        post(
            "/api/v1/hooks/no-such-playbook",
            standard_headers(b"k", "m1", now, "{}"),
        )
        .await,
        post(
            "/api/v1/hooks/stdhook",
            standard_headers(b"k", "m1", now, "{}"),
        )
        .await,
    ];
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body, &answers[0].1, "one answer for every refusal");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_webhooks_are_accepted_once_while_fresh() {
    let s = Server::start().await;
    let yaml = "name: stdhook\nversion: 1\non:\n  webhook: { signature: standard-webhooks, input: event }\ninputs:\n  event: { type: object, required: false }\nsteps:\n  a:\n    uses: t.echo\n";
    let (status, published) = s.publish(yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let whsec = published["hook"]["secret"].as_str().unwrap().to_owned();
    let (_, hook) = s
        .call(
            "GET",
            "/api/v1/playbooks/stdhook/hook",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(hook["secret"], whsec.as_str());
    assert_eq!(hook["signature"], "standard-webhooks");
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(whsec.strip_prefix("whsec_").unwrap())
        .unwrap();
    let body = r#"{"type":"invoice.paid"}"#;
    let send = |headers: Vec<(&'static str, String)>| {
        let mut req = s.http.post(s.url("/api/v1/hooks/stdhook")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let now = qila_store::now_ms() / 1000;
    let (status, first) = send(standard_headers(&key, "msg_1", now, body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = send(standard_headers(&key, "msg_1", now, body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, old) = send(standard_headers(&key, "msg_2", now - 301, body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{old}");
    assert!(
        old["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_tolerance"),
        "{old}"
    );
    let (status, _) = send(standard_headers(b"another key", "msg_3", now, body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, runs) = s
        .call("GET", "/api/v1/runs?playbook=stdhook", Some(&s.admin), None)
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "one run: {runs}");
    let done = s
        .wait_for(first["run_id"].as_str().unwrap(), terminal)
        .await;
    assert_eq!(done["run"]["inputs"]["event"]["type"], "invoice.paid");
}

#[tokio::test(flavor = "multi_thread")]
async fn unverified_bodies_share_a_budget_and_the_excess_gets_503() {
    use tokio::io::AsyncWriteExt;
    let options = qila_server::ServerOptions {
        unverified_body_budget: 1 << 20,
        ..Default::default()
    };
    let s = Server::start_with(options).await;
    s.publish(APPROVE).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let head = |len: usize, delivery: &str| {
        format!(
            "POST /api/v1/hooks/gate HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nX-Hub-Signature-256: sha256={}\r\n\
             X-GitHub-Delivery: {delivery}\r\n\r\n",
            "0".repeat(64)
        )
    };
    // One sender holds 800 KiB of the 1 MiB budget, sending its body slowly.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(head(800 << 10, "a").as_bytes())
        .await
        .unwrap();
    slow.write_all(&[b' '; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another 800 KiB does not fit: 503 with Retry-After, before its body is read.
    let answer = raw(&s, head(800 << 10, "b").as_bytes()).await;
    let (status, body) = json_answer(&answer);
    assert_eq!(status, 503, "{body}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unverified_body_budget"),
        "{body}"
    );
    // A bare secret is checked before the body and takes nothing of the budget.
    let (status, _) = s.call("GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // Once the slow sender finishes (and is refused: its signature is wrong), the budget is free again.
    slow.write_all(&vec![b' '; (800 << 10) - 1024])
        .await
        .unwrap();
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    let answer = raw(
        &s,
        format!("{}{}", head(10, "c"), " ".repeat(10)).as_bytes(),
    )
    .await;
    assert_eq!(json_answer(&answer).0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_names_one_run_per_token() {
    let s = Server::start().await;
    s.publish(
        "name: once\nversion: 1\ninputs:\n  n: { type: integer }\nsteps:\n  a:\n    uses: t.echo\n",
    )
    .await;
    let start = |token: String, key: &'static str, body: Value| {
        let req = s
            .http
            .post(s.url("/api/v1/runs"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"playbook": "once", "inputs": {"n": 1}});
    let (status, first) = start(s.admin.clone(), "k-1", body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = start(s.admin.clone(), "k-1", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["idempotent_replayed"], true);
    let (status, other) = start(
        s.admin.clone(),
        "k-1",
        json!({"playbook": "once", "inputs": {"n": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("new key"),
        "{other}"
    );
    let analyst = s.token(Role::Analyst).await;
    let (status, theirs) = start(analyst, "k-1", body.clone()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another token's keys are its own"
    );
    assert_ne!(theirs["id"], first["id"]);
    let (status, bad) = start(s.admin.clone(), "has space", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (_, runs) = s
        .call("GET", "/api/v1/runs?playbook=once", Some(&s.admin), None)
        .await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut options = qila_server::ServerOptions::default();
    options.edge.request_timeout = Duration::from_secs(1);
    let s = Server::start_with(options).await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"play",
        s.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let (status, body) = json_answer(&String::from_utf8_lossy(&answer));
    assert_eq!(status, 408, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request_timeout"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
