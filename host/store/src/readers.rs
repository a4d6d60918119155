//! Connections for reads, kept between reads: on SQLite a read runs on the caller's thread (in WAL mode a reader
//! never waits for the writer, and a point read costs microseconds, less than a hand-off to another thread); on
//! PostgreSQL it runs on a blocking thread, a network round trip away.
//!
//! A read that fails because the database cannot be reached drops its connection; the next read reconnects.

use std::sync::{Arc, Mutex};

use crate::error::{ErrorKind, StoreError};
use crate::journal::Target;
use crate::sql::{Conn, PgConn, Tx};

/// How many idle connections are kept.
const MAX_IDLE: usize = 8;

/// The store's read connections.
pub(crate) struct Readers {
    target: Target,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Readers {
    pub(crate) fn new(target: Target) -> Arc<Self> {
        Arc::new(Self {
            target,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(conn) => Ok(conn),
            None => match &self.target {
                Target::Sqlite(path, _) => {
                    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
                    conn.set_prepared_statement_cache_capacity(64);
                    conn.busy_timeout(crate::BUSY_TIMEOUT)?;
                    Ok(Conn::Sqlite(conn))
                }
                Target::Postgres(url) => Ok(Conn::Postgres(Box::new(PgConn::connect(url)?))),
            },
        }
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn run<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        let result = f(&conn.tx());
        match &result {
            Err(e) if e.kind() == ErrorKind::Unavailable => {}
            _ => self.give_back(conn),
        }
        result
    }

    /// Runs `f` on a read connection.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        match self.target {
            Target::Sqlite(..) => self.run(f),
            Target::Postgres(_) => {
                let me = self.clone();
                tokio::task::spawn_blocking(move || me.run(f))
                    .await
                    .map_err(|_| StoreError::WriterGone)?
            }
        }
    }

    /// Drops the idle connections.
    pub(crate) fn close(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
