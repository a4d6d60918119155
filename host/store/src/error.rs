//! Errors of the store.

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
    /// The transaction holding a write could not be committed.
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
