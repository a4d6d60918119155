//! The per-instance state of a plugin and the host side of its imports (`log`, `http`, `secrets`, `kv`).

use std::sync::Arc;
use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::address;
use crate::bindings::qila::plugin::{http, kv, log, secrets, types};
use crate::error::LimitTrap;
use crate::policy::PluginPolicy;
use crate::services::HostServices;

/// Bytes a plugin may write to stdout and stderr (each) in one invocation; the rest fails the write.
pub(crate) const STDIO_CAPACITY: usize = 64 << 10;
/// Bytes of `log` messages a plugin may write in one invocation; later messages are dropped and counted.
const LOG_BUDGET: usize = 256 << 10;
/// Longest key-value key, in bytes.
const KV_MAX_KEY: usize = 512;
/// Largest key-value value, in bytes.
const KV_MAX_VALUE: usize = 1 << 20;

/// Who is calling: the plugin, the run and step, and what the plugin may do.
#[derive(Debug, Clone)]
pub(crate) struct CallScope {
    pub plugin: Arc<str>,
    /// The plugin's HTTP client, whose resolver enforces its policy's addresses.
    pub http: crate::address::PolicyClient,
    pub policy: Arc<PluginPolicy>,
    pub services: HostServices,
    pub run_id: String,
    pub step_id: String,
    pub deadline: Instant,
}

/// The data of one plugin instance's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub scope: CallScope,
    /// CPU time (ns) the instance may still spend executing WebAssembly: each epoch tick that finds it running
    /// costs one tick; time spent in host calls is given back (see `runtime::account_cpu`).
    pub cpu_budget_ns: i64,
    /// The budget it started with.
    pub cpu_limit_ns: i64,
    /// When the instance entered the current host call, if it is in one.
    pub host_entered: Option<Instant>,
    log_budget: usize,
    logs_dropped: usize,
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

impl HostState {
    pub fn new(scope: CallScope) -> Self {
        let cpu_limit_ns = i64::try_from(scope.policy.limits.cpu.as_nanos()).unwrap_or(i64::MAX);
        let stdout = MemoryOutputPipe::new(STDIO_CAPACITY);
        let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
        // No environment, arguments, preopened directories, sockets or name lookups: the builder grants none of
        // them unless asked, and we ask for none.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limiter = MemoryLimiter {
            limit: scope.policy.limits.memory_bytes,
        };
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            scope,
            cpu_budget_ns: cpu_limit_ns,
            cpu_limit_ns,
            host_entered: None,
            log_budget: LOG_BUDGET,
            logs_dropped: 0,
            stdout,
            stderr,
        }
    }

    /// Writes what the plugin printed to stdout and stderr, and how many log lines were dropped, to the host log.
    pub fn flush_diagnostics(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if !bytes.is_empty() {
                tracing::debug!(
                    target: "qila::plugin",
                    plugin = %self.scope.plugin,
                    stream,
                    output = %String::from_utf8_lossy(&bytes),
                );
            }
        }
        if self.logs_dropped > 0 {
            tracing::warn!(
                target: "qila::plugin",
                plugin = %self.scope.plugin,
                dropped = self.logs_dropped,
                "plugin exceeded its log budget; messages were dropped"
            );
        }
    }

    fn denied(&self, what: String) -> types::Error {
        types::Error::Denied(format!(
            "{what} is not granted to plugin `{}`",
            self.scope.plugin
        ))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Refuses memory growth past the plugin's limit with a [`LimitTrap`] that the runtime recognises.
pub(crate) struct MemoryLimiter {
    limit: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(LimitTrap::Memory {
                limit: self.limit,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        if message.len() > self.log_budget {
            self.logs_dropped += 1;
            return;
        }
        self.log_budget -= message.len();
        let plugin = &*self.scope.plugin;
        let (run, step) = (&self.scope.run_id, &self.scope.step_id);
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "qila::plugin", $lvl, plugin, run, step, "{message}")
            };
        }
        match level {
            log::Level::Trace => emit!(tracing::Level::TRACE),
            log::Level::Debug => emit!(tracing::Level::DEBUG),
            log::Level::Info => emit!(tracing::Level::INFO),
            log::Level::Warn => emit!(tracing::Level::WARN),
            log::Level::Error => emit!(tracing::Level::ERROR),
        }
    }
}

impl secrets::Host for HostState {
    async fn reveal(&mut self, name: String) -> Result<String, types::Error> {
        if !self.scope.policy.allows_reveal(&name) {
            return Err(self.denied(format!("revealing secret `{name}`")));
        }
        let services = self.scope.services.clone();
        services
            .secrets
            .audit_reveal(
                &self.scope.plugin,
                &name,
                &self.scope.run_id,
                &self.scope.step_id,
            )
            .await
            .map_err(|e| {
                types::Error::Transient(format!(
                    "cannot record the reveal of `{name}` in the audit log: {e}"
                ))
            })?;
        self.scope
            .services
            .secrets
            .resolve(&name)
            .ok_or_else(|| types::Error::NotFound(format!("secret `{name}` has no value")))
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, types::Error> {
        self.check_kv()?;
        check_key(&key)?;
        let kv = self.scope.services.kv.clone();
        kv.get(&self.scope.plugin, &key)
            .await
            .map_err(types::Error::Transient)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), types::Error> {
        self.check_kv()?;
        check_key(&key)?;
        if value.len() > KV_MAX_VALUE {
            return Err(types::Error::InvalidInput(format!(
                "value of {} bytes is larger than the {KV_MAX_VALUE}-byte limit",
                value.len()
            )));
        }
        let kv = self.scope.services.kv.clone();
        kv.set(&self.scope.plugin, &key, value)
            .await
            .map_err(types::Error::Transient)
    }

    async fn delete(&mut self, key: String) -> Result<(), types::Error> {
        self.check_kv()?;
        check_key(&key)?;
        let kv = self.scope.services.kv.clone();
        kv.delete(&self.scope.plugin, &key)
            .await
            .map_err(types::Error::Transient)
    }
}

impl HostState {
    /// Refuses key-value calls of a plugin that was not granted the `kv` pack.
    fn check_kv(&self) -> Result<(), types::Error> {
        if self.scope.policy.allows_pack("kv") {
            Ok(())
        } else {
            Err(self.denied("the `kv` pack".to_string()))
        }
    }
}

fn check_key(key: &str) -> Result<(), types::Error> {
    if key.is_empty() || key.len() > KV_MAX_KEY {
        return Err(types::Error::InvalidInput(format!(
            "key must be 1 to {KV_MAX_KEY} bytes long"
        )));
    }
    Ok(())
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> Result<http::Response, types::Error> {
        let url = url::Url::parse(&request.url).map_err(|e| {
            types::Error::InvalidInput(format!("invalid URL {:?}: {e}", request.url))
        })?;
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(types::Error::InvalidInput(format!(
                "URL scheme `{scheme}` is not http or https"
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| types::Error::InvalidInput("URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        if !self.scope.policy.allows_egress(scheme, host, port) {
            return Err(self.denied(format!("egress to {host}:{port}")));
        }
        // After DNS, loopback, private, link-local and other restricted addresses only when granted by address.
        // The client connects to an IP literal without resolving it, so a literal is checked here; a name is
        // checked by the client's resolver, on exactly the addresses it connects to.
        if let Some(ip) = address::literal(host) {
            address::check(&self.scope.policy, host, ip, false)
                .map_err(|refused| egress_refused(&self.scope.plugin, &refused))?;
        }
        let client = self.scope.http.get().map_err(|e| {
            types::Error::Failed(format!("the host has no HTTP client for this plugin: {e}"))
        })?;
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                types::Error::InvalidInput(format!("invalid HTTP method {:?}", request.method))
            })?;

        let mut builder = client.request(method, url.clone());
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("authorization") && request.bearer_secret.is_some() {
                return Err(types::Error::InvalidInput(
                    "set either an Authorization header or bearer-secret, not both".into(),
                ));
            }
            builder = builder.header(name, value);
        }
        if let Some(secret) = &request.bearer_secret {
            if !self.scope.policy.allows_secret(secret) {
                return Err(self.denied(format!("secret `{secret}`")));
            }
            let value =
                self.scope.services.secrets.resolve(secret).ok_or_else(|| {
                    types::Error::NotFound(format!("secret `{secret}` has no value"))
                })?;
            builder = builder.bearer_auth(value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let remaining = self
            .scope
            .deadline
            .saturating_duration_since(Instant::now());
        let timeout = match request.timeout_ms {
            Some(ms) => remaining.min(std::time::Duration::from_millis(u64::from(ms))),
            None => remaining,
        };
        let started = Instant::now();
        let cap = self.scope.policy.limits.max_http_body_bytes;
        // The exchange runs as a task of its own, bounded by its own timeout: if the plugin's call is stopped
        // (timeout, trap) while it waits, the guard aborts the task and the connection closes, and even a call
        // whose future is never dropped cannot keep a connection past the step's deadline.
        let host_name = host.to_string();
        let url = url.clone();
        let plugin = self.scope.plugin.clone();
        let exchange = tokio::spawn(async move {
            let mut response = builder
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| http_error(&plugin, &url, e))?;
            let status = response.status().as_u16();
            let headers: Vec<(String, String)> = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| http_error(&plugin, &url, e))?
            {
                if body.len() + chunk.len() > cap {
                    return Err(types::Error::Failed(format!(
                        "response body from {host_name} is larger than the plugin's {cap}-byte limit"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        });
        let (status, headers, body) = AbortOnDrop(exchange).join().await.map_err(|e| {
            types::Error::Transient(format!("the request to {host} was interrupted: {e}"))
        })??;
        tracing::debug!(
            target: "qila::plugin",
            plugin = %self.scope.plugin,
            %host, status, bytes = body.len(), elapsed_ms = started.elapsed().as_millis() as u64,
            "http"
        );
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

/// Aborts a spawned task when dropped before it ended.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The `denied` error of a restricted address refused to `plugin`.
fn egress_refused(plugin: &str, refused: &address::EgressRefused) -> types::Error {
    types::Error::Denied(format!("{refused} (plugin `{plugin}`)"))
}

/// Classifies a client error; the message names the host, never headers (which may carry a secret).
fn http_error(plugin: &str, url: &url::Url, e: reqwest::Error) -> types::Error {
    let host = url.host_str().unwrap_or("?");
    let e = e.without_url();
    match address::resolve_error(&e) {
        Some(address::ResolveError::Refused(refused)) => return egress_refused(plugin, refused),
        Some(other) => return types::Error::Transient(other.to_string()),
        None => {}
    }
    if e.is_timeout() {
        types::Error::Transient(format!("request to {host} timed out"))
    } else if e.is_connect() {
        types::Error::Transient(format!("cannot connect to {host}: {e}"))
    } else if e.is_builder() {
        types::Error::InvalidInput(format!("invalid request to {host}: {e}"))
    } else {
        types::Error::Transient(format!("request to {host} failed: {e}"))
    }
}
