//! Hostile plugins through the real sandbox: every one fails its call with a typed error, and the host keeps
//! serving well-behaved calls, even concurrently.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qila_sandbox::{
    ErrorKind, HostServices, InvocationContext, Limits, MemoryKv, Plugin, PluginPolicy, Sandbox,
    SandboxConfig, SandboxError, StaticSecrets,
};
use serde_json::{Value, json};

fn sandbox() -> Sandbox {
    let secrets = StaticSecrets(HashMap::from([(
        "granted_key".to_string(),
        "s3cr3t-value".to_string(),
    )]));
    Sandbox::new(SandboxConfig {
        services: HostServices::new(Arc::new(secrets), Arc::new(MemoryKv::default())),
        ..SandboxConfig::default()
    })
    .unwrap()
}

fn tight() -> PluginPolicy {
    PluginPolicy {
        limits: Limits {
            cpu: Duration::from_millis(200),
            timeout: Duration::from_secs(3),
            memory_bytes: 32 << 20,
            ..Limits::default()
        },
        ..PluginPolicy::default()
    }
}

async fn load(sandbox: &Sandbox, path: &str, policy: PluginPolicy) -> Plugin {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    sandbox
        .load(&bytes, policy)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn core(sandbox: &Sandbox) -> Plugin {
    let path = qila_e2e::bundled_plugin("core");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sandbox.load(&bytes, PluginPolicy::default()).await.unwrap()
}

async fn call(
    plugin: &Plugin,
    action: &str,
    input: Value,
) -> Result<Value, qila_sandbox::InvokeError> {
    plugin
        .invoke(action, &input, &InvocationContext::adhoc("e2e"))
        .await
}

/// After a hostile call, the same sandbox still runs a well-behaved plugin.
async fn host_still_healthy(sandbox: &Sandbox) {
    let out = call(&core(sandbox).await, "echo", json!({"alive": true}))
        .await
        .unwrap();
    assert_eq!(out, json!({"alive": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_cpu_limit_while_other_calls_go_on() {
    let sandbox = sandbox();
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, tight()).await;
    let core = core(&sandbox).await;
    let started = Instant::now();
    let (burn, echo) = tokio::join!(call(&spin, "spin", json!({})), async {
        // Well-behaved calls made while the loop burns its CPU budget.
        let mut outs = Vec::new();
        for i in 0..20 {
            outs.push(call(&core, "echo", json!({"i": i})).await.unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (outs.len(), started.elapsed())
    });
    let err = burn.unwrap_err();
    assert_eq!(err.kind, ErrorKind::CpuLimit, "{err}");
    assert!(err.message.contains("CPU limit"), "{err}");
    assert_eq!(echo.0, 20);
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_plugin_that_sleeps_forever_hits_the_wall_clock_timeout() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.timeout = Duration::from_millis(300);
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, policy).await;
    let err = call(&spin, "nap", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(err.message.contains("300ms"), "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn unbounded_memory_growth_hits_the_memory_limit() {
    let sandbox = sandbox();
    let balloon = load(&sandbox, qila_e2e::HOSTILE_BALLOON, tight()).await;
    let err = call(&balloon, "inflate", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::MemoryLimit, "{err}");
    assert!(
        err.message.contains(&(32 << 20).to_string()),
        "names the limit: {err}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn deep_recursion_is_stopped_cleanly() {
    let sandbox = sandbox();
    let recurse = load(&sandbox, qila_e2e::HOSTILE_RECURSE, tight()).await;
    let err = call(&recurse, "deep", json!({})).await.unwrap_err();
    // A Rust guest keeps its stack in linear memory: recursion runs off its bottom (an out-of-bounds access)
    // before it exhausts the host-managed wasm stack (which would be `stack-overflow`).
    match err.kind {
        ErrorKind::Trap => assert!(
            err.message.contains("out of bounds") && err.message.contains("recursion"),
            "{err}"
        ),
        ErrorKind::StackOverflow => {}
        other => panic!("unexpected {other}: {err}"),
    }
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_multi_megabyte_output_is_refused() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.memory_bytes = 128 << 20;
    let flood = load(&sandbox, qila_e2e::HOSTILE_FLOOD, policy).await;
    let err = call(&flood, "flood", json!({"mib": 16})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::OutputTooLarge, "{err}");
    assert!(err.message.contains("1048576"), "names the limit: {err}");
    // Flooding the log, stdout and stderr is capped, not fatal to the host.
    let _ = call(&flood, "chatter", json!({})).await;
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn egress_to_a_host_not_granted_is_denied() {
    let sandbox = sandbox();
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, tight()).await;
    let err = call(&egress, "exfiltrate", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(
        err.message.contains("evil.example.invalid") && err.message.contains("not granted"),
        "{err}"
    );
    let err = call(
        &egress,
        "fetch",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_secret_not_granted_is_denied_and_a_granted_one_is_revealed() {
    let sandbox = sandbox();
    let snoop = load(&sandbox, qila_e2e::HOSTILE_SNOOP, tight()).await;
    let err = call(&snoop, "reveal", json!({"name": "granted_key"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(
        err.message.contains("granted_key") && !err.message.contains("s3cr3t"),
        "{err}"
    );

    let granted = PluginPolicy {
        secrets: vec!["granted_key".into()],
        ..tight()
    };
    let snoop = load(&sandbox, qila_e2e::HOSTILE_SNOOP, granted).await;
    let out = call(&snoop, "reveal", json!({"name": "granted_key"}))
        .await
        .unwrap();
    assert!(out.to_string().contains("s3cr3t-value"), "{out}");
    let err = call(&snoop, "reveal", json!({"name": "other"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_the_plugin() {
    let sandbox = sandbox();
    let balloon = load(&sandbox, qila_e2e::HOSTILE_BALLOON, tight()).await;
    let err = call(&balloon, "grow", json!({"mib": "lots"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(err.message.contains("/mib"), "points at the field: {err}");
    let err = call(&balloon, "no-such-action", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn core_modules_and_garbage_are_not_components() {
    let sandbox = sandbox();
    let module = b"\0asm\x01\0\0\0";
    match sandbox.load(module, PluginPolicy::default()).await {
        Err(SandboxError::NotAComponent(m)) => {
            assert!(m.contains("core WebAssembly module"), "{m}")
        }
        other => panic!("expected NotAComponent, got {other:?}"),
    }
    match sandbox
        .load(b"#!/bin/sh\nrm -rf /\n", PluginPolicy::default())
        .await
    {
        Err(SandboxError::NotAComponent(m)) => assert!(m.contains("magic"), "{m}"),
        other => panic!("expected NotAComponent, got {other:?}"),
    }
    host_still_healthy(&sandbox).await;
}
