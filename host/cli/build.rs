//! Builds the bundled plugins (`plugins/`, a workspace of its own) for `wasm32-wasip2` and embeds them in the
//! `qila` binary, so that one binary carries everything a fresh installation needs.

use std::path::PathBuf;
use std::process::Command;

/// The bundled plugins: crate directory under `plugins/` and the file its cdylib builds to.
const BUNDLED: &[(&str, &str)] = &[
    ("core", "qila_plugin_core.wasm"),
    ("enrich", "qila_plugin_enrich.wasm"),
    ("notify", "qila_plugin_notify.wasm"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let plugins = root.join("plugins");
    for watched in [
        "plugins/Cargo.toml",
        "plugins/Cargo.lock",
        "sdk/src",
        "sdk/macros/src",
        "sdk/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for (dir, _) in BUNDLED {
        println!(
            "cargo:rerun-if-changed={}",
            plugins.join(dir).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            plugins.join(dir).join("Cargo.toml").display()
        );
    }

    // A target directory of its own, so the nested cargo never waits on the lock of the build that runs us.
    let target_dir = root.join("target").join("wasm-plugins");
    let status = cargo()
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("cannot run cargo to build the bundled plugins");
    if !status.success() {
        panic!(
            "building the bundled plugins failed; is the WebAssembly target installed? \
             Run `rustup target add wasm32-wasip2` and build again."
        );
    }

    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut code = String::from(
        "/// The plugins built from `plugins/` and embedded in the binary: (name, component bytes).\n",
    );
    code.push_str("pub const BUNDLED_PLUGINS: &[(&str, &[u8])] = &[\n");
    for (name, file) in BUNDLED {
        let path = target_dir.join("wasm32-wasip2/release").join(file);
        assert!(
            path.exists(),
            "the plugin build did not produce {}",
            path.display()
        );
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("bundled.rs"), code).expect("cannot write bundled.rs");
}

/// `cargo`, cleared of what the outer build sets for its own target (flags, wrappers such as clippy-driver).
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
