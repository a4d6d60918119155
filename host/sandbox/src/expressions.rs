//! The sandboxed expression evaluator: every `${{ }}` evaluation runs in a WebAssembly instance of the bundled
//! evaluator component (`plugins/expressions`, world `qila:evaluator/evaluator`) with a memory cap, fuel and a
//! deadline, so that no expression can exhaust the host's memory or CPU, and the future yields to other tasks every
//! million units of fuel while it runs.
//!
//! One evaluation is two calls into one instance: `load` parses the data the expressions may read (the host sends
//! only the inputs and step results they reference), then `evaluate` runs them and drops that data. The memory
//! limit counts from the end of `load`: what the expressions *make*, not the run's data they read, which other
//! limits bound.
//!
//! Unlike a plugin's, an evaluator instance is not fresh for every call: it is the host's own code, and making one
//! (instantiating it and building the expression environment inside) costs five times the evaluation itself. An
//! instance that ended its last call normally serves the next one; a trap, a limit or a timeout drops it, and so
//! does growing past 4 MiB (the free memory an instance holds adds to what the next evaluation can allocate) or
//! serving 10,000 evaluations; at most 8 wait warm.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qila_expr::{ContextJson, EvalFuture, Failure, FailureKind, Piece, format_bytes};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cache::ComponentCache;
use crate::error::SandboxError;

mod bindings {
    wasmtime::component::bindgen!({
        world: "evaluator",
        path: "../../wit/evaluator",
        exports: { default: async },
    });
}

impl bindings::EvaluatorImports for State {
    fn evaluating(&mut self, index: u32) {
        self.piece = Some(index as usize);
    }
}

use bindings::{Evaluator, EvaluatorPre};

/// The evaluator component, built from `plugins/expressions` by this crate's build script.
const COMPONENT: &[u8] = include_bytes!(env!("QILA_EXPRESSIONS_WASM"));

/// How much an evaluation may use. Each limit, when exceeded, fails the evaluation with a message that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpressionLimits {
    /// Bytes of memory the expressions of one evaluation may allocate (beyond the data they read).
    pub memory_bytes: usize,
    /// Units of work one evaluation may do: WebAssembly fuel, about one instruction each.
    pub work: u64,
    /// Bytes of rendered output of one evaluation (all pieces of one template together).
    pub output_bytes: usize,
    /// Wall-clock time one evaluation may take once it has an instance.
    pub timeout: Duration,
    /// Bytes of data (inputs and step results) one evaluation may read.
    pub context_bytes: usize,
    /// How many evaluations may run at once; further ones wait.
    pub max_instances: u32,
}

impl Default for ExpressionLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 16 << 20,
            work: 100_000_000,
            output_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
            context_bytes: 64 << 20,
            max_instances: 32,
        }
    }
}

/// Evaluates expressions in the sandbox. Cheap to clone; clones share the engine and the instance pool.
#[derive(Clone)]
pub struct SandboxedEvaluator {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    pre: EvaluatorPre<State>,
    slots: Semaphore,
    /// Instances that ended their last evaluation normally, ready for the next.
    idle: std::sync::Mutex<Vec<Warm>>,
    limits: ExpressionLimits,
    /// The largest memory an instance may have: the context's share plus the evaluation's.
    max_memory: usize,
}

impl std::fmt::Debug for SandboxedEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxedEvaluator")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Fuel yielded between chances for other tasks to run: about a millisecond of work.
const YIELD_INTERVAL: u64 = 1_000_000;
/// Fuel for `load`: parsing costs a few hundred instructions per byte of JSON.
const LOAD_FUEL_PER_BYTE: u64 = 1_000;
const LOAD_FUEL_BASE: u64 = 10_000_000;
/// Memory of an instance before it has read anything (its stack, data and first heap pages).
const BASE_MEMORY: usize = 4 << 20;
/// Parsed values take several times the bytes of their JSON text.
const CONTEXT_MEMORY_FACTOR: usize = 8;

impl SandboxedEvaluator {
    /// Compiles the evaluator component (a second or two; or takes it from `cache_dir`, where compiled
    /// components are kept, in milliseconds) and sets up its instance pool.
    pub fn new(limits: ExpressionLimits, cache_dir: Option<PathBuf>) -> Result<Self, SandboxError> {
        let max_memory = BASE_MEMORY
            .saturating_add(limits.context_bytes.saturating_mul(CONTEXT_MEMORY_FACTOR))
            .saturating_add(limits.memory_bytes)
            .next_multiple_of(64 << 10);
        let engine = match Engine::new(&engine_config(&limits, max_memory, true)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable for expressions; allocating on demand");
                Engine::new(&engine_config(&limits, max_memory, false))
                    .map_err(|e| SandboxError::Engine(format!("{e:#}")))?
            }
        };
        let digest = hex::encode(Sha256::digest(COMPONENT));
        let component =
            ComponentCache::new(&engine, cache_dir).load(&engine, COMPONENT, &digest)?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        Evaluator::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(EvaluatorPre::new)
            .map_err(|e| SandboxError::Engine(format!("the expression evaluator: {e:#}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                pre,
                slots: Semaphore::new(limits.max_instances.max(1) as usize),
                idle: std::sync::Mutex::new(Vec::new()),
                limits,
                max_memory,
            }),
        })
    }

    /// The limits evaluations run under.
    pub fn limits(&self) -> &ExpressionLimits {
        &self.inner.limits
    }

    async fn run(&self, context: &ContextJson, pieces: &[Piece]) -> Result<Vec<String>, Failure> {
        let inner = &*self.inner;
        let limits = &inner.limits;
        if context.len() > limits.context_bytes {
            return Err(Failure::request(
                FailureKind::MemoryLimit,
                format!(
                    "the data this expression reads ({}) is larger than the limit of {}",
                    format_bytes(context.len() as u64),
                    format_bytes(limits.context_bytes as u64)
                ),
            ));
        }
        let _slot = inner.slots.acquire().await.map_err(|_| {
            Failure::request(FailureKind::Unavailable, "the evaluator is shutting down")
        })?;
        let idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut warm = match idle {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        let wit_pieces: Vec<bindings::Piece> = pieces.iter().map(to_wit).collect();
        let max_output = limits.output_bytes as u64;
        let mut phase = Phase::Load;
        let Warm {
            store, instance, ..
        } = &mut warm;
        // What was left of the last evaluation's limit does not carry over: `load` may grow to the instance's
        // maximum, and its fuel is proportional to the data.
        let state = store.data_mut();
        state.limiter.limit = inner.max_memory;
        state.limiter.refused = false;
        state.piece = None;
        let fuel =
            LOAD_FUEL_BASE.saturating_add(LOAD_FUEL_PER_BYTE.saturating_mul(context.len() as u64));
        let outcome = tokio::time::timeout(limits.timeout, async {
            store.set_fuel(fuel)?;
            if let Err(message) = instance.call_load(&mut *store, context).await? {
                return Ok(Err(Failure::request(FailureKind::Unavailable, message)));
            }
            // From here on, the memory limit counts what the expressions make, and the fuel is theirs.
            phase = Phase::Evaluate;
            let state = store.data_mut();
            state.limiter.limit = state
                .limiter
                .current
                .saturating_add(limits.memory_bytes)
                .min(inner.max_memory);
            store.set_fuel(limits.work)?;
            let answer = instance
                .call_evaluate(&mut *store, &wit_pieces, max_output)
                .await?;
            Ok::<_, wasmtime::Error>(answer.map_err(from_wit))
        })
        .await;
        match outcome {
            Err(_) => Err(Failure {
                piece: warm.store.data().piece,
                ..Failure::request(
                    FailureKind::Timeout,
                    format!(
                        "expression exceeded its time limit of {}",
                        format_duration(limits.timeout)
                    ),
                )
            }),
            Ok(Ok(answer)) => {
                // The instance ended the call normally (an expression's own failure included): it may serve
                // again, unless it has grown or served long.
                warm.uses += 1;
                if warm.uses < MAX_USES && warm.store.data().limiter.current <= RECYCLE_MEMORY {
                    let mut idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner());
                    if idle.len() < MAX_IDLE {
                        idle.push(warm);
                    }
                }
                let texts = answer?;
                let total: usize = texts.iter().map(String::len).sum();
                if total > limits.output_bytes.saturating_add(texts.len() * 2 + 64) {
                    return Err(Failure::request(
                        FailureKind::OutputLimit,
                        format!(
                            "expression exceeded its output limit of {}",
                            format_bytes(limits.output_bytes as u64)
                        ),
                    ));
                }
                Ok(texts)
            }
            // A trapped instance is dropped with its store.
            Ok(Err(e)) => {
                let failure = classify(e, phase, &warm.store, limits);
                Err(Failure {
                    piece: failure.piece.or(warm.store.data().piece),
                    ..failure
                })
            }
        }
    }

    /// A new instance in a store of its own.
    async fn instantiate(&self) -> Result<Warm, Failure> {
        let inner = &*self.inner;
        let mut store = Store::new(&inner.engine, State::new(inner.max_memory));
        store.limiter(|state| &mut state.limiter);
        store
            .set_fuel(INSTANTIATE_FUEL)
            .and_then(|()| store.fuel_async_yield_interval(Some(YIELD_INTERVAL)))
            .map_err(unavailable)?;
        let instance = inner
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(unavailable)?;
        Ok(Warm {
            store,
            instance,
            uses: 0,
        })
    }
}

/// An instance between evaluations. It holds no data of the last one: `evaluate` drops what `load` parsed.
struct Warm {
    store: Store<State>,
    instance: Evaluator,
    uses: u32,
}

/// Instances kept between evaluations; more may run at once (`max_instances`), but only this many wait warm.
const MAX_IDLE: usize = 8;
/// Evaluations an instance serves before it is replaced.
const MAX_USES: u32 = 10_000;
/// An instance whose memory grew past this is replaced rather than kept: the next evaluation's allocations may use
/// the free memory an instance holds besides its limit, so what it may hold is kept small.
const RECYCLE_MEMORY: usize = 4 << 20;
/// Fuel for instantiating (the component's start-up).
const INSTANTIATE_FUEL: u64 = 10_000_000;

impl qila_expr::Evaluator for SandboxedEvaluator {
    fn evaluate<'a>(&'a self, context: &'a ContextJson, pieces: &'a [Piece]) -> EvalFuture<'a> {
        Box::pin(self.run(context, pieces))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Evaluate,
}

fn unavailable(e: wasmtime::Error) -> Failure {
    Failure::request(
        FailureKind::Unavailable,
        format!("the expression evaluator failed: {e:#}"),
    )
}

/// Turns a trap into the limit it stands for.
fn classify(
    e: wasmtime::Error,
    phase: Phase,
    store: &Store<State>,
    limits: &ExpressionLimits,
) -> Failure {
    let memory = e.downcast_ref::<MemoryExceeded>().is_some();
    let trap = e.downcast_ref::<Trap>().copied();
    match (phase, memory, trap) {
        (Phase::Load, true, _) | (Phase::Load, _, Some(Trap::OutOfFuel)) => Failure::request(
            FailureKind::MemoryLimit,
            "the data this expression reads does not fit the evaluator's memory".to_string(),
        ),
        (Phase::Evaluate, true, _) => Failure::request(
            FailureKind::MemoryLimit,
            format!(
                "expression exceeded its memory limit of {}",
                format_bytes(limits.memory_bytes as u64)
            ),
        ),
        (Phase::Evaluate, _, Some(Trap::OutOfFuel)) => Failure::request(
            FailureKind::WorkLimit,
            format!(
                "expression exceeded its work limit of {} instructions",
                group_digits(limits.work)
            ),
        ),
        (_, _, Some(Trap::StackOverflow)) => Failure::request(
            FailureKind::Failed,
            "expression is nested too deeply (the evaluator's stack is exhausted)",
        ),
        _ => {
            let stderr = store.data().stderr.contents();
            let said = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(512)..])
                .trim()
                .to_owned();
            // An allocation larger than the address space (`[1] * 10**9`: 24 GB) panics or aborts in the guest's
            // allocator before it asks to grow memory; Rust's standard library says so on stderr.
            let allocation_failed = said.contains("capacity overflow")
                || said.contains("memory allocation of")
                || store.data().limiter.refused;
            if phase == Phase::Evaluate && allocation_failed {
                return Failure::request(
                    FailureKind::MemoryLimit,
                    format!(
                        "expression exceeded its memory limit of {}",
                        format_bytes(limits.memory_bytes as u64)
                    ),
                );
            }
            tracing::error!(error = %format!("{e:#}"), stderr = %said, "the expression evaluator trapped");
            Failure::request(
                FailureKind::Unavailable,
                format!(
                    "the expression evaluator failed: {}",
                    trap.map_or_else(|| format!("{e:#}"), |t| t.to_string())
                ),
            )
        }
    }
}

fn to_wit(piece: &Piece) -> bindings::Piece {
    match piece {
        Piece::Value(s) => bindings::Piece::Value(s.clone()),
        Piece::Condition(s) => bindings::Piece::Condition(s.clone()),
        Piece::Text(segments) => bindings::Piece::Text(
            segments
                .iter()
                .map(|s| match s {
                    qila_expr::Segment::Literal(t) => bindings::Segment::Literal(t.clone()),
                    qila_expr::Segment::Expression(t) => bindings::Segment::Expression(t.clone()),
                })
                .collect(),
        ),
    }
}

fn from_wit(f: bindings::Failure) -> Failure {
    use bindings::FailureKind as K;
    Failure {
        piece: f.piece.map(|p| p as usize),
        expression: f.expression,
        kind: match f.kind {
            K::Invalid => FailureKind::Invalid,
            K::Failed => FailureKind::Failed,
            K::Undefined => FailureKind::Undefined,
            K::NotJson => FailureKind::NotJson,
            K::OutputLimit => FailureKind::OutputLimit,
        },
        message: f.message,
    }
}

/// `5s`, `250ms`.
fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `50,000,000`.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn engine_config(limits: &ExpressionLimits, max_memory: usize, pooling: bool) -> Config {
    let mut cfg = Config::new();
    cfg.wasm_component_model(true);
    cfg.consume_fuel(true);
    if pooling {
        let n = limits.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(max_memory)
            .max_memories_per_module(2)
            .max_tables_per_module(4)
            .pagemap_scan(Enabled::Auto)
            // Instances are kept between evaluations, so a slot is rarely made anew: keep little of a dropped
            // instance's memory resident, and give the rest back at once (a dropped instance may have used up to
            // its memory limit).
            .linear_memory_keep_resident(512 << 10)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(64 << 10)
            .decommit_batch_size(1);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    cfg
}

/// Growth past the limit: recognised by [`classify`].
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded")]
struct MemoryExceeded;

struct Limiter {
    limit: usize,
    current: usize,
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = true;
            return Err(MemoryExceeded.into());
        }
        self.current = self.current.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// One instance's store: WASI with nothing granted (the component's standard library links against it), the
/// memory limiter and what the guest wrote to stderr (a panic message, for the log).
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    stderr: MemoryOutputPipe,
    /// The piece being evaluated, as the guest last said.
    piece: Option<usize>,
}

impl State {
    fn new(max_memory: usize) -> Self {
        let stderr = MemoryOutputPipe::new(4 << 10);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                limit: max_memory,
                current: 0,
                refused: false,
            },
            stderr,
            piece: None,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qila_expr::{Evaluator as _, Segment};

    fn evaluator() -> SandboxedEvaluator {
        SandboxedEvaluator::new(ExpressionLimits::default(), None).expect("the evaluator builds")
    }

    const CTX: &str = r#"{"inputs": {"ip": "10.0.0.1", "n": 3}, "steps": {"a": {"output": {"tags": ["x"]}, "status": "succeeded"}}}"#;

    #[tokio::test]
    async fn evaluates_like_the_language_says() {
        let ev = evaluator();
        let pieces = [
            Piece::Value("inputs.n + 1".into()),
            Piece::Condition("steps.a.output.tags | length > 0".into()),
            Piece::Text(vec![
                Segment::Literal("ip ".into()),
                Segment::Expression("inputs.ip".into()),
            ]),
        ];
        let out = ev.evaluate(CTX, &pieces).await.unwrap();
        assert_eq!(out, ["4", "true", "\"ip 10.0.0.1\""]);
        let e = ev
            .evaluate(CTX, &[Piece::Value("inputs.nope".into())])
            .await
            .unwrap_err();
        assert_eq!(e.kind, FailureKind::Undefined);
        assert_eq!(e.piece, Some(0));
    }

    async fn fails(src: &str) -> Failure {
        let ev = evaluator();
        ev.evaluate(CTX, &[Piece::Value(src.into())])
            .await
            .expect_err(src)
    }

    /// The reproductions of issue 11 end in a clean, bounded failure (on the evaluator's 32-bit target some of
    /// the numbers in them are too large to be taken at all), and their variants hit the limit they aim at.
    #[tokio::test]
    async fn hostile_expressions_hit_a_limit() {
        for src in [
            "'a\\nb' | indent(100000000000)",
            "([1] * 1000000000000) | list",
            "([1] * 1000000000000) | sum",
        ] {
            let e = fails(src).await;
            assert!(
                matches!(
                    e.kind,
                    FailureKind::Failed | FailureKind::MemoryLimit | FailureKind::WorkLimit
                ),
                "{src}: {e:?}"
            );
        }
        for (src, kind) in [
            ("'a\\nb' | indent(1000000000)", FailureKind::MemoryLimit),
            ("([1] * 1000000000) | list", FailureKind::MemoryLimit),
            ("([1] * 1000000) | sum", FailureKind::WorkLimit),
            (
                "{'a': 1} | tojson(indent=1000000000)",
                FailureKind::MemoryLimit,
            ),
        ] {
            let e = fails(src).await;
            assert_eq!(e.kind, kind, "{src}: {e}");
        }
        // Growing replace chains run out of work or of memory, whichever comes first.
        let e =
            fails("('x' * 1000000) | replace('x', 'yyyyyyyy') | replace('y', 'zzzzzzzz')").await;
        assert!(
            matches!(e.kind, FailureKind::MemoryLimit | FailureKind::WorkLimit),
            "{e}"
        );
        let e = fails("'a' * 100000000").await;
        assert_eq!(e.message, "expression exceeded its memory limit of 16 MiB");
    }
}
