//! Builds the hostile plugins of `tests/hostile` (a workspace of their own) for `wasm32-wasip2`, and writes their
//! paths as constants for the tests.

use std::path::PathBuf;

use qila_wasm_build::ComponentBuild;

/// Hostile plugin crates; each builds `hostile_<name>.wasm`.
const HOSTILE: &[&str] = &["spin", "balloon", "recurse", "flood", "egress", "snoop"];

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
        watch: &[
            root.join("sdk/src"),
            root.join("sdk/macros/src"),
            root.join("wit"),
        ],
    }
    .run(&artifacts);

    let mut code = String::new();
    for (name, path) in HOSTILE.iter().zip(&paths) {
        code.push_str(&format!(
            "/// The hostile `{name}` plugin component.\npub const HOSTILE_{}: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("hostile.rs"), code).expect("cannot write hostile.rs");
}
