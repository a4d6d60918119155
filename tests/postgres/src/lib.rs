//! Throw-away PostgreSQL for tests.
//!
//! [`database`] returns the URL of a fresh, empty database (`CREATE DATABASE` with a unique name). The databases
//! live on **one cluster per test process**, started on first use: `initdb` into a temporary directory, then
//! `postgres` on `127.0.0.1` and a free port, with trust authentication, `fsync = off` and its unix socket in the
//! temporary directory. When the process runs as root, `initdb` and `postgres` run as the `postgres` OS user
//! (PostgreSQL refuses root), which owns the temporary directory.
//!
//! With `QILA_TEST_POSTGRES_URL` set (`postgres://USER@HOST:PORT/DB`, a role allowed to create databases), no
//! cluster is started: each call creates a fresh database on that server instead. Those databases (named
//! `qila_test_<pid>_<n>_<time>`) are left on that server; a throw-away cluster takes its databases with it.
//!
//! The function is synchronous, so it serves `#[test]` and `#[tokio::test]` alike (the first call blocks for the
//! second or two `initdb` takes; later calls for one `CREATE DATABASE`). SQL is sent with the `psql` client of the
//! same installation, so this crate links no database driver.
//!
//! **Stopping.** A watchdog process is started beside the cluster, in a process group of its own (so a Ctrl-C
//! that stops the tests does not stop it first). It holds the read end of a pipe whose write end only this
//! process holds (close-on-exec, so no other child inherits it). When this process ends — normally, by a panic,
//! or by SIGKILL — the kernel closes the write end, the watchdog reads end-of-file, stops the postmaster with
//! SIGQUIT (PostgreSQL's immediate shutdown) and removes the temporary directory. Unlike an `atexit` handler,
//! this also holds when the process is killed.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming a server to use instead of a throw-away cluster.
pub const URL_VAR: &str = "QILA_TEST_POSTGRES_URL";

/// Where the PostgreSQL installations of Debian and Ubuntu live, one directory per major version.
const INSTALL_ROOT: &str = "/usr/lib/postgresql";
/// The major version looked for first.
const PREFERRED_VERSION: &str = "15";
/// How many times a start is tried, each on a new free port (another process may take the port first).
const START_ATTEMPTS: u32 = 3;

/// Why no database could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// PostgreSQL's server programs are not installed.
    #[error(
        "PostgreSQL is not installed: no {INSTALL_ROOT}/<version>/bin/initdb; install the OS package \
         `postgresql` (apt-get install -y postgresql), or set {URL_VAR} to a server where the tests may create \
         databases"
    )]
    NotInstalled,
    /// The process runs as root and there is no `postgres` OS user to run the server as.
    #[error(
        "running as root, but there is no `postgres` OS user to run PostgreSQL as (PostgreSQL refuses root); \
         install the OS package `postgresql`, which creates it, or run the tests as another user"
    )]
    NoPostgresUser,
    /// A program could not be run or failed.
    #[error("{what}: {message}")]
    Command {
        /// What was being done.
        what: String,
        /// The program's error output, or why it could not be started.
        message: String,
    },
    /// A file system step failed.
    #[error("{what}: {message}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        message: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io {
        what,
        message: e.to_string(),
    }
}

/// The URL of a fresh, empty database, on the server of `QILA_TEST_POSTGRES_URL` if set, else on this process's
/// throw-away cluster (started on the first call). Each call creates a new database with a unique name.
pub fn database() -> Result<String, Error> {
    let server = server()?;
    let name = unique_name();
    server
        .psql(
            &server.admin_url,
            &format!("CREATE DATABASE {name}"),
            "create a test database",
        )
        .map_err(|e| match &server.dir {
            Some(dir) => with_log(e, &dir.join("server.log")),
            None => e,
        })?;
    Ok(with_database(&server.admin_url, &name))
}

/// A server on which databases are created.
struct Server {
    /// A URL to connect as a role that may create databases.
    admin_url: String,
    /// The `psql` to send SQL with.
    psql: PathBuf,
    /// The watchdog's pipe: held until the process ends (see the crate's docs), for a cluster of our own.
    _watchdog: Option<ChildStdin>,
    /// The cluster's temporary directory, for a cluster of our own.
    dir: Option<PathBuf>,
}

impl Server {
    /// Runs `sql` on the database of `url`; returns what psql printed (unaligned, tuples only).
    fn psql(&self, url: &str, sql: &str, what: &str) -> Result<String, Error> {
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ]);
        run(cmd, what)
    }
}

static SERVER: OnceLock<Result<Server, Error>> = OnceLock::new();

fn server() -> Result<&'static Server, Error> {
    SERVER
        .get_or_init(|| match std::env::var(URL_VAR) {
            Ok(url) if !url.trim().is_empty() => Ok(Server {
                admin_url: url.trim().to_owned(),
                psql: installation()
                    .map(|bin| bin.join("psql"))
                    .unwrap_or_else(|_| PathBuf::from("psql")),
                _watchdog: None,
                dir: None,
            }),
            _ => start_cluster(),
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A database name no other call, here or in another process, gives: the process id, a counter and the time.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("qila_test_{}_{n}_{nanos:x}", std::process::id())
}

/// `url` with its database (the path) replaced by `name`; query parameters are kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The `bin` directory of the installed PostgreSQL: version 15 if present, else the newest.
fn installation() -> Result<PathBuf, Error> {
    let root = Path::new(INSTALL_ROOT);
    let preferred = root.join(PREFERRED_VERSION).join("bin");
    if preferred.join("initdb").is_file() {
        return Ok(preferred);
    }
    let entries = std::fs::read_dir(root).map_err(|_| Error::NotInstalled)?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: f64 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
        .ok_or(Error::NotInstalled)
}

/// The OS user the server runs as: `None` for this process's own, `Some((uid, gid))` of `postgres` under root.
fn server_user() -> Result<Option<(u32, u32)>, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: the name is a NUL-terminated literal; the returned record is read at once, before any other
    // call that could overwrite it (this runs once, inside the OnceLock's initialisation).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(Error::NoPostgresUser);
    }
    // SAFETY: `pw` is non-null and points to a valid passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn run(mut cmd: Command, what: &str) -> Result<String, Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            what: what.to_owned(),
            message: format!("cannot run {program}: {e}"),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        what: what.to_owned(),
        message: format!(
            "{program} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

/// The watchdog's script: wait for end-of-file on stdin, stop the postmaster immediately, remove the directory.
const WATCHDOG: &str = r#"
cat >/dev/null
pid=$(head -n 1 "$QILA_PG_DATA/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$pid" 2>/dev/null
fi
rm -rf "$QILA_PG_DIR"
"#;

fn start_cluster() -> Result<Server, Error> {
    let bin = installation()?;
    let user = server_user()?;
    let dir = std::env::temp_dir().join(format!(
        "qila-pg-{}-{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir(&dir).map_err(io_error(format!("create {}", dir.display())))?;
    let data = dir.join("data");
    // The watchdog first: from here on, whatever happens, the directory (and a started server) goes away.
    let mut watchdog = Command::new("sh");
    watchdog
        .args(["-c", WATCHDOG])
        .env("QILA_PG_DIR", &dir)
        .env("QILA_PG_DATA", &data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = watchdog.spawn().map_err(|e| Error::Command {
        what: "start the cluster's watchdog".into(),
        message: format!("cannot run sh: {e}"),
    })?;
    let pipe = child.stdin.take();
    // The child is reaped by no one once we exit: it is re-parented to init, which reaps it.
    drop(child);

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_error(format!("restrict {}", dir.display())))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io_error(format!(
            "give {} to the postgres user",
            dir.display()
        )))?;
    }
    let as_server = |program: &str| {
        let mut cmd = Command::new(bin.join(program));
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&dir);
        cmd
    };

    let mut initdb = as_server("initdb");
    initdb.arg("-D").arg(&data).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
    ]);
    run(initdb, "initialise a throw-away PostgreSQL cluster")?;

    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port()?;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='{}' -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            dir.display()
        );
        let mut pg_ctl = as_server("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]);
        match run(pg_ctl, "start the throw-away PostgreSQL cluster") {
            Ok(_) => {
                return Ok(Server {
                    admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    psql: bin.join("psql"),
                    _watchdog: pipe,
                    dir: Some(dir),
                });
            }
            Err(e) => last = Some(with_log(e, &dir.join("server.log"))),
        }
    }
    Err(last.unwrap_or(Error::NotInstalled))
}

/// Adds the tail of the server's log to a failed start.
fn with_log(e: Error, log: &Path) -> Error {
    match (e, std::fs::read_to_string(log)) {
        (Error::Command { what, message }, Ok(text)) => {
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Error::Command {
                what,
                message: format!("{message}\nserver log:\n{}", tail.join("\n")),
            }
        }
        (e, _) => e,
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(io_error("find a free port on 127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_error("find a free port on 127.0.0.1"))?
        .port();
    drop(listener);
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(url: &str, sql: &str) -> String {
        server()
            .unwrap()
            .psql(url, sql, "test query")
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn two_calls_give_two_different_empty_databases() {
        let a = database().unwrap();
        let b = database().unwrap();
        assert_ne!(a, b);
        for url in [&a, &b] {
            // A user table in neither.
            assert_eq!(
                psql(
                    url,
                    "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                ),
                "0"
            );
        }
        // What one holds, the other does not.
        psql(
            &a,
            "CREATE TABLE only_in_a (x int); INSERT INTO only_in_a VALUES (1)",
        );
        assert_eq!(psql(&a, "SELECT count(*) FROM only_in_a"), "1");
        assert_eq!(
            psql(
                &b,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"
            ),
            "0"
        );
        assert_eq!(
            psql(&a, "SELECT current_database()"),
            a.rsplit('/').next().unwrap()
        );
    }

    #[test]
    fn a_connection_works_over_tcp_with_a_writable_database() {
        let url = database().unwrap();
        assert!(url.starts_with("postgres://"), "{url}");
        assert_eq!(
            psql(
                &url,
                "CREATE TABLE t (v text); INSERT INTO t VALUES ('héllo'); SELECT v || ' ' || version() FROM t"
            )
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
            ["héllo", "PostgreSQL"]
        );
        if std::env::var(URL_VAR).is_err() {
            // Our own cluster: on 127.0.0.1, in UTF-8 with the C locale (byte order, ASCII case folding).
            assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
            assert_eq!(
                psql(
                    &url,
                    "SELECT pg_encoding_to_char(encoding) || ' ' || datcollate FROM pg_database \
                     WHERE datname = current_database()"
                ),
                "UTF8 C"
            );
            assert_eq!(psql(&url, "SHOW fsync"), "off");
        }
    }

    /// Set in the child process of [`the_cluster_goes_when_its_process_is_killed`].
    const CHILD_VAR: &str = "QILA_TEST_POSTGRES_CHILD";

    /// Not a test of its own: the process the test below kills. It starts a cluster, says where, and waits.
    #[test]
    #[ignore = "run by the_cluster_goes_when_its_process_is_killed"]
    fn child_holds_a_cluster() {
        if std::env::var_os(CHILD_VAR).is_none() {
            return;
        }
        database().unwrap();
        let dir = server().unwrap().dir.clone().unwrap();
        println!("CLUSTER {}", dir.display());
        std::thread::sleep(std::time::Duration::from_secs(120));
    }

    #[test]
    fn the_cluster_goes_when_its_process_is_killed() {
        use std::io::BufRead as _;
        if std::env::var(URL_VAR).is_ok() {
            return; // No cluster of our own to watch.
        }
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::child_holds_a_cluster",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_VAR, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let dir = loop {
            let line = lines.next().expect("the child names its cluster").unwrap();
            if let Some(dir) = line.strip_prefix("CLUSTER ") {
                break PathBuf::from(dir);
            }
        };
        let pid_file = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let alive = |pid: i32| {
            // SAFETY: signal 0 only checks that the process exists.
            unsafe { libc::kill(pid, 0) == 0 }
        };
        assert!(alive(postmaster));
        child.kill().unwrap(); // SIGKILL: no exit handler of the child runs.
        child.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while (alive(postmaster) || dir.exists()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            !alive(postmaster),
            "the postmaster {postmaster} outlived its test process"
        );
        assert!(!dir.exists(), "{} outlived its test process", dir.display());
    }

    #[test]
    fn the_database_replaces_the_path_of_a_url() {
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://h:1/", "x"),
            "postgresql://h:1/x"
        );
    }
}
