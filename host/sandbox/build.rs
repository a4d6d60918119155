//! Builds the sandboxed expression evaluator (`plugins/expressions`, a member of the `plugins/` workspace) for
//! `wasm32-wasip2`; `src/expressions.rs` embeds it. The build is the one the `qila` binary's build script runs for
//! the bundled plugins, into the same target directory.

use std::path::PathBuf;

use qila_wasm_build::ComponentBuild;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let paths = ComponentBuild {
        manifest: &root.join("plugins/Cargo.toml"),
        target_dir: &root.join("target/wasm-plugins"),
        members: &["expressions"],
        packages: &["qila-expressions"],
        watch: &[
            root.join("host/expr/src"),
            root.join("host/expr/Cargo.toml"),
            root.join("wit/evaluator"),
        ],
    }
    .run(&["qila_expressions"]);
    println!(
        "cargo:rustc-env=QILA_EXPRESSIONS_WASM={}",
        paths[0].display()
    );
}
