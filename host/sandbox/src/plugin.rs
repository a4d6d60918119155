//! A loaded plugin: its manifest, compiled schemas and pre-linked instance, and the guarded invocation path.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use wasmtime::component::Component;
use wasmtime::{CallHook, Store, Trap, UpdateDeadline};

use crate::bindings::{self, ActionPluginPre};
use crate::error::{ErrorKind, InvokeError, LimitTrap, SandboxError};
use crate::host::{CallScope, HostState};
use crate::policy::PluginPolicy;
use crate::runtime::Sandbox;

/// What a plugin says about itself, with its schemas parsed.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The `<plugin>` of `<plugin>.<action>`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Publisher.
    pub vendor: String,
    /// What the plugin is for.
    pub description: String,
    /// The actions, in the order the plugin lists them.
    pub actions: Vec<ActionInfo>,
}

/// One action of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct ActionInfo {
    /// The `<action>` of `<plugin>.<action>`.
    pub name: String,
    /// One line on what it does.
    pub summary: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
    /// JSON Schema of its output.
    pub output_schema: Value,
    /// An input it accepts, if the plugin gave one.
    pub example_input: Option<Value>,
}

/// Where an invocation stands in a run; passed to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationContext {
    /// The run's identifier.
    pub run_id: String,
    /// The step's identifier.
    pub step_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The same on every attempt of one step of one run.
    pub idempotency_key: String,
}

impl InvocationContext {
    /// A context for a call outside any run (tests, `qila plugin` commands): run and step are `label`.
    pub fn adhoc(label: &str) -> Self {
        Self {
            run_id: label.to_string(),
            step_id: label.to_string(),
            attempt: 1,
            idempotency_key: label.to_string(),
        }
    }
}

/// A plugin ready to invoke. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
    policy: Arc<PluginPolicy>,
    /// The HTTP client that enforces this policy's addresses (see [`crate::address`]).
    http: crate::address::PolicyClient,
}

struct PluginInner {
    sandbox: Sandbox,
    name: Arc<str>,
    digest: String,
    size: usize,
    manifest: Manifest,
    imports: Vec<String>,
    pre: ActionPluginPre<HostState>,
    actions: HashMap<String, CompiledAction>,
}

/// An action's schemas, compiled to validators on first use: compiling (and meta-validating) a draft 2020-12
/// schema allocates megabytes, which a one-shot `qila run` should only pay for the actions it calls. A schema
/// that does not compile fails the calls of its action with a message that says so, and `qila validate` reports
/// it for every step that uses the action.
struct CompiledAction {
    input_schema: Value,
    output_schema: Value,
    input: OnceLock<Result<jsonschema::Validator, String>>,
    output: OnceLock<Result<jsonschema::Validator, String>>,
}

impl CompiledAction {
    fn input(&self) -> Result<&jsonschema::Validator, InvokeError> {
        lazy_validator(&self.input, &self.input_schema, ErrorKind::InvalidInput)
    }

    fn output(&self) -> Result<&jsonschema::Validator, InvokeError> {
        lazy_validator(&self.output, &self.output_schema, ErrorKind::InvalidOutput)
    }
}

fn lazy_validator<'a>(
    cell: &'a OnceLock<Result<jsonschema::Validator, String>>,
    schema: &Value,
    kind: ErrorKind,
) -> Result<&'a jsonschema::Validator, InvokeError> {
    cell.get_or_init(|| jsonschema::validator_for(schema).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| InvokeError::new(kind, format!("the action's schema cannot be compiled: {e}")))
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .finish()
    }
}

impl Plugin {
    pub(crate) async fn link(
        sandbox: Sandbox,
        component: Component,
        digest: String,
        size: usize,
        policy: PluginPolicy,
    ) -> Result<Self, SandboxError> {
        let engine = &sandbox.inner.engine;
        let imports = component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let instance_pre = sandbox
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| SandboxError::Contract(format!("{e:#}")))?;
        let pre = ActionPluginPre::new(instance_pre)
            .map_err(|e| SandboxError::Contract(format!("{e:#}")))?;
        let policy = Arc::new(clamp(policy, &sandbox));
        let http = crate::address::PolicyClient::new(&policy);

        let scope = CallScope {
            plugin: Arc::from("(loading)"),
            http: http.clone(),
            policy: policy.clone(),
            services: sandbox.inner.services.clone(),
            run_id: String::new(),
            step_id: String::from("describe"),
            deadline: Instant::now() + policy.limits.timeout,
        };
        let raw = guarded(&sandbox, &pre, scope, |plugin, store| {
            Box::pin(plugin.call_describe(store))
        })
        .await
        .map_err(|e| SandboxError::Manifest(format!("describe failed: {e}")))?;
        let (manifest, actions) = compile_manifest(raw)?;
        Ok(Self {
            inner: Arc::new(PluginInner {
                name: Arc::from(manifest.name.as_str()),
                sandbox,
                digest,
                size,
                manifest,
                imports,
                pre,
                actions,
            }),
            policy,
            http,
        })
    }

    /// The same plugin under another policy (the grants an administrator configured for it).
    pub fn with_policy(&self, policy: PluginPolicy) -> Self {
        let policy = Arc::new(clamp(policy, &self.inner.sandbox));
        Self {
            inner: self.inner.clone(),
            http: crate::address::PolicyClient::new(&policy),
            policy,
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The plugin's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// SHA-256 of the component bytes, in hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The names of the interfaces the component imports: what it can possibly do.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// The grants and limits the plugin runs under.
    pub fn policy(&self) -> &PluginPolicy {
        &self.policy
    }

    /// The action named `name`, if the plugin has it.
    pub fn action(&self, name: &str) -> Option<&ActionInfo> {
        self.inner.manifest.actions.iter().find(|a| a.name == name)
    }

    /// Checks `input` against the action's input schema without running anything.
    pub fn validate_input(&self, action: &str, input: &Value) -> Result<(), InvokeError> {
        let compiled = self.compiled(action)?;
        schema_errors(compiled.input()?, input, ErrorKind::InvalidInput, "input")
    }

    fn compiled(&self, action: &str) -> Result<&CompiledAction, InvokeError> {
        self.inner.actions.get(action).ok_or_else(|| {
            InvokeError::new(
                ErrorKind::NotFound,
                format!("plugin `{}` has no action `{action}`", self.inner.name),
            )
        })
    }

    /// Runs `action` with `input` in a fresh instance, under the plugin's limits, and returns its checked output.
    pub async fn invoke(
        &self,
        action: &str,
        input: &Value,
        ctx: &InvocationContext,
    ) -> Result<Value, InvokeError> {
        let compiled = self.compiled(action)?;
        schema_errors(compiled.input()?, input, ErrorKind::InvalidInput, "input")?;
        let input_text = input.to_string();
        let limits = &self.policy.limits;
        let scope = CallScope {
            plugin: self.inner.name.clone(),
            http: self.http.clone(),
            policy: self.policy.clone(),
            services: self.inner.sandbox.inner.services.clone(),
            run_id: ctx.run_id.clone(),
            step_id: ctx.step_id.clone(),
            deadline: Instant::now() + limits.timeout,
        };
        let wit_ctx = bindings::InvocationContext {
            run_id: ctx.run_id.clone(),
            step_id: ctx.step_id.clone(),
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key.clone(),
        };
        let action_name = action.to_string();
        let returned = guarded(
            &self.inner.sandbox,
            &self.inner.pre,
            scope,
            move |plugin, store| {
                Box::pin(async move {
                    plugin
                        .call_invoke(store, &action_name, &input_text, &wit_ctx)
                        .await
                })
            },
        )
        .await?;
        let text = returned.map_err(from_wit_error)?;
        if text.len() > limits.max_output_bytes {
            return Err(InvokeError::new(
                ErrorKind::OutputTooLarge,
                format!(
                    "output of {} bytes is larger than the plugin's limit of {} bytes",
                    text.len(),
                    limits.max_output_bytes
                ),
            ));
        }
        let output: Value = serde_json::from_str(&text).map_err(|e| {
            InvokeError::new(ErrorKind::InvalidOutput, format!("output is not JSON: {e}"))
        })?;
        schema_errors(
            compiled.output()?,
            &output,
            ErrorKind::InvalidOutput,
            "output",
        )?;
        Ok(output)
    }
}

/// Caps the memory limit at the sandbox's slot size: a plugin cannot be granted more than the pool holds.
pub(crate) fn clamp(mut policy: PluginPolicy, sandbox: &Sandbox) -> PluginPolicy {
    policy.limits.memory_bytes = policy
        .limits
        .memory_bytes
        .min(sandbox.inner.max_memory_bytes);
    policy
}

pub(crate) type CallFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>>;

/// A pre-linked component of one of the worlds, which makes fresh instances.
pub(crate) trait Instantiate: Send + Sync {
    /// The world's bindings to an instance.
    type World: Send + Sync;
    /// A fresh instance in `store`.
    fn instantiate<'a>(&'a self, store: &'a mut Store<HostState>) -> CallFuture<'a, Self::World>;
}

impl Instantiate for ActionPluginPre<HostState> {
    type World = bindings::ActionPlugin;
    fn instantiate<'a>(&'a self, store: &'a mut Store<HostState>) -> CallFuture<'a, Self::World> {
        Box::pin(self.instantiate_async(store))
    }
}

/// Instantiates a fresh instance and runs `call` in it under the scope's limits: a slot from the pool, a memory
/// limiter, a CPU budget counted in epoch ticks (yielding to other tasks at every tick) and a wall-clock timeout.
pub(crate) async fn guarded<P: Instantiate, T>(
    sandbox: &Sandbox,
    pre: &P,
    scope: CallScope,
    call: impl for<'a> FnOnce(&'a P::World, &'a mut Store<HostState>) -> CallFuture<'a, T>,
) -> Result<T, InvokeError> {
    let inner = &sandbox.inner;
    let limits = scope.policy.limits.clone();
    let _slot = inner
        .slots
        .acquire()
        .await
        .map_err(|_| InvokeError::new(ErrorKind::Failed, "the sandbox is shutting down"))?;
    let tick_ns = i64::try_from(inner.epoch_tick.max(Duration::from_millis(1)).as_nanos())
        .unwrap_or(i64::MAX);
    let mut store = Store::new(&inner.engine, HostState::new(scope));
    store.limiter(|state| &mut state.limiter);
    // CPU: every epoch tick that finds the instance executing WebAssembly costs it one tick of budget, and makes it
    // yield so other tasks run. Time in host calls (sleeping, waiting on HTTP) is given back when the call returns,
    // so only computation counts; the wall-clock timeout bounds the rest.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        state.cpu_budget_ns = state.cpu_budget_ns.saturating_sub(tick_ns);
        if state.cpu_budget_ns <= 0 {
            return Err(LimitTrap::Cpu.into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store.call_hook(|mut ctx, hook| {
        let state = ctx.data_mut();
        match hook {
            CallHook::CallingHost => state.host_entered = Some(Instant::now()),
            CallHook::ReturningFromHost => {
                if let Some(entered) = state.host_entered.take() {
                    let spent = i64::try_from(entered.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    state.cpu_budget_ns = state
                        .cpu_budget_ns
                        .saturating_add(spent)
                        .min(state.cpu_limit_ns);
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
        Ok(())
    });

    let outcome = tokio::time::timeout(limits.timeout, async {
        let plugin = pre.instantiate(&mut store).await?;
        call(&plugin, &mut store).await
    })
    .await;
    store.data().flush_diagnostics();
    match outcome {
        Err(_) => Err(InvokeError::timeout(limits.timeout)),
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(classify_trap(e, &store, &limits)),
    }
}

/// Turns a wasmtime error into a typed [`InvokeError`], adding what the plugin wrote to stderr (a Rust panic
/// message, for example) so its author sees why it trapped.
fn classify_trap(
    e: wasmtime::Error,
    store: &Store<HostState>,
    limits: &crate::Limits,
) -> InvokeError {
    if let Some(limit) = e.downcast_ref::<LimitTrap>() {
        return match limit {
            LimitTrap::Cpu => InvokeError::cpu(limits.cpu),
            LimitTrap::Memory { .. } => {
                InvokeError::new(ErrorKind::MemoryLimit, format!("plugin {limit}"))
            }
        };
    }
    let stderr = store.data().stderr.contents();
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(2048)..])
        .trim()
        .to_string();
    let with_stderr = |msg: String| {
        if tail.is_empty() {
            msg
        } else {
            format!("{msg}; plugin stderr: {tail}")
        }
    };
    match e.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => InvokeError::new(
            ErrorKind::StackOverflow,
            "plugin exhausted its call stack (unbounded recursion?)",
        ),
        Some(Trap::Interrupt) => InvokeError::cpu(limits.cpu),
        Some(Trap::MemoryOutOfBounds) => InvokeError::new(
            ErrorKind::Trap,
            with_stderr(
                "plugin trapped: out of bounds memory access (in Rust and C plugins this is also how unbounded \
                 recursion ends: their stack lives in linear memory and ran out)"
                    .to_string(),
            ),
        ),
        Some(trap) => InvokeError::new(
            ErrorKind::Trap,
            with_stderr(format!("plugin trapped: {trap}")),
        ),
        None => InvokeError::new(
            ErrorKind::Trap,
            with_stderr(format!("plugin failed: {e:#}")),
        ),
    }
}

pub(crate) fn from_wit_error(e: bindings::Error) -> InvokeError {
    use bindings::Error as E;
    match e {
        E::InvalidInput(m) => InvokeError::new(ErrorKind::InvalidInput, m),
        E::NotFound(m) => InvokeError::new(ErrorKind::NotFound, m),
        E::Transient(m) => InvokeError::new(ErrorKind::Transient, m),
        E::Denied(m) => InvokeError::new(ErrorKind::Denied, m),
        E::Failed(m) => InvokeError::new(ErrorKind::Failed, m),
    }
}

/// Up to three schema violations, each with its JSON pointer, as one error.
fn schema_errors(
    validator: &jsonschema::Validator,
    value: &Value,
    kind: ErrorKind,
    what: &str,
) -> Result<(), InvokeError> {
    let mut errors = validator.iter_errors(value).peekable();
    if errors.peek().is_none() {
        return Ok(());
    }
    let listed: Vec<String> = errors
        .take(3)
        .map(|e| {
            let at = e.instance_path.to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("at {at}: {e}")
            }
        })
        .collect();
    Err(InvokeError::new(
        kind,
        format!(
            "{what} does not match the action's schema: {}",
            listed.join("; ")
        ),
    ))
}

pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64
}

/// Parses and checks the manifest a plugin returned: names, unique actions, schemas that are JSON and compile.
fn compile_manifest(
    raw: bindings::Manifest,
) -> Result<(Manifest, HashMap<String, CompiledAction>), SandboxError> {
    let bad = |m: String| SandboxError::Manifest(m);
    if !is_valid_name(&raw.name) {
        return Err(bad(format!(
            "plugin name {:?} must be 1-64 lower-case letters, digits, `-` or `_`, starting with a letter or digit",
            raw.name
        )));
    }
    let mut actions = Vec::with_capacity(raw.actions.len());
    let mut compiled = HashMap::with_capacity(raw.actions.len());
    for a in raw.actions {
        if !is_valid_name(&a.name) {
            return Err(bad(format!(
                "action name {:?} must be lower-case letters, digits, `-` or `_`",
                a.name
            )));
        }
        let parse = |what: &str, text: &str| -> Result<Value, SandboxError> {
            serde_json::from_str(text)
                .map_err(|e| bad(format!("action `{}`: {what} is not JSON: {e}", a.name)))
        };
        let input_schema = parse("input schema", &a.input_schema)?;
        let output_schema = parse("output schema", &a.output_schema)?;
        let example_input = a
            .example_input
            .as_deref()
            .map(|t| parse("example input", t))
            .transpose()?;
        let action = CompiledAction {
            input_schema: input_schema.clone(),
            output_schema: output_schema.clone(),
            input: OnceLock::new(),
            output: OnceLock::new(),
        };
        if compiled.insert(a.name.clone(), action).is_some() {
            return Err(bad(format!("action `{}` is listed twice", a.name)));
        }
        actions.push(ActionInfo {
            name: a.name,
            summary: a.summary,
            input_schema,
            output_schema,
            example_input,
        });
    }
    Ok((
        Manifest {
            name: raw.name,
            version: raw.version,
            vendor: raw.vendor,
            description: raw.description,
            actions,
        },
        compiled,
    ))
}
