//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The `qila` binary of this workspace, built (once per test binary) in the same profile as the tests.
pub fn qila_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let run = escargot::CargoBuild::new()
            .manifest_path(qila_e2e::workspace_root().join("Cargo.toml"))
            .package("qila")
            .bin("qila")
            .run()
            .expect("cannot build the qila binary");
        run.path().to_path_buf()
    })
}

/// A `qila` command with its own data directory.
pub fn qila(data_dir: &Path) -> Command {
    let mut cmd = Command::new(qila_bin());
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env("QILA_LOG", "error")
        .current_dir(qila_e2e::workspace_root());
    cmd
}

/// Runs `cmd` and returns its output, with stdout and stderr as text for assertions.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("cannot run qila");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The exit code, or -1 when killed by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}
