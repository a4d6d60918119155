//! Helpers shared by the end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn root() -> &'static Path {
    Path::new(qila_e2e::WORKSPACE_ROOT)
}

/// The `qila` binary of this workspace, built once per test binary (through escargot, so in the profile the
/// tests were built in). Building it also builds the bundled plugins into `target/wasm-plugins`.
pub fn qila_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Not `current_target()`: `--target <host>` would build every dependency again into `target/<triple>`.
        let mut build = escargot::CargoBuild::new().manifest_path(root().join("Cargo.toml"));
        for var in test_env() {
            build = build.env_remove(var);
        }
        let run = build
            .package("qila")
            .bin("qila")
            .current_release()
            .run()
            .unwrap_or_else(|e| panic!("cannot build the qila binary: {e}"));
        run.path().to_path_buf()
    })
}

/// What cargo sets for this test process that a nested cargo must not see: build scripts watch some of them
/// (`ring`'s watches `OUT_DIR` and `CARGO_PKG_VERSION_*`), so inheriting them would rebuild half the dependency
/// graph every time instead of finding `qila` fresh.
pub fn test_env() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k == "OUT_DIR"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_TARGET_TMPDIR"
                || [
                    "CARGO_PKG_",
                    "CARGO_CRATE_",
                    "CARGO_MANIFEST_",
                    "CARGO_BIN_",
                ]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect()
}

/// `cmd` without the variables of [`test_env`].
pub fn without_test_env(cmd: &mut Command) -> &mut Command {
    for var in test_env() {
        cmd.env_remove(var);
    }
    cmd
}

/// A bundled plugin component (`qila_e2e::BUNDLED_CORE`, ...), after making sure `qila` (whose build script
/// builds it) is built.
pub fn bundled(path: &str) -> Vec<u8> {
    qila_bin();
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A `qila` command with its own data directory, run from the workspace root.
pub fn qila(data_dir: &Path) -> Command {
    qila_from(qila_bin(), data_dir)
}

/// The same with the binary at `bin`.
fn qila_from(bin: &Path, data_dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    without_test_env(&mut cmd);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("QILA_CONFIG")
        .env_remove("QILA_PLUGINS_DIR")
        .env_remove("QILA_DEV")
        .env_remove("QILA_SERVER")
        .env_remove("QILA_TOKEN")
        .current_dir(root());
    cmd
}

/// Runs `cmd` and returns its output, with stdout and stderr as text for assertions.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("cannot run the command");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The exit code, or -1 when killed by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// A data directory whose `plugins/` holds the given components (copied as `<file name>`).
pub fn data_dir_with_plugins(plugins: &[(&str, &Path)]) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("plugins")).unwrap();
    for (name, from) in plugins {
        std::fs::copy(from, data.path().join("plugins").join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    data
}

/// A running `qila serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token printed on the first start.
    pub admin: Option<String>,
    /// What it printed before it listened (e.g. `syslog over UDP on ADDR`).
    pub startup: Vec<String>,
    /// The copy of the binary a server started as another user runs (the checkout may be closed to that user).
    _bin: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `qila serve` on a free port of loopback and waits until it listens.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts it with extra arguments (`--dev`).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_as(data_dir, extra, None)
    }

    /// Starts it with extra arguments as the user and group `user` (the test must be root to give one), so that
    /// file permissions hold for it as they do for a service account.
    pub fn start_as(data_dir: &Path, extra: &[&str], user: Option<(u32, u32)>) -> Self {
        use std::os::unix::process::CommandExt;
        // Another user gets a copy of the binary (its plugins and playbooks are built in) in a directory anyone
        // may read, and runs there: the checkout (e.g. under a 0700 home) may be closed to it.
        let bin = user.map(|_| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::copy(qila_bin(), dir.path().join("qila")).unwrap();
            dir
        });
        let mut cmd = match &bin {
            Some(dir) => {
                let mut cmd = qila_from(&dir.path().join("qila"), data_dir);
                cmd.current_dir(dir.path());
                cmd
            }
            None => qila(data_dir),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("QILA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().expect("cannot start qila serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut admin = None;
        let mut startup = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            assert!(
                Instant::now() < deadline,
                "qila serve did not start listening"
            );
            let line = lines
                .next()
                .expect("qila serve exited before listening")
                .unwrap();
            if let Some(token) = line.strip_prefix("admin token (shown once): ") {
                admin = Some(token.trim().to_owned());
            }
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.trim().to_owned();
            }
            startup.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base,
            admin,
            startup,
            _bin: bin,
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking client of the API with one token.
pub struct Api {
    /// The server's base URL.
    pub base: String,
    token: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The runtime requests run on.
    pub rt: tokio::runtime::Runtime,
}

impl Api {
    /// A client of `base` with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// A JSON request; the status and the answer (JSON, or text as a string).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(
            method,
            path,
            body.map(|b| (b.to_string().into_bytes(), "application/json")),
            &[],
        )
    }

    /// A request with a raw body and headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .bearer_auth(&self.token);
            if let Some((bytes, content_type)) = body {
                req = req.header("content-type", content_type).body(bytes);
            }
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    /// A run as `GET /api/v1/runs/{id}` answers it.
    pub fn run(&self, id: &str) -> Value {
        self.call("GET", &format!("/api/v1/runs/{id}"), None).1
    }

    /// Polls a run until `pred` holds (60 s at most).
    pub fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let body = self.run(id);
            if pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never got to {what}: {body}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
