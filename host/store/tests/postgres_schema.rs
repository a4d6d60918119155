//! The PostgreSQL migrations (`migrations/postgres/*.sql`) applied, in order, to a throw-away PostgreSQL cluster:
//! each file must apply cleanly, the engine's tables must exist, and the scale-out guards must hold (a step record
//! written under a stale lease epoch is refused; the audit log is append-only; a concurrency limit's slots cannot
//! be taken twice).
//!
//! The cluster is started here from the server binaries in `/usr/lib/postgresql/*/bin` (which `tests/run`
//! installs), in a temporary directory, on a free port of 127.0.0.1, with trust authentication and `fsync=off`; as
//! root it runs as the `postgres` account. SQL goes through `psql`, so the schema is checked by PostgreSQL itself.
//! (Once the shared harness `qila-test-postgres` is merged, this should use its `database()`.)

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

fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no /usr/lib/postgresql/*/bin/initdb: install PostgreSQL's server (tests/run does it)"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Runs `program args` (as the `postgres` account when this process is root: initdb refuses to run as root).
fn run(program: &Path, args: &[&str]) -> Output {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
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

/// A PostgreSQL cluster in a temporary directory, stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temporary directory");
        if is_root() {
            // The server runs as `postgres`: it must own its directory.
            let uid = ok(
                "id -u postgres",
                Command::new("id")
                    .args(["-u", "postgres"])
                    .output()
                    .expect("id"),
            );
            let gid = ok(
                "id -g postgres",
                Command::new("id")
                    .args(["-g", "postgres"])
                    .output()
                    .expect("id"),
            );
            let (uid, gid) = (
                uid.trim().parse().expect("uid"),
                gid.trim().parse().expect("gid"),
            );
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let data_arg = data.to_str().expect("a UTF-8 temporary path");
        ok(
            "initdb",
            run(
                &bin.join("initdb"),
                &[
                    "-D",
                    data_arg,
                    "-A",
                    "trust",
                    "-U",
                    "qila",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
        );
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            dir.path().display()
        );
        let log = dir.path().join("log");
        let log_arg = log.to_str().expect("a UTF-8 temporary path");
        ok(
            "pg_ctl start",
            run(
                &bin.join("pg_ctl"),
                &["-D", data_arg, "-o", &options, "-l", log_arg, "-w", "start"],
            ),
        );
        Cluster {
            bin,
            data,
            port,
            _dir: dir,
        }
    }

    /// Runs psql with `args` (`-c SQL`) in database `postgres`, stopping at the first error.
    fn psql(&self, args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut all = vec![
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ];
        all.extend_from_slice(&["-U", "qila", "-d", "postgres"]);
        all.extend_from_slice(args);
        run(&self.bin.join("psql"), &all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(data) = self.data.to_str() {
            let _ = run(
                &self.bin.join("pg_ctl"),
                &["-D", data, "-m", "immediate", "-w", "stop"],
            );
        }
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
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
