//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

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
    let mut cmd = Command::new(qila_bin());
    without_test_env(&mut cmd);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("QILA_CONFIG")
        .env_remove("QILA_PLUGINS_DIR")
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
