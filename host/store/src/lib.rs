//! Qila's persistence in an embedded SQLite database: published playbook versions, runs and their tasks (with
//! leases and timers), the transition history, approvals, schedules, webhook secrets, run keys (webhook delivery
//! ids and idempotency keys), API tokens, the audit log and plugin key-value data; and the SIEM's events, dead
//! letters and alerts, searched in the [`query`] language.
//!
//! Writes go through the [`Journal`]: one writer task that applies requests in group-committed transactions and
//! answers each caller after the commit, so the engine acts on a transition only once it is durable. The
//! statements it composes are in [`write`]. Reads go straight to the connection pool.

mod access;
mod error;
mod events;
mod journal;
mod keys;
mod kv;
mod plugins;
pub mod query;
mod read;
mod record;
mod vault;
pub mod write;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use access::{AuditEntry, Role, TokenInfo};
pub use error::StoreError;
pub use events::{
    ALERT_EVENT_IDS_CAP, AlertFilter, AlertRow, AlertStatus, AlertUpsert, DeadLetter,
    DeadLetterRow, EventPage, EventQuery, EventRow, MAX_PAGE, NewAlert, NewEvent,
};
pub use journal::{Journal, WriteFuture};
pub use keys::{ClaimedKey, RunKey, claim_run_key};
pub use plugins::{InstallRow, SecretInfo, TrustedKeyRow};
pub use query::QueryError;
pub use read::{RunFilter, ScheduleRow};
pub use record::{
    ApprovalRow, RunRow, RunStatus, StepRow, StepStatus, Transition, TriggerKind, UnfinishedRun,
    VersionRow, now_ms, now_us,
};
pub use sqlx::SqliteConnection;
pub use vault::{KEY_FILE, Vault};

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "qila.db";

/// A handle on the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
    journal: Journal,
    vault: Vault,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, in WAL mode, applies pending migrations and starts
    /// the journal's writer task (so it needs a Tokio runtime).
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io(data_dir.to_path_buf(), e))?;
        let path = data_dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(StoreError::Database)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses no committed transaction when the process dies (`kill -9`); an OS crash or
            // power loss may lose the last ones, and never corrupts the database.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // SIEM bulk inserts dirty many index pages per transaction: a 16 MiB page cache per connection (not
            // 2) and a checkpoint every ~40 MiB of WAL (not 4, each costing two fsyncs) nearly double their rate.
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", "10000");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let vault = Vault::open(data_dir)?;
        seal_plain_hook_secrets(&pool, &vault).await?;
        let journal = Journal::spawn(&pool).await?;
        Ok(Self {
            pool,
            path,
            journal,
            vault,
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal, through which every write goes.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The vault that seals secrets at rest (webhook secrets, plugin secrets).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Commits what was sent to the journal, stops it, and closes the pool.
    pub async fn close(&self) {
        self.journal.close().await;
        self.pool.close().await;
    }
}

/// The name a webhook secret is sealed under.
pub fn hook_secret_name(playbook: &str) -> String {
    format!("hook:{playbook}")
}

/// Seals webhook secrets stored in plain text by a version before encryption at rest.
async fn seal_plain_hook_secrets(pool: &SqlitePool, vault: &Vault) -> Result<(), StoreError> {
    let plain: Vec<(String, String)> =
        sqlx::query_as("SELECT playbook, secret FROM hooks WHERE secret NOT LIKE 'sealed1:%'")
            .fetch_all(pool)
            .await?;
    for (playbook, secret) in plain {
        let sealed = vault.seal_text(&hook_secret_name(&playbook), &secret)?;
        sqlx::query("UPDATE hooks SET secret = ? WHERE playbook = ?")
            .bind(sealed)
            .bind(&playbook)
            .execute(pool)
            .await?;
    }
    Ok(())
}
