//! Reads of versions, runs, tasks, transitions, approvals, schedules and hooks.

use crate::Store;
use crate::error::StoreError;
use crate::record::{
    ApprovalRow, RunRow, RunStatus, StepRow, Transition, UnfinishedRun, VersionRow,
};
use crate::sql::{Arg, args};

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this playbook.
    pub playbook: Option<String>,
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs created before this run (its id; ids sort by creation), for paging.
    pub before: Option<String>,
    /// At most this many (newest first).
    pub limit: u32,
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The playbook.
    pub playbook: String,
    /// Position in its `on.schedule` list.
    pub idx: i64,
    /// The cron expression.
    pub cron: String,
    /// Unix milliseconds.
    pub next_fire_at: i64,
}

impl Store {
    /// The latest version of `name`.
    pub async fn latest_version(&self, name: &str) -> Result<Option<VersionRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |tx| {
            tx.row(
                "SELECT * FROM playbook_versions WHERE name = ? ORDER BY version DESC LIMIT 1",
                args![name],
                VersionRow::from_row,
            )
        })
        .await
    }

    /// Version `version` of `name`.
    pub async fn version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<VersionRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |tx| {
            tx.row(
                "SELECT * FROM playbook_versions WHERE name = ? AND version = ?",
                args![name, version],
                VersionRow::from_row,
            )
        })
        .await
    }

    /// Every version of `name`, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        let name = name.to_owned();
        self.read(move |tx| {
            tx.rows(
                "SELECT * FROM playbook_versions WHERE name = ? ORDER BY version DESC",
                args![name],
                VersionRow::from_row,
            )
        })
        .await
    }

    /// The latest version of every playbook, by name.
    pub async fn playbooks(&self) -> Result<Vec<VersionRow>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT v.* FROM playbook_versions v JOIN (SELECT name, MAX(version) AS version FROM playbook_versions \
                 GROUP BY name) l ON v.name = l.name AND v.version = l.version ORDER BY v.name",
                args![],
                VersionRow::from_row,
            )
        })
        .await
    }

    /// The run `id`.
    pub async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |tx| {
            tx.row(
                "SELECT * FROM runs WHERE id = ?",
                args![id],
                RunRow::from_row,
            )
        })
        .await
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        let filter = filter.clone();
        self.read(move |tx| {
            let mut sql = String::from("SELECT * FROM runs WHERE 1 = 1");
            let mut args: Vec<Arg<'_>> = Vec::new();
            if let Some(playbook) = &filter.playbook {
                sql.push_str(" AND playbook = ?");
                args.push(Arg::Text(playbook));
            }
            if let Some(status) = filter.status {
                sql.push_str(" AND status = ?");
                args.push(Arg::Text(status.as_str()));
            }
            if let Some(before) = &filter.before {
                sql.push_str(" AND id < ?");
                args.push(Arg::Text(before));
            }
            sql.push_str(" ORDER BY id DESC LIMIT ?");
            args.push(Arg::Int(i64::from(filter.limit.clamp(1, 1000))));
            tx.rows(&sql, &args, RunRow::from_row)
        })
        .await
    }

    /// How many runs are in each state.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT status, COUNT(*) AS n FROM runs GROUP BY status ORDER BY status",
                args![],
                |r| Ok((r.get("status")?, r.get("n")?)),
            )
        })
        .await
    }

    /// The runs that have not ended, oldest first.
    pub async fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT id, status, playbook, resumes FROM runs WHERE status IN ('queued', 'running') ORDER BY id",
                args![],
                |r| {
                    let status: String = r.get("status")?;
                    Ok(UnfinishedRun {
                        id: r.get("id")?,
                        status: RunStatus::parse(&status).unwrap_or(RunStatus::Running),
                        playbook: r.get("playbook")?,
                        resumes: r.get("resumes")?,
                    })
                },
            )
        })
        .await
    }

    /// The tasks of run `id`, in playbook order.
    pub async fn steps(&self, id: &str) -> Result<Vec<StepRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |tx| {
            tx.rows(
                "SELECT * FROM steps WHERE run_id = ? ORDER BY position, item",
                args![id],
                StepRow::from_row,
            )
        })
        .await
    }

    /// The transitions of run `id` after `after` (a `seq`), oldest first.
    pub async fn transitions(&self, id: &str, after: i64) -> Result<Vec<Transition>, StoreError> {
        let id = id.to_owned();
        self.read(move |tx| {
            tx.rows(
                "SELECT * FROM transitions WHERE run_id = ? AND seq > ? ORDER BY seq",
                args![id, after],
                Transition::from_row,
            )
        })
        .await
    }

    /// The earliest timer of a waiting task.
    pub async fn next_wake(&self) -> Result<Option<i64>, StoreError> {
        self.read(|tx| {
            tx.row(
                "SELECT MIN(wake_at) FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL",
                args![],
                |r| r.get::<Option<i64>>(0),
            )
        })
        .await
        .map(Option::flatten)
    }

    /// Runs with a waiting task whose timer is due at `now`, at most `limit`.
    pub async fn due_runs(&self, now: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        self.read(move |tx| {
            tx.rows(
                "SELECT DISTINCT run_id FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ? \
                 LIMIT ?",
                args![now, limit],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Approvals, pending ones only unless `all`, oldest first.
    pub async fn approvals(&self, all: bool, limit: u32) -> Result<Vec<ApprovalRow>, StoreError> {
        let sql = if all {
            "SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?"
        } else {
            "SELECT * FROM approvals WHERE decision IS NULL ORDER BY created_at LIMIT ?"
        };
        let limit = limit.clamp(1, 10_000);
        self.read(move |tx| tx.rows(sql, args![limit], ApprovalRow::from_row))
            .await
    }

    /// The approvals of run `id`.
    pub async fn run_approvals(&self, id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
        let id = id.to_owned();
        self.read(move |tx| {
            tx.rows(
                "SELECT * FROM approvals WHERE run_id = ? ORDER BY created_at",
                args![id],
                ApprovalRow::from_row,
            )
        })
        .await
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT * FROM schedules ORDER BY next_fire_at",
                args![],
                |r| {
                    Ok(ScheduleRow {
                        playbook: r.get("playbook")?,
                        idx: r.get("idx")?,
                        cron: r.get("cron")?,
                        next_fire_at: r.get("next_fire_at")?,
                    })
                },
            )
        })
        .await
    }

    /// The webhook secret of `playbook`, opened (it is sealed at rest).
    pub async fn hook_secret(&self, playbook: &str) -> Result<Option<String>, StoreError> {
        let owned = playbook.to_owned();
        let stored: Option<String> = self
            .read(move |tx| {
                tx.row(
                    "SELECT secret FROM hooks WHERE playbook = ?",
                    args![owned],
                    |r| r.get(0),
                )
            })
            .await?;
        match stored {
            Some(text) => {
                let name = crate::hook_secret_name(playbook);
                Ok(Some(self.vault().open_text(&name, &text)?.unwrap_or(text)))
            }
            None => Ok(None),
        }
    }

    /// Queued runs of `playbook`, oldest first.
    pub async fn queued_runs(&self, playbook: &str) -> Result<Vec<String>, StoreError> {
        let playbook = playbook.to_owned();
        self.read(move |tx| {
            tx.rows(
                "SELECT id FROM runs WHERE playbook = ? AND status = 'queued' ORDER BY id",
                args![playbook],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Every timer of a waiting task: (run, when), for the timer service to load at start.
    pub async fn timers(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|tx| {
            tx.rows(
                "SELECT run_id, wake_at FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL",
                args![],
                |r| Ok((r.get("run_id")?, r.get("wake_at")?)),
            )
        })
        .await
    }

    /// How many ancestors run `id` has through `core.playbook` steps.
    pub async fn run_depth(&self, id: &str) -> Result<u32, StoreError> {
        let id = id.to_owned();
        let depth: Option<i64> = self
            .read(move |tx| {
                tx.row(
                    "WITH RECURSIVE up(id, parent, depth) AS (SELECT id, parent_run, 0 FROM runs WHERE id = ? \
                     UNION ALL SELECT r.id, r.parent_run, up.depth + 1 FROM runs r JOIN up ON r.id = up.parent \
                     WHERE up.depth < 100) SELECT COALESCE(MAX(depth), 0) FROM up",
                    args![id],
                    |r| r.get(0),
                )
            })
            .await?;
        Ok(depth.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }
}
