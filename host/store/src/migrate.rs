//! PostgreSQL's migrations (`migrations/postgres/*.sql`), applied in order at start, each in its own
//! transaction, and recorded in `qila_schema`. Workers that start together take turns: the first holds an advisory
//! lock while it migrates, and the others find the work done. (SQLite's migrations, in `migrations/`, are applied
//! by sqlx.)

use crate::error::StoreError;
use crate::sql::PgConn;

/// The migrations, in order: (version, file name, text).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_siem.sql",
        include_str!("../migrations/postgres/0001_siem.sql"),
    ),
    (
        2,
        "0002_engine.sql",
        include_str!("../migrations/postgres/0002_engine.sql"),
    ),
];

/// The advisory lock migrations hold ("qila" in ASCII).
const LOCK: i64 = 0x7169_6c61;

/// Applies the migrations `conn`'s database lacks. Runs on a blocking thread.
pub(crate) fn migrate(conn: &mut PgConn) -> Result<(), StoreError> {
    conn.batch(&format!("SELECT pg_advisory_lock({LOCK})"))?;
    let result = apply(conn);
    let unlocked = conn.batch(&format!("SELECT pg_advisory_unlock({LOCK})"));
    result.and(unlocked)
}

fn apply(conn: &mut PgConn) -> Result<(), StoreError> {
    conn.batch(
        "CREATE TABLE IF NOT EXISTS qila_schema (version bigint PRIMARY KEY, name text NOT NULL, \
         applied_us bigint NOT NULL)",
    )?;
    let applied: Vec<i64> = conn
        .query("SELECT version FROM qila_schema ORDER BY version", &[])?
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<_, _>>()?;
    if let Some(newest) = applied.last()
        && *newest > MIGRATIONS.len() as i64
    {
        return Err(StoreError::PgMigration {
            name: "qila_schema",
            message: format!(
                "the database is at schema version {newest}, newer than this qila knows ({}): upgrade qila",
                MIGRATIONS.len()
            ),
        });
    }
    for (version, name, text) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let fail = |e: StoreError| StoreError::PgMigration {
            name,
            message: e.to_string(),
        };
        conn.batch("BEGIN").map_err(fail)?;
        let done = conn.batch(text).and_then(|()| {
            conn.exec(
                "INSERT INTO qila_schema (version, name, applied_us) VALUES (?, ?, ?)",
                crate::sql::args![*version, *name, crate::now_us()],
            )
            .map(|_| ())
        });
        match done {
            Ok(()) => conn.batch("COMMIT").map_err(fail)?,
            Err(e) => {
                let _ = conn.batch("ROLLBACK");
                return Err(fail(e));
            }
        }
        tracing::info!(migration = name, "applied a PostgreSQL migration");
    }
    Ok(())
}
