//! The API over real HTTP: a real store in a temporary directory, the real orchestrator, and an executor that
//! echoes its input (or fails, for `t.fail`).

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use qila_engine::{Options, Orchestrator, PluginCatalog, StepCall, StepError, StepExecutor};
use qila_model::{ActionCatalog, StaticCatalog};
use qila_store::{Role, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

struct Echo;

impl StepExecutor for Echo {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        match call.action.as_str() {
            "fail" => Err(StepError::new("failed", "asked to fail")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(call.input)
            }
            _ => Ok(call.input),
        }
    }
}

struct Catalog(StaticCatalog);

impl ActionCatalog for Catalog {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        self.0.input_schema(plugin, action)
    }
}

impl PluginCatalog for Catalog {
    fn digest(&self, _plugin: &str) -> Option<String> {
        Some("0123456789abcdef".into())
    }
}

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
        let orchestrator = Orchestrator::start(
            store.clone(),
            Arc::new(Echo),
            Arc::new(Catalog(catalog)),
            Options::default(),
        )
        .await
        .unwrap();
        let (_, admin) = store
            .create_token("root", Role::Admin, "test")
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let edge = options.edge.clone();
        let router = qila_server::router(orchestrator, options);
        tokio::spawn(qila_server::serve(listener, router, edge, std::future::pending()));
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
        assert_eq!(error_code(&answer).as_deref(), Some("unauthorized"), "{answer}");
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
