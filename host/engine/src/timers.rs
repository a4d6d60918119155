//! Time-driven work: durable timers (backoffs, sleeps, approval expiries, leases), cron schedules and lease
//! renewal. Timers are rows (`wake_at`); this process keeps only a heap of when to wake which run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qila_store::command::{AdvanceSchedule, Audit, CreateGuard, RenewLeases};
use qila_store::{TriggerKind, now_ms};
use serde_json::{Map, json};
use tokio::sync::{Notify, mpsc};

use crate::limits::Wake;
use crate::state::Inner;

/// How far behind a schedule may fall before missed firings are skipped rather than made up.
const MAX_CATCH_UP: usize = 100;

/// When to wake which run.
pub(crate) struct Timers {
    heap: Mutex<BinaryHeap<Reverse<(i64, String)>>>,
    changed: Notify,
    wake: mpsc::UnboundedSender<Wake>,
}

impl Timers {
    pub(crate) fn new(wake: mpsc::UnboundedSender<Wake>) -> Self {
        Self {
            heap: Mutex::new(BinaryHeap::new()),
            changed: Notify::new(),
            wake,
        }
    }

    /// Wakes `run` at `at` (unix ms).
    pub(crate) fn add(&self, at: i64, run: &str) {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = heap.peek().is_none_or(|Reverse((t, _))| at < *t);
        heap.push(Reverse((at, run.to_owned())));
        drop(heap);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Fires due timers forever.
    pub(crate) async fn run_loop(&self) {
        loop {
            let now = now_ms();
            let next = {
                let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
                while let Some(Reverse((at, _))) = heap.peek() {
                    if *at > now {
                        break;
                    }
                    if let Some(Reverse((_, run))) = heap.pop() {
                        let _ = self.wake.send(Wake::Run(run));
                    }
                }
                heap.peek().map(|Reverse((at, _))| *at)
            };
            let sleep = next.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis((at - now).max(1) as u64)
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

/// Fires cron schedules: each firing starts a run and advances the schedule in one transaction, so a restart
/// neither misses nor doubles one.
pub(crate) async fn run_schedules(inner: Arc<Inner>) {
    loop {
        let next = match fire_due(&inner).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "cannot fire schedules; trying again in a second");
                Some(now_ms() + 1000)
            }
        };
        let sleep = next.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis((at - now_ms()).clamp(1, 3_600_000) as u64)
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = inner.schedules_changed.notified() => {}
        }
        if inner.is_stopping() {
            return;
        }
    }
}

async fn fire_due(inner: &Arc<Inner>) -> Result<Option<i64>, String> {
    let schedules = inner.store.schedules().await.map_err(|e| e.to_string())?;
    let mut earliest: Option<i64> = None;
    for row in schedules {
        let mut at = row.next_fire_at;
        let mut fired = 0;
        while at <= now_ms() {
            let loaded = match inner.latest(&row.playbook).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(playbook = %row.playbook, error = %e, "cannot fire a schedule");
                    break;
                }
            };
            let Some(schedule) = loaded.playbook.triggers.schedules.get(row.idx as usize) else {
                break;
            };
            let mut next = schedule.next_after(at).unwrap_or(i64::MAX);
            fired += 1;
            if fired > MAX_CATCH_UP {
                // Too far behind: skip to the next firing after now, and say so.
                next = schedule.next_after(now_ms()).unwrap_or(i64::MAX);
                let detail = json!({ "skipped_from": at, "next": next });
                inner
                    .store
                    .execute(AdvanceSchedule {
                        playbook: row.playbook.clone(),
                        idx: row.idx,
                        expected: at,
                        next,
                        audit: Some(Audit::new(
                            "schedule",
                            "schedule.skip",
                            &row.playbook,
                            Some(detail),
                        )),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                tracing::warn!(playbook = %row.playbook, "schedule fell more than {MAX_CATCH_UP} firings behind; skipped ahead");
                at = next;
                break;
            }
            let mut inputs: Map<String, serde_json::Value> = schedule.inputs.clone();
            let inputs = match loaded.playbook.resolve_inputs(std::mem::take(&mut inputs)) {
                Ok(inputs) => inputs,
                Err(d) => {
                    tracing::warn!(playbook = %row.playbook, error = %d, "a schedule's inputs do not fit the playbook");
                    Map::new()
                }
            };
            let guard = CreateGuard::ScheduleTick {
                playbook: row.playbook.clone(),
                idx: row.idx,
                expected: at,
                next,
            };
            let created = inner
                .create_run(
                    &loaded,
                    inputs,
                    None,
                    TriggerKind::Schedule,
                    // The firing instant it stands for (a made-up firing runs later than its instant).
                    &format!("schedule@{at}"),
                    None,
                    None,
                    Some(guard),
                )
                .await
                .map_err(|e| e.to_string())?;
            if created.is_none() {
                break;
            }
            tracing::info!(playbook = %row.playbook, fire_at = at, "schedule fired");
            at = next;
        }
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    Ok(earliest)
}

/// Renews the leases of the steps this process runs.
pub(crate) async fn renew_leases(inner: Arc<Inner>) {
    let period = inner.lease / 3;
    loop {
        tokio::time::sleep(period).await;
        if inner.in_flight() == 0 {
            continue;
        }
        let renewed = inner
            .store
            .execute(RenewLeases {
                owner: inner.owner.clone(),
                until: now_ms() + inner.lease.as_millis() as i64,
            })
            .await;
        if let Err(e) = renewed {
            tracing::error!(error = %e, "cannot renew leases");
        }
    }
}
