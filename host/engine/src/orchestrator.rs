//! The orchestrator's public face: publish, start, cancel, re-run, approve, webhook, events.

use std::sync::Arc;
use std::time::Duration;

use qila_model::{ActionCatalog, Evaluator, Tlp};
use qila_store::{ApprovalRow, ClaimedKey, RunKey, RunRow, Store, TriggerKind, VersionRow};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::error::{ActionError, EngineError, PublishError, StartError};
use crate::executor::StepExecutor;

/// The plugins steps may use: their actions' schemas (for validation) and their components' digests (pinned by
/// published versions).
pub trait PluginCatalog: ActionCatalog + Send + Sync + 'static {
    /// The SHA-256 (hex) of `plugin`'s component, if it is loaded.
    fn digest(&self, plugin: &str) -> Option<String>;

    /// The highest TLP of data `plugin` may receive. A step whose input carries more is refused before the
    /// plugin runs. Default: [`Tlp::Red`] (no limit).
    fn max_tlp(&self, plugin: &str) -> Tlp {
        let _ = plugin;
        Tlp::Red
    }
}

/// How the orchestrator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This worker's name in leases (default: a fresh UUID per process).
    pub owner: Option<String>,
    /// How long a claimed step stays claimed without renewal (default 30 s; renewed every third of it).
    pub lease: Duration,
    /// Whether every other holder of a lease is known to be dead (true when this process holds the data
    /// directory's lock, as `qila serve` and `qila run` do): their steps are claimed again at once instead of
    /// after their lease expires.
    pub sole_worker: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            owner: None,
            lease: Duration::from_secs(30),
            sole_worker: true,
        }
    }
}

/// A request to start a run.
#[derive(Debug, Clone)]
pub struct StartRun {
    /// The playbook's name.
    pub playbook: String,
    /// A published version; the latest when `None`.
    pub version: Option<i64>,
    /// Inputs, as sent (checked and defaulted against the playbook's declared inputs).
    pub inputs: Value,
    /// How it is started (`manual`, `webhook`, `schedule`, `event`).
    pub trigger: TriggerKind,
    /// Who starts it (a token's name, `schedule`, `hook`).
    pub actor: String,
    /// TLP marks on the inputs, by input name, `*` for every input: the data's sensitivity, which steps may not
    /// pass to a plugin whose limit is lower. Empty: only what the playbook declares and the values carry.
    pub tlp: std::collections::BTreeMap<String, Tlp>,
}

/// Who decides an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// The token's name.
    pub name: String,
    /// The token's role: `admin`, `engineer`, `analyst` or `viewer`.
    pub role: String,
}

/// What publishing produced.
#[derive(Debug, Clone)]
pub struct Published {
    /// The version now current (the existing one if nothing changed).
    pub version: VersionRow,
    /// False when the same source with the same plugin digests was already the latest version.
    pub created: bool,
    /// The webhook secret, when the playbook has `on: webhook`.
    pub hook_secret: Option<String>,
}

/// What starting a run under a [`RunKey`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// A new run, committed with its key.
    New(Box<RunRow>),
    /// The key is held by the run an earlier request started (while the key lives); nothing was started.
    Existing(ClaimedKey),
}

/// A run's state changed (a step or the run moved); read what changed with
/// [`Store::transitions`](qila_store::Store::transitions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunChanged {
    /// The run.
    pub run_id: Arc<str>,
    /// Whether the run has ended.
    pub finished: bool,
}

/// Publishes playbooks and runs them durably. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) inner: Arc<crate::state::Inner>,
}

impl Orchestrator {
    /// Starts the orchestrator on `store`: resumes every unfinished run, and starts the timer and schedule
    /// services. Needs a Tokio runtime.
    pub async fn start<E: StepExecutor>(
        store: Store,
        executor: Arc<E>,
        evaluator: Arc<dyn Evaluator>,
        catalog: Arc<dyn PluginCatalog>,
        options: Options,
    ) -> Result<Self, EngineError> {
        crate::ops::start(store, executor, evaluator, catalog, options).await
    }

    /// The store, for reads.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Validates `source` (named `file` in errors) against the loaded plugins and stores it as the playbook's next
    /// version, pinning the digests of the plugins it uses, unless the latest version is the same.
    pub async fn publish(
        &self,
        source: &str,
        file: &str,
        actor: &str,
    ) -> Result<Published, PublishError> {
        crate::ops::publish(self, source, file, actor).await
    }

    /// Starts a run; it is recorded (as `running`, or `queued` under its playbook's concurrency limit) before this
    /// returns.
    pub async fn start_run(&self, request: StartRun) -> Result<RunRow, StartError> {
        crate::ops::start_run(self, request).await
    }

    /// [`Self::start_run`] at most once per `key`: the key is claimed in the transaction that creates the run, so
    /// a request that comes again (at the same time, or after a restart) while the key lives finds the first run.
    pub async fn start_run_once(
        &self,
        request: StartRun,
        key: RunKey,
    ) -> Result<Started, StartError> {
        crate::ops::start_once(self, request, key).await
    }

    /// Starts a run of `playbook` from its webhook with `payload` (the caller has checked the hook's secret).
    pub async fn webhook(&self, playbook: &str, payload: Value) -> Result<RunRow, StartError> {
        crate::ops::webhook(self, playbook, payload).await
    }

    /// [`Self::webhook`] at most once per delivery: `delivery` (the sender's delivery id) is claimed with the run.
    pub async fn webhook_once(
        &self,
        playbook: &str,
        payload: Value,
        delivery: RunKey,
    ) -> Result<Started, StartError> {
        let request = crate::ops::webhook_request(self, playbook, payload).await?;
        crate::ops::start_once(self, request, delivery).await
    }

    /// Emits an internal event (e.g. `alert.created`) with `payload`: starts a run of every playbook whose
    /// `on.event` matches.
    pub async fn emit(
        &self,
        event: &str,
        payload: Value,
        actor: &str,
    ) -> Result<Vec<RunRow>, EngineError> {
        crate::ops::emit(self, event, payload, actor).await
    }

    /// Cancels a run that has not ended: its running steps are stopped, its waiting ones cancelled.
    pub async fn cancel(&self, run: &str, actor: &str) -> Result<RunRow, ActionError> {
        crate::ops::cancel(self, run, actor).await
    }

    /// Starts a new run of a failed or cancelled run's version with its inputs, keeping the outputs of the steps
    /// that succeeded: only the others run again.
    pub async fn rerun(&self, run: &str, actor: &str) -> Result<RunRow, ActionError> {
        crate::ops::rerun(self, run, actor).await
    }

    /// Approves (or denies) the pending approval of `step` in `run`.
    pub async fn decide(
        &self,
        run: &str,
        step: &str,
        approve: bool,
        comment: Option<String>,
        approver: &Approver,
    ) -> Result<ApprovalRow, ActionError> {
        crate::ops::decide(self, run, step, approve, comment, approver).await
    }

    /// How many runs are held in memory now (a run that only waits is not).
    pub fn active_runs(&self) -> usize {
        crate::ops::active_runs(self)
    }

    /// Live notifications of run changes.
    pub fn subscribe(&self) -> broadcast::Receiver<RunChanged> {
        self.inner.changes.subscribe()
    }

    /// Waits until `run` has ended and returns it.
    pub async fn wait(&self, run: &str) -> Result<RunRow, ActionError> {
        crate::ops::wait(self, run).await
    }

    /// Stops starting new work and waits up to `grace` for running steps to end; what is still running then is
    /// resumed by the next start.
    pub async fn shutdown(&self, grace: Duration) {
        crate::ops::shutdown(self, grace).await
    }
}
