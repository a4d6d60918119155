//! Qila's persistence in an embedded SQLite database: published playbook versions, runs and their tasks (with
//! leases and timers), the transition history, approvals, schedules, webhook secrets, run keys (webhook delivery
//! ids and idempotency keys), API tokens, the audit log and plugin key-value data; and the SIEM's events, dead
//! letters and alerts, searched in the [`query`] language.
//!
//! The orchestrator's writes are typed [`command`]s (data, never SQL or a connection), executed by
//! [`Store::execute`] through the journal, which group-commits them on one connection on the caller's thread
//! and answers each caller after the commit, so the engine acts on a transition only once it is durable (see
//! `journal.rs`). Reads go straight to the connection pool. The SIEM's bulk writes (events, dead letters,
//! alerts, retention) have a writer connection of their own.
//!
//! Every writer heals: a write the store could not make (read-only, full, an I/O error) fails with an error of
//! [`ErrorKind::Unavailable`], closes its connection, and the next write reconnects (see `writer.rs`);
//! [`Store::health`] and [`Store::probe`] say how each writer is doing.

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod access;
pub mod command;
mod error;
mod events;
mod journal;
mod keys;
mod kv;
mod migrate;
mod plugins;
pub mod query;
mod read;
mod readers;
mod record;
mod sql;
mod task;
mod vault;
mod write;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::Mutex;

use journal::Journal;
use sql::args;
use sqlx::SqliteConnection;
use writer::{HealthCell, WriterConn};

/// A boxed future borrowing a sqlx connection (the SIEM's bulk writer).
pub(crate) type WriteFuture<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>>;

pub use access::{AuditEntry, Role, TokenInfo};
pub use command::Command;
pub use error::{ErrorKind, StoreError};
pub use events::{
    ALERT_EVENT_IDS_CAP, AlertFilter, AlertRow, AlertStatus, AlertUpsert, DeadLetter,
    DeadLetterRow, EventPage, EventQuery, EventRow, MAX_PAGE, NewAlert, NewEvent,
};
pub use journal::Durability;
pub use keys::{ClaimedKey, RunKey};
pub use plugins::{InstallRow, SecretInfo, TrustedKeyRow};
pub use query::QueryError;
pub use read::{RunFilter, ScheduleRow};
pub use record::{
    ApprovalRow, RunRow, RunStatus, StepRow, StepStatus, Transition, TriggerKind, UnfinishedRun,
    VersionRow, now_ms, now_us,
};
pub use sql::{Dialect, Tx};
pub use task::{Change, Settle, TaskChange, TaskKey, TaskShape};
pub use vault::{KEY_FILE, Vault};
pub use writer::WriterHealth;

/// The file name of the database inside the data directory.
pub const DATABASE_FILE: &str = "qila.db";

/// How long a statement waits for another connection's write lock before it fails as busy.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The same, as the pragma that restores it.
pub(crate) const BUSY_TIMEOUT_PRAGMA: &str = "PRAGMA busy_timeout = 10000";
/// How long [`Store::probe`] keeps its answer, so that a flood of readiness checks costs one write a second.
const PROBE_CACHE: Duration = Duration::from_secs(1);
/// How long a probe write may take before its writer counts as not ready.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the store is opened.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// How durable a commit is before its caller is answered (SQLite; PostgreSQL's durability is the server's).
    pub durability: Durability,
    /// A PostgreSQL database (`postgres://USER@HOST/DB`) to use instead of the data directory's SQLite file.
    pub database: Option<String>,
}

/// How every sqlx connection to `path` is opened (the journal's own connection: `journal.rs`).
pub(crate) fn connect_options(path: &Path, durability: Durability) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL loses no committed transaction when the process dies (`kill -9`); an OS crash or
        // power loss may lose the last ones, and never corrupts the database. FULL loses none of them.
        .pragma("synchronous", durability.synchronous())
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        // SIEM bulk inserts dirty many index pages per transaction: a 16 MiB page cache per connection (not
        // 2) and a checkpoint every ~40 MiB of WAL (not 4, each costing two fsyncs) nearly double their rate.
        .pragma("cache_size", "-16384")
        .pragma("wal_autocheckpoint", "10000")
}

/// A handle on the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    dialect: Dialect,
    journal: Journal,
    readers: Arc<readers::Readers>,
    /// SQLite only: the sqlx pool and writer of the SIEM's tables.
    sqlite: Option<Arc<SqliteSide>>,
    vault: Vault,
    health: Arc<Health>,
}

/// What only the SQLite store has: its file, and the sqlx connections of the SIEM.
#[derive(Debug)]
struct SqliteSide {
    pool: SqlitePool,
    path: PathBuf,
    /// The SIEM's writer: events, dead letters, alerts and retention.
    bulk: Mutex<WriterConn>,
}

/// The writers' health cells and the last probe.
#[derive(Debug, Default)]
struct Health {
    journal: HealthCell,
    events: HealthCell,
    probe: Mutex<Option<(Instant, StoreHealth)>>,
}

/// How the store's writers are doing: [`Store::health`] (what they last saw) and [`Store::probe`] (after a
/// write of each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// The journal: every write of the orchestrator, tokens, approvals, the audit log.
    pub journal: WriterHealth,
    /// The SIEM's writer: events, dead letters, alerts, retention.
    pub events: WriterHealth,
}

impl StoreHealth {
    /// Whether both writers can write.
    pub fn ok(&self) -> bool {
        self.journal.ok && self.events.ok
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, in WAL mode, with the default options, applies
    /// pending migrations (so it needs a Tokio runtime).
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, StoreOptions::default()).await
    }

    /// [`Store::open`] with `options`: on `options.database` if set (PostgreSQL, migrated first), else on the data
    /// directory's SQLite file. The data directory holds the vault's key either way.
    pub async fn open_with(data_dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io(data_dir.to_path_buf(), e))?;
        let vault = Vault::open(data_dir)?;
        let health = Arc::new(Health::default());
        let store = match options.database {
            Some(url) => {
                let migrating = url.clone();
                tokio::task::spawn_blocking(move || {
                    let mut conn = sql::PgConn::connect(&migrating)?;
                    migrate::migrate(&mut conn)
                })
                .await
                .map_err(|_| StoreError::WriterGone)??;
                let target = journal::Target::Postgres(url);
                Self {
                    dialect: Dialect::Postgres,
                    journal: Journal::new(target.clone(), health.journal.clone()),
                    readers: readers::Readers::new(target),
                    sqlite: None,
                    vault,
                    health,
                }
            }
            None => {
                let path = data_dir.join(DATABASE_FILE);
                let durability = options.durability;
                let options = connect_options(&path, durability);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    // A connection SQLite could only open read-only (the file was not writable at that moment)
                    // would fail every write given to it for as long as the pool keeps it: refuse it, and connect
                    // again later.
                    .after_connect(|conn, _| Box::pin(writer::check_writable(conn)))
                    .connect_with(options.clone())
                    .await?;
                sqlx::migrate!("./migrations").run(&pool).await?;
                let target = journal::Target::Sqlite(path.clone(), durability);
                Self {
                    dialect: Dialect::Sqlite,
                    journal: Journal::new(target.clone(), health.journal.clone()),
                    readers: readers::Readers::new(target),
                    sqlite: Some(Arc::new(SqliteSide {
                        pool,
                        path,
                        bulk: Mutex::new(WriterConn::new(options, health.events.clone())),
                    })),
                    vault,
                    health,
                }
            }
        };
        store.seal_plain_hook_secrets().await?;
        Ok(store)
    }

    /// Which database this store is on.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs `f` on a read connection (see `readers.rs`).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// The SQLite side (the SIEM's tables), or an error on PostgreSQL.
    fn sqlite(&self) -> Result<&SqliteSide, StoreError> {
        self.sqlite.as_deref().ok_or(StoreError::Invalid(
            "the SIEM's event tables are not available on PostgreSQL yet; run the SIEM on the embedded SQLite store"
                .into(),
        ))
    }

    /// Where the database file is (SQLite only).
    pub fn path(&self) -> Option<&Path> {
        self.sqlite.as_deref().map(|s| s.path.as_path())
    }

    /// The journal, through which every write but the SIEM's goes.
    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Executes `command` in one transaction, answering once it is committed. A command that fails is rolled
    /// back alone (others committed with it are unaffected).
    pub async fn execute<C: Command>(&self, command: C) -> Result<C::Output, StoreError> {
        self.journal.write(move |tx| command.apply(tx)).await
    }

    /// The vault that seals secrets at rest (webhook secrets, plugin secrets).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The SQLite connection pool of the SIEM's reads.
    pub(crate) fn pool(&self) -> Result<&SqlitePool, StoreError> {
        Ok(&self.sqlite()?.pool)
    }

    /// What the writers last saw (no database access).
    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            journal: self.health.journal.get(),
            events: self.health.events.get(),
        }
    }

    /// Writes through each writer (one row of `health_probe`) and returns how they did; an answer less than a
    /// second old is returned as it is, and concurrent callers share one probe. A writer that does not commit
    /// within two seconds counts as failing.
    pub async fn probe(&self) -> StoreHealth {
        let mut last = self.health.probe.lock().await;
        if let Some((at, health)) = last.as_ref()
            && at.elapsed() < PROBE_CACHE
        {
            return health.clone();
        }
        let journal = tokio::time::timeout(
            PROBE_TIMEOUT,
            self.journal.write(|tx| {
                tx.exec(
                    "UPDATE health_probe SET at = ? WHERE id = 1",
                    args![now_us()],
                )
                .map(|_| ())
            }),
        );
        let events = tokio::time::timeout(PROBE_TIMEOUT, async {
            let Some(sqlite) = &self.sqlite else {
                return Ok(());
            };
            let mut writer = sqlite.bulk.lock().await;
            let result = match writer.begin().await {
                Ok(c) => probe_write(c).await,
                Err(e) => Err(e),
            };
            writer.finish(result).await
        });
        let (journal, events) = tokio::join!(journal, events);
        let mut health = self.health();
        for (result, state) in [(journal, &mut health.journal), (events, &mut health.events)] {
            if result.is_err() {
                state.ok = false;
                state.last_error = Some(format!(
                    "a probe write did not commit within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
        *last = Some((Instant::now(), health.clone()));
        health
    }

    /// Runs `f` in one transaction on the SIEM's writer connection.
    pub(crate) async fn bulk_write<T>(
        &self,
        f: impl for<'c> FnOnce(&'c mut SqliteConnection) -> WriteFuture<'c, T>,
    ) -> Result<T, StoreError> {
        let mut writer = self.sqlite()?.bulk.lock().await;
        let result = match writer.begin().await {
            Ok(c) => f(c).await,
            Err(e) => return Err(e),
        };
        writer.finish(result).await
    }

    /// Commits what was sent to the journal, closes it, and closes the pool.
    pub async fn close(&self) {
        self.journal.close().await;
        self.readers.close();
        if let Some(sqlite) = &self.sqlite {
            sqlite.bulk.lock().await.reset().await;
            sqlite.pool.close().await;
        }
    }
}

/// The write a probe makes.
async fn probe_write(c: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE health_probe SET at = ? WHERE id = 1")
        .bind(now_us())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The name a webhook secret is sealed under.
pub fn hook_secret_name(playbook: &str) -> String {
    format!("hook:{playbook}")
}

impl Store {
    /// Seals webhook secrets stored in plain text by a version before encryption at rest.
    async fn seal_plain_hook_secrets(&self) -> Result<(), StoreError> {
        let plain: Vec<(String, String)> = self
            .read(|tx| {
                tx.rows(
                    "SELECT playbook, secret FROM hooks WHERE secret NOT LIKE 'sealed1:%'",
                    args![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await?;
        for (playbook, secret) in plain {
            let sealed = self
                .vault
                .seal_text(&hook_secret_name(&playbook), &secret)?;
            self.journal
                .write(move |tx| {
                    tx.exec(
                        "UPDATE hooks SET secret = ? WHERE playbook = ?",
                        args![sealed, playbook],
                    )
                    .map(|_| ())
                })
                .await?;
        }
        Ok(())
    }
}
