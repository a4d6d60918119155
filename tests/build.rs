//! Builds the hostile plugins of `tests/hostile` (a workspace of their own) for `wasm32-wasip2`, and writes their
//! paths as constants for the tests.

use std::path::PathBuf;
use std::process::Command;

/// Hostile plugin crates; each builds `hostile_<name>.wasm`.
const HOSTILE: &[&str] = &["spin", "balloon", "recurse", "flood", "egress", "snoop"];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("..")
        .canonicalize()
        .expect("the workspace root exists");
    let hostile = manifest_dir.join("hostile");
    for watched in ["Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", hostile.join(watched).display());
    }
    for name in HOSTILE {
        println!(
            "cargo:rerun-if-changed={}",
            hostile.join(name).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            hostile.join(name).join("Cargo.toml").display()
        );
    }
    for watched in ["sdk/src", "sdk/macros/src", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // A target directory of its own: the outer build holds the lock on ours.
    let target_dir = root.join("target").join("wasm-hostile");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(hostile.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .status()
        .expect("cannot run cargo to build the hostile plugins");
    assert!(
        status.success(),
        "building tests/hostile failed; is `rustup target add wasm32-wasip2` done?"
    );

    let mut code = String::new();
    for name in HOSTILE {
        let path = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("hostile_{name}.wasm"));
        assert!(
            path.exists(),
            "the build did not produce {}",
            path.display()
        );
        code.push_str(&format!(
            "/// The hostile `{name}` plugin component.\npub const HOSTILE_{}: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("hostile.rs"), code).expect("cannot write hostile.rs");
}
