//! For build scripts: builds a separate cargo workspace of plugins (the bundled plugins, the hostile test
//! plugins) for `wasm32-wasip2`, the way wasmtime and Spin build their test programs.
//!
//! The nested cargo gets a target directory of its own — the build that runs the script holds the lock on its
//! own — and an environment cleared of what the outer build sets for its target (flags, clippy's wrapper).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A workspace of WebAssembly components to build in release mode for `wasm32-wasip2`.
#[derive(Debug)]
pub struct ComponentBuild<'a> {
    /// The workspace's `Cargo.toml`.
    pub manifest: &'a Path,
    /// The target directory of the nested build.
    pub target_dir: &'a Path,
    /// Member crate directories (relative to the manifest's directory) whose sources trigger a rebuild.
    pub members: &'a [&'a str],
    /// Further paths whose changes trigger a rebuild (the SDK, the WIT contract).
    pub watch: &'a [PathBuf],
    /// The packages to build (`-p`); empty builds the whole workspace.
    pub packages: &'a [&'a str],
}

impl ComponentBuild<'_> {
    /// Builds the workspace, printing `rerun-if-changed` lines, and returns the path of each named artifact
    /// (`<name>.wasm`). Panics — the way a build script fails — with a message that says what to do.
    pub fn run(&self, artifacts: &[&str]) -> Vec<PathBuf> {
        let dir = self
            .manifest
            .parent()
            .expect("a Cargo.toml has a parent directory");
        for file in ["Cargo.toml", "Cargo.lock"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        for member in self.members {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join(member).join("src").display()
            );
            println!(
                "cargo:rerun-if-changed={}",
                dir.join(member).join("Cargo.toml").display()
            );
        }
        for path in self.watch {
            println!("cargo:rerun-if-changed={}", path.display());
        }

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
            .arg(self.manifest)
            .args(self.packages.iter().flat_map(|p| ["-p", p]))
            .env("CARGO_TARGET_DIR", self.target_dir)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run cargo to build {}: {e}", self.manifest.display())
            });
        assert!(
            status.success(),
            "building {} for wasm32-wasip2 failed; is the target installed? Run `rustup target add wasm32-wasip2`.",
            self.manifest.display()
        );
        artifacts
            .iter()
            .map(|name| {
                let path = self
                    .target_dir
                    .join("wasm32-wasip2/release")
                    .join(format!("{name}.wasm"));
                assert!(
                    path.exists(),
                    "the build did not produce {}",
                    path.display()
                );
                path
            })
            .collect()
    }
}
