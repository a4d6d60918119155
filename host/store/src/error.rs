//! Errors of the store, and what kind of failure each is ([`ErrorKind`]): a caller retries an unavailable store,
//! fixes an invalid request, and reports anything else as a bug.

use std::path::PathBuf;

/// A failure to open, migrate, read or write the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] std::io::Error),
    /// The database refused a statement or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The journal's connection refused a statement or could not write (its SQLite error, as text: no SQLite
    /// type leaves the store).
    #[error("database error: {message}")]
    Statement {
        /// SQLite's primary result code, when the database answered.
        code: Option<i32>,
        /// What SQLite said.
        message: String,
    },
    /// PostgreSQL refused a statement or could not be reached.
    #[error("PostgreSQL: {message}")]
    Postgres {
        /// The SQLSTATE, when the server answered.
        sqlstate: Option<String>,
        /// Whether the connection is gone (closed, refused, reset).
        closed: bool,
        /// What the server or the client said.
        message: String,
    },
    /// A PostgreSQL migration failed.
    #[error("PostgreSQL migration {name}: {message}")]
    PgMigration {
        /// The migration's file name.
        name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded.
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        /// The table the record came from.
        table: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A conditional write found its row changed by someone else (a lost lease); nothing of the request was kept.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The transaction holding a write could not be committed; nothing of it was kept.
    #[error("cannot commit to the database: {0}")]
    Commit(String),
    /// The writer task has stopped, so nothing more can be recorded.
    #[error("the store's writer has stopped")]
    WriterGone,
    /// An event search query could not be parsed.
    #[error("invalid query {0}")]
    Query(#[from] crate::query::QueryError),
    /// A paging cursor was not one this store handed out.
    #[error("invalid cursor: {0}")]
    BadCursor(String),
    /// An argument was out of its domain.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// What kind of failure a [`StoreError`] is, for whoever answers the caller (the API's status code, a step's
/// error kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The store cannot do this now (it cannot write: read-only, full, an I/O error, locked for too long; or it
    /// is shutting down) and nothing of the request was kept: the same request may succeed later. The API
    /// answers `503` with `Retry-After`.
    Unavailable,
    /// The request itself is wrong (a bad query or cursor, a value out of range, too big for the database):
    /// sending it again will not help. The API answers `400`.
    Invalid,
    /// A conditional write lost a race (a lease taken over). The API answers `409`.
    Conflict,
    /// A bug or damage: a corrupt record, a failed migration, a statement the database refused. The API answers
    /// `500` and logs it.
    Internal,
}

impl StoreError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(..) | Self::Commit(_) | Self::WriterGone => ErrorKind::Unavailable,
            Self::Database(e) => sqlx_kind(e),
            Self::Statement { code, .. } => code_kind(code.map(i64::from)),
            Self::Postgres {
                sqlstate, closed, ..
            } => pg_kind(sqlstate.as_deref(), *closed),
            Self::PgMigration { .. } => ErrorKind::Internal,
            Self::Migration(sqlx::migrate::MigrateError::Execute(e)) => match sqlx_kind(e) {
                ErrorKind::Unavailable => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            },
            Self::Migration(_) | Self::Corrupt { .. } => ErrorKind::Internal,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::Query(_) | Self::BadCursor(_) | Self::Invalid(_) => ErrorKind::Invalid,
        }
    }

    /// Whether the store could not do this now, and the same request may succeed later.
    pub fn is_unavailable(&self) -> bool {
        self.kind() == ErrorKind::Unavailable
    }
}

// SQLite's primary result codes (the low byte of an extended code), https://www.sqlite.org/rescode.html.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_INTERRUPT: i64 = 9;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;
const SQLITE_TOOBIG: i64 = 18;
const SQLITE_RANGE: i64 = 25;

/// The primary SQLite result code of a database error, if it is one.
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(db) => db.code()?.parse::<i64>().ok().map(|c| c & 0xff),
        _ => None,
    }
}

/// The kind of a failure with SQLite's primary result code `code`.
fn code_kind(code: Option<i64>) -> ErrorKind {
    match code {
        Some(
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_READONLY | SQLITE_INTERRUPT
            | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN | SQLITE_PROTOCOL,
        ) => ErrorKind::Unavailable,
        Some(SQLITE_TOOBIG | SQLITE_RANGE) => ErrorKind::Invalid,
        _ => ErrorKind::Internal,
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code & 0xff),
            _ => None,
        };
        Self::Statement {
            code,
            message: e.to_string(),
        }
    }
}

impl StoreError {
    /// Whether SQLite answered "busy": another connection holds the write lock.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Self::Statement { code: Some(c), .. } if i64::from(*c) == SQLITE_BUSY)
    }
}

/// The SQLSTATE a fenced write raises (migrations/postgres/0002_engine.sql): the writer's lease was lost.
pub(crate) const LEASE_LOST: &str = "QL001";

/// The kind of a PostgreSQL failure with `sqlstate`.
fn pg_kind(sqlstate: Option<&str>, closed: bool) -> ErrorKind {
    if closed {
        return ErrorKind::Unavailable;
    }
    match sqlstate {
        None => ErrorKind::Unavailable,
        Some(LEASE_LOST) => ErrorKind::Conflict,
        // Connection exceptions, serialization failures and deadlocks, insufficient resources, operator
        // intervention (a shutdown or restart), system errors: the same request may succeed later.
        Some(s)
            if ["08", "40", "53", "57", "58"]
                .iter()
                .any(|c| s.starts_with(c)) =>
        {
            ErrorKind::Unavailable
        }
        // Data exceptions: a value out of range, too long, not valid in its type.
        Some(s) if s.starts_with("22") => ErrorKind::Invalid,
        Some(_) => ErrorKind::Internal,
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        let sqlstate = e.code().map(|c| c.code().to_owned());
        let message = match e.as_db_error() {
            Some(db) => db.message().to_owned(),
            None => e.to_string(),
        };
        Self::Postgres {
            closed: e.is_closed() || (sqlstate.is_none() && e.as_db_error().is_none()),
            sqlstate,
            message,
        }
    }
}

impl StoreError {
    /// Whether this is PostgreSQL refusing a write whose lease was lost (fencing).
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::Postgres { sqlstate: Some(s), .. } if s == LEASE_LOST)
    }
}

/// The kind of an error of sqlx.
fn sqlx_kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Database(_) => code_kind(sqlite_code(e)),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(StoreError::WriterGone.kind(), ErrorKind::Unavailable);
        assert_eq!(
            StoreError::Commit("disk I/O error".into()).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            StoreError::Database(sqlx::Error::PoolTimedOut).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(StoreError::BadCursor("x".into()).kind(), ErrorKind::Invalid);
        assert_eq!(StoreError::Conflict("x".into()).kind(), ErrorKind::Conflict);
        assert_eq!(
            StoreError::Corrupt {
                table: "runs",
                message: "x".into()
            }
            .kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            StoreError::Database(sqlx::Error::RowNotFound).kind(),
            ErrorKind::Internal
        );
    }
}
