//! Qila's persistence: runs, their steps and plugin key-value data, in an embedded SQLite database.
//!
//! Writes of run and step transitions go through a [`Recorder`]: a channel to one writer task that commits what has
//! accumulated in one transaction (group commit), so recording a step costs the engine a channel send, not a
//! database round trip. [`Recorder::flush`] waits until everything sent so far is committed.

mod error;
mod kv;
mod read;
mod record;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use error::StoreError;
pub use record::{RunRecord, RunStatus, StepRecord, StepStatus, now_ms};
pub use writer::Recorder;

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "qila.db";

/// A handle on the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, in WAL mode, and applies pending migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io(data_dir.to_path_buf(), e))?;
        let path = data_dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::Database)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction on a process crash; only an OS crash may lose the
            // last ones, and never corrupts the database.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool, path })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the writer task and returns a [`Recorder`] that feeds it. Needs a Tokio runtime.
    pub fn recorder(&self) -> Recorder {
        Recorder::spawn(self.pool.clone())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
