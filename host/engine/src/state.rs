//! The orchestrator's shared state: which runs are in memory, the parsed playbook versions, limits, timers, and
//! the operations that create and end runs.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use qila_model::{Diagnostics, EvalContext, Evaluator, Playbook};
use qila_store::command::{CreateGuard, CreateRun, FinishRun, StartQueuedRun};
use qila_store::{
    RunRow, RunStatus, Settle, Store, StoreError, TaskChange, TaskKey, TaskShape, TriggerKind,
    VersionRow, now_ms,
};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::builtin::{Builtin, BuiltinCatalog};
use crate::error::{EngineError, StartError};
use crate::executor::{StepCall, StepError, StepExecutor};
use crate::limits::{Limiter, Wake};
use crate::orchestrator::{RunChanged, StartRun};
use crate::timers::Timers;

/// An executor behind a pointer (the orchestrator is not generic over it).
pub(crate) trait DynExecutor: Send + Sync {
    fn execute(&self, call: StepCall) -> BoxFuture<'static, Result<Value, StepError>>;
}

struct Erased<E>(Arc<E>);

impl<E: StepExecutor> DynExecutor for Erased<E> {
    fn execute(&self, call: StepCall) -> BoxFuture<'static, Result<Value, StepError>> {
        let executor = self.0.clone();
        Box::pin(async move { executor.execute(call).await })
    }
}

pub(crate) fn erase<E: StepExecutor>(executor: Arc<E>) -> Arc<dyn DynExecutor> {
    Arc::new(Erased(executor))
}

/// A published version, parsed.
pub(crate) struct Loaded {
    pub(crate) row: VersionRow,
    pub(crate) playbook: Arc<Playbook>,
}

/// Parsed playbook versions, least recently used first out: bounded by the bytes of their sources, since a parsed
/// playbook takes tens of times its source (publishing many large playbooks must not grow the server without end).
/// A run holds its own version while it runs; an evicted one is parsed again when a run needs it.
#[derive(Default)]
pub(crate) struct VersionCache {
    entries: HashMap<(String, i64), (Arc<Loaded>, u64)>,
    source_bytes: usize,
    clock: u64,
}

impl VersionCache {
    /// Source bytes of the versions kept: about 100-200 MiB parsed at worst.
    const MAX_SOURCE_BYTES: usize = 4 << 20;
    /// Versions kept.
    const MAX_ENTRIES: usize = 512;

    fn get(&mut self, key: &(String, i64)) -> Option<Arc<Loaded>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(loaded, used)| {
            *used = clock;
            loaded.clone()
        })
    }

    fn insert(&mut self, key: (String, i64), loaded: Arc<Loaded>) {
        self.clock += 1;
        let size = loaded.row.source.len();
        if let Some((old, _)) = self.entries.insert(key, (loaded, self.clock)) {
            self.source_bytes -= old.row.source.len();
        }
        self.source_bytes += size;
        while self.entries.len() > 1
            && (self.source_bytes > Self::MAX_SOURCE_BYTES
                || self.entries.len() > Self::MAX_ENTRIES)
        {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((gone, _)) = self.entries.remove(&oldest) {
                self.source_bytes -= gone.row.source.len();
            }
        }
    }
}

/// The step of a parent run that starts a child run.
pub(crate) struct ParentLink {
    pub(crate) run: String,
    pub(crate) step: String,
    pub(crate) item: i64,
    pub(crate) position: i64,
    pub(crate) action: String,
    pub(crate) wait: bool,
    pub(crate) input: Value,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) executor: Arc<dyn DynExecutor>,
    /// Where `${{ }}` expressions are evaluated (in `qila`, the sandboxed evaluator).
    pub(crate) evaluator: Arc<dyn Evaluator>,
    pub(crate) catalog: Arc<BuiltinCatalog>,
    pub(crate) owner: String,
    pub(crate) lease: Duration,
    pub(crate) sole_worker: bool,
    pub(crate) changes: broadcast::Sender<RunChanged>,
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) wake_tx: mpsc::UnboundedSender<Wake>,
    pub(crate) timers: Timers,
    pub(crate) schedules_changed: Notify,
    active: Mutex<HashMap<String, mpsc::UnboundedSender<()>>>,
    versions: Mutex<VersionCache>,
    /// The latest version of each playbook (publication goes through this process, which holds the data
    /// directory).
    latest: Mutex<HashMap<String, i64>>,
    /// Event name to the playbooks whose latest version subscribes to it.
    pub(crate) subscriptions: RwLock<HashMap<String, Vec<String>>>,
    /// Runs that were in flight when this process started and have not yet done any work in it: the first work
    /// one does counts this start against it ([`qila_store::RunRow::resumes`]).
    pub(crate) resumed: Mutex<HashSet<String>>,
    /// Runs whose `resumes` this process counted and that have not come to rest since: a graceful shutdown takes
    /// the count back (the process did not die under them).
    pub(crate) counted: Mutex<HashSet<String>>,
    stopping: AtomicBool,
    in_flight: AtomicUsize,
    pub(crate) idle: Notify,
}

/// Counts a step in flight while it lives.
pub(crate) struct InFlight(Arc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        executor: Arc<dyn DynExecutor>,
        evaluator: Arc<dyn Evaluator>,
        catalog: Arc<BuiltinCatalog>,
        owner: String,
        lease: Duration,
        sole_worker: bool,
        wake_tx: mpsc::UnboundedSender<Wake>,
    ) -> Self {
        let (changes, _) = broadcast::channel(4096);
        Self {
            store,
            executor,
            evaluator,
            catalog,
            owner,
            lease,
            sole_worker,
            changes,
            limiter: Limiter::new(wake_tx.clone()),
            timers: Timers::new(wake_tx.clone()),
            wake_tx,
            schedules_changed: Notify::new(),
            active: Mutex::new(HashMap::new()),
            versions: Mutex::new(VersionCache::default()),
            latest: Mutex::new(HashMap::new()),
            subscriptions: RwLock::new(HashMap::new()),
            resumed: Mutex::new(HashSet::new()),
            counted: Mutex::new(HashSet::new()),
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Whether run `id` was in flight at this start and does its first work in this process now (then it is no
    /// longer: the caller counts the start against it).
    pub(crate) fn first_work_since_start(&self, id: &str) -> bool {
        let first = lock(&self.resumed).remove(id);
        if first {
            lock(&self.counted).insert(id.to_owned());
        }
        first
    }

    /// Run `id` came to rest: this process no longer holds a count against it.
    pub(crate) fn rested(&self, id: &str) {
        lock(&self.counted).remove(id);
    }

    /// The runs this process counted a start against and that have not come to rest (see [`Inner::counted`]).
    pub(crate) fn take_counted(&self) -> Vec<String> {
        lock(&self.counted).drain().collect()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight_guard(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Tells subscribers that `run` changed.
    pub(crate) fn changed(&self, run: &str, finished: bool) {
        let _ = self.changes.send(RunChanged {
            run_id: Arc::from(run),
            finished,
        });
    }

    /// Wakes `run` at `at` (unix ms).
    pub(crate) fn timer(&self, at: i64, run: &str) {
        self.timers.add(at, run);
    }

    /// Makes sure run `id` is in memory and looks at its rows again.
    pub(crate) fn wake(self: &Arc<Self>, id: &str) {
        self.wake_with(id, None);
    }

    /// Like [`Inner::wake`], for a run just created with no rows yet: its task need not read it back.
    pub(crate) fn wake_new(self: &Arc<Self>, run: RunRow) {
        let id = run.id.clone();
        self.wake_with(&id, Some(run));
    }

    fn wake_with(self: &Arc<Self>, id: &str, fresh: Option<RunRow>) {
        if self.is_stopping() {
            return;
        }
        let mut active = lock(&self.active);
        if let Some(pokes) = active.get(id)
            && pokes.send(()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        active.insert(id.to_owned(), tx);
        drop(active);
        tokio::spawn(crate::run::drive(self.clone(), id.to_owned(), rx, fresh));
    }

    /// Leaves memory unless a poke arrived meanwhile; true if the task must end.
    pub(crate) fn retire(&self, id: &str, pokes: &mut mpsc::UnboundedReceiver<()>) -> bool {
        let mut active = lock(&self.active);
        if pokes.try_recv().is_ok() {
            while pokes.try_recv().is_ok() {}
            return false;
        }
        active.remove(id);
        true
    }

    /// The run ended: leave memory for good.
    pub(crate) fn retire_finished(&self, id: &str) {
        lock(&self.active).remove(id);
    }

    /// Leaves memory after an error; the run resumes at the next start or poke.
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.active).remove(id);
    }

    /// How many runs are in memory.
    pub(crate) fn active_runs(&self) -> usize {
        lock(&self.active).len()
    }

    /// The parsed version `version` of `name` (cached).
    pub(crate) async fn load_version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Arc<Loaded>, StartError> {
        let key = (name.to_owned(), version);
        if let Some(loaded) = lock(&self.versions).get(&key) {
            return Ok(loaded.clone());
        }
        let row =
            self.store
                .version(name, version)
                .await?
                .ok_or_else(|| StartError::UnknownVersion {
                    name: name.to_owned(),
                    version,
                })?;
        let loaded = Arc::new(self.parse_version(row)?);
        lock(&self.versions).insert(key, loaded.clone());
        Ok(loaded)
    }

    /// The latest version of `name`.
    pub(crate) async fn latest(&self, name: &str) -> Result<Arc<Loaded>, StartError> {
        let known = lock(&self.latest).get(name).copied();
        if let Some(version) = known {
            return self.load_version(name, version).await;
        }
        let row = self
            .store
            .latest_version(name)
            .await?
            .ok_or_else(|| StartError::UnknownPlaybook(name.to_owned()))?;
        let key = (row.name.clone(), row.version);
        if let Some(loaded) = lock(&self.versions).get(&key) {
            return Ok(loaded.clone());
        }
        let loaded = Arc::new(self.parse_version(row)?);
        self.remember(loaded.clone());
        Ok(loaded)
    }

    /// Caches a parsed version; the newest one of its playbook becomes the latest.
    pub(crate) fn remember(&self, loaded: Arc<Loaded>) {
        let (name, version) = (loaded.row.name.clone(), loaded.row.version);
        let mut latest = lock(&self.latest);
        let newest = latest.entry(name.clone()).or_insert(version);
        *newest = (*newest).max(version);
        drop(latest);
        lock(&self.versions).insert((name, version), loaded);
    }

    /// Parses a stored version and checks that the plugins it pinned are the ones loaded now.
    fn parse_version(&self, row: VersionRow) -> Result<Loaded, StartError> {
        let file = format!("{}@v{}", row.name, row.version);
        let playbook = Playbook::load(&row.source, &file, self.catalog.as_ref()).map_err(|d| {
            StartError::PluginChanged(format!(
                "version {} of playbook `{}` no longer validates against the loaded plugins:\n{d}",
                row.version, row.name
            ))
        })?;
        for (plugin, pinned) in row.plugins.as_object().into_iter().flatten() {
            let now = crate::orchestrator::PluginCatalog::digest(self.catalog.as_ref(), plugin);
            if now.as_deref() != pinned.as_str() {
                return Err(StartError::PluginChanged(format!(
                    "version {} of playbook `{}` pinned plugin `{plugin}` at {}, but {}; publish the playbook \
                     again to run it with the plugin as it is now",
                    row.version,
                    row.name,
                    short(pinned.as_str().unwrap_or("?")),
                    match now {
                        Some(d) => format!("the loaded plugin is {}", short(&d)),
                        None => "that plugin is not loaded".to_owned(),
                    }
                )));
            }
        }
        Ok(Loaded {
            row,
            playbook: Arc::new(playbook),
        })
    }

    /// Records the subscriptions of the latest version of a playbook to internal events.
    pub(crate) fn subscribe_events(&self, loaded: &Loaded) {
        let name = &loaded.row.name;
        let mut subs = self
            .subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for list in subs.values_mut() {
            list.retain(|n| n != name);
        }
        for trigger in &loaded.playbook.triggers.events {
            let list = subs.entry(trigger.event.clone()).or_default();
            if !list.contains(name) {
                list.push(name.clone());
            }
        }
        subs.retain(|_, l| !l.is_empty());
    }

    /// Starts a run from a request: checks the trigger, the plugins and the inputs.
    pub(crate) async fn create_from_request(
        self: &Arc<Self>,
        request: StartRun,
        parent: Option<ParentLink>,
    ) -> Result<RunRow, StartError> {
        self.create_from_request_if(request, parent, None)
            .await
            .map(|r| r.expect("no precondition"))
    }

    /// [`Self::create_from_request`] under a precondition run in the creating transaction: `Ok(None)` when it
    /// returned false (no run).
    pub(crate) async fn create_from_request_if(
        self: &Arc<Self>,
        request: StartRun,
        parent: Option<ParentLink>,
        guard: Option<CreateGuard>,
    ) -> Result<Option<RunRow>, StartError> {
        let loaded = match request.version {
            Some(v) => self.load_version(&request.playbook, v).await?,
            None => self.latest(&request.playbook).await?,
        };
        let triggers = &loaded.playbook.triggers;
        let refused = match request.trigger {
            TriggerKind::Manual if !triggers.manual => {
                Some(("a user", "it declares `on: { manual: false }`"))
            }
            TriggerKind::Webhook if triggers.webhook.is_none() => {
                Some(("webhook", "it declares no `on: webhook`"))
            }
            _ => None,
        };
        if let Some((trigger, hint)) = refused {
            return Err(StartError::NotTriggerable {
                name: request.playbook.clone(),
                trigger,
                hint: hint.to_owned(),
            });
        }
        let provided = match request.inputs {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                let message = format!("inputs must be a JSON object, not {other}");
                return Err(StartError::Inputs(Diagnostics(vec![
                    qila_model::Diagnostic::new(
                        &loaded.playbook.file,
                        qila_model::Pos::default(),
                        message,
                    ),
                ])));
            }
        };
        let inputs = loaded
            .playbook
            .resolve_inputs(provided)
            .map_err(StartError::Inputs)?;
        let marks = (!request.tlp.is_empty()).then(|| {
            Value::Object(
                request
                    .tlp
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.as_str().to_owned())))
                    .collect(),
            )
        });
        self.create_run(
            &loaded,
            inputs,
            marks,
            request.trigger,
            &request.actor,
            parent,
            None,
            guard,
        )
        .await
        .map_err(StartError::from)
    }

    /// Creates a run (queued if its playbook is at its concurrency limit), committed before this returns, and
    /// puts it to work. With `parent`, the parent's step is settled in the same transaction (waiting for the
    /// child, or done); with `guard`, the run is created only if it holds (`Ok(None)` otherwise).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_run(
        self: &Arc<Self>,
        loaded: &Loaded,
        inputs: Map<String, Value>,
        tlp: Option<Value>,
        trigger: TriggerKind,
        actor: &str,
        parent: Option<ParentLink>,
        rerun_of: Option<String>,
        guard: Option<CreateGuard>,
    ) -> Result<Option<RunRow>, EngineError> {
        let id = uuid::Uuid::now_v7().to_string();
        let playbook = &loaded.playbook;
        let status = match playbook.concurrency {
            Some(limit) if !self.limiter.occupy(&loaded.row.name, limit, &id) => RunStatus::Queued,
            _ => RunStatus::Running,
        };
        let now = now_ms();
        let run = RunRow {
            id: id.clone(),
            playbook: loaded.row.name.clone(),
            version: loaded.row.version,
            status,
            inputs: Value::Object(inputs),
            tlp,
            outputs: None,
            error: None,
            trigger,
            started_by: actor.to_owned(),
            parent_run: parent.as_ref().map(|p| p.run.clone()),
            parent_step: parent.as_ref().map(|p| p.step.clone()),
            parent_item: parent.as_ref().map(|p| p.item),
            parent_wait: parent.as_ref().is_some_and(|p| p.wait),
            rerun_of,
            cancel_requested: false,
            created_at: now,
            started_at: (status == RunStatus::Running).then_some(now),
            finished_at: None,
            resumes: 0,
        };
        let parent_task = parent.as_ref().map(|p| {
            let key = TaskKey {
                run: p.run.clone(),
                step: p.step.clone(),
                item: p.item,
            };
            let shape = TaskShape {
                position: p.position,
                action: &p.action,
            };
            let output = json!({ "run_id": id });
            let note = format!("waiting for run {id}");
            let settle = if p.wait {
                Settle::waiting(&note, None)
            } else {
                Settle::succeeded(&output)
            };
            TaskChange::settle(key, &shape, None, &settle.with_input(&p.input))
        });
        let created = self
            .store
            .execute(CreateRun {
                run: run.clone(),
                guard,
                parent: parent_task,
                actor: actor.to_owned(),
            })
            .await;
        match created {
            Ok(true) => {}
            Ok(false) => {
                self.limiter.vacate(&run.playbook, &run.id);
                return Ok(None);
            }
            Err(e) => {
                self.limiter.vacate(&run.playbook, &run.id);
                return Err(e.into());
            }
        }
        tracing::info!(run = %run.id, playbook = %run.playbook, version = run.version, trigger = %trigger, "run created");
        self.changed(&run.id, false);
        if let Some(parent) = &run.parent_run {
            self.changed(parent, false);
        }
        if status == RunStatus::Running {
            if run.rerun_of.is_none() {
                self.wake_new(run.clone());
            } else {
                self.wake(&run.id);
            }
        }
        Ok(Some(run))
    }

    /// Moves a queued run to running if its playbook has a free slot; false if it stays queued.
    pub(crate) async fn leave_queue(&self, run: &RunRow) -> Result<bool, EngineError> {
        let loaded = self
            .load_version(&run.playbook, run.version)
            .await
            .map_err(|e| EngineError::Corrupt(e.to_string()))?;
        if let Some(limit) = loaded.playbook.concurrency
            && !self.limiter.occupy(&run.playbook, limit, &run.id)
        {
            return Ok(false);
        }
        let started = self
            .store
            .execute(StartQueuedRun {
                run: run.id.clone(),
            })
            .await?;
        if started {
            self.changed(&run.id, false);
        }
        Ok(true)
    }

    /// Ends a run (and, in the same transaction, the parent step waiting for it), then tells whoever waits.
    pub(crate) async fn finish_run(
        self: &Arc<Self>,
        run: &RunRow,
        status: RunStatus,
        outputs: Option<&Value>,
        error: Option<&str>,
    ) -> Result<(), EngineError> {
        let id = run.id.clone();
        let parent = match (&run.parent_run, &run.parent_step, run.parent_wait) {
            (Some(parent), Some(step), true) => {
                Some((parent.clone(), step.clone(), run.parent_item.unwrap_or(-1)))
            }
            _ => None,
        };
        let parent_task = parent.clone().map(|(parent, step, item)| {
            let key = TaskKey {
                run: parent,
                step,
                item,
            };
            let output = json!({ "run_id": id, "status": status.as_str(), "outputs": outputs });
            let message = format!(
                "run {id} {status}{}",
                error.map(|e| format!(": {e}")).unwrap_or_default()
            );
            let settle = if status == RunStatus::Succeeded {
                Settle::succeeded(&output)
            } else {
                Settle::failed("failed", &message)
            };
            // The row exists (the parent waits on it), so the shape is not used.
            let shape = TaskShape {
                position: 0,
                action: "core.playbook",
            };
            TaskChange::settle(key, &shape, None, &settle)
        });
        let finished = self
            .store
            .execute(FinishRun {
                run: id.clone(),
                status,
                outputs: outputs.cloned(),
                error: error.map(str::to_owned),
                parent: parent_task,
            })
            .await?;
        self.limiter.vacate(&run.playbook, &run.id);
        if finished {
            self.changed(&run.id, true);
            if let Some((parent, _, _)) = parent {
                self.changed(&parent, false);
                self.wake(&parent);
            }
        }
        Ok(())
    }

    /// Evaluates whether `trigger`'s condition holds for an event payload.
    pub(crate) async fn event_matches(
        &self,
        condition: Option<&qila_model::Expression>,
        payload: &Value,
    ) -> Result<bool, String> {
        match condition {
            None => Ok(true),
            Some(c) => {
                let ctx = EvalContext::new(&Map::new()).with_local("event", payload);
                c.eval_bool("on.event.if", &ctx, self.evaluator.as_ref())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Handles a wake-up request.
    pub(crate) async fn on_wake(self: &Arc<Self>, wake: Wake) -> Result<(), StoreError> {
        match wake {
            Wake::Run(id) => self.wake(&id),
            Wake::Queued(playbook) => {
                // The oldest few: each takes a free slot or goes back to sleep.
                for id in self
                    .store
                    .queued_runs(&playbook)
                    .await?
                    .into_iter()
                    .take(16)
                {
                    self.wake(&id);
                }
            }
        }
        Ok(())
    }
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Whether `plugin.action` is built into the engine.
pub(crate) fn is_builtin(plugin: &str, action: &str) -> bool {
    Builtin::of(plugin, action).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(name: &str, version: i64, source_bytes: usize) -> Arc<Loaded> {
        let playbook = Playbook::parse(
            "name: p\nversion: 1\nsteps:\n  a: { uses: t.echo }\n",
            "p.yaml",
        )
        .expect("parses");
        Arc::new(Loaded {
            row: VersionRow {
                name: name.to_owned(),
                version,
                source: "x".repeat(source_bytes),
                digest: String::new(),
                plugins: Value::Null,
                triggers: Value::Null,
                published_at: 0,
                published_by: String::new(),
            },
            playbook: Arc::new(playbook),
        })
    }

    #[test]
    fn the_version_cache_is_bounded_by_source_bytes_and_keeps_what_is_used() {
        let mut cache = VersionCache::default();
        cache.insert(("hot".into(), 1), loaded("hot", 1, 1000));
        for v in 1..=100 {
            cache.insert(("big".into(), v), loaded("big", v, 512 << 10));
            assert!(
                cache.get(&("hot".into(), 1)).is_some(),
                "the used one stays"
            );
            assert!(cache.source_bytes <= VersionCache::MAX_SOURCE_BYTES);
        }
        assert!(cache.get(&("big".into(), 100)).is_some());
        assert!(cache.get(&("big".into(), 1)).is_none());
        assert!(cache.entries.len() <= 9);
        for v in 0..2000 {
            cache.insert(("small".into(), v), loaded("small", v, 10));
        }
        assert_eq!(cache.entries.len(), VersionCache::MAX_ENTRIES);
    }
}
