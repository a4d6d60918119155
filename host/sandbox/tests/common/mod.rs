//! Builds the detector components that the tests and benches run, once per process.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use qila_wasm_build::ComponentBuild;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

/// Builds `manifest` (a workspace of components) into `target/<dir>` of the repository and returns the artifacts.
fn build(manifest: &str, dir: &str, members: &[&str], artifacts: &[&str]) -> Vec<PathBuf> {
    let root = root();
    ComponentBuild {
        manifest: &root.join(manifest),
        target_dir: &root.join("target").join(dir),
        members,
        packages: &[],
        watch: &[],
    }
    .run(artifacts)
}

/// The bundled `detect-dns` detector, built the way the `qila` binary's build builds it: the `plugins/`
/// workspace into `target/wasm-plugins`.
pub fn detect_dns() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        build(
            "plugins/Cargo.toml",
            "wasm-plugins",
            &["detect-dns"],
            &["qila_plugin_detect_dns"],
        )
        .remove(0)
    })
}

/// The test detectors of `host/sandbox/tests/detectors`: (`rogue`, `sneaky`).
pub fn test_detectors() -> &'static (PathBuf, PathBuf) {
    static PATHS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PATHS.get_or_init(|| {
        let mut paths = build(
            "host/sandbox/tests/detectors/Cargo.toml",
            "wasm-detectors",
            &["rogue", "sneaky"],
            &["detector_rogue", "detector_sneaky"],
        );
        let sneaky = paths.pop().expect("two artifacts");
        (paths.pop().expect("two artifacts"), sneaky)
    })
}

/// The bundled `core` action plugin (built with `detect_dns`).
pub fn core_plugin() -> PathBuf {
    detect_dns()
        .parent()
        .expect("a directory")
        .join("qila_plugin_core.wasm")
}
