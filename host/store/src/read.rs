//! Reads of versions, runs, tasks, transitions, approvals, schedules and hooks.

use sqlx::Row;

use crate::Store;
use crate::error::StoreError;
use crate::record::{
    ApprovalRow, RunRow, RunStatus, StepRow, Transition, UnfinishedRun, VersionRow,
};

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
        sqlx::query("SELECT * FROM playbook_versions WHERE name = ? ORDER BY version DESC LIMIT 1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(VersionRow::from_row)
            .transpose()
    }

    /// Version `version` of `name`.
    pub async fn version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<VersionRow>, StoreError> {
        sqlx::query("SELECT * FROM playbook_versions WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(VersionRow::from_row)
            .transpose()
    }

    /// Every version of `name`, newest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        sqlx::query("SELECT * FROM playbook_versions WHERE name = ? ORDER BY version DESC")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(VersionRow::from_row)
            .collect()
    }

    /// The latest version of every playbook, by name.
    pub async fn playbooks(&self) -> Result<Vec<VersionRow>, StoreError> {
        sqlx::query(
            "SELECT v.* FROM playbook_versions v JOIN (SELECT name, MAX(version) AS version FROM playbook_versions \
             GROUP BY name) l ON v.name = l.name AND v.version = l.version ORDER BY v.name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(VersionRow::from_row)
        .collect()
    }

    /// The run `id`.
    pub async fn run(&self, id: &str) -> Result<Option<RunRow>, StoreError> {
        sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(RunRow::from_row)
            .transpose()
    }

    /// Runs matching `filter`, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>, StoreError> {
        let mut q = sqlx::QueryBuilder::new("SELECT * FROM runs WHERE 1 = 1");
        if let Some(playbook) = &filter.playbook {
            q.push(" AND playbook = ").push_bind(playbook);
        }
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = &filter.before {
            q.push(" AND id < ").push_bind(before);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit.clamp(1, 1000) as i64);
        q.build()
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(RunRow::from_row)
            .collect()
    }

    /// How many runs are in each state.
    pub async fn run_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// The runs that have not ended, oldest first.
    pub async fn unfinished_runs(&self) -> Result<Vec<UnfinishedRun>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status, playbook, resumes FROM runs WHERE status IN ('queued', 'running') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status")?;
                Ok(UnfinishedRun {
                    id: r.try_get("id")?,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Running),
                    playbook: r.try_get("playbook")?,
                    resumes: r.try_get("resumes")?,
                })
            })
            .collect()
    }

    /// The tasks of run `id`, in playbook order.
    pub async fn steps(&self, id: &str) -> Result<Vec<StepRow>, StoreError> {
        sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY position, item")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(StepRow::from_row)
            .collect()
    }

    /// The transitions of run `id` after `after` (a `seq`), oldest first.
    pub async fn transitions(&self, id: &str, after: i64) -> Result<Vec<Transition>, StoreError> {
        sqlx::query("SELECT * FROM transitions WHERE run_id = ? AND seq > ? ORDER BY seq")
            .bind(id)
            .bind(after)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(Transition::from_row)
            .collect()
    }

    /// The earliest timer of a waiting task.
    pub async fn next_wake(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(wake_at) FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Runs with a waiting task whose timer is due at `now`, at most `limit`.
    pub async fn due_runs(&self, now: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT run_id FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ? \
             LIMIT ?",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Approvals, pending ones only unless `all`, oldest first.
    pub async fn approvals(&self, all: bool, limit: u32) -> Result<Vec<ApprovalRow>, StoreError> {
        let sql = if all {
            "SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?"
        } else {
            "SELECT * FROM approvals WHERE decision IS NULL ORDER BY created_at LIMIT ?"
        };
        sqlx::query(sql)
            .bind(limit.clamp(1, 10_000) as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ApprovalRow::from_row)
            .collect()
    }

    /// The approvals of run `id`.
    pub async fn run_approvals(&self, id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
        sqlx::query("SELECT * FROM approvals WHERE run_id = ? ORDER BY created_at")
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(ApprovalRow::from_row)
            .collect()
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM schedules ORDER BY next_fire_at")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ScheduleRow {
                    playbook: r.try_get("playbook")?,
                    idx: r.try_get("idx")?,
                    cron: r.try_get("cron")?,
                    next_fire_at: r.try_get("next_fire_at")?,
                })
            })
            .collect()
    }

    /// The webhook secret of `playbook`, opened (it is sealed at rest).
    pub async fn hook_secret(&self, playbook: &str) -> Result<Option<String>, StoreError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT secret FROM hooks WHERE playbook = ?")
                .bind(playbook)
                .fetch_optional(&self.pool)
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
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE playbook = ? AND status = 'queued' ORDER BY id",
        )
        .bind(playbook)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Every timer of a waiting task: (run, when), for the timer service to load at start.
    pub async fn timers(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, wake_at FROM steps WHERE status = 'waiting' AND wake_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("run_id")?, r.try_get("wake_at")?)))
            .collect()
    }

    /// How many ancestors run `id` has through `core.playbook` steps.
    pub async fn run_depth(&self, id: &str) -> Result<u32, StoreError> {
        let depth: i64 = sqlx::query_scalar(
            "WITH RECURSIVE up(id, parent, depth) AS (SELECT id, parent_run, 0 FROM runs WHERE id = ? \
             UNION ALL SELECT r.id, r.parent_run, up.depth + 1 FROM runs r JOIN up ON r.id = up.parent \
             WHERE up.depth < 100) SELECT COALESCE(MAX(depth), 0) FROM up",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(depth as u32)
    }
}
