//! HTTP through the host against a real local server: granted egress goes out with the secret injected by the
//! host; anything not granted is refused before a connection is made.

use std::collections::HashMap;
use std::sync::Arc;

use qila_sandbox::{
    ErrorKind, HostPattern, HostServices, InvocationContext, MemoryKv, Plugin, PluginPolicy,
    Sandbox, SandboxConfig, StaticSecrets,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::support::bundled;

const TOKEN: &str = "tok-123-secret";
const REPLY: &str = r#"{"accepted":true}"#;

/// A request as the server received it.
struct Received {
    head: String,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Serves one request on 127.0.0.1: answers 200 with a JSON body and returns the request it read.
async fn one_shot_server() -> (u16, tokio::task::JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read the head, then as much body as Content-Length says.
        let (head, body) = loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let head = text[..end].to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    break (head, text[end + 4..].to_string());
                }
            } else if n == 0 {
                panic!("connection closed before the end of the request head: {text}");
            }
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{REPLY}",
            REPLY.len()
        );
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.ok();
        Received { head, body }
    });
    (port, handle)
}

async fn notify(policy: PluginPolicy) -> Plugin {
    let secrets = StaticSecrets(HashMap::from([(
        "hook_token".to_string(),
        TOKEN.to_string(),
    )]));
    let sandbox = Sandbox::new(SandboxConfig {
        services: HostServices::new(Arc::new(secrets), Arc::new(MemoryKv::default())),
        ..SandboxConfig::default()
    })
    .unwrap();
    let bytes = bundled(qila_e2e::BUNDLED_NOTIFY);
    sandbox.load(&bytes, policy).await.unwrap()
}

fn grant(port: u16) -> Vec<HostPattern> {
    vec![format!("127.0.0.1:{port}").parse().unwrap()]
}

fn ctx() -> InvocationContext {
    InvocationContext {
        run_id: "run-1".into(),
        step_id: "hook".into(),
        attempt: 1,
        idempotency_key: "run-1/hook".into(),
    }
}

#[tokio::test]
async fn granted_egress_posts_the_body() {
    let (port, server) = one_shot_server().await;
    let plugin = notify(PluginPolicy {
        egress: grant(port),
        ..PluginPolicy::default()
    })
    .await;
    let body = json!({"alert": "ssh brute force", "ip": "203.0.113.7"});
    let input = json!({"url": format!("http://127.0.0.1:{port}/hook?x=1"), "body": body});
    let out = plugin.invoke("webhook", &input, &ctx()).await.unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], REPLY, "{out}");
    let request = server.await.unwrap();
    assert!(
        request.head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("idempotency-key"), Some("run-1/hook"));
    assert_eq!(request.header("authorization"), None, "{}", request.head);
    let sent: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(sent, body);
}

#[tokio::test]
async fn a_bearer_secret_is_injected_by_the_host_and_never_seen_by_the_plugin() {
    let (port, server) = one_shot_server().await;
    let plugin = notify(PluginPolicy {
        egress: grant(port),
        secrets: vec!["hook_token".into()],
        ..PluginPolicy::default()
    })
    .await;
    let input = json!({
        "url": format!("http://127.0.0.1:{port}/hook"),
        "body": {"alert": "x"},
        "bearer_secret": "hook_token",
    });
    let out = plugin.invoke("webhook", &input, &ctx()).await.unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        !out.to_string().contains(TOKEN),
        "the plugin's output never holds the secret: {out}"
    );
    let request = server.await.unwrap();
    let expected = format!("Bearer {TOKEN}");
    assert_eq!(
        request.header("authorization"),
        Some(expected.as_str()),
        "{}",
        request.head
    );
}

#[tokio::test]
async fn egress_not_granted_is_denied_and_names_the_host() {
    let (port, server) = one_shot_server().await;
    // Another port of the same host is not a grant for this one.
    let plugin = notify(PluginPolicy {
        egress: grant(port.wrapping_add(1).max(1)),
        ..PluginPolicy::default()
    })
    .await;
    let input = json!({"url": format!("http://127.0.0.1:{port}/hook"), "body": {}});
    let err = plugin.invoke("webhook", &input, &ctx()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert_eq!(
        err.message,
        format!("egress to 127.0.0.1:{port} is not granted to plugin `notify`")
    );
    // Refused before any connection: the server is still waiting.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!server.is_finished(), "the server got a connection");
    server.abort();
}

#[tokio::test]
async fn a_bearer_secret_not_granted_is_denied_and_not_sent() {
    let (port, server) = one_shot_server().await;
    let plugin = notify(PluginPolicy {
        egress: grant(port),
        ..PluginPolicy::default()
    })
    .await;
    let input = json!({"url": format!("http://127.0.0.1:{port}/hook"), "body": {}, "bearer_secret": "hook_token"});
    let err = plugin.invoke("webhook", &input, &ctx()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert_eq!(
        err.message,
        "secret `hook_token` is not granted to plugin `notify`"
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!server.is_finished(), "the server got a connection");
    server.abort();
}
