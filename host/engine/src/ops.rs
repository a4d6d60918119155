//! The orchestrator's operations, behind [`Orchestrator`]'s methods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use qila_model::{Evaluator, Playbook};
use qila_store::command::{
    Audit, CreateGuard, DecideApproval, Decision, Publish, RequestCancel, ScheduleSpec,
    UncountResumes,
};
use qila_store::{
    ApprovalRow, RunKey, RunRow, RunStatus, Store, TriggerKind, UnfinishedRun, VersionRow, now_ms,
};
use qila_store::{Settle, TaskChange, TaskKey, TaskShape};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::builtin::BuiltinCatalog;
use crate::error::{ActionError, EngineError, PublishError, StartError};
use crate::executor::StepExecutor;
use crate::orchestrator::{
    Approver, Options, Orchestrator, PluginCatalog, Published, StartRun, Started,
};
use crate::state::{Inner, Loaded, erase, is_builtin};
use crate::timers;

pub(crate) async fn start<E: StepExecutor>(
    store: Store,
    executor: Arc<E>,
    evaluator: Arc<dyn Evaluator>,
    catalog: Arc<dyn PluginCatalog>,
    options: Options,
) -> Result<Orchestrator, EngineError> {
    let owner = options
        .owner
        .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4()));
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner::new(
        store,
        erase(executor),
        evaluator,
        Arc::new(BuiltinCatalog::over(catalog)),
        owner,
        options.lease,
        options.sole_worker,
        wake_tx,
    ));

    // Subscriptions of the latest versions to internal events.
    for row in inner.store.playbooks().await? {
        match inner.latest(&row.name).await {
            Ok(loaded) => inner.subscribe_events(&loaded),
            Err(e) => {
                tracing::warn!(playbook = %row.name, error = %e, "its latest version cannot run here")
            }
        }
    }
    // Durable timers.
    for (run, at) in inner.store.timers().await? {
        inner.timer(at, &run);
    }
    // Unfinished runs: count the running ones against their playbooks' limits first; they are resumed in the
    // background (below), so that resuming never delays what the caller starts next (the API's listener).
    let unfinished = inner.store.unfinished_runs().await?;
    let mut queued_playbooks: Vec<String> = Vec::new();
    for run in &unfinished {
        match run.status {
            RunStatus::Running => inner.limiter.occupy_anyway(&run.playbook, &run.id),
            _ if !queued_playbooks.contains(&run.playbook) => {
                queued_playbooks.push(run.playbook.clone())
            }
            _ => {}
        }
    }

    let waker = inner.clone();
    tokio::spawn(async move {
        while let Some(wake) = wake_rx.recv().await {
            if let Err(e) = waker.on_wake(wake).await {
                tracing::error!(error = %e, "cannot wake a run");
            }
        }
    });
    tokio::spawn(resume(inner.clone(), unfinished, queued_playbooks));
    tokio::spawn(timers_loop(inner.clone()));
    tokio::spawn(timers::run_schedules(inner.clone()));
    tokio::spawn(timers::renew_leases(inner.clone()));
    Ok(Orchestrator { inner })
}

/// A run whose process died under it this many starts in a row (after the death it was in flight at) is failed
/// instead of resumed once more: whatever it does may be what kills the process.
pub(crate) const MAX_RESUMES: i64 = 2;

/// How many runs are woken at once when resuming; other tasks run in between.
const RESUME_BATCH: usize = 64;

/// Resumes the unfinished runs found at start: fails those that died with their process too often and wakes the
/// others in batches. Each counts this start against it when it first does work here (see
/// [`crate::run`]'s `working`), committed before that work.
async fn resume(inner: Arc<Inner>, unfinished: Vec<UnfinishedRun>, queued_playbooks: Vec<String>) {
    let (given_up, running): (Vec<&UnfinishedRun>, Vec<&UnfinishedRun>) = unfinished
        .iter()
        .filter(|r| r.status == RunStatus::Running)
        .partition(|r| r.resumes >= MAX_RESUMES);
    if !unfinished.is_empty() {
        tracing::info!(
            runs = running.len(),
            queued = unfinished.len() - running.len() - given_up.len(),
            given_up = given_up.len(),
            "resuming unfinished runs"
        );
    }
    for run in given_up {
        let message = format!(
            "not resumed: the process stopped {} times in a row while this run was in flight, so the run may be \
             what stops it; re-run it once the cause is found",
            run.resumes + 1
        );
        tracing::error!(run = %run.id, playbook = %run.playbook, "{message}");
        let finished = match inner.store.run(&run.id).await {
            Ok(Some(row)) => inner
                .finish_run(&row, RunStatus::Failed, None, Some(&message))
                .await
                .map_err(|e| e.to_string()),
            Ok(None) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = finished {
            tracing::error!(run = %run.id, error = %e, "cannot fail a run that keeps stopping its process");
        }
    }
    // A run counts this start against it only once it does work here (a run that only waits never does).
    let ids: Vec<String> = running.iter().map(|r| r.id.clone()).collect();
    inner
        .resumed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(ids.iter().cloned());
    for batch in ids.chunks(RESUME_BATCH) {
        for id in batch {
            inner.wake(id);
        }
        tokio::task::yield_now().await;
    }
    for playbook in queued_playbooks {
        let _ = inner.wake_tx.send(crate::limits::Wake::Queued(playbook));
    }
}

async fn timers_loop(inner: Arc<Inner>) {
    inner.timers.run_loop().await;
}

/// Loads a playbook against the catalog on the blocking pool: validating the largest document takes a tenth of
/// a second of CPU, which must not hold an async worker that serves requests.
async fn validate(inner: &Arc<Inner>, source: &str, file: &str) -> Result<Playbook, PublishError> {
    let catalog = inner.catalog.clone();
    let (source, name) = (source.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || Playbook::load(&source, &name, catalog.as_ref()))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "playbook validation did not finish");
            Err(qila_model::Diagnostics(vec![qila_model::Diagnostic {
                file: file.to_owned(),
                line: 1,
                col: 1,
                message:
                    "the playbook could not be validated (an internal error; see the server log)"
                        .to_owned(),
            }]))
        })
        .map_err(PublishError::Invalid)
}

pub(crate) async fn publish(
    o: &Orchestrator,
    source: &str,
    file: &str,
    actor: &str,
) -> Result<Published, PublishError> {
    let inner = &o.inner;
    let playbook = validate(inner, source, file).await?;
    let digest = hex::encode(Sha256::digest(source.as_bytes()));
    let mut plugins = BTreeMap::new();
    for step in &playbook.steps {
        if is_builtin(&step.plugin, &step.action) {
            continue;
        }
        let pinned =
            PluginCatalog::digest(inner.catalog.as_ref(), &step.plugin).unwrap_or_default();
        plugins.insert(step.plugin.clone(), Value::String(pinned));
    }
    let plugins = Value::Object(plugins.into_iter().collect());
    let triggers = &playbook.triggers;
    let triggers_json = json!({
        "manual": triggers.manual,
        "webhook": triggers.webhook.as_ref().map(|w| json!({"signature": w.signature, "input": w.input})),
        "schedule": triggers.schedules.iter().map(|s| s.cron.clone()).collect::<Vec<_>>(),
        "events": triggers.events.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
    });
    let name = playbook.name.clone();
    let has_hook = triggers.webhook.is_some();
    if let Some(latest) = inner.store.latest_version(&name).await?
        && latest.digest == digest
        && latest.plugins == plugins
    {
        let hook_secret = if has_hook {
            inner.store.hook_secret(&name).await?
        } else {
            None
        };
        return Ok(Published {
            version: latest,
            created: false,
            hook_secret,
        });
    }
    let now = now_ms();
    let schedules: Vec<ScheduleSpec> = triggers
        .schedules
        .iter()
        .enumerate()
        .map(|(i, s)| ScheduleSpec {
            idx: i as i64,
            cron: s.cron.clone(),
            next_fire_at: s.next_after(now).unwrap_or(i64::MAX),
        })
        .collect();
    let mut row = VersionRow {
        name: name.clone(),
        version: 0,
        source: source.to_owned(),
        digest,
        plugins,
        triggers: triggers_json,
        published_at: now,
        published_by: actor.to_owned(),
    };
    let fresh_secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hook_name = qila_store::hook_secret_name(&name);
    let sealed_secret = inner.store.vault().seal_text(&hook_name, &fresh_secret)?;
    let (version, stored_secret) = inner
        .store
        .execute(Publish {
            version: row.clone(),
            schedules,
            fresh_hook_secret: has_hook.then_some(sealed_secret),
            actor: actor.to_owned(),
        })
        .await?;
    let hook_secret = match stored_secret {
        Some(stored) => Some(
            inner
                .store
                .vault()
                .open_text(&hook_name, &stored)?
                .unwrap_or(stored),
        ),
        None => None,
    };
    row.version = version;
    let loaded = Arc::new(Loaded {
        row: row.clone(),
        playbook: Arc::new(playbook),
    });
    inner.remember(loaded.clone());
    inner.subscribe_events(&loaded);
    inner.schedules_changed.notify_one();
    tracing::info!(playbook = %name, version, "published");
    Ok(Published {
        version: row,
        created: true,
        hook_secret,
    })
}

pub(crate) async fn start_run(o: &Orchestrator, request: StartRun) -> Result<RunRow, StartError> {
    o.inner.create_from_request(request, None).await
}

pub(crate) async fn webhook(
    o: &Orchestrator,
    playbook: &str,
    payload: Value,
) -> Result<RunRow, StartError> {
    let request = webhook_request(o, playbook, payload).await?;
    o.inner.create_from_request(request, None).await
}

/// Starts `request` unless `key` is held by an earlier run: the claim and the run commit together.
pub(crate) async fn start_once(
    o: &Orchestrator,
    request: StartRun,
    key: RunKey,
) -> Result<Started, StartError> {
    let guard = CreateGuard::RunKey(key.clone());
    if let Some(run) = o
        .inner
        .create_from_request_if(request, None, Some(guard))
        .await?
    {
        return Ok(Started::New(Box::new(run)));
    }
    match o.inner.store.run_key(&key).await? {
        Some(held) => Ok(Started::Existing(held)),
        // The claim that held the key expired between the two statements: the caller may send again.
        None => Err(StartError::Engine(EngineError::Store(
            qila_store::StoreError::Conflict(format!(
                "the key `{}` was held a moment ago and has just expired; send again",
                key.key
            )),
        ))),
    }
}

/// The run a webhook of `playbook` with `payload` asks for (the payload mapped to the inputs as declared).
pub(crate) async fn webhook_request(
    o: &Orchestrator,
    playbook: &str,
    payload: Value,
) -> Result<StartRun, StartError> {
    let loaded = o.inner.latest(playbook).await?;
    let Some(hook) = &loaded.playbook.triggers.webhook else {
        return Err(StartError::NotTriggerable {
            name: playbook.to_owned(),
            trigger: "webhook",
            hint: "it declares no `on: webhook`".into(),
        });
    };
    let inputs = match (&hook.input, payload) {
        (Some(input), payload) => Value::Object(Map::from_iter([(input.clone(), payload)])),
        (None, payload) => payload,
    };
    let request = StartRun {
        playbook: playbook.to_owned(),
        version: Some(loaded.row.version),
        inputs,
        trigger: TriggerKind::Webhook,
        actor: format!("hook:{playbook}"),
        tlp: Default::default(),
    };
    Ok(request)
}

pub(crate) async fn emit(
    o: &Orchestrator,
    event: &str,
    payload: Value,
    actor: &str,
) -> Result<Vec<RunRow>, EngineError> {
    let names: Vec<String> = o
        .inner
        .subscriptions
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(event)
        .cloned()
        .unwrap_or_default();
    let mut runs = Vec::new();
    for name in names {
        let loaded = match o.inner.latest(&name).await {
            Ok(l) => l,
            Err(StartError::Engine(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(playbook = %name, error = %e, "cannot start a run for an event");
                continue;
            }
        };
        for trigger in loaded
            .playbook
            .triggers
            .events
            .iter()
            .filter(|t| t.event == event)
        {
            match o
                .inner
                .event_matches(trigger.condition.as_ref(), &payload)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(playbook = %name, event, error = %e, "an event condition cannot be evaluated");
                    continue;
                }
            }
            let inputs = match &trigger.input {
                Some(input) => Map::from_iter([(input.clone(), payload.clone())]),
                None => payload.as_object().cloned().unwrap_or_default(),
            };
            let inputs = match loaded.playbook.resolve_inputs(inputs) {
                Ok(inputs) => inputs,
                Err(d) => {
                    tracing::warn!(playbook = %name, event, error = %d, "an event does not fit the playbook's inputs");
                    continue;
                }
            };
            if let Some(run) = o
                .inner
                .create_run(
                    &loaded,
                    inputs,
                    None,
                    TriggerKind::Event,
                    actor,
                    None,
                    None,
                    None,
                )
                .await?
            {
                runs.push(run);
            }
            break;
        }
    }
    Ok(runs)
}

async fn existing_run(o: &Orchestrator, id: &str) -> Result<RunRow, ActionError> {
    o.inner
        .store
        .run(id)
        .await?
        .ok_or_else(|| ActionError::NotFound(format!("no run `{id}`")))
}

pub(crate) async fn cancel(o: &Orchestrator, id: &str, actor: &str) -> Result<RunRow, ActionError> {
    let run = existing_run(o, id).await?;
    if run.status.is_terminal() {
        return Err(ActionError::Conflict(format!(
            "run {id} has already ended ({})",
            run.status
        )));
    }
    o.inner
        .store
        .execute(RequestCancel {
            run: id.to_owned(),
            actor: actor.to_owned(),
        })
        .await?;
    o.inner.changed(id, false);
    o.inner.wake(id);
    existing_run(o, id).await
}

pub(crate) async fn rerun(o: &Orchestrator, id: &str, actor: &str) -> Result<RunRow, ActionError> {
    let run = existing_run(o, id).await?;
    if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
        return Err(ActionError::Conflict(format!(
            "run {id} is {}; only a failed or cancelled run can be re-run",
            run.status
        )));
    }
    let loaded = o.inner.load_version(&run.playbook, run.version).await?;
    let inputs = run.inputs.as_object().cloned().unwrap_or_default();
    let created = o
        .inner
        .create_run(
            &loaded,
            inputs,
            run.tlp.clone(),
            TriggerKind::Rerun,
            actor,
            None,
            Some(run.id.clone()),
            None,
        )
        .await?;
    created.ok_or_else(|| ActionError::Conflict("the re-run was not created".into()))
}

pub(crate) async fn decide(
    o: &Orchestrator,
    run: &str,
    step: &str,
    approve: bool,
    comment: Option<String>,
    approver: &Approver,
) -> Result<ApprovalRow, ActionError> {
    existing_run(o, run).await?;
    let approvals = o.inner.store.run_approvals(run).await?;
    let mine: Vec<&ApprovalRow> = approvals.iter().filter(|a| a.step_id == step).collect();
    let Some(approval) = mine
        .iter()
        .find(|a| a.decision.is_none())
        .or(mine.first())
        .copied()
    else {
        return Err(ActionError::NotFound(format!(
            "run {run} has no approval at step `{step}`"
        )));
    };
    if let Some(decision) = &approval.decision {
        return Err(ActionError::Conflict(format!(
            "the approval at step `{step}` of run {run} was already decided: {decision} by {}",
            approval.decided_by.as_deref().unwrap_or("?")
        )));
    }
    let allowed = approver.role == "admin"
        || approval.approvers.iter().any(|a| {
            a.strip_prefix("role:") == Some(approver.role.as_str())
                || a.strip_prefix("user:") == Some(approver.name.as_str())
        });
    if !allowed {
        return Err(ActionError::Forbidden(format!(
            "the approval at step `{step}` may be decided by {}; token `{}` has role {}",
            approval.approvers.join(", "),
            approver.name,
            approver.role
        )));
    }
    let steps = o.inner.store.steps(run).await?;
    let row = steps
        .iter()
        .find(|r| r.step_id == step && r.item == approval.item)
        .ok_or_else(|| ActionError::NotFound(format!("run {run} has no step `{step}` waiting")))?;
    let key = TaskKey {
        run: run.to_owned(),
        step: step.to_owned(),
        item: approval.item,
    };
    let (position, action) = (row.position, row.action.clone());
    let decision = if approve {
        Decision::Approved
    } else {
        Decision::Denied
    };
    let by = approver.name.clone();
    let decided_at = now_ms();
    let output = json!({
        "approved": approve, "decided_by": by, "comment": comment, "decided_at": decided_at, "expired": false
    });
    let shape = TaskShape {
        position,
        action: &action,
    };
    let task = TaskChange::settle(key.clone(), &shape, None, &Settle::succeeded(&output));
    let verb = if approve {
        "approval.approve"
    } else {
        "approval.deny"
    };
    let target = format!("{}/{}", key.run, key.step);
    let audit = Audit::new(
        &by,
        verb,
        &target,
        Some(json!({ "comment": output["comment"] })),
    );
    let decided = o
        .inner
        .store
        .execute(DecideApproval {
            key,
            decision,
            by,
            comment,
            task,
            audit: Some(audit),
        })
        .await?;
    if !decided {
        return Err(ActionError::Conflict(format!(
            "the approval at step `{step}` of run {run} was decided meanwhile"
        )));
    }
    o.inner.changed(run, false);
    o.inner.wake(run);
    let approvals = o.inner.store.run_approvals(run).await?;
    approvals
        .into_iter()
        .find(|a| a.step_id == step && a.item == approval.item)
        .ok_or_else(|| ActionError::NotFound(format!("run {run} has no approval at step `{step}`")))
}

pub(crate) async fn wait(o: &Orchestrator, id: &str) -> Result<RunRow, ActionError> {
    let mut changes = o.inner.changes.subscribe();
    loop {
        let run = existing_run(o, id).await?;
        if run.status.is_terminal() {
            return Ok(run);
        }
        loop {
            match changes.recv().await {
                Ok(change) if change.finished && &*change.run_id == id => break,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(ActionError::Engine(EngineError::Corrupt(
                        "the orchestrator stopped".into(),
                    )));
                }
            }
        }
    }
}

pub(crate) async fn shutdown(o: &Orchestrator, grace: Duration) {
    o.inner.stop();
    let deadline = tokio::time::Instant::now() + grace;
    while o.inner.in_flight() > 0 {
        let idle = o.inner.idle.notified();
        if o.inner.in_flight() == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, idle).await.is_err() {
            tracing::warn!(
                steps = o.inner.in_flight(),
                "steps still running at shutdown resume at the next start"
            );
            break;
        }
    }
    // The process stops by choice: the runs it counted a start against did not die under it.
    let counted = o.inner.take_counted();
    if !counted.is_empty() {
        let taken_back = o
            .inner
            .store
            .execute(UncountResumes { runs: counted })
            .await;
        if let Err(e) = taken_back {
            tracing::warn!(error = %e, "cannot take back the starts counted against runs in flight");
        }
    }
}

/// How many runs are held in memory now.
pub(crate) fn active_runs(o: &Orchestrator) -> usize {
    o.inner.active_runs()
}
