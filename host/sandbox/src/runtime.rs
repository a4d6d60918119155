//! The sandbox: one wasmtime engine, its pooling allocator, the epoch ticker and the linker for the host interfaces.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::ActionPlugin;
use crate::bindings::detector::DetectorPlugin as DetectorWorld;
use crate::cache::ComponentCache;
use crate::detector::DetectorPlugin;
use crate::error::SandboxError;
use crate::host::HostState;
use crate::plugin::Plugin;
use crate::policy::PluginPolicy;
use crate::services::HostServices;

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// How many plugin instances may exist at once; further invocations wait for a free slot.
    pub max_instances: u32,
    /// The largest memory any plugin may be granted, in bytes (the size of a slot in the pooling allocator).
    pub max_memory_bytes: usize,
    /// How often the epoch advances: the granularity of CPU limits and of yielding to other tasks.
    pub epoch_tick: Duration,
    /// Secrets, key-value storage and HTTP, shared by all plugins.
    pub services: HostServices,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 256,
            max_memory_bytes: 512 << 20,
            epoch_tick: Duration::from_millis(10),
            services: HostServices::default(),
        }
    }
}

/// The WebAssembly runtime for plugins. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<SandboxInner>,
}

pub(crate) struct SandboxInner {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub detector_linker: Linker<HostState>,
    pub cache: ComponentCache,
    pub services: HostServices,
    pub slots: Arc<Semaphore>,
    pub epoch_tick: Duration,
    pub max_memory_bytes: usize,
    pub pooling: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for SandboxInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("pooling", &self.inner.pooling)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Creates the engine (with the pooling allocator, or on-demand allocation where the address space is too small
    /// for the pool, e.g. under `ulimit -v`), links the host interfaces and starts the epoch ticker.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let (engine, pooling) = match Engine::new(&engine_config(&config, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; falling back to on-demand allocation");
                let engine = Engine::new(&engine_config(&config, false))
                    .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
                (engine, false)
            }
        };
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        ActionPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        // Detectors get their own linker with WASI (locked down as for actions) and `log` only: a detector that
        // imports `http`, `secrets` or `kv` cannot be linked at all (and is refused by name before that).
        let mut detector_linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut detector_linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        DetectorWorld::add_to_linker::<_, HasSelf<_>>(&mut detector_linker, |state| state)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), config.epoch_tick, ticker_stop.clone())?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone());
        Ok(Self {
            inner: Arc::new(SandboxInner {
                engine,
                linker,
                detector_linker,
                cache,
                services: config.services,
                slots: Arc::new(Semaphore::new(config.max_instances as usize)),
                epoch_tick: config.epoch_tick,
                max_memory_bytes: config.max_memory_bytes,
                pooling,
                ticker_stop,
            }),
        })
    }

    /// Whether instances come from the pooling allocator (`false` after the on-demand fallback).
    pub fn uses_pooling(&self) -> bool {
        self.inner.pooling
    }

    /// Loads a plugin from its component bytes: checks the header, compiles it (or takes it from the cache), links
    /// it against the contract, calls `describe` in a sandbox under `policy`'s limits and validates the manifest.
    pub async fn load(&self, bytes: &[u8], policy: PluginPolicy) -> Result<Plugin, SandboxError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self.inner.cache.load(&self.inner.engine, bytes, &digest)?;
        Plugin::link(self.clone(), component, digest, bytes.len(), policy).await
    }

    /// Loads a detector plugin (world `qila:plugin/detector-plugin`) from its component bytes, the way [`Sandbox::load`]
    /// loads an action plugin: checks the header, compiles it (or takes it from the cache), refuses any import
    /// but `log` (and WASI) by name, links it, calls `describe-detector` in a sandbox under `policy`'s limits and
    /// validates what it says. Only `policy.limits` matter: a detector has no grants to use.
    pub async fn load_detector(
        &self,
        bytes: &[u8],
        policy: PluginPolicy,
    ) -> Result<DetectorPlugin, SandboxError> {
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self.inner.cache.load(&self.inner.engine, bytes, &digest)?;
        DetectorPlugin::link(self.clone(), component, digest, bytes.len(), policy).await
    }

    /// [`Sandbox::load_detector`] from a file.
    pub async fn load_detector_file(
        &self,
        path: impl AsRef<std::path::Path>,
        policy: PluginPolicy,
    ) -> Result<DetectorPlugin, SandboxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| SandboxError::Io(path.to_path_buf(), e))?;
        self.load_detector(&bytes, policy).await
    }
}

/// Bytes of each linear memory kept mapped between instances. A Rust guest's stack ends at 1 MiB and its data
/// and first heap pages follow, so 2 MiB covers what a typical invocation touches.
const KEEP_RESIDENT: usize = 2 << 20;

fn engine_config(config: &SandboxConfig, pooling: bool) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.epoch_interruption(true);
    if pooling {
        let n = config.max_instances;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasm32-wasip2 component holds a few core instances (the program and wit-component's shims),
        // one memory and a few tables.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            // Reset a finished instance's memory by rewriting the pages it touched (found with Linux's
            // PAGEMAP_SCAN where available) instead of unmapping them: unmapping costs a TLB shootdown on every
            // core and a page fault per page on the next use, several times the cost of the instance itself.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .decommit_batch_size(32);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    cfg
}

/// Advances the engine's epoch every `tick` until `stop` is set. Epoch interruption is how the sandbox bounds CPU
/// time and makes long-running guests yield to other tasks.
fn spawn_epoch_ticker(
    engine: Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), SandboxError> {
    std::thread::Builder::new()
        .name("qila-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| SandboxError::Engine(format!("cannot start the epoch ticker: {e}")))
}
