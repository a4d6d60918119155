//! HTTP through the host against a real local server: granted egress goes out with the secret injected by the
//! host; anything not granted is refused before a connection is made.

use std::collections::HashMap;
use std::sync::Arc;

use qila_sandbox::{
    ErrorKind, HostPattern, HostServices, InvocationContext, MemoryKv, Plugin, PluginPolicy,
    Sandbox, SandboxConfig, StaticSecrets,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves one request on 127.0.0.1 and returns (port, the request as text once received).
async fn one_shot_server() -> (u16, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read headers, then as much body as Content-Length says.
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    break;
                }
            } else if n == 0 {
                break;
            }
        }
        let body = r#"{"accepted":true}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(response.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&buf).to_string()
    });
    (port, handle)
}

async fn notify(policy: PluginPolicy) -> Plugin {
    let secrets = StaticSecrets(HashMap::from([(
        "hook_token".to_string(),
        "tok-123-secret".to_string(),
    )]));
    let sandbox = Sandbox::new(SandboxConfig {
        services: HostServices::new(Arc::new(secrets), Arc::new(MemoryKv::default())),
        ..SandboxConfig::default()
    })
    .unwrap();
    let bytes = std::fs::read(qila_e2e::bundled_plugin("notify")).unwrap();
    sandbox.load(&bytes, policy).await.unwrap()
}

#[tokio::test]
async fn granted_egress_posts_the_body_with_the_secret_injected_by_the_host() {
    let (port, server) = one_shot_server().await;
    let policy = PluginPolicy {
        egress: vec![format!("127.0.0.1:{port}").parse::<HostPattern>().unwrap()],
        secrets: vec!["hook_token".into()],
        ..PluginPolicy::default()
    };
    let plugin = notify(policy).await;
    let input = json!({
        "url": format!("http://127.0.0.1:{port}/hook"),
        "body": {"alert": "ssh brute force", "ip": "203.0.113.7"},
        "bearer_secret": "hook_token",
    });
    let out = plugin
        .invoke("webhook", &input, &InvocationContext::adhoc("e2e"))
        .await
        .unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        !out.to_string().contains("tok-123-secret"),
        "the plugin never sees the secret: {out}"
    );
    let request = server.await.unwrap();
    assert!(request.starts_with("POST /hook "), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("authorization: bearer tok-123-secret"),
        "{request}"
    );
    assert!(request.contains("ssh brute force"), "{request}");
}

#[tokio::test]
async fn egress_not_granted_is_denied_and_names_the_host() {
    let (port, server) = one_shot_server().await;
    let plugin = notify(PluginPolicy::default()).await;
    let input = json!({"url": format!("http://127.0.0.1:{port}/hook"), "body": {}});
    let err = plugin
        .invoke("webhook", &input, &InvocationContext::adhoc("e2e"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
    server.abort();
}

#[tokio::test]
async fn a_secret_not_granted_is_not_sent() {
    let (port, server) = one_shot_server().await;
    let policy = PluginPolicy {
        egress: vec![format!("127.0.0.1:{port}").parse::<HostPattern>().unwrap()],
        ..PluginPolicy::default()
    };
    let plugin = notify(policy).await;
    let input = json!({"url": format!("http://127.0.0.1:{port}/hook"), "body": {}, "bearer_secret": "hook_token"});
    let err = plugin
        .invoke("webhook", &input, &InvocationContext::adhoc("e2e"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(
        err.message.contains("hook_token") && !err.message.contains("tok-123"),
        "{err}"
    );
    server.abort();
}
