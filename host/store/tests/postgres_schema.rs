//! The PostgreSQL migrations (`migrations/postgres/*.sql`) applied, in order, to a throw-away PostgreSQL cluster:
//! each file must apply cleanly, the engine's tables must exist, and the scale-out guards must hold (a step record
//! written under a stale lease epoch is refused; the audit log is append-only; a concurrency limit's slots cannot
//! be taken twice).
//!
//! The database is a fresh one on the test process's throw-away cluster (`qila_test_postgres::database`). SQL goes
//! through `psql`, so the schema is checked by PostgreSQL itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The engine's tables of `0002_engine.sql`.
const ENGINE_TABLES: &[&str] = &[
    "approvals",
    "audit",
    "correlation_windows",
    "health_probe",
    "hooks",
    "limit_rates",
    "limit_slots",
    "playbook_versions",
    "plugin_installs",
    "plugin_kv",
    "run_keys",
    "runs",
    "schedules",
    "secrets",
    "steps",
    "tokens",
    "transitions",
    "trusted_keys",
    "workers",
];

/// The `psql` of the newest PostgreSQL installed.
fn psql_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin/psql"))
        .filter(|psql| psql.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no /usr/lib/postgresql/*/bin/psql: install PostgreSQL (tests/run does it)")
    })
}

/// The stdout of a command that must have succeeded; else a panic with what it printed.
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh database on the test process's throw-away PostgreSQL (see `qila-test-postgres`).
struct Cluster {
    psql: PathBuf,
    url: String,
}

impl Cluster {
    fn start() -> Self {
        let url = qila_test_postgres::database().unwrap_or_else(|e| panic!("{e}"));
        Cluster {
            psql: psql_bin(),
            url,
        }
    }

    /// Runs psql with `args` (`-c SQL`) in the database, stopping at the first error.
    fn psql(&self, args: &[&str]) -> Output {
        Command::new(&self.psql)
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", &self.url])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.psql.display()))
    }
}

/// The migration files in the order they apply: `0001_siem.sql` (when present) and `0002_engine.sql`.
fn migrations() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("0002_engine.sql")),
        "{}: 0002_engine.sql missing",
        dir.display()
    );
    files
}

#[test]
fn the_postgres_migrations_apply_in_order_and_hold_their_guards() {
    let cluster = Cluster::start();
    for file in migrations() {
        // psql reads the file itself, as `postgres` when root: the checkout may be closed to that account.
        let sql =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        ok(
            &format!("applying {}", file.display()),
            cluster.psql(&["-c", &sql]),
        );
    }

    let tables = ok(
        "listing tables",
        cluster.psql(&[
            "-c",
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        ]),
    );
    let tables: Vec<&str> = tables.lines().collect();
    for table in ENGINE_TABLES {
        assert!(
            tables.contains(table),
            "table {table} missing; found {tables:?}"
        );
    }

    let setup = "INSERT INTO playbook_versions VALUES ('p', 1, 'src', 'd', '{}', '{}', 1, 'me');
        INSERT INTO runs (id, playbook, version, status, inputs, trigger, started_by, created_at, due_us)
        VALUES ('r1', 'p', 1, 'running', '{\"ip\": \"\\u0000\"}', 'manual', 'me', 1, 0);
        INSERT INTO steps (run_id, step_id, position, action, status, changed_at)
        VALUES ('r1', 's', 0, 'core.echo', 'queued', 10);";
    ok("a run and its step", cluster.psql(&["-c", setup]));

    // A worker claims the run (epoch 0 -> 1) with SKIP LOCKED.
    let claim = "WITH c AS (SELECT id FROM runs WHERE status IN ('queued', 'running') AND due_us <= 100
            AND (lease_until_us IS NULL OR lease_until_us < 100) ORDER BY due_us LIMIT 8 FOR UPDATE SKIP LOCKED)
        UPDATE runs r SET lease_owner = 'w1', lease_until_us = 1000, lease_epoch = r.lease_epoch + 1
        FROM c WHERE r.id = c.id RETURNING r.id, r.lease_epoch";
    assert_eq!(ok("claim", cluster.psql(&["-c", claim])).trim(), "r1|1");

    // A write under the old epoch is refused with SQLSTATE QL001; under the new one it commits.
    let stale = cluster.psql(&[
        "-c",
        "UPDATE steps SET status = 'running', attempt = 1, changed_at = 20, epoch = 0 WHERE run_id = 'r1'",
    ]);
    assert!(!stale.status.success(), "a stale epoch committed");
    assert!(String::from_utf8_lossy(&stale.stderr).contains("lease lost"));
    ok(
        "a write under the current epoch",
        cluster.psql(&[
            "-c",
            "UPDATE steps SET status = 'running', attempt = 1, changed_at = 20, epoch = 1 WHERE run_id = 'r1'",
        ]),
    );
    let history = ok(
        "the history",
        cluster.psql(&[
            "-c",
            "SELECT status || ':' || attempt FROM transitions ORDER BY seq",
        ]),
    );
    assert_eq!(
        history.lines().collect::<Vec<_>>(),
        ["queued:0", "running:1"]
    );

    // The audit log refuses updates, deletes and truncation.
    ok(
        "an audit entry",
        cluster.psql(&[
            "-c",
            "INSERT INTO audit (at, actor, action, target) VALUES (1, 'a', 'b', 'c')",
        ]),
    );
    for change in [
        "UPDATE audit SET actor = 'x'",
        "DELETE FROM audit",
        "TRUNCATE audit",
    ] {
        let out = cluster.psql(&["-c", change]);
        assert!(!out.status.success(), "{change} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("append-only"),
            "{change}"
        );
    }

    // A limit of one slot: the second taker gets nothing.
    let take = "INSERT INTO limit_slots (key, slot, run_id, step_id, item, acquired_us)
        SELECT 'k', s, 'r1', 's', -1, 5 FROM generate_series(0, 0) AS s
        WHERE s NOT IN (SELECT slot FROM limit_slots WHERE key = 'k') LIMIT 1
        ON CONFLICT DO NOTHING RETURNING slot";
    assert_eq!(ok("first slot", cluster.psql(&["-c", take])).trim(), "0");
    assert_eq!(ok("second slot", cluster.psql(&["-c", take])).trim(), "");
}
