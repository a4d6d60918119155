//! Hostile plugins through the real sandbox: every one fails its call with a typed error naming the limit or grant,
//! and the same sandbox keeps serving well-behaved calls afterwards, and concurrently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use qila_sandbox::testing::Harness;
use qila_sandbox::{
    ErrorKind, HostServices, InvocationContext, InvokeError, Limits, MemoryKv, Plugin,
    PluginPolicy, Sandbox, SandboxConfig, SandboxError, StaticSecrets,
};
use serde_json::{Value, json};

use super::support::bundled;

const SECRET_VALUE: &str = "s3cr3t-value";

fn config() -> SandboxConfig {
    let secrets = StaticSecrets(HashMap::from([(
        "granted_key".to_string(),
        SECRET_VALUE.to_string(),
    )]));
    SandboxConfig {
        services: HostServices::new(Arc::new(secrets), Arc::new(MemoryKv::default())),
        ..SandboxConfig::default()
    }
}

fn sandbox() -> Sandbox {
    Sandbox::new(config()).unwrap()
}

/// Tight limits, so that every hostile call ends within a fraction of a second.
fn tight() -> PluginPolicy {
    PluginPolicy {
        limits: Limits {
            cpu: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
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
    let bytes = bundled(qila_e2e::BUNDLED_CORE);
    sandbox.load(&bytes, PluginPolicy::default()).await.unwrap()
}

async fn call(plugin: &Plugin, action: &str, input: Value) -> Result<Value, InvokeError> {
    plugin
        .invoke(action, &input, &InvocationContext::adhoc("e2e"))
        .await
}

/// After a hostile call, the same sandbox still runs the bundled `core.echo`.
async fn host_still_healthy(sandbox: &Sandbox) {
    let out = call(&core(sandbox).await, "echo", json!({"alive": true}))
        .await
        .expect("core.echo after a hostile call");
    assert_eq!(out, json!({"alive": true}));
}

#[tokio::test]
async fn an_endless_loop_hits_the_cpu_limit() {
    let sandbox = sandbox();
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, tight()).await;
    let started = Instant::now();
    let err = call(&spin, "spin", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::CpuLimit, "{err}");
    assert_eq!(
        err.message, "plugin used more than its CPU limit of 200ms",
        "{err}"
    );
    // Stopped by the CPU budget, long before the 2 s wall-clock timeout.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    host_still_healthy(&sandbox).await;
}

/// On a single-threaded runtime, `core.echo` calls made while `spin` burns its budget can only run if the spinning
/// instance yields at every epoch tick: they must all finish, and promptly, before `spin` is stopped.
#[tokio::test(flavor = "current_thread")]
async fn other_calls_run_while_a_plugin_spins() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.cpu = Duration::from_millis(500);
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, policy).await;
    let core = core(&sandbox).await;
    let started = Instant::now();
    let (burn, echoes) = tokio::join!(
        async {
            let r = call(&spin, "spin", json!({})).await;
            (r, started.elapsed())
        },
        async {
            let mut slowest = Duration::ZERO;
            for i in 0..5 {
                let t = Instant::now();
                let out = call(&core, "echo", json!({"i": i})).await.unwrap();
                assert_eq!(out, json!({"i": i}));
                slowest = slowest.max(t.elapsed());
            }
            (slowest, started.elapsed())
        }
    );
    let (burn, burn_done) = burn;
    let err = burn.unwrap_err();
    assert_eq!(err.kind, ErrorKind::CpuLimit, "{err}");
    let (slowest, echoes_done) = echoes;
    assert!(
        echoes_done < burn_done,
        "the echoes ({echoes_done:?}) finished before the loop was stopped ({burn_done:?})"
    );
    assert!(
        slowest < Duration::from_millis(200),
        "an echo took {slowest:?}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_plugin_that_never_returns_hits_the_wall_clock_timeout() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.timeout = Duration::from_millis(300);
    // `nap` sleeps in WASI host calls: time in host calls is not CPU time, so only the timeout stops it.
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, policy.clone()).await;
    let started = Instant::now();
    let err = call(&spin, "nap", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert_eq!(
        err.message, "plugin did not finish within its timeout of 300ms",
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // A busy loop with a CPU budget above its timeout is stopped by the timeout too.
    policy.limits.cpu = Duration::from_secs(10);
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, policy).await;
    let err = call(&spin, "spin", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn unbounded_memory_growth_hits_the_memory_limit() {
    let sandbox = sandbox();
    let balloon = load(&sandbox, qila_e2e::HOSTILE_BALLOON, tight()).await;
    let err = call(&balloon, "inflate", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::MemoryLimit, "{err}");
    assert!(
        err.message
            .starts_with("plugin memory limit of 33554432 bytes exceeded"),
        "names the limit: {err}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn the_test_harness_applies_the_memory_limit() {
    let harness = Harness::load_with(qila_e2e::HOSTILE_BALLOON, config(), tight())
        .await
        .unwrap();
    // Under the limit an allocation works...
    let out = harness.invoke("grow", json!({"mib": 4})).await.unwrap();
    assert_eq!(out, json!(4u64 << 20));
    // ...and one that would pass it is refused.
    let err = harness
        .invoke("grow", json!({"mib": 48}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::MemoryLimit, "{err}");
    assert!(err.message.contains("33554432"), "{err}");
    // The harness reports load errors as they are.
    match Harness::load("/nonexistent/plugin.wasm").await {
        Err(SandboxError::Io(path, _)) => {
            assert_eq!(path.to_str(), Some("/nonexistent/plugin.wasm"))
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[tokio::test]
async fn recursion_on_the_wasm_stack_is_a_stack_overflow() {
    let sandbox = sandbox();
    let recurse = load(&sandbox, qila_e2e::HOSTILE_RECURSE, tight()).await;
    let err = call(&recurse, "climb", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::StackOverflow, "{err}");
    assert!(err.message.contains("call stack"), "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn recursion_on_the_guest_stack_in_linear_memory_is_a_trap_that_says_why() {
    let sandbox = sandbox();
    let recurse = load(&sandbox, qila_e2e::HOSTILE_RECURSE, tight()).await;
    let err = call(&recurse, "deep", json!({})).await.unwrap_err();
    // A Rust guest keeps address-taken frames in linear memory: recursion runs off its bottom (an out-of-bounds
    // access) before it exhausts the wasm stack.
    assert_eq!(err.kind, ErrorKind::Trap, "{err}");
    assert!(
        err.message.contains("out of bounds") && err.message.contains("recursion"),
        "{err}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_multi_megabyte_output_is_refused() {
    let sandbox = sandbox();
    let mut policy = tight();
    // Room to build the 16 MiB string and its JSON: the output limit, not the memory limit, must refuse it.
    policy.limits.memory_bytes = 128 << 20;
    policy.limits.max_output_bytes = Limits::default().max_output_bytes;
    let flood = load(&sandbox, qila_e2e::HOSTILE_FLOOD, policy).await;
    let err = call(&flood, "flood", json!({"mib": 16})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::OutputTooLarge, "{err}");
    assert!(
        err.message
            .contains("larger than the plugin's limit of 1048576 bytes"),
        "names the limit: {err}"
    );
    // Under the limit the same action works.
    let out = call(&flood, "flood", json!({"mib": 0})).await.unwrap();
    assert_eq!(out, json!({"data": ""}));
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn flooding_the_log_is_capped_not_fatal() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.cpu = Duration::from_secs(2);
    policy.limits.timeout = Duration::from_secs(10);
    let flood = load(&sandbox, qila_e2e::HOSTILE_FLOOD, policy).await;
    // 100 MiB of log lines: past the 256 KiB budget they are dropped and counted, the call succeeds.
    let out = call(&flood, "chatter", json!({})).await.unwrap();
    assert_eq!(out, Value::Null);
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn flooding_stdout_fails_the_write_and_the_call_not_the_host() {
    let sandbox = sandbox();
    let flood = load(&sandbox, qila_e2e::HOSTILE_FLOOD, tight()).await;
    // stdout and stderr are captured up to 64 KiB each; a write past that fails, and Rust's `print!` panics on a
    // failed write. The message carries the tail of what the plugin wrote to stderr: the panic.
    let err = call(&flood, "shout", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Trap, "{err}");
    assert!(
        err.message.contains("failed printing to stdout"),
        "{}",
        &err.message[err.message.len().saturating_sub(400)..]
    );
    assert!(
        err.message.len() < 4096,
        "the stderr tail is capped: {} bytes",
        err.message.len()
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn egress_to_a_host_not_granted_is_denied() {
    let sandbox = sandbox();
    let mut policy = tight();
    policy.egress = vec!["api.example.com".parse().unwrap()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    let err = call(&egress, "exfiltrate", json!({})).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert_eq!(
        err.message, "egress to evil.example.invalid:80 is not granted to plugin `egress`",
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
    assert!(err.message.contains("169.254.169.254:80"), "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_secret_not_granted_is_denied_and_revealing_needs_its_own_grant() {
    let sandbox = sandbox();
    let snoop = load(&sandbox, qila_e2e::HOSTILE_SNOOP, tight()).await;
    let err = call(&snoop, "reveal", json!({"name": "granted_key"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert_eq!(
        err.message, "revealing secret `granted_key` is not granted to plugin `snoop`",
        "{err}"
    );
    // The grant to inject a secret into HTTP requests does not let the plugin read it.
    let inject_only = PluginPolicy {
        secrets: vec!["granted_key".into()],
        ..tight()
    };
    let snoop = load(&sandbox, qila_e2e::HOSTILE_SNOOP, inject_only).await;
    let err = call(&snoop, "reveal", json!({"name": "granted_key"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    host_still_healthy(&sandbox).await;

    let granted = PluginPolicy {
        reveal: vec!["granted_key".into()],
        ..tight()
    };
    let snoop = load(&sandbox, qila_e2e::HOSTILE_SNOOP, granted).await;
    let out = call(&snoop, "reveal", json!({"name": "granted_key"}))
        .await
        .unwrap();
    assert_eq!(out, json!({"value": SECRET_VALUE}));
    let err = call(&snoop, "reveal", json!({"name": "other"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(err.message.contains("`other`"), "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_the_plugin() {
    let sandbox = sandbox();
    let balloon = load(&sandbox, qila_e2e::HOSTILE_BALLOON, tight()).await;
    let err = call(&balloon, "grow", json!({"mib": "lots"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert!(
        err.message.contains("at /mib"),
        "points at the field: {err}"
    );
    let err = call(&balloon, "no-such-action", json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert_eq!(
        err.message, "plugin `balloon` has no action `no-such-action`",
        "{err}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn core_modules_and_garbage_are_not_components() {
    let sandbox = sandbox();
    // The smallest valid core module: magic, version 1.
    let module = b"\0asm\x01\0\0\0";
    match sandbox.load(module, PluginPolicy::default()).await {
        Err(e @ SandboxError::NotAComponent(_)) => {
            let m = e.to_string();
            assert!(
                m.starts_with("not a WebAssembly component: this is a core WebAssembly module")
                    && m.contains("wasm32-wasip2"),
                "{m}"
            )
        }
        other => panic!("expected NotAComponent, got {other:?}"),
    }
    for garbage in [&b"#!/bin/sh\nrm -rf /\n"[..], b"", b"\0as"] {
        match sandbox.load(garbage, PluginPolicy::default()).await {
            Err(SandboxError::NotAComponent(m)) => assert!(m.contains("magic bytes"), "{m}"),
            other => panic!("expected NotAComponent, got {other:?}"),
        }
    }
    host_still_healthy(&sandbox).await;
}

/// A loopback server that answers every request `200 ok`.
fn answering_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// A loopback server that answers every request `200 ok` and counts the connections it accepts.
fn counting_server() -> (u16, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn loopback_private_and_metadata_addresses_are_denied_even_under_a_wildcard_grant() {
    // A live server on loopback: a refusal must come before any connection, not from a closed port.
    let (port, accepted) = counting_server();
    let sandbox = sandbox();
    let mut policy = tight();
    policy.egress = vec!["*".parse().unwrap()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    for (url, kind) in [
        (format!("http://127.0.0.1:{port}/"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "link-local",
        ),
        // A name: refused by the plugin's HTTP client resolver, after DNS.
        (format!("http://localhost:{port}/"), "loopback"),
        ("http://[::1]:9/".into(), "loopback"),
        ("http://[::ffff:169.254.169.254]/".into(), "link-local"),
        (format!("http://[::ffff:127.0.0.1]:{port}/"), "loopback"),
        ("http://10.0.0.1/".into(), "private"),
        ("http://192.168.1.1/".into(), "private"),
        ("http://100.64.0.1/".into(), "shared (carrier-grade NAT)"),
        (format!("http://0.0.0.0:{port}/"), "unspecified"),
        // Integer and hex spellings of 127.0.0.1 are the same address.
        (format!("http://2130706433:{port}/"), "loopback"),
        (format!("http://0x7f.1:{port}/"), "loopback"),
    ] {
        let err = call(&egress, "fetch", json!({"url": url}))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Denied, "{url}: {err}");
        assert!(
            err.message.starts_with("egress to ")
                && err.message.contains(&format!(" {kind} address"))
                && err.message.contains("grant the address")
                && err.message.ends_with("(plugin `egress`)"),
            "{url}: {err}"
        );
    }
    // The metadata address, in full: the host, the address, why, and what to grant.
    let err = call(
        &egress,
        "fetch",
        json!({"url": "http://169.254.169.254/latest/meta-data/"}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.message,
        "egress to 169.254.169.254: a link-local address, which a name pattern or `*` never opens; grant the \
         address (`169.254.169.254` or a range containing it) to allow it (plugin `egress`)"
    );
    let err = call(
        &egress,
        "fetch",
        json!({"url": format!("http://localhost:{port}/")}),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.starts_with("egress to localhost: resolves to ")
            && err.message.contains("a loopback address"),
        "names the host, the address it resolves to and why: {err}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_name_grant_never_opens_a_restricted_address_and_the_refusal_carries_no_secret() {
    let (port, accepted) = counting_server();
    let sandbox = sandbox();
    let mut policy = tight();
    // The name itself is granted, and the secret too: the address still is not.
    policy.egress = vec![
        format!("localhost:{port}").parse().unwrap(),
        "*.localhost".parse().unwrap(),
    ];
    policy.secrets = vec!["granted_key".into()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy.clone()).await;
    let err = call(
        &egress,
        "fetch",
        json!({"url": format!("http://localhost:{port}/"), "bearer_secret": "granted_key"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Denied, "{err}");
    assert!(
        err.message.starts_with("egress to localhost: resolves to ")
            && err.message.contains("loopback"),
        "{err}"
    );
    assert!(!err.message.contains(SECRET_VALUE), "{err}");
    assert!(
        !err.message.to_ascii_lowercase().contains("bearer"),
        "{err}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );

    // Granting the addresses as well opens the name: the resolver hands the client the granted addresses.
    policy.egress.push("127.0.0.1".parse().unwrap());
    policy.egress.push("[::1]".parse().unwrap());
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    let out = call(
        &egress,
        "fetch",
        json!({"url": format!("http://localhost:{port}/")}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"status": 200}));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn an_address_range_grant_opens_the_addresses_in_it() {
    let (port, accepted) = counting_server();
    let sandbox = sandbox();
    let mut policy = tight();
    policy.egress = vec![format!("127.0.0.0/8:{port}").parse().unwrap()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    let out = call(
        &egress,
        "fetch",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"status": 200}));
    // Outside the range, or the range on another port: not granted.
    for url in [
        format!("http://10.0.0.1:{port}/"),
        "http://127.0.0.1:9/".to_string(),
    ] {
        let err = call(&egress, "fetch", json!({"url": url}))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Denied, "{url}: {err}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_address_grant_opens_that_address_and_nothing_else() {
    let port = answering_server();
    let sandbox = sandbox();
    let mut policy = tight();
    policy.egress = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    let out = call(
        &egress,
        "fetch",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap();
    assert_eq!(out, json!({"status": 200}));
    // The same address by another name, or another port, is not the grant.
    for url in [
        format!("http://localhost:{port}/"),
        "http://127.0.0.1:9/".to_string(),
    ] {
        let err = call(&egress, "fetch", json!({"url": url}))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Denied, "{url}: {err}");
    }
}

#[tokio::test]
async fn files_and_environment_are_invisible_to_a_plugin() {
    let sandbox = sandbox();
    let probe = load(&sandbox, qila_e2e::HOSTILE_PROBE, tight()).await;
    for path in ["/etc/passwd", "./Cargo.toml", "../../../../etc/hostname"] {
        let out = call(&probe, "read-file", json!({"path": path}))
            .await
            .unwrap();
        assert_eq!(out["content"], Value::Null, "{path}: {out}");
        assert!(out["error"].is_string(), "{path}: {out}");
    }
    for path in ["/", ".", "/tmp"] {
        let out = call(&probe, "list-dir", json!({"path": path}))
            .await
            .unwrap();
        assert_eq!(out["content"], Value::Null, "{path}: {out}");
    }
    // The host has an environment; the plugin must not see it.
    assert!(std::env::vars().next().is_some());
    let out = call(&probe, "environment", json!({})).await.unwrap();
    assert_eq!(out["vars"], json!([]), "{out}");
    assert!(
        out["args"].as_array().unwrap().len() <= 1,
        "at most a program name: {out}"
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn clocks_are_readable_and_a_sleep_counts_against_the_wall_clock_not_the_cpu() {
    let sandbox = sandbox();
    let probe = load(&sandbox, qila_e2e::HOSTILE_PROBE, tight()).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = call(&probe, "clock", json!({"sleep_ms": 50}))
        .await
        .unwrap();
    assert!(
        out["wall_ms"].as_u64().unwrap().abs_diff(now_ms) < 60_000,
        "{out}"
    );
    assert!(out["slept_ms"].as_u64().unwrap() >= 45, "{out}");
    // 1 s of sleep against a 200 ms CPU budget: sleeping is not computing.
    let out = call(&probe, "clock", json!({"sleep_ms": 1000}))
        .await
        .unwrap();
    assert!(out["slept_ms"].as_u64().unwrap() >= 990, "{out}");
    // Past the 2 s wall-clock timeout, it is stopped.
    let started = Instant::now();
    let err = call(&probe, "clock", json!({"sleep_ms": 10_000}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    host_still_healthy(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_in_the_middle_of_an_http_call_ends_the_call_and_drops_the_connection() {
    use std::io::Read;
    // Accepts, never answers, and reports when the client hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (hung_up, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            let _ = hung_up.send(());
        }
    });
    let sandbox = sandbox();
    let mut policy = tight();
    policy.limits.timeout = Duration::from_secs(1);
    policy.egress = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, policy).await;
    let err = call(
        &egress,
        "fetch",
        json!({"url": format!("http://127.0.0.1:{port}/slow")}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    // Wait off the runtime's threads, which must stay free to close the connection.
    tokio::task::spawn_blocking(move || closed.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("the host dropped the connection of the stopped call");
    host_still_healthy(&sandbox).await;
}

#[tokio::test]
async fn a_trap_right_after_an_http_call_fails_the_call_not_the_host() {
    let port = answering_server();
    let sandbox = sandbox();
    let mut policy = tight();
    policy.egress = vec![format!("127.0.0.1:{port}").parse().unwrap()];
    let probe = load(&sandbox, qila_e2e::HOSTILE_PROBE, policy).await;
    let err = call(
        &probe,
        "fetch-then-trap",
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Trap, "{err}");
    assert!(err.message.contains("trapping with an HTTP 200"), "{err}");
    host_still_healthy(&sandbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_plugin_is_unaffected_by_hostile_neighbours() {
    let sandbox = sandbox();
    let mut wildcard = tight();
    wildcard.egress = vec!["*".parse().unwrap()];
    let spin = load(&sandbox, qila_e2e::HOSTILE_SPIN, tight()).await;
    let balloon = load(&sandbox, qila_e2e::HOSTILE_BALLOON, tight()).await;
    let probe = load(&sandbox, qila_e2e::HOSTILE_PROBE, tight()).await;
    let egress = load(&sandbox, qila_e2e::HOSTILE_EGRESS, wildcard).await;
    let core = core(&sandbox).await;
    let hostile = async {
        tokio::join!(
            call(&spin, "spin", json!({})),
            call(&balloon, "inflate", json!({})),
            call(&probe, "clock", json!({"sleep_ms": 10_000})),
            call(&egress, "fetch", json!({"url": "http://169.254.169.254/"})),
        )
    };
    let good = async {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let core = core.clone();
                tokio::spawn(async move { (i, call(&core, "echo", json!({"i": i})).await) })
            })
            .collect();
        let mut outputs = Vec::new();
        for handle in handles {
            outputs.push(handle.await.unwrap());
        }
        outputs
    };
    let ((spun, inflated, slept, fetched), echoes) = tokio::join!(hostile, good);
    assert_eq!(spun.unwrap_err().kind, ErrorKind::CpuLimit);
    assert_eq!(inflated.unwrap_err().kind, ErrorKind::MemoryLimit);
    assert_eq!(slept.unwrap_err().kind, ErrorKind::Timeout);
    assert_eq!(fetched.unwrap_err().kind, ErrorKind::Denied);
    assert_eq!(echoes.len(), 200);
    for (i, out) in echoes {
        assert_eq!(out.unwrap(), json!({"i": i}), "echo {i}");
    }
}
