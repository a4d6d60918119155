//! Runs Qila plugins — WebAssembly components of the `qila:plugin/action-plugin` world — in sandboxes.
//!
//! Every invocation gets a fresh instance, created from a pre-linked [`wasmtime::component::InstancePre`] out of a
//! pooling allocator, so no state leaks between steps and the cost stays in microseconds. Each instance runs under
//! the limits its administrator set ([`Limits`]: memory, CPU time through epoch interruption, wall-clock time,
//! output size) and with WASI locked down: no environment, arguments, preopened directories or sockets. Everything
//! else a plugin may do goes through the host interfaces of `wit/plugin.wit`, checked against its [`Grants`].
//!
//! Detector plugins — components of the `qila:plugin/detector-plugin` world, which receive batches of events and
//! return findings — load with [`Sandbox::load_detector`] and run with [`DetectorPlugin::detect`], under the same
//! engine, pool, limits and locked-down WASI; their only host import is `log`.
//!
//! This is the only crate of the host that depends on wasmtime.
//!
//! ```no_run
//! # async fn demo() -> Result<(), qila_sandbox::SandboxError> {
//! use qila_sandbox::{Sandbox, SandboxConfig, PluginPolicy, InvocationContext};
//! let sandbox = Sandbox::new(SandboxConfig::default())?;
//! let bytes = std::fs::read("enrich.wasm").map_err(|e| qila_sandbox::SandboxError::Io("enrich.wasm".into(), e))?;
//! let plugin = sandbox.load(&bytes, PluginPolicy::default()).await?;
//! let output = plugin
//!     .invoke("classify-ip", &serde_json::json!({"ip": "10.0.0.1"}), &InvocationContext::adhoc("demo"))
//!     .await;
//! # Ok(()) }
//! ```

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod address;
mod bindings;
mod cache;
mod detector;
mod egress;
mod error;
mod expressions;
mod host;
mod plugin;
mod policy;
mod runtime;
mod services;
pub mod testing;

pub use detector::{
    DetectorInfo, DetectorPlugin, Finding, LEVELS, MAX_FINDINGS, MAX_GROUP_KEY, MAX_RULE_ID,
    MAX_RULES, MAX_TAG, MAX_TAGS, MAX_TITLE, RuleInfo,
};
pub use egress::{HostPattern, HostPatternError};
pub use error::{ErrorKind, InvokeError, SandboxError};
pub use expressions::{ExpressionLimits, SandboxedEvaluator};
pub use plugin::{ActionInfo, InvocationContext, Manifest, Plugin};
pub use policy::{Limits, PluginPolicy};
pub use runtime::{Sandbox, SandboxConfig};
pub use services::{HostServices, KvBackend, KvFuture, MemoryKv, SecretStore, StaticSecrets};
