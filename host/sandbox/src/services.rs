//! What the host lends plugins through their imports: secrets, a key-value store and an HTTP client.
//!
//! The sandbox defines these as traits so that the store crate (or a test) provides the storage, and this crate
//! stays free of databases.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future returned by [`KvBackend`] methods.
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Persistent key-value storage, one namespace per plugin.
pub trait KvBackend: Send + Sync + 'static {
    /// The value under `key` in `namespace`.
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;
    /// Stores `value` under `key` in `namespace`.
    fn set<'a>(&'a self, namespace: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()>;
    /// Removes `key` from `namespace`.
    fn delete<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, ()>;
}

/// A [`KvBackend`] in memory, for tests and one-shot runs that need no persistence.
#[derive(Debug, Default)]
pub struct MemoryKv {
    entries: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl MemoryKv {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), Vec<u8>>) -> T,
    ) -> Result<T, String> {
        let mut guard = self
            .entries
            .lock()
            .map_err(|_| "key-value store lock poisoned".to_string())?;
        Ok(f(&mut guard))
    }
}

impl KvBackend for MemoryKv {
    fn get<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        let r = self.with(|m| m.get(&(namespace.to_string(), key.to_string())).cloned());
        Box::pin(async move { r })
    }
    fn set<'a>(&'a self, namespace: &'a str, key: &'a str, value: Vec<u8>) -> KvFuture<'a, ()> {
        let r = self.with(|m| {
            m.insert((namespace.to_string(), key.to_string()), value);
        });
        Box::pin(async move { r })
    }
    fn delete<'a>(&'a self, namespace: &'a str, key: &'a str) -> KvFuture<'a, ()> {
        let r = self.with(|m| {
            m.remove(&(namespace.to_string(), key.to_string()));
        });
        Box::pin(async move { r })
    }
}

/// Where secret values come from. The sandbox asks only for secrets a plugin was granted.
pub trait SecretStore: Send + Sync + 'static {
    /// The value of the secret `name`, if it has one.
    fn resolve(&self, name: &str) -> Option<String>;

    /// Records durably that `plugin` reads the value of `secret` in run `run_id`, step `step_id`; called before
    /// the value is handed over, which is refused if recording fails. The default records only a `qila::audit`
    /// trace event.
    fn audit_reveal<'a>(
        &'a self,
        plugin: &'a str,
        secret: &'a str,
        run_id: &'a str,
        step_id: &'a str,
    ) -> KvFuture<'a, ()> {
        tracing::info!(target: "qila::audit", %plugin, %secret, run = %run_id, step = %step_id, "secret revealed to plugin");
        Box::pin(async { Ok(()) })
    }
}

/// A [`SecretStore`] over a fixed map, for tests and configuration loaded at start-up.
#[derive(Debug, Default, Clone)]
pub struct StaticSecrets(pub HashMap<String, String>);

impl SecretStore for StaticSecrets {
    fn resolve(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// The services shared by every plugin instance of one sandbox.
#[derive(Clone)]
pub struct HostServices {
    /// Secret values.
    pub secrets: Arc<dyn SecretStore>,
    /// Plugin key-value storage.
    pub kv: Arc<dyn KvBackend>,
}

impl HostServices {
    /// Services over the given secrets and key-value storage. (Each plugin has an HTTP client of its own, whose
    /// resolver enforces its policy: see [`crate::address`].)
    pub fn new(secrets: Arc<dyn SecretStore>, kv: Arc<dyn KvBackend>) -> Self {
        Self { secrets, kv }
    }
}

impl Default for HostServices {
    fn default() -> Self {
        Self::new(
            Arc::new(StaticSecrets::default()),
            Arc::new(MemoryKv::default()),
        )
    }
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}
