//! The pieces a command needs, put together: the store, the sandbox with every plugin loaded under its grants,
//! the plugin catalog for validation and version pinning, the executor for the engine, and the orchestrator of a
//! locked data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use qila_engine::{Options, Orchestrator, PluginCatalog, StepCall, StepError, StepExecutor};
use qila_model::{ActionCatalog, did_you_mean};
use qila_sandbox::{
    HostServices, InvocationContext, KvBackend, KvFuture, Plugin, Sandbox, SandboxConfig,
    StaticSecrets,
};
use qila_store::Store;
use serde_json::Value;

use crate::config::Settings;
use crate::lock::DataDirLock;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}
pub use bundled::{BUNDLED_PLAYBOOKS, BUNDLED_PLUGINS};

/// Where a plugin came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Embedded in the binary.
    Bundled,
    /// A component file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Bundled => f.write_str("bundled"),
            Origin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin file that could not be loaded, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub origin: Origin,
    pub error: String,
}

/// Every loaded plugin by name, with where it came from.
pub struct Plugins {
    pub loaded: BTreeMap<String, (Plugin, Origin)>,
    pub failures: Vec<LoadFailure>,
}

/// The store, the sandbox and the plugins.
pub struct Runtime {
    pub store: Store,
    pub plugins: Arc<Plugins>,
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
        let orchestrator = Orchestrator::start(
            runtime.store.clone(),
            Arc::new(runtime.executor()),
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
    /// Opens the store in the data directory and loads the bundled plugins and those in the plugins directory,
    /// each under the grants the configuration gives it. A plugin file that does not load is reported in
    /// `plugins.failures` (and as a warning), not fatal.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let data_dir = settings.data_dir();
        let config = settings.load_config()?;
        let store = Store::open(&data_dir)
            .await
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        let services = HostServices::new(
            Arc::new(StaticSecrets(config.resolve_secrets())),
            Arc::new(StoreKv(store.clone())),
        );
        let sandbox = Sandbox::new(SandboxConfig {
            cache_dir: Some(data_dir.join("cache")),
            services,
            ..SandboxConfig::default()
        })?;

        let mut sources: Vec<(Origin, Vec<u8>)> = BUNDLED_PLUGINS
            .iter()
            .map(|(_, bytes)| (Origin::Bundled, bytes.to_vec()))
            .collect();
        let mut failures = Vec::new();
        for path in component_files(&settings.plugins_dir())? {
            match std::fs::read(&path) {
                Ok(bytes) => sources.push((Origin::File(path), bytes)),
                Err(e) => failures.push(LoadFailure {
                    origin: Origin::File(path),
                    error: e.to_string(),
                }),
            }
        }
        let mut loaded = BTreeMap::new();
        for (origin, bytes) in sources {
            let plugin = match sandbox.load(&bytes, Default::default()).await {
                Ok(plugin) => plugin,
                Err(e) => {
                    failures.push(LoadFailure {
                        origin,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            let name = plugin.name().to_string();
            if let Some((_, first)) = loaded.get(&name) {
                failures.push(LoadFailure {
                    origin,
                    error: format!("a plugin named `{name}` is already loaded from {first}"),
                });
                continue;
            }
            let plugin = plugin.with_policy(config.policy_for(&name)?);
            loaded.insert(name, (plugin, origin));
        }
        for failure in &failures {
            tracing::warn!(plugin = %failure.origin, error = %failure.error, "plugin not loaded");
        }
        Ok(Self {
            store,
            plugins: Arc::new(Plugins { loaded, failures }),
        })
    }

    /// The loaded plugins as the orchestrator's catalog (it adds the built-in actions itself).
    pub fn catalog(&self) -> Arc<dyn PluginCatalog> {
        self.plugins.clone()
    }

    /// The loaded plugins with the engine's built-in actions (`core.approval`, `core.sleep`, `core.playbook`), as
    /// playbooks see them: what `qila validate` checks against.
    pub fn playbook_catalog(&self) -> qila_engine::BuiltinCatalog {
        qila_engine::BuiltinCatalog::over(self.catalog())
    }

    /// The executor that runs steps in the sandbox.
    pub fn executor(&self) -> SandboxExecutor {
        SandboxExecutor {
            plugins: self
                .plugins
                .loaded
                .iter()
                .map(|(n, (p, _))| (n.clone(), p.clone()))
                .collect(),
        }
    }
}

/// `*.wasm` files directly in `dir`, sorted; none when `dir` does not exist.
fn component_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the plugins directory {}", dir.display()));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

impl ActionCatalog for Plugins {
    fn input_schema(&self, plugin: &str, action: &str) -> Result<Value, String> {
        let Some((p, _)) = self.loaded.get(plugin) else {
            return Err(format!(
                "unknown plugin `{plugin}`{}",
                did_you_mean(plugin, self.loaded.keys().map(String::as_str))
            ));
        };
        match p.action(action) {
            Some(a) => Ok(a.input_schema.clone()),
            None => Err(format!(
                "plugin `{plugin}` has no action `{action}`{}",
                did_you_mean(action, p.manifest().actions.iter().map(|a| a.name.as_str()))
            )),
        }
    }
}

impl PluginCatalog for Plugins {
    fn digest(&self, plugin: &str) -> Option<String> {
        // Computed once, when the sandbox loaded the component.
        self.loaded.get(plugin).map(|(p, _)| p.digest().to_string())
    }
}

/// Runs steps as plugin invocations in the sandbox.
pub struct SandboxExecutor {
    plugins: BTreeMap<String, Plugin>,
}

impl StepExecutor for SandboxExecutor {
    async fn execute(&self, call: StepCall) -> Result<Value, StepError> {
        let plugin = self.plugins.get(&call.plugin).ok_or_else(|| {
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
        plugin
            .invoke(&call.action, &call.input, &ctx)
            .await
            .map_err(|e| StepError::new(e.kind.as_str(), e.message))
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
