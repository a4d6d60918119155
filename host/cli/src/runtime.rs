//! The pieces a command needs, put together: the store, the plugin registry (every plugin loaded under its
//! grants), the plugin catalog for validation and version pinning, the executor for the engine, and the
//! orchestrator of a locked data directory.

use std::sync::Arc;

use anyhow::Context;
use qila_engine::{Options, Orchestrator, PluginCatalog, StepCall, StepError, StepExecutor};
use qila_sandbox::{
    ExpressionLimits, HostServices, InvocationContext, KvBackend, KvFuture, Sandbox, SandboxConfig,
    SandboxedEvaluator,
};
use qila_store::Store;
use serde_json::Value;

use crate::config::Settings;
use crate::lock::DataDirLock;
use crate::registry::{HostSecrets, Registry, Sources};

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}
pub use bundled::{BUNDLED_DETECTORS, BUNDLED_PLAYBOOKS, BUNDLED_PLUGINS, BUNDLED_RULES};

/// The store and the plugins.
pub struct Runtime {
    pub store: Store,
    pub registry: Arc<Registry>,
    /// The limits of `${{ }}` evaluation (`expressions:` in `qila.yaml`).
    pub expression_limits: ExpressionLimits,
    /// Where compiled components are cached.
    pub cache_dir: std::path::PathBuf,
}

/// A data directory this process drives runs in: its lock, the loaded runtime and a started orchestrator.
pub struct Driver {
    /// Held for as long as the orchestrator runs.
    pub _lock: DataDirLock,
    pub runtime: Runtime,
    pub orchestrator: Orchestrator,
}

impl Driver {
    /// Locks the data directory (refusing when another process holds it), opens the runtime and starts the
    /// orchestrator as the directory's sole worker, which resumes every unfinished run.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let lock = DataDirLock::acquire(&settings.data_dir())?;
        tracing::debug!(lock = %lock.path().display(), "data directory locked");
        let runtime = Runtime::open(settings).await?;
        let evaluator = SandboxedEvaluator::new(
            runtime.expression_limits.clone(),
            Some(runtime.cache_dir.clone()),
        )
        .context("cannot start the expression evaluator")?;
        let orchestrator = Orchestrator::start(
            runtime.store.clone(),
            Arc::new(runtime.executor()),
            Arc::new(evaluator),
            runtime.catalog(),
            Options {
                sole_worker: true,
                ..Options::default()
            },
        )
        .await
        .context("cannot start the orchestrator")?;
        Ok(Self {
            _lock: lock,
            runtime,
            orchestrator,
        })
    }
}

impl Runtime {
    /// Opens the store in the data directory and loads the plugins (see [`Registry::open`]). A plugin that does
    /// not load is reported in the registry's failures (and as a warning), not fatal.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let data_dir = settings.data_dir();
        let config = settings.load_config()?;
        let expression_limits = config.expressions.limits()?;
        let store = Store::open_with(&data_dir, settings.store_options())
            .await
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        let secrets = Arc::new(
            HostSecrets::load(&config, store.clone())
                .await
                .context("cannot open the stored secrets")?,
        );
        let services = HostServices::new(secrets.clone(), Arc::new(StoreKv(store.clone())));
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(data_dir.join("cache")),
            services,
            ..SandboxConfig::default()
        })?;
        let registry = Registry::open(
            sandbox,
            store.clone(),
            secrets,
            Sources {
                data_dir: &data_dir,
                plugins_dir: &settings.plugins_dir(),
                config: &config,
                bundled: BUNDLED_PLUGINS,
                dev: settings.dev(),
            },
        )
        .await?;
        Ok(Self {
            store,
            registry: Arc::new(registry),
            expression_limits,
            cache_dir: data_dir.join("cache"),
        })
    }

    /// The plugins as the orchestrator's catalog (it adds the built-in actions itself).
    pub fn catalog(&self) -> Arc<dyn PluginCatalog> {
        self.registry.clone()
    }

    /// The plugins with the engine's built-in actions (`core.approval`, `core.sleep`, `core.playbook`), as
    /// playbooks see them: what `qila validate` checks against.
    pub fn playbook_catalog(&self) -> qila_engine::BuiltinCatalog {
        qila_engine::BuiltinCatalog::over(self.catalog())
    }

    /// The executor that runs steps in the sandbox, with the plugins in use when each step starts.
    pub fn executor(&self) -> SandboxExecutor {
        SandboxExecutor {
            registry: self.registry.clone(),
        }
    }
}

/// Runs steps as plugin invocations in the sandbox.
pub struct SandboxExecutor {
    registry: Arc<Registry>,
}

impl StepExecutor for SandboxExecutor {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        if call.plugin == crate::siem::PACK {
            return crate::siem::execute(self.registry.store(), &call.action, &call.input).await;
        }
        let plugin = self
            .registry
            .snapshot()
            .loaded
            .get(&call.plugin)
            .map(|p| p.plugin.clone())
            .ok_or_else(|| {
                StepError::new(
                    "not-found",
                    format!("plugin `{}` is not loaded", call.plugin),
                )
            })?;
        let ctx = InvocationContext {
            run_id: call.run_id,
            step_id: call.step_id,
            attempt: call.attempt,
            idempotency_key: call.idempotency_key,
        };
        let result = plugin.invoke(&call.action, &call.input, &ctx).await;
        // A plugin granted to reveal secrets could echo them: their values never reach a run record.
        let revealed = self.registry.revealable(&plugin);
        match result {
            Ok(mut output) => {
                redact(&mut output, &revealed);
                Ok(output)
            }
            Err(e) => {
                let mut message = Value::String(e.message);
                redact(&mut message, &revealed);
                Err(StepError::new(
                    e.kind.as_str(),
                    message.as_str().unwrap_or_default(),
                ))
            }
        }
    }
}

/// Replaces every occurrence of a secret's value in the strings of `value` with `[secret NAME]`.
fn redact(value: &mut Value, secrets: &[(String, String)]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            for (name, secret) in secrets {
                if !secret.is_empty() && s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), &format!("[secret {name}]"));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| redact(v, secrets)),
        _ => {}
    }
}

/// Plugin key-value data in the store.
struct StoreKv(Store);

impl KvBackend for StoreKv {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.0
                .kv_get(namespace, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn set<'a>(&'a self, namespace: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .kv_set(namespace, key, &value)
                .await
                .map_err(|e| e.to_string())
        })
    }
    fn delete<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .kv_delete(namespace, key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
