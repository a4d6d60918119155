//! Run a plugin component through the real sandbox from a test.
//!
//! ```no_run
//! # async fn demo() {
//! let harness = qila_sandbox::testing::Harness::load("target/wasm32-wasip2/release/my_plugin.wasm").await.unwrap();
//! let out = harness.invoke("greet", serde_json::json!({"name": "Ada"})).await.unwrap();
//! # }
//! ```

use std::path::Path;

use serde_json::Value;

use crate::{
    InvocationContext, InvokeError, Plugin, PluginPolicy, Sandbox, SandboxConfig, SandboxError,
};

/// A sandbox with one plugin loaded, for tests.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The loaded plugin.
    pub plugin: Plugin,
}

impl Harness {
    /// Loads the component at `path` with no grants and default limits.
    pub async fn load(path: impl AsRef<Path>) -> Result<Self, SandboxError> {
        Self::load_with(path, SandboxConfig::default(), PluginPolicy::default()).await
    }

    /// Loads the component at `path` into a sandbox made from `config`, under `policy`.
    pub async fn load_with(
        path: impl AsRef<Path>,
        config: SandboxConfig,
        policy: PluginPolicy,
    ) -> Result<Self, SandboxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| SandboxError::Io(path.to_path_buf(), e))?;
        let sandbox = Sandbox::new(config)?;
        Ok(Self {
            plugin: sandbox.load(&bytes, policy).await?,
        })
    }

    /// Invokes `action` with `input` as step `test` of run `test`.
    pub async fn invoke(&self, action: &str, input: Value) -> Result<Value, InvokeError> {
        self.plugin
            .invoke(action, &input, &InvocationContext::adhoc("test"))
            .await
    }
}
