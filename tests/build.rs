//! Builds the hostile plugins of `tests/hostile` (a workspace of their own) for `wasm32-wasip2`, and writes their
//! paths, the bundled plugins' paths and the workspace root as constants for the tests.
//!
//! The nested build (`qila_wasm_build::ComponentBuild`, shared with `host/cli/build.rs`) uses its own target
//! directory, `target/wasm-hostile`: the outer build holds the lock on `target/`, so sharing it would deadlock. It
//! also clears what the outer build sets for its own target from the nested cargo's environment
//! (`CARGO_ENCODED_RUSTFLAGS`, `RUSTFLAGS`, `RUSTC_WRAPPER`, `RUSTC_WORKSPACE_WRAPPER`, `CARGO_BUILD_TARGET`) and
//! overrides `CARGO_TARGET_DIR`.

use std::path::PathBuf;

use qila_wasm_build::ComponentBuild;

/// Hostile plugin crates; each builds `hostile_<name>.wasm`.
const HOSTILE: &[&str] = &[
    "spin", "balloon", "recurse", "flood", "egress", "snoop", "probe",
];

/// The bundled plugins, built into `target/wasm-plugins` by `host/cli/build.rs` (not by this script: the tests
/// build the `qila` binary first, which builds them).
const BUNDLED: &[&str] = &["core", "enrich", "notify"];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("..")
        .canonicalize()
        .expect("the workspace root exists");
    let artifacts: Vec<String> = HOSTILE
        .iter()
        .map(|name| format!("hostile_{name}"))
        .collect();
    let artifacts: Vec<&str> = artifacts.iter().map(String::as_str).collect();
    let paths = ComponentBuild {
        manifest: &manifest_dir.join("hostile/Cargo.toml"),
        target_dir: &root.join("target/wasm-hostile"),
        members: HOSTILE,
        packages: &[],
        watch: &[
            root.join("sdk/src"),
            root.join("sdk/Cargo.toml"),
            root.join("sdk/macros/src"),
            root.join("sdk/macros/Cargo.toml"),
            root.join("wit"),
        ],
    }
    .run(&artifacts);

    let mut code = format!(
        "/// The workspace root.\npub const WORKSPACE_ROOT: &str = {:?};\n",
        root.display().to_string()
    );
    for (name, path) in HOSTILE.iter().zip(&paths) {
        code.push_str(&format!(
            "/// The hostile `{name}` plugin component.\npub const HOSTILE_{}: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    for name in BUNDLED {
        let path = root.join(format!(
            "target/wasm-plugins/wasm32-wasip2/release/qila_plugin_{name}.wasm"
        ));
        code.push_str(&format!(
            "/// The bundled `{name}` plugin component, as the `qila` binary's build leaves it (build `qila` first).\n\
             pub const BUNDLED_{}: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("paths.rs"), code).expect("cannot write paths.rs");
}
