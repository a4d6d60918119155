//! Concurrency and rate limits: per playbook (runs at once) and per step key (tasks at once, tasks per period).
//! Work over a limit queues; it never fails. Queued runs are rows (`queued`), so they outlive a restart; queued
//! tasks are re-requested when their run resumes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

/// Something to wake because a limit freed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A run whose task waits for a slot (or whose timer is due).
    Run(String),
    /// The oldest queued run of a playbook.
    Queued(String),
}

#[derive(Default)]
struct KeyState {
    running: u32,
    window: VecDeque<Instant>,
    waiters: VecDeque<String>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, KeyState>,
    runs: HashMap<String, HashSet<String>>,
}

/// The limits of one process.
pub(crate) struct Limiter {
    state: Mutex<State>,
    wake: UnboundedSender<Wake>,
}

/// A task's slot under a key; freed on drop.
pub(crate) struct TaskPermit {
    limiter: Arc<Limiter>,
    key: String,
}

impl Drop for TaskPermit {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        if let Some(k) = state.keys.get_mut(&self.key) {
            k.running = k.running.saturating_sub(1);
            if let Some(run) = k.waiters.pop_front() {
                let _ = self.limiter.wake.send(Wake::Run(run));
            }
            if k.running == 0 && k.waiters.is_empty() && k.window.is_empty() {
                state.keys.remove(&self.key);
            }
        }
    }
}

impl Limiter {
    pub(crate) fn new(wake: UnboundedSender<Wake>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            wake,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters worse than off by one; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot under `key` for a task of `run`, or queues `run` to be woken when one may be free.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        key: &str,
        limit: Option<u32>,
        rate: Option<(u32, Duration)>,
        run: &str,
    ) -> Option<TaskPermit> {
        let now = Instant::now();
        let mut state = self.lock();
        let k = state.keys.entry(key.to_owned()).or_default();
        let queue = |k: &mut KeyState| {
            if !k.waiters.iter().any(|w| w == run) {
                k.waiters.push_back(run.to_owned());
            }
        };
        if limit.is_some_and(|limit| k.running >= limit) {
            queue(k);
            return None;
        }
        if let Some((count, per)) = rate {
            while k
                .window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= per)
            {
                k.window.pop_front();
            }
            if k.window.len() as u32 >= count {
                queue(k);
                let at = k.window.front().map_or(now, |t| *t + per);
                let wake = self.wake.clone();
                let run = run.to_owned();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at).await;
                    let _ = wake.send(Wake::Run(run));
                });
                return None;
            }
            k.window.push_back(now);
        }
        k.running += 1;
        Some(TaskPermit {
            limiter: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Counts `run` among the running runs of `playbook` if fewer than `limit` are; false if it must queue.
    pub(crate) fn occupy(&self, playbook: &str, limit: u32, run: &str) -> bool {
        let mut state = self.lock();
        let holders = state.runs.entry(playbook.to_owned()).or_default();
        if holders.contains(run) {
            return true;
        }
        if holders.len() as u32 >= limit {
            return false;
        }
        holders.insert(run.to_owned());
        true
    }

    /// Counts `run` among the running runs of `playbook` whatever the limit (a run that was running before a
    /// restart).
    pub(crate) fn occupy_anyway(&self, playbook: &str, run: &str) {
        self.lock()
            .runs
            .entry(playbook.to_owned())
            .or_default()
            .insert(run.to_owned());
    }

    /// `run` has ended: frees its slot under its playbook (waking the oldest queued run) and its places in queues.
    pub(crate) fn vacate(&self, playbook: &str, run: &str) {
        let mut state = self.lock();
        if let Some(holders) = state.runs.get_mut(playbook)
            && holders.remove(run)
        {
            if holders.is_empty() {
                state.runs.remove(playbook);
            }
            let _ = self.wake.send(Wake::Queued(playbook.to_owned()));
        }
        state.keys.retain(|_, k| {
            k.waiters.retain(|w| w != run);
            k.running > 0 || !k.waiters.is_empty() || !k.window.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_limit_queues_and_a_release_wakes_the_first_waiter() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let limiter = Limiter::new(tx);
        let first = limiter.acquire("k", Some(1), None, "a").expect("free slot");
        assert!(limiter.acquire("k", Some(1), None, "b").is_none());
        assert!(limiter.acquire("k", Some(1), None, "c").is_none());
        drop(first);
        assert_eq!(rx.recv().await, Some(Wake::Run("b".into())));
        assert!(limiter.acquire("k", Some(1), None, "b").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_queues_until_the_window_moves() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let limiter = Limiter::new(tx);
        let rate = Some((2, Duration::from_secs(60)));
        drop(limiter.acquire("k", None, rate, "a").unwrap());
        drop(limiter.acquire("k", None, rate, "a").unwrap());
        assert!(limiter.acquire("k", None, rate, "a").is_none());
        assert_eq!(rx.recv().await, Some(Wake::Run("a".into())));
        assert!(limiter.acquire("k", None, rate, "a").is_some());
    }

    #[test]
    fn playbook_slots_are_counted_per_run() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let limiter = Limiter::new(tx);
        assert!(limiter.occupy("p", 1, "a"));
        assert!(limiter.occupy("p", 1, "a"));
        assert!(!limiter.occupy("p", 1, "b"));
        limiter.vacate("p", "a");
        assert_eq!(rx.try_recv().ok(), Some(Wake::Queued("p".into())));
        assert!(limiter.occupy("p", 1, "b"));
    }
}
