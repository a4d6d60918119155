//! Paths the end-to-end tests need: the hostile plugins built by `build.rs`, the bundled plugins built by the
//! `qila` binary's build, the workspace root.

use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/hostile.rs"));

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A bundled plugin component (`core`, `enrich`, `notify`) as `qila`'s build script left it.
pub fn bundled_plugin(name: &str) -> PathBuf {
    workspace_root().join(format!(
        "target/wasm-plugins/wasm32-wasip2/release/qila_plugin_{name}.wasm"
    ))
}
