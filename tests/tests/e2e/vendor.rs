//! A vendor's path: scaffold a plugin, test it natively, build it, load it, use it in a playbook.

use std::process::Command;

use super::support::{code, qila, run};

#[test]
fn a_scaffolded_plugin_builds_tests_and_runs_in_a_playbook() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let crate_dir = work.path().join("acme-greeter");
    let (out, _, stderr) = run(qila(&data)
        .args(["plugin", "new", "acme-greeter", "--dir"])
        .arg(&crate_dir));
    assert_eq!(code(&out), 0, "{stderr}");

    // Shared across runs of this test, so that rebuilding is incremental.
    let target = qila_e2e::workspace_root().join("target/e2e-vendor");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .arg("test")
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "the scaffold's own tests pass");

    let (out, stdout, stderr) = run(qila(&data)
        .args(["plugin", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target));
    assert_eq!(code(&out), 0, "{stderr}");
    let component = std::path::PathBuf::from(stdout.lines().next().unwrap().trim());
    assert!(
        stdout.contains("plugin `acme-greeter`") && stdout.contains("greet"),
        "{stdout}"
    );

    std::fs::create_dir_all(data.join("plugins")).unwrap();
    std::fs::copy(&component, data.join("plugins/acme-greeter.wasm")).unwrap();
    let pb = work.path().join("greet.yaml");
    std::fs::write(
        &pb,
        "name: greet\nversion: 1\nsteps:\n  hi:\n    uses: acme-greeter.greet\n    with: { name: Ada }\noutputs:\n  text: \"${{ steps.hi.output.greeting }}\"\n",
    )
    .unwrap();
    let (out, stdout, stderr) = run(qila(&data).arg("run").arg(&pb).arg("--json"));
    assert_eq!(code(&out), 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["outputs"]["text"], "Hello, Ada!");
}
