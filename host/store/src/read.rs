//! Reading runs and steps back.

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::Store;
use crate::error::StoreError;
use crate::record::{RunRecord, RunStatus, StepRecord, StepStatus};

fn json(table: &'static str, text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            table,
            message: e.to_string(),
        })
    })
    .transpose()
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        playbook: row.try_get("playbook")?,
        playbook_version: row.try_get::<i64, _>("playbook_version")? as u32,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            table: "runs",
            message: format!("unknown status {status:?}"),
        })?,
        inputs: json("runs", row.try_get("inputs")?)?.unwrap_or(Value::Null),
        outputs: json("runs", row.try_get("outputs")?)?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        steps: Vec::new(),
    })
}

fn step_from_row(row: &SqliteRow) -> Result<StepRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(StepRecord {
        run_id: row.try_get("run_id")?,
        step_id: row.try_get("step_id")?,
        position: row.try_get::<i64, _>("position")? as u32,
        action: row.try_get("action")?,
        status: StepStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            table: "steps",
            message: format!("unknown status {status:?}"),
        })?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        input: json("steps", row.try_get("input")?)?,
        output: json("steps", row.try_get("output")?)?,
        error_kind: row.try_get("error_kind")?,
        error: row.try_get("error")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl Store {
    /// The run `id` with its steps in playbook order, if it exists.
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let Some(row) = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut run = run_from_row(&row)?;
        let rows = sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY position")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        run.steps = rows.iter().map(step_from_row).collect::<Result<_, _>>()?;
        Ok(Some(run))
    }

    /// The newest `limit` runs, newest first, without their steps.
    pub async fn recent_runs(&self, limit: u32) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from_row).collect()
    }
}
