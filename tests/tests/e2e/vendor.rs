//! A vendor's path: scaffold a plugin, test it natively, build it, inspect it, use it in a playbook.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::support::{code, qila, root, run, without_test_env, write};

#[test]
fn a_scaffolded_plugin_tests_builds_and_runs_in_a_playbook() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let crate_dir = work.path().join("acme-greeter");
    let (out, stdout, stderr) = run(qila(&data)
        .args(["plugin", "new", "acme-greeter", "--dir"])
        .arg(&crate_dir));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("created plugin `acme-greeter`"), "{stdout}");
    for file in ["Cargo.toml", "src/lib.rs", ".gitignore"] {
        assert!(crate_dir.join(file).is_file(), "{file}");
    }

    // One target directory shared by every run of this test, so that rebuilding is incremental.
    let target = root().join("target/e2e-vendor");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let (out, stdout, stderr) = run(without_test_env(&mut Command::new(&cargo))
        .args(["test", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET"));
    assert_eq!(
        code(&out),
        0,
        "the scaffold's own tests pass: {stdout}{stderr}"
    );
    assert!(stdout.contains("test result: ok. 4 passed"), "{stdout}");

    let (out, stdout, stderr) = run(qila(&data)
        .args(["plugin", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let component = PathBuf::from(stdout.lines().next().unwrap().trim());
    assert_eq!(
        component,
        target.join("wasm32-wasip2/release/acme_greeter.wasm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plugin `acme-greeter` 0.1.0") && stdout.contains("): greet"),
        "{stdout}"
    );

    let (out, stdout, stderr) = run(qila(&data)
        .args(["plugin", "inspect", "--json"])
        .arg(&component));
    assert_eq!(code(&out), 0, "{stderr}");
    let info: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(info["manifest"]["name"], "acme-greeter");
    assert_eq!(info["manifest"]["version"], "0.1.0");
    let actions = info["manifest"]["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{info}");
    assert_eq!(actions[0]["name"], "greet");
    assert_eq!(actions[0]["example_input"], json!({"name": "Ada"}));
    assert_eq!(
        actions[0]["input_schema"]["required"],
        json!(["name"]),
        "{info}"
    );
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));

    std::fs::create_dir_all(data.join("plugins")).unwrap();
    std::fs::copy(&component, data.join("plugins/acme-greeter.wasm")).unwrap();
    let pb = write(
        work.path(),
        "greet.yaml",
        "name: greet\nversion: 1\nsteps:\n  hi:\n    uses: acme-greeter.greet\n    with: { name: Ada }\noutputs:\n  text: \"${{ steps.hi.output.greeting }}\"\n",
    );
    let (out, stdout, stderr) = run(qila(&data).arg("run").arg(&pb).arg("--json"));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["outputs"], json!({"text": "Hello, Ada!"}));

    // The plugin's input schema reaches validation: a misspelt key is caught before anything runs.
    let bad = write(
        work.path(),
        "bad.yaml",
        "name: bad\nversion: 1\nsteps:\n  hi:\n    uses: acme-greeter.greet\n    with: { nmae: Ada }\n",
    );
    let (out, stdout, _) = run(qila(&data).arg("validate").arg(&bad));
    assert_eq!(code(&out), 2, "{stdout}");
    assert!(
        stdout.starts_with(&format!("{}:6:", bad.display())) && stdout.contains("nmae"),
        "{stdout}"
    );
}
