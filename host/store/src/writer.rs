//! A connection that writes, and heals: the journal's and the SIEM's writers each own one.
//!
//! A write that fails because the store cannot write (read-only, full, an I/O error, locked too long: see
//! [`ErrorKind::Unavailable`]) rolls back and **closes** the connection, and the next write opens a fresh one.
//! Nothing is carried over from a connection that failed: neither a transaction SQLite may still hold open
//! (whose "commits" would then be savepoint releases that never reach the disk) nor a connection that SQLite
//! opened read-only because the file could not be opened for writing at that moment. Transactions are begun and
//! ended with plain `BEGIN IMMEDIATE` / `COMMIT` / `ROLLBACK` statements, never through sqlx's transaction
//! bookkeeping, so what the connection reports is what SQLite did: a write is acknowledged only after its
//! `COMMIT` returned, and a failed `COMMIT` kept nothing (in WAL mode the commit is the last frame appended to
//! the log, and a frame that could not be written ends the transaction uncommitted).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor, SqliteConnection};

use crate::error::{ErrorKind, StoreError};
use crate::record::now_us;

/// What one writer last saw, as the health routes show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WriterHealth {
    /// Whether its last write (or attempt to connect) succeeded; `true` before the first.
    pub ok: bool,
    /// Since when it has been failing, unix µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_us: Option<i64>,
    /// Failed attempts in a row.
    pub failures: u64,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it last committed, unix µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_commit_us: Option<i64>,
}

/// Where a writer records its outcomes; read by [`crate::Store::health`]. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct HealthCell(Arc<Mutex<WriterHealth>>);

impl Default for HealthCell {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(WriterHealth {
            ok: true,
            ..WriterHealth::default()
        })))
    }
}

impl HealthCell {
    fn update(&self, f: impl FnOnce(&mut WriterHealth)) {
        // A panic elsewhere while holding this lock leaves plain data behind: keep using it.
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut state);
    }

    /// A commit went through.
    pub(crate) fn committed(&self) {
        self.update(|h| {
            *h = WriterHealth {
                ok: true,
                last_commit_us: Some(now_us()),
                ..WriterHealth::default()
            }
        });
    }

    /// A write failed; only failures of the store itself (not a caller's bad request) make it unhealthy.
    pub(crate) fn failed(&self, error: &StoreError) {
        if error.kind() != ErrorKind::Unavailable {
            return;
        }
        let message = error.to_string();
        self.update(|h| {
            if h.ok {
                h.failing_since_us = Some(now_us());
            }
            h.ok = false;
            h.failures += 1;
            h.last_error = Some(message);
        });
    }

    /// What was recorded.
    pub(crate) fn get(&self) -> WriterHealth {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Checks that `conn` can write, without writing and without waiting for the write lock: SQLite opens a database
/// it cannot open for writing read-only, silently, and such a connection must not be used (or pooled) as if it
/// could write. (`BEGIN IMMEDIATE` alone succeeds on a read-only connection; setting `user_version` to what it is,
/// inside a transaction that is rolled back, fails there and changes nothing elsewhere.)
#[expect(unsafe_code, reason = "asks SQLite if the file is read-only")]
pub(crate) async fn check_writable(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    // First what SQLite says of the file it opened: the probe below cannot tell while another connection holds
    // the write lock (it fails as busy before it would fail as read-only).
    let read_only = {
        let mut handle = conn.lock_handle().await?;
        // SAFETY: the handle is this live connection's, locked for the call; the name is NUL-terminated.
        unsafe {
            libsqlite3_sys::sqlite3_db_readonly(handle.as_raw_handle().as_ptr(), c"main".as_ptr())
        }
    };
    if read_only != 0 {
        return Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the database file could not be opened for writing (SQLite opened it read-only)",
        )));
    }
    conn.execute("PRAGMA busy_timeout = 0").await?;
    let probe = async {
        conn.execute("BEGIN IMMEDIATE").await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *conn)
            .await?;
        let set = conn
            .execute(format!("PRAGMA user_version = {version}").as_str())
            .await;
        conn.execute("ROLLBACK").await?;
        set.map(|_| ())
    }
    .await;
    let restored = conn.execute(crate::BUSY_TIMEOUT_PRAGMA).await;
    match probe {
        Ok(()) => {}
        // Another connection holds the write lock: this one could write once it is released.
        Err(e) if crate::error::sqlite_code(&e) == Some(5) => {
            let _ = conn.execute("ROLLBACK").await;
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            return Err(e);
        }
    }
    restored.map(|_| ())
}

/// A connection that writes, reopened after a failure of the store (see the module's documentation).
pub(crate) struct WriterConn {
    options: SqliteConnectOptions,
    conn: Option<SqliteConnection>,
    health: HealthCell,
}

impl std::fmt::Debug for WriterConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConn")
            .field("open", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl WriterConn {
    /// A writer that connects with `options` when it first writes, recording its outcomes in `health`.
    pub(crate) fn new(options: SqliteConnectOptions, health: HealthCell) -> Self {
        Self {
            options,
            conn: None,
            health,
        }
    }

    /// The connection, opened (and checked writable) if there is none.
    pub(crate) async fn get(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        if self.conn.is_none() {
            match self.open().await {
                Ok(conn) => self.conn = Some(conn),
                Err(e) => {
                    let e = StoreError::Database(e);
                    self.health.failed(&e);
                    return Err(e);
                }
            }
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(StoreError::WriterGone),
        }
    }

    async fn open(&self) -> Result<SqliteConnection, sqlx::Error> {
        let mut conn = self.options.connect().await?;
        if let Err(e) = check_writable(&mut conn).await {
            let _ = conn.close().await;
            return Err(e);
        }
        Ok(conn)
    }

    /// Records the outcome of a transaction that was committed.
    pub(crate) fn committed(&self) {
        self.health.committed();
    }

    /// After a failed write: rolls back what may be open and, when the store itself failed (or the rollback
    /// did), closes the connection so that the next write opens a fresh one.
    pub(crate) async fn failed(&mut self, error: &StoreError) {
        self.health.failed(error);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let rolled_back = match conn.execute("ROLLBACK").await {
            Ok(_) => true,
            // "cannot rollback - no transaction is active": SQLite ended it already.
            Err(e) => e.to_string().contains("no transaction is active"),
        };
        if !rolled_back || error.kind() == ErrorKind::Unavailable {
            self.reset().await;
        }
    }

    /// Closes the connection; the next write opens a new one.
    pub(crate) async fn reset(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::warn!(
                "closing a database connection after a failed write; the next write reconnects"
            );
            let _ = conn.close().await;
        }
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`) and returns the connection to write on; end it with
    /// [`WriterConn::finish`].
    pub(crate) async fn begin(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        let began = self.get().await?.execute("BEGIN IMMEDIATE").await;
        if let Err(e) = began {
            let e = StoreError::Database(e);
            self.failed(&e).await;
            return Err(e);
        }
        self.get().await
    }

    /// Ends the transaction [`WriterConn::begin`] began: commits it if `result` is a success (and returns the
    /// commit's failure otherwise), rolls it back if not.
    pub(crate) async fn finish<T>(
        &mut self,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let value = match result {
            Ok(value) => value,
            Err(e) => {
                self.failed(&e).await;
                return Err(e);
            }
        };
        let committed = match self.conn.as_mut() {
            Some(conn) => conn.execute("COMMIT").await.map(|_| ()),
            None => return Err(StoreError::WriterGone),
        };
        match committed {
            Ok(()) => {
                self.committed();
                Ok(value)
            }
            Err(e) => {
                let e = StoreError::Commit(e.to_string());
                self.failed(&e).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_sqlite_opened_read_only_is_refused_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).await.unwrap();
        // What SQLite falls back to when it cannot open the file for writing.
        let options =
            crate::connect_options(store.path().unwrap(), Default::default()).read_only(true);
        let mut writer = WriterConn::new(options, HealthCell::default());
        let err = writer.get().await.expect_err("a read-only connection");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("read-only"), "{err}");
        let health = writer.health.get();
        assert!(!health.ok && health.failures == 1, "{health:?}");
        // Writable again (here: a writable connection), the same writer heals.
        writer.options = crate::connect_options(store.path().unwrap(), Default::default());
        writer.begin().await.unwrap();
        writer.finish(Ok(())).await.unwrap();
        assert!(writer.health.get().ok);
    }

    #[tokio::test]
    async fn a_read_only_connection_is_refused_even_while_another_holds_the_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).await.unwrap();
        let mut locker = crate::connect_options(store.path().unwrap(), Default::default())
            .connect()
            .await
            .unwrap();
        locker.execute("BEGIN IMMEDIATE").await.unwrap();
        let options =
            crate::connect_options(store.path().unwrap(), Default::default()).read_only(true);
        let mut writer = WriterConn::new(options, HealthCell::default());
        let err = writer.get().await.expect_err("a read-only connection");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        // A writable connection opened meanwhile is taken: it can write once the lock is released.
        writer.options = crate::connect_options(store.path().unwrap(), Default::default());
        writer.get().await.unwrap();
        locker.execute("ROLLBACK").await.unwrap();
        writer.begin().await.unwrap();
        writer.finish(Ok(())).await.unwrap();
    }
}
