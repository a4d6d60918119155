//! Driving one run: a task that holds the run's state while it has work, and gives it up while it only waits.
//!
//! The task's state is a cache of the run's rows. Every decision is written (and committed) before it is acted
//! on: a step is claimed before its plugin runs, its result recorded before its dependents start. A poke (a
//! decision taken elsewhere: an approval, a timer, a child run ending, a cancel) makes the task re-read the rows.

use std::collections::HashMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use qila_model::{EvalContext, OnError, Playbook, SharedValue, Tlp};
use qila_store::command::{
    ApplyTasks, CancelChildren, CountResume, DecideApproval, Decision, RequestApproval,
    ResetResumes,
};
use qila_store::{Change, Settle, TaskChange, TaskKey, TaskShape};
use qila_store::{RunRow, RunStatus, StepRow, StepStatus, now_ms};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info_span};

use crate::PluginCatalog;
use crate::builtin::{Builtin, MAX_SLEEP, duration_field};
use crate::error::EngineError;
use crate::executor::{StepCall, StepError};
use crate::limits::TaskPermit;
use crate::state::{Inner, Loaded, ParentLink};
use crate::tlp::Flow;

/// The most items a `for_each` step may have.
const MAX_ITEMS: usize = 10_000;
/// The deepest chain of `core.playbook` calls.
const MAX_DEPTH: u32 = 16;

/// Identifies a task within a run: a step index and an item (-1 for none).
type Slot = (usize, i64);

/// What an executed task came back with.
struct Done {
    slot: Slot,
    attempt: i64,
    result: Result<Value, StepError>,
}

/// Runs the task of run `id` until the run ends or only waits. Pokes arrive on `pokes`.
pub(crate) async fn drive(
    inner: Arc<Inner>,
    id: String,
    mut pokes: mpsc::UnboundedReceiver<()>,
    fresh: Option<RunRow>,
) {
    let span = info_span!("run", run = %id);
    async move {
        let mut task = match RunTask::load(&inner, &id, fresh).await {
            Ok(Some(task)) => task,
            Ok(None) => {
                inner.retire(&id, &mut pokes);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the run; it resumes at the next start");
                inner.forget(&id);
                return;
            }
        };
        loop {
            match task.advance().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "cannot advance the run; it resumes at the next start");
                    task.in_flight.abort_all();
                    inner.forget(&id);
                    return;
                }
            }
            if task.in_flight.is_empty() {
                task.rested().await;
                if inner.retire(&id, &mut pokes) {
                    return;
                }
                if let Err(e) = task.reload().await {
                    tracing::error!(error = %e, "cannot reload the run");
                    inner.forget(&id);
                    return;
                }
                continue;
            }
            tokio::select! {
                Some(joined) = task.in_flight.join_next() => {
                    let done = match joined {
                        Ok(done) => Some(done),
                        Err(e) if e.is_cancelled() => None,
                        Err(e) => {
                            tracing::error!(error = %e, "a step task ended abnormally");
                            None
                        }
                    };
                    let mut finished: Vec<Done> = done.into_iter().collect();
                    while let Some(joined) = task.in_flight.try_join_next() {
                        if let Ok(done) = joined {
                            finished.push(done);
                        }
                    }
                    let mut settled = Ok(());
                    for done in finished {
                        settled = task.settle_done(done).await;
                        if settled.is_err() {
                            break;
                        }
                    }
                    if let Err(e) = settled
                    {
                        tracing::error!(error = %e, "cannot record a step's result; the run resumes at the next start");
                        task.in_flight.abort_all();
                        inner.forget(&id);
                        return;
                    }
                }
                Some(()) = pokes.recv() => {
                    while pokes.try_recv().is_ok() {}
                    if let Err(e) = task.reload().await {
                        tracing::error!(error = %e, "cannot reload the run");
                    }
                }
            }
        }
        inner.retire_finished(&id);
    }
    .instrument(span)
    .await
}

struct RunTask {
    inner: Arc<Inner>,
    run: RunRow,
    loaded: Arc<Loaded>,
    ctx: EvalContext,
    rows: FxHashMap<Slot, StepRow>,
    /// For each handler step: the error it handles, once a step naming it failed.
    errors: Vec<Option<Value>>,
    in_flight: JoinSet<Done>,
    /// Tasks claimed (committed or queued) and not yet settled.
    flying: FxHashSet<Slot>,
    /// Writes decided in this pass, committed together by [`RunTask::flush`].
    pending: Vec<Op>,
    /// Queued claims: the input and concurrency slot each execution gets once its claim is committed.
    claims: FxHashMap<Slot, (Value, Option<TaskPermit>)>,
    /// TLP labels of what ended steps received, which no longer change (see [`crate::tlp`]).
    tlp_known: HashMap<usize, Option<crate::tlp::Label>>,
    /// How many steps at the start of the topological order have ended: [`RunTask::consider`] would pass them
    /// over, so a pass starts after them (a chain's pass costs its open steps, not all of them).
    ended_prefix: usize,
}

/// A write the run task has decided and not yet committed.
enum Op {
    Claim {
        slot: Slot,
        key: TaskKey,
        position: i64,
        action: String,
        input: Value,
    },
    Settle {
        key: TaskKey,
        position: i64,
        action: String,
        owner: Option<String>,
        status: StepStatus,
        output: Option<Value>,
        input: Option<Value>,
        kind: Option<String>,
        error: Option<String>,
        wake_at: Option<i64>,
    },
}

/// What a committed op came back with.
enum OpResult {
    Claimed(Slot, Option<i64>),
    Settled,
}

impl RunTask {
    /// Loads run `id` from its rows, or starts from `fresh`, a run just created (no rows to read).
    async fn load(
        inner: &Arc<Inner>,
        id: &str,
        fresh: Option<RunRow>,
    ) -> Result<Option<Self>, EngineError> {
        let is_fresh = fresh.is_some();
        let run = match fresh {
            Some(run) => run,
            None => match inner.store.run(id).await? {
                Some(run) => run,
                None => return Ok(None),
            },
        };
        if run.status.is_terminal() {
            return Ok(None);
        }
        let loaded = match inner.load_version(&run.playbook, run.version).await {
            Ok(loaded) => loaded,
            Err(e) => {
                // The version cannot run in this process (its plugins changed or are gone): fail it clearly.
                let message = e.to_string();
                inner
                    .finish_run(&run, RunStatus::Failed, None, Some(&message))
                    .await?;
                return Ok(None);
            }
        };
        let mut task = Self {
            inner: inner.clone(),
            ctx: EvalContext::new(&Map::new()),
            errors: vec![None; loaded.playbook.steps.len()],
            run,
            loaded,
            rows: FxHashMap::default(),
            in_flight: JoinSet::new(),
            flying: FxHashSet::default(),
            pending: Vec::new(),
            claims: FxHashMap::default(),
            tlp_known: HashMap::new(),
            ended_prefix: 0,
        };
        let rows = if is_fresh {
            Vec::new()
        } else {
            inner.store.steps(id).await?
        };
        task.sync_rows(rows);
        Ok(Some(task))
    }

    fn pb(&self) -> &Playbook {
        &self.loaded.playbook
    }

    /// Commits what is pending, then re-reads the run and its rows.
    async fn reload(&mut self) -> Result<(), EngineError> {
        self.flush().await?;
        self.reload_rows().await
    }

    /// Re-reads the run and its rows (dropping anything not committed).
    async fn reload_rows(&mut self) -> Result<(), EngineError> {
        if let Some(run) = self.inner.store.run(&self.run.id).await? {
            self.run = run;
        }
        let rows = self.inner.store.steps(&self.run.id).await?;
        self.sync_rows(rows);
        Ok(())
    }

    /// Rebuilds the cached rows, the expression context and the handlers' errors from the run's rows.
    fn sync_rows(&mut self, rows: Vec<StepRow>) {
        let pb = self.loaded.playbook.clone();
        let inputs = match &self.run.inputs {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        self.ctx = EvalContext::with_shared_inputs(&SharedValue::new(&Value::Object(inputs)));
        self.rows.clear();
        self.ended_prefix = 0;
        for row in rows {
            let Some(i) = pb.step_index(&row.step_id) else {
                tracing::warn!(step = %row.step_id, "a row names a step the playbook does not have");
                continue;
            };
            self.rows.insert((i, row.item), row);
        }
        self.errors = vec![None; pb.steps.len()];
        for &i in pb.topological_order() {
            if let Some(row) = self.rows.get(&(i, -1))
                && row.status.is_terminal()
            {
                let output = row.output.clone().unwrap_or(Value::Null);
                self.ctx.set_step_shared(
                    &pb.steps[i].id,
                    row.status.as_str(),
                    &SharedValue::new(&output),
                );
                if row.status == StepStatus::Failed {
                    self.note_failure(i);
                }
            }
        }
    }

    /// Commits every pending write in one transaction, then starts the executions whose claims it committed and
    /// the timers it set. If a settle finds its row moved on (the lease was taken over, the run cancelled), the
    /// whole transaction is rolled back and the run re-read.
    async fn flush(&mut self) -> Result<(), EngineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        let timers: Vec<i64> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Settle {
                    wake_at,
                    status: StepStatus::Waiting,
                    ..
                } => *wake_at,
                _ => None,
            })
            .collect();
        let a_step_ended = ops
            .iter()
            .any(|op| matches!(op, Op::Settle { status, .. } if status.is_terminal()));
        let owner = self.inner.owner.clone();
        let lease_until = now_ms() + self.inner.lease.as_millis() as i64;
        let mut claimed: Vec<Option<Slot>> = Vec::with_capacity(ops.len());
        let changes: Vec<TaskChange> = ops
            .into_iter()
            .map(|op| match op {
                Op::Claim {
                    slot,
                    key,
                    position,
                    action,
                    input,
                } => {
                    claimed.push(Some(slot));
                    TaskChange {
                        key,
                        position,
                        action,
                        change: Change::Claim {
                            input,
                            owner: owner.clone(),
                            lease_until,
                        },
                    }
                }
                Op::Settle {
                    key,
                    position,
                    action,
                    owner,
                    status,
                    output,
                    input,
                    kind,
                    error,
                    wake_at,
                } => {
                    claimed.push(None);
                    TaskChange {
                        key,
                        position,
                        action,
                        change: Change::Settle {
                            owner,
                            status,
                            output,
                            input,
                            error_kind: kind,
                            error,
                            wake_at,
                        },
                    }
                }
            })
            .collect();
        let written = self
            .inner
            .store
            .execute(ApplyTasks(changes))
            .await
            .map(|answers| {
                claimed
                    .into_iter()
                    .zip(answers)
                    .map(|(slot, answer)| match slot {
                        Some(slot) => OpResult::Claimed(slot, answer),
                        None => OpResult::Settled,
                    })
                    .collect::<Vec<_>>()
            });
        let results = match written {
            Ok(results) => results,
            Err(qila_store::StoreError::Conflict(message)) => {
                tracing::warn!(%message, "re-reading the run");
                for slot in self.claims.keys().copied().collect::<Vec<_>>() {
                    self.flying.remove(&slot);
                }
                self.claims.clear();
                return self.reload_rows().await;
            }
            Err(e) => return Err(e.into()),
        };
        self.inner.changed(&self.run.id, false);
        for at in timers {
            self.inner.timer(at, &self.run.id);
        }
        if a_step_ended {
            self.rested().await;
        }
        let mut lost = false;
        for result in results {
            if let OpResult::Claimed(slot, attempt) = result {
                let Some((input, permit)) = self.claims.remove(&slot) else {
                    continue;
                };
                match attempt {
                    Some(attempt) => self.spawn_claimed(slot, attempt, input, permit),
                    None => {
                        // Ended or held elsewhere in the meantime.
                        self.flying.remove(&slot);
                        lost = true;
                    }
                }
            }
        }
        if lost {
            self.reload_rows().await?;
        }
        Ok(())
    }

    /// The run came to rest in this process (a step ended, or it only waits): a later start need not count it as
    /// having died under its process ([`RunRow::resumes`]). Costs a write only after a start resumed it.
    async fn rested(&mut self) {
        self.inner.rested(&self.run.id);
        if self.run.resumes == 0 {
            return;
        }
        let reset = self
            .inner
            .store
            .execute(ResetResumes {
                run: self.run.id.clone(),
            })
            .await;
        match reset {
            Ok(()) => self.run.resumes = 0,
            Err(e) => tracing::warn!(error = %e, "cannot record that the run came to rest"),
        }
    }

    /// The run is about to do work (evaluate, claim, finish). If it was in flight when this process started and
    /// this is its first work here, that start is counted against it, committed before the work: should the work
    /// kill the process, the next start knows ([`RunRow::resumes`]).
    async fn working(&mut self) -> Result<(), EngineError> {
        if !self.inner.first_work_since_start(&self.run.id) {
            return Ok(());
        }
        self.inner
            .store
            .execute(CountResume {
                run: self.run.id.clone(),
            })
            .await?;
        self.run.resumes += 1;
        Ok(())
    }

    /// Renders step `i`'s `with` against `ctx`: work, so counted first (see [`RunTask::working`]).
    async fn render_with(
        &mut self,
        i: usize,
        ctx: &EvalContext,
    ) -> Result<Result<Value, qila_model::EvalError>, EngineError> {
        self.working().await?;
        let template = &self.loaded.playbook.steps[i].with;
        Ok(template
            .render("with", ctx, self.inner.evaluator.as_ref())
            .await)
    }

    /// Activates the handler of step `i`, which has failed.
    fn note_failure(&mut self, i: usize) {
        let pb = self.loaded.playbook.clone();
        if let OnError::Handler(h) = pb.steps[i].on_error
            && self.errors[h].is_none()
        {
            let row = self.rows.get(&(i, -1));
            self.errors[h] = Some(json!({
                "step": pb.steps[i].id,
                "kind": row.and_then(|r| r.error_kind.clone()),
                "message": row.and_then(|r| r.error.clone()),
            }));
        }
    }

    fn status(&self, i: usize) -> Option<StepStatus> {
        self.rows.get(&(i, -1)).map(|r| r.status)
    }

    /// Whether step `i` has ended, or is a handler that will not run: every step naming it ended without failing
    /// (or, for the `on_failure` handler, the run ended without an unhandled failure).
    fn ended(&self, i: usize) -> bool {
        if self.status(i).is_some_and(StepStatus::is_terminal) {
            return true;
        }
        if !self.pb().is_handler(i) || self.errors[i].is_some() {
            return false;
        }
        if self.pb().on_failure == Some(i) {
            return self.others_ended(i) && self.first_unhandled().is_none();
        }
        self.pb().steps.iter().enumerate().all(|(s, step)| {
            step.on_error != OnError::Handler(i)
                || self
                    .status(s)
                    .is_some_and(|st| st.is_terminal() && st != StepStatus::Failed)
        })
    }

    /// Whether dependents of step `i` (which has ended) may run.
    fn passes(&self, i: usize) -> bool {
        match self.status(i) {
            Some(StepStatus::Succeeded) => true,
            Some(StepStatus::Failed) => self.pb().steps[i].on_error == OnError::Continue,
            _ => false,
        }
    }

    /// Whether the failure of step `i` (which failed) fails the run.
    fn unhandled(&self, i: usize) -> bool {
        match self.pb().steps[i].on_error {
            OnError::Fail => true,
            OnError::Continue => false,
            OnError::Handler(h) => self.status(h) != Some(StepStatus::Succeeded),
        }
    }

    /// The first failure that fails the run, if any.
    fn first_unhandled(&self) -> Option<usize> {
        self.pb()
            .topological_order()
            .iter()
            .copied()
            .find(|&i| self.status(i) == Some(StepStatus::Failed) && self.unhandled(i))
    }

    /// Does everything that can be done now. Returns false when the run has ended or must stay queued.
    async fn advance(&mut self) -> Result<bool, EngineError> {
        if self.run.status.is_terminal() {
            return Ok(false);
        }
        if self.run.cancel_requested {
            self.cancel_now().await?;
            return Ok(false);
        }
        if self.run.status == RunStatus::Queued && !self.inner.leave_queue(&self.run).await? {
            return Ok(false);
        }
        self.run.status = RunStatus::Running;
        if self.inner.is_stopping() {
            self.flush().await?;
            return Ok(!self.in_flight.is_empty());
        }
        let pb = self.loaded.playbook.clone();
        let mut changed = true;
        while changed {
            changed = false;
            let order = pb.topological_order();
            while let Some(&i) = order.get(self.ended_prefix)
                && self
                    .rows
                    .get(&(i, -1))
                    .is_some_and(|r| r.status.is_terminal())
            {
                self.ended_prefix += 1;
            }
            for &i in &order[self.ended_prefix..] {
                changed |= self.consider(i).await?;
            }
            if !changed && self.flying.is_empty() {
                changed = self.consider_on_failure();
            }
        }
        self.flush().await?;
        if self.in_flight.is_empty() && self.pending.is_empty() && self.complete() {
            self.finish().await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Activates the playbook's `on_failure` handler when everything else has ended and the run is failing.
    fn consider_on_failure(&mut self) -> bool {
        let Some(h) = self.pb().on_failure else {
            return false;
        };
        if self.errors[h].is_some() || !self.others_ended(h) {
            return false;
        }
        let Some(failed) = self.first_unhandled() else {
            return false;
        };
        let row = self.rows.get(&(failed, -1));
        self.errors[h] = Some(json!({
            "step": self.pb().steps[failed].id,
            "kind": row.and_then(|r| r.error_kind.clone()),
            "message": row.and_then(|r| r.error.clone()),
        }));
        true
    }

    /// Whether every step but `except` that will run has ended.
    fn others_ended(&self, except: usize) -> bool {
        (0..self.pb().steps.len())
            .filter(|&i| i != except)
            .all(|i| {
                let ended = self.status(i).is_some_and(StepStatus::is_terminal);
                ended || (self.pb().is_handler(i) && self.errors[i].is_none())
            })
    }

    /// Whether the run has nothing left to do.
    fn complete(&self) -> bool {
        let all_ended = (0..self.pb().steps.len()).all(|i| {
            let ended = self.status(i).is_some_and(StepStatus::is_terminal);
            ended || (self.pb().is_handler(i) && self.errors[i].is_none())
        });
        if !all_ended {
            return false;
        }
        // A failing run with an `on_failure` handler that has not run yet is not complete.
        match self.pb().on_failure {
            Some(h) => self.errors[h].is_some() || self.first_unhandled().is_none(),
            None => true,
        }
    }

    /// Considers step `i`; true if it made a transition.
    async fn consider(&mut self, i: usize) -> Result<bool, EngineError> {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[i];
        let row = self.rows.get(&(i, -1));
        if row.is_some_and(|r| r.status.is_terminal()) || self.flying.contains(&(i, -1)) {
            return Ok(false);
        }
        if pb.is_handler(i) && self.errors[i].is_none() {
            return Ok(false);
        }
        if step.needs.iter().any(|&n| !self.ended(n)) {
            return Ok(false);
        }
        let fresh = row.is_none();
        if fresh {
            self.working().await?;
            if let Some(&blocked) = step.needs.iter().find(|&&n| !self.passes(n)) {
                let what = match self.status(blocked) {
                    Some(StepStatus::Failed) => "failed",
                    Some(StepStatus::Cancelled) => "was cancelled",
                    None => "did not run (no error to handle)",
                    _ => "was skipped",
                };
                let reason = format!("needs `{}`, which {what}", pb.steps[blocked].id);
                return self
                    .end_step(i, StepStatus::Skipped, None, None, Some(&reason))
                    .await;
            }
            if let Some(condition) = &step.condition {
                let ctx = self.step_ctx(i);
                match condition
                    .eval_bool("if", &ctx, self.inner.evaluator.as_ref())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        let reason = format!("condition `{}` is false", condition.source());
                        return self
                            .end_step(i, StepStatus::Skipped, None, None, Some(&reason))
                            .await;
                    }
                    Err(e) => {
                        let message = e.to_string();
                        return self
                            .end_step(
                                i,
                                StepStatus::Failed,
                                None,
                                Some("expression"),
                                Some(&message),
                            )
                            .await;
                    }
                }
            }
        }
        if step.for_each.is_some() {
            return self.consider_items(i).await;
        }
        let input = match self.rows.get(&(i, -1)).and_then(|r| r.input.clone()) {
            Some(input) => input,
            None => match self.render_with(i, &self.step_ctx(i)).await? {
                Ok(input) => input,
                Err(e) => {
                    let message = e.to_string();
                    return self
                        .end_step(
                            i,
                            StepStatus::Failed,
                            None,
                            Some("expression"),
                            Some(&message),
                        )
                        .await;
                }
            },
        };
        self.consider_task((i, -1), input, None).await
    }

    /// Why step `i` may not hand its input to its plugin, if the input's TLP is above the plugin's limit.
    fn tlp_refusal(&mut self, i: usize) -> Option<String> {
        let step = &self.loaded.playbook.steps[i];
        let limit = PluginCatalog::max_tlp(self.inner.catalog.as_ref(), &step.plugin);
        if limit == Tlp::Red {
            return None;
        }
        let flow = Flow {
            playbook: &self.loaded.playbook,
            marks: self.run.tlp.as_ref(),
            inputs: &self.run.inputs,
            output: |j: usize| self.rows.get(&(j, -1)).and_then(|r| r.output.as_ref()),
            known: Some(&self.tlp_known),
        };
        let mut memo = HashMap::new();
        let label = flow.step_input(i, &mut memo);
        for (j, found) in memo {
            if j != i && self.ended(j) {
                self.tlp_known.entry(j).or_insert(found);
            }
        }
        let label = label?;
        (label.level > limit).then(|| {
            format!(
                "refused before the plugin ran: step `{}` would hand {} data to plugin `{}`, which may receive data up to {limit}; the data comes from {}",
                step.id,
                label.level,
                step.plugin,
                label.source()
            )
        })
    }

    /// The context step `i`'s expressions see (with `error` for a handler).
    fn step_ctx(&self, i: usize) -> EvalContext {
        match &self.errors[i] {
            Some(error) => self.ctx.with_local("error", error),
            None => self.ctx.clone(),
        }
    }

    /// Drives the items of `for_each` step `i`.
    async fn consider_items(&mut self, i: usize) -> Result<bool, EngineError> {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[i];
        let Some(for_each) = &step.for_each else {
            return Ok(false);
        };
        let items = match self.rows.get(&(i, -1)).and_then(|r| r.input.clone()) {
            Some(Value::Array(items)) => items,
            _ => {
                let rendered = match for_each
                    .items
                    .render("for_each", &self.step_ctx(i), self.inner.evaluator.as_ref())
                    .await
                {
                    Ok(v) => v,
                    Err(e) => {
                        let message = e.to_string();
                        return self
                            .end_step(
                                i,
                                StepStatus::Failed,
                                None,
                                Some("expression"),
                                Some(&message),
                            )
                            .await;
                    }
                };
                let Value::Array(items) = rendered else {
                    let message = format!("for_each: expected a list, got {}", kind_of(&rendered));
                    return self
                        .end_step(
                            i,
                            StepStatus::Failed,
                            None,
                            Some("invalid-input"),
                            Some(&message),
                        )
                        .await;
                };
                if items.len() > MAX_ITEMS {
                    let message = format!(
                        "for_each: {} items; at most {MAX_ITEMS} are allowed",
                        items.len()
                    );
                    return self
                        .end_step(
                            i,
                            StepStatus::Failed,
                            None,
                            Some("invalid-input"),
                            Some(&message),
                        )
                        .await;
                }
                if items.is_empty() {
                    return self
                        .end_step(
                            i,
                            StepStatus::Succeeded,
                            Some(&Value::Array(Vec::new())),
                            None,
                            None,
                        )
                        .await;
                }
                let input = Value::Array(items.clone());
                let settle = Settle {
                    status: StepStatus::Running,
                    output: None,
                    error_kind: None,
                    error: None,
                    wake_at: None,
                    input: Some(&input),
                };
                self.write_settle((i, -1), None, settle).await?;
                items
            }
        };
        let mut changed = false;
        let mut active = (0..items.len() as i64)
            .filter(|&n| self.flying.contains(&(i, n)))
            .count() as u32;
        for (n, item) in items.iter().enumerate() {
            let slot = (i, n as i64);
            let row = self.rows.get(&slot);
            if row.is_some_and(|r| r.status.is_terminal()) || self.flying.contains(&slot) {
                continue;
            }
            let waiting_timer = row.is_some_and(|r| {
                r.status == StepStatus::Waiting && r.wake_at.is_some_and(|t| t > now_ms())
            });
            if waiting_timer {
                continue;
            }
            if active >= for_each.concurrency {
                break;
            }
            let ctx = self
                .step_ctx(i)
                .with_local("item", item)
                .with_local("index", &json!(n));
            let input = match row.and_then(|r| r.input.clone()) {
                Some(input) => input,
                None => match self.render_with(i, &ctx).await? {
                    Ok(input) => input,
                    Err(e) => {
                        let message = e.to_string();
                        let settle = Settle::failed("expression", &message);
                        self.write_settle(slot, None, settle).await?;
                        changed = true;
                        continue;
                    }
                },
            };
            changed |= self.consider_task(slot, input, Some(&ctx)).await?;
            if self.flying.contains(&slot) {
                active += 1;
            }
        }
        // Every item ended: the step ends with their outputs in item order, or with the first failure.
        let rows: Vec<Option<&StepRow>> = (0..items.len() as i64)
            .map(|n| self.rows.get(&(i, n)))
            .collect();
        if rows
            .iter()
            .all(|r| r.is_some_and(|r| r.status.is_terminal()))
        {
            let failed = rows.iter().enumerate().find_map(|(n, r)| {
                r.filter(|r| r.status != StepStatus::Succeeded)
                    .map(|r| (n, r.status, r.error_kind.clone(), r.error.clone()))
            });
            match failed {
                None => {
                    let outputs = Value::Array(
                        rows.iter()
                            .map(|r| r.and_then(|r| r.output.clone()).unwrap_or(Value::Null))
                            .collect(),
                    );
                    self.end_step(i, StepStatus::Succeeded, Some(&outputs), None, None)
                        .await?;
                }
                Some((n, status, kind, error)) => {
                    let message = format!("item {n} {status}: {}", error.unwrap_or_default());
                    let kind = kind.unwrap_or_else(|| "failed".into());
                    self.end_step(i, StepStatus::Failed, None, Some(&kind), Some(&message))
                        .await?;
                }
            }
            return Ok(true);
        }
        Ok(changed)
    }

    /// Considers one task (a step, or an item): claims and executes it, or takes its built-in action.
    async fn consider_task(
        &mut self,
        slot: Slot,
        input: Value,
        item_ctx: Option<&EvalContext>,
    ) -> Result<bool, EngineError> {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[slot.0];
        if self.flying.contains(&slot) {
            return Ok(false);
        }
        let row = self.rows.get(&slot).cloned();
        let now = now_ms();
        if let Some(builtin) = Builtin::of(&step.plugin, &step.action) {
            return self.consider_builtin(slot, builtin, input, row).await;
        }
        if let Some(refusal) = self.tlp_refusal(slot.0) {
            let settle = Settle::failed("denied", &refusal).with_input(&input);
            self.write_settle(slot, None, settle).await?;
            return Ok(true);
        }
        match row.as_ref().map(|r| r.status) {
            Some(StepStatus::Waiting)
                if row
                    .as_ref()
                    .and_then(|r| r.wake_at)
                    .is_some_and(|t| t > now) =>
            {
                return Ok(false);
            }
            Some(StepStatus::Running) => {
                let row = row.as_ref().expect("matched Some");
                let dead = self.inner.sole_worker
                    || row.lease_owner.as_deref() == Some(self.inner.owner.as_str())
                    || row.lease_until.is_none_or(|t| t < now);
                if !dead {
                    // Another live worker holds it: look again when its lease ends.
                    self.inner
                        .timer(row.lease_until.unwrap_or(now) + 1, &self.run.id);
                    return Ok(false);
                }
            }
            _ => {}
        }
        // Concurrency and rate limits: over them, the task queues.
        let mut permit: Option<TaskPermit> = None;
        if let Some(limits) = &step.concurrency {
            let key = match &limits.key {
                Some(template) => {
                    let ctx = item_ctx.cloned().unwrap_or_else(|| self.step_ctx(slot.0));
                    match template
                        .render("concurrency.key", &ctx, self.inner.evaluator.as_ref())
                        .await
                    {
                        Ok(Value::String(s)) => s,
                        Ok(other) => other.to_string(),
                        Err(e) => {
                            let message = e.to_string();
                            let settle = Settle::failed("expression", &message).with_input(&input);
                            self.write_settle(slot, None, settle).await?;
                            return Ok(true);
                        }
                    }
                }
                None => String::new(),
            };
            let key = format!("{}.{}:{key}", step.plugin, step.action);
            let rate = limits.rate.as_ref().map(|r| (r.count, r.per));
            match self
                .inner
                .limiter
                .acquire(&key, limits.limit, rate, &self.run.id)
            {
                Some(p) => permit = Some(p),
                None => {
                    if row.as_ref().is_some_and(|r| r.status == StepStatus::Queued) {
                        return Ok(false);
                    }
                    let settle =
                        Settle::queued("waiting for a concurrency slot").with_input(&input);
                    self.write_settle(slot, None, settle).await?;
                    return Ok(true);
                }
            }
        }
        self.claim_and_spawn(slot, input, permit).await
    }

    /// Queues the claim of a task; it is executed once the claim is committed (see [`RunTask::flush`]).
    async fn claim_and_spawn(
        &mut self,
        slot: Slot,
        input: Value,
        permit: Option<TaskPermit>,
    ) -> Result<bool, EngineError> {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[slot.0];
        let key = self.key(slot);
        self.working().await?;
        let row = self
            .rows
            .entry(slot)
            .or_insert_with(|| blank_row(&key, slot, step));
        row.status = StepStatus::Running;
        row.input = Some(input.clone());
        row.lease_owner = Some(self.inner.owner.clone());
        row.wake_at = None;
        self.flying.insert(slot);
        self.pending.push(Op::Claim {
            slot,
            key,
            position: slot.0 as i64,
            action: format!("{}.{}", step.plugin, step.action),
            input: input.clone(),
        });
        self.claims.insert(slot, (input, permit));
        Ok(true)
    }

    /// Starts executing a task whose claim (attempt `attempt`) is committed.
    fn spawn_claimed(
        &mut self,
        slot: Slot,
        attempt: i64,
        input: Value,
        permit: Option<TaskPermit>,
    ) {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[slot.0];
        if let Some(row) = self.rows.get_mut(&slot) {
            row.attempt = attempt;
        }
        let idempotency_key = if slot.1 < 0 {
            format!("{}/{}", self.run.id, step.id)
        } else {
            format!("{}/{}/{}", self.run.id, step.id, slot.1)
        };
        let call = StepCall {
            plugin: step.plugin.clone(),
            action: step.action.clone(),
            input,
            run_id: self.run.id.clone(),
            step_id: step.id.clone(),
            attempt: attempt as u32,
            idempotency_key,
        };
        let executor = self.inner.executor.clone();
        let timeout = step.timeout;
        let span = if slot.1 < 0 {
            info_span!("step", step = %step.id, action = %format_args!("{}.{}", step.plugin, step.action), attempt)
        } else {
            info_span!("step", step = %step.id, item = slot.1, action = %format_args!("{}.{}", step.plugin, step.action), attempt)
        };
        let guard = self.inner.in_flight_guard();
        self.in_flight.spawn(
            async move {
                let _permit = permit;
                let _guard = guard;
                let execution = async {
                    match timeout {
                        Some(limit) => tokio::time::timeout(limit, executor.execute(call))
                            .await
                            .unwrap_or_else(|_| {
                                Err(StepError::new(
                                    "timeout",
                                    format!(
                                        "the attempt took longer than its timeout of {}",
                                        humanize(limit)
                                    ),
                                ))
                            }),
                        None => executor.execute(call).await,
                    }
                };
                let result = AssertUnwindSafe(execution)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(StepError::new("internal", "the step's executor panicked"))
                    });
                if let Err(e) = &result {
                    tracing::info!(kind = %e.kind, error = %e.message, "attempt failed");
                }
                Done {
                    slot,
                    attempt,
                    result,
                }
            }
            .instrument(span),
        );
    }

    /// Records what an executed attempt came back with: success, a retry after a backoff, or failure.
    async fn settle_done(&mut self, done: Done) -> Result<(), EngineError> {
        let Done {
            slot,
            attempt,
            result,
        } = done;
        self.flying.remove(&slot);
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[slot.0];
        let owner = Some(self.inner.owner.clone());
        let recorded = match &result {
            Ok(output) => {
                let settle = Settle {
                    status: StepStatus::Succeeded,
                    output: Some(output),
                    error_kind: None,
                    error: None,
                    wake_at: None,
                    input: None,
                };
                self.write_settle(slot, owner, settle).await?
            }
            Err(e) => {
                let retry = step
                    .retry
                    .as_ref()
                    .filter(|p| p.retries(&e.kind) && (attempt as u32) < p.attempts);
                match retry {
                    Some(policy) => {
                        let delay = policy.jittered_delay(attempt as u32 + 1, unit_random());
                        let wake_at = now_ms() + delay.as_millis() as i64;
                        let message = format!(
                            "{}: {} (attempt {attempt} of {}; next in {})",
                            e.kind,
                            e.message,
                            policy.attempts,
                            humanize(delay)
                        );
                        let settle = Settle {
                            status: StepStatus::Waiting,
                            output: None,
                            error_kind: Some(&e.kind),
                            error: Some(&message),
                            wake_at: Some(wake_at),
                            input: None,
                        };
                        self.write_settle(slot, owner, settle).await?
                    }
                    None => {
                        let message = format!("{}: {}", e.kind, e.message);
                        let settle = Settle::failed(&e.kind, &message);
                        self.write_settle(slot, owner, settle).await?
                    }
                }
            }
        };
        debug_assert!(recorded);
        Ok(())
    }

    /// Takes the action of a built-in step.
    async fn consider_builtin(
        &mut self,
        slot: Slot,
        builtin: Builtin,
        input: Value,
        row: Option<StepRow>,
    ) -> Result<bool, EngineError> {
        let now = now_ms();
        let waiting = row
            .as_ref()
            .is_some_and(|r| r.status == StepStatus::Waiting);
        let due = row
            .as_ref()
            .and_then(|r| r.wake_at)
            .is_some_and(|t| t <= now);
        match builtin {
            Builtin::Sleep => {
                if waiting {
                    if !due {
                        return Ok(false);
                    }
                    // The timer was set `duration` before `wake_at`.
                    let duration = duration_field(&input, "duration")
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let set_at = row
                        .as_ref()
                        .and_then(|r| r.wake_at)
                        .map_or(now, |t| t - duration.as_millis() as i64);
                    let slept = now - set_at;
                    let output = json!({ "slept_ms": slept.max(0) });
                    return self
                        .end_task(slot, StepStatus::Succeeded, Some(&output), None, None)
                        .await;
                }
                let duration = match duration_field(&input, "duration") {
                    Ok(Some(d)) if d <= MAX_SLEEP => d,
                    Ok(Some(_)) => {
                        let m = "`duration` is longer than the longest sleep, 30 days";
                        return self
                            .end_task(
                                slot,
                                StepStatus::Failed,
                                None,
                                Some("invalid-input"),
                                Some(m),
                            )
                            .await;
                    }
                    Ok(None) => {
                        let m = "`duration` is required";
                        return self
                            .end_task(
                                slot,
                                StepStatus::Failed,
                                None,
                                Some("invalid-input"),
                                Some(m),
                            )
                            .await;
                    }
                    Err(m) => {
                        return self
                            .end_task(
                                slot,
                                StepStatus::Failed,
                                None,
                                Some("invalid-input"),
                                Some(&m),
                            )
                            .await;
                    }
                };
                let wake_at = now + duration.as_millis() as i64;
                self.wait_task(slot, &input, Some(wake_at)).await
            }
            Builtin::Approval => {
                if waiting {
                    if !due {
                        return Ok(false);
                    }
                    return self.expire_approval(slot).await;
                }
                self.ask_approval(slot, &input).await
            }
            Builtin::Playbook => {
                if waiting {
                    return Ok(false);
                }
                self.start_child(slot, &input).await
            }
        }
    }

    async fn ask_approval(&mut self, slot: Slot, input: &Value) -> Result<bool, EngineError> {
        self.flush().await?;
        let message = input
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let approvers: Vec<String> = input
            .get("approvers")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let bad = approvers
            .iter()
            .find(|a| !(a.starts_with("role:") || a.starts_with("user:")));
        if approvers.is_empty() || bad.is_some() {
            let m = format!(
                "`approvers` must list `role:<role>` or `user:<token name>` entries{}",
                bad.map(|b| format!(", not `{b}`")).unwrap_or_default()
            );
            return self
                .end_task(
                    slot,
                    StepStatus::Failed,
                    None,
                    Some("invalid-input"),
                    Some(&m),
                )
                .await;
        }
        let expires = match duration_field(input, "expires") {
            Ok(d) => d,
            Err(m) => {
                return self
                    .end_task(
                        slot,
                        StepStatus::Failed,
                        None,
                        Some("invalid-input"),
                        Some(&m),
                    )
                    .await;
            }
        };
        let default_approve = input.get("default").and_then(Value::as_str) == Some("approve");
        let now = now_ms();
        let expires_at = expires.map(|d| now + d.as_millis() as i64);
        let approval = qila_store::ApprovalRow {
            run_id: self.run.id.clone(),
            step_id: self.pb().steps[slot.0].id.clone(),
            item: slot.1,
            message,
            approvers,
            default_approve,
            expires_at,
            created_at: now,
            decision: None,
            decided_by: None,
            comment: None,
            decided_at: None,
        };
        let key = self.key(slot);
        let action = self.action(slot.0);
        let position = slot.0 as i64;
        let shape = TaskShape {
            position,
            action: &action,
        };
        let settle = Settle::waiting("waiting for approval", expires_at).with_input(input);
        let recorded = self
            .inner
            .store
            .execute(RequestApproval {
                approval,
                task: TaskChange::settle(key, &shape, None, &settle),
            })
            .await?;
        self.inner.changed(&self.run.id, false);
        if let Some(at) = expires_at {
            self.inner.timer(at, &self.run.id);
        }
        if recorded {
            tracing::info!(step = %self.pb().steps[slot.0].id, "waiting for approval");
        }
        self.reload().await?;
        Ok(true)
    }

    async fn expire_approval(&mut self, slot: Slot) -> Result<bool, EngineError> {
        self.flush().await?;
        let approvals = self.inner.store.run_approvals(&self.run.id).await?;
        let step_id = self.pb().steps[slot.0].id.clone();
        let Some(approval) = approvals
            .into_iter()
            .find(|a| a.step_id == step_id && a.item == slot.1)
        else {
            let m = "the approval's record is missing";
            return self
                .end_task(slot, StepStatus::Failed, None, Some("internal"), Some(m))
                .await;
        };
        let approved = approval.default_approve;
        let decided_at = now_ms();
        let output = json!({
            "approved": approved, "decided_by": "expiry", "comment": null, "decided_at": decided_at, "expired": true
        });
        let key = self.key(slot);
        let action = self.action(slot.0);
        let position = slot.0 as i64;
        let shape = TaskShape {
            position,
            action: &action,
        };
        let task = TaskChange::settle(key.clone(), &shape, None, &Settle::succeeded(&output));
        self.inner
            .store
            .execute(DecideApproval {
                key,
                decision: Decision::Expired,
                by: "expiry".into(),
                comment: None,
                task,
                audit: None,
            })
            .await?;
        self.inner.changed(&self.run.id, false);
        self.reload().await?;
        Ok(true)
    }

    async fn start_child(&mut self, slot: Slot, input: &Value) -> Result<bool, EngineError> {
        self.flush().await?;
        let name = input
            .get("playbook")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let version = input.get("version").and_then(Value::as_i64);
        let wait = input.get("wait").and_then(Value::as_bool).unwrap_or(true);
        let inputs = input.get("inputs").cloned().unwrap_or_else(|| json!({}));
        if self.inner.store.run_depth(&self.run.id).await? >= MAX_DEPTH {
            let m = format!("`core.playbook` calls are nested more than {MAX_DEPTH} deep");
            return self
                .end_task(
                    slot,
                    StepStatus::Failed,
                    None,
                    Some("invalid-input"),
                    Some(&m),
                )
                .await;
        }
        let parent = ParentLink {
            run: self.run.id.clone(),
            step: self.pb().steps[slot.0].id.clone(),
            item: slot.1,
            position: slot.0 as i64,
            action: self.action(slot.0),
            wait,
            input: input.clone(),
        };
        // The child's inputs carry the label of what this step hands it.
        let flow = Flow {
            playbook: &self.loaded.playbook,
            marks: self.run.tlp.as_ref(),
            inputs: &self.run.inputs,
            output: |j: usize| self.rows.get(&(j, -1)).and_then(|r| r.output.as_ref()),
            known: Some(&self.tlp_known),
        };
        let tlp = flow
            .step_input(slot.0, &mut HashMap::new())
            .map(|label| std::collections::BTreeMap::from([("*".to_owned(), label.level)]))
            .unwrap_or_default();
        let request = crate::StartRun {
            playbook: name,
            version,
            inputs,
            trigger: qila_store::TriggerKind::Playbook,
            actor: format!("run:{}", self.run.id),
            tlp,
        };
        match self.inner.create_from_request(request, Some(parent)).await {
            Ok(child) => {
                tracing::info!(child = %child.id, "started a child run");
                self.reload().await?;
                Ok(true)
            }
            Err(crate::StartError::Engine(e)) => Err(e),
            Err(e) => {
                let m = e.to_string();
                self.end_task(
                    slot,
                    StepStatus::Failed,
                    None,
                    Some("invalid-input"),
                    Some(&m),
                )
                .await
            }
        }
    }

    /// Puts a built-in task in `waiting` until `wake_at` (or a poke).
    async fn wait_task(
        &mut self,
        slot: Slot,
        input: &Value,
        wake_at: Option<i64>,
    ) -> Result<bool, EngineError> {
        let settle = Settle {
            status: StepStatus::Waiting,
            output: None,
            error_kind: None,
            error: None,
            wake_at,
            input: Some(input),
        };
        self.write_settle(slot, None, settle).await?;
        Ok(true)
    }

    /// Ends a task (step or item) without running it.
    async fn end_task(
        &mut self,
        slot: Slot,
        status: StepStatus,
        output: Option<&Value>,
        kind: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, EngineError> {
        // A failure's error reads `kind: message`, as an executed step's does.
        let prefixed = match (kind, error) {
            (Some(k), Some(e)) if !e.starts_with(&format!("{k}:")) => Some(format!("{k}: {e}")),
            _ => None,
        };
        let settle = Settle {
            status,
            output,
            error_kind: kind,
            error: prefixed.as_deref().or(error),
            wake_at: None,
            input: None,
        };
        self.write_settle(slot, None, settle).await?;
        Ok(true)
    }

    /// Ends step `i` without running it.
    async fn end_step(
        &mut self,
        i: usize,
        status: StepStatus,
        output: Option<&Value>,
        kind: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, EngineError> {
        self.end_task((i, -1), status, output, kind, error).await
    }

    /// Queues a task's new state and updates the cache at once, so later decisions in this pass see it; the
    /// state is committed by [`RunTask::flush`] before anything acts on it. Always true (kept for the callers'
    /// shape: a settle that finds the row moved on makes the whole flush fail and the run reload).
    async fn write_settle(
        &mut self,
        slot: Slot,
        owner: Option<String>,
        settle: Settle<'_>,
    ) -> Result<bool, EngineError> {
        let pb = self.loaded.playbook.clone();
        let step = &pb.steps[slot.0];
        let key = self.key(slot);
        let status = settle.status;
        let output = settle.output.cloned();
        let input = settle.input.cloned();
        let kind = settle.error_kind.map(str::to_owned);
        let error = settle.error.map(str::to_owned);
        let wake_at = settle.wake_at;
        self.pending.push(Op::Settle {
            key: key.clone(),
            position: slot.0 as i64,
            action: format!("{}.{}", step.plugin, step.action),
            owner,
            status,
            output: output.clone(),
            input: input.clone(),
            kind: kind.clone(),
            error: error.clone(),
            wake_at,
        });
        let now = now_ms();
        let row = self
            .rows
            .entry(slot)
            .or_insert_with(|| blank_row(&key, slot, step));
        row.status = status;
        row.output = output.clone();
        row.error_kind = kind;
        row.error = error;
        row.wake_at = wake_at;
        row.lease_owner = None;
        if input.is_some() {
            row.input = input;
        }
        if status.is_terminal() {
            row.finished_at = Some(now);
        }
        if slot.1 < 0 && status.is_terminal() {
            let shared = SharedValue::new(output.as_ref().unwrap_or(&Value::Null));
            self.ctx.set_step_shared(&step.id, status.as_str(), &shared);
            if status == StepStatus::Failed {
                self.note_failure(slot.0);
            }
            tracing::info!(step = %step.id, %status, "step ended");
        }
        Ok(true)
    }

    fn key(&self, slot: Slot) -> TaskKey {
        TaskKey {
            run: self.run.id.clone(),
            step: self.pb().steps[slot.0].id.clone(),
            item: slot.1,
        }
    }

    fn action(&self, i: usize) -> String {
        let step = &self.pb().steps[i];
        format!("{}.{}", step.plugin, step.action)
    }

    /// Renders the outputs and ends the run.
    async fn finish(&mut self) -> Result<(), EngineError> {
        self.flush().await?;
        let pb = self.loaded.playbook.clone();
        let (status, outputs, error) = match self.first_unhandled() {
            Some(_) => {
                let failed: Vec<&str> = pb
                    .topological_order()
                    .iter()
                    .filter(|&&j| self.status(j) == Some(StepStatus::Failed) && self.unhandled(j))
                    .map(|&j| pb.steps[j].id.as_str())
                    .collect();
                (
                    RunStatus::Failed,
                    None,
                    Some(format!("step(s) failed: {}", failed.join(", "))),
                )
            }
            None => {
                self.working().await?;
                let mut outputs = Map::new();
                let mut error = None;
                for (name, template) in &pb.outputs {
                    let at = format!("outputs.{name}");
                    match template
                        .render(&at, &self.ctx, self.inner.evaluator.as_ref())
                        .await
                    {
                        Ok(v) => {
                            outputs.insert(name.clone(), v);
                        }
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                match error {
                    Some(e) => (RunStatus::Failed, None, Some(e)),
                    None => (RunStatus::Succeeded, Some(Value::Object(outputs)), None),
                }
            }
        };
        self.inner
            .finish_run(&self.run, status, outputs.as_ref(), error.as_deref())
            .await?;
        self.run.status = status;
        tracing::info!(%status, "run finished");
        Ok(())
    }

    /// Stops everything and ends the run as cancelled.
    async fn cancel_now(&mut self) -> Result<(), EngineError> {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.flying.clear();
        self.claims.clear();
        self.pending.retain(|op| !matches!(op, Op::Claim { .. }));
        let open: Vec<Slot> = self
            .rows
            .iter()
            .filter(|(_, r)| !r.status.is_terminal())
            .map(|(s, _)| *s)
            .collect();
        for slot in open {
            let settle = Settle {
                status: StepStatus::Cancelled,
                output: None,
                error_kind: None,
                error: Some("the run was cancelled"),
                wake_at: None,
                input: None,
            };
            self.write_settle(slot, None, settle).await?;
        }
        self.flush().await?;
        let children = self
            .inner
            .store
            .execute(CancelChildren {
                parent: self.run.id.clone(),
            })
            .await?;
        for child in children {
            self.inner.wake(&child);
        }
        self.inner
            .finish_run(&self.run, RunStatus::Cancelled, None, Some("cancelled"))
            .await?;
        self.run.status = RunStatus::Cancelled;
        tracing::info!("run cancelled");
        Ok(())
    }
}

fn blank_row(key: &TaskKey, slot: Slot, step: &qila_model::Step) -> StepRow {
    StepRow {
        run_id: key.run.clone(),
        step_id: key.step.clone(),
        item: slot.1,
        position: slot.0 as i64,
        action: format!("{}.{}", step.plugin, step.action),
        status: StepStatus::Queued,
        attempt: 0,
        input: None,
        output: None,
        error_kind: None,
        error: None,
        lease_owner: None,
        lease_until: None,
        wake_at: None,
        started_at: Some(now_ms()),
        finished_at: None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A uniform number in [0, 1) for jitter.
fn unit_random() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// `1.5s`, `250ms`, `2m`.
pub(crate) fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{:.1}m", ms as f64 / 60_000.0)
    } else {
        format!("{:.1}h", ms as f64 / 3_600_000.0)
    }
}
