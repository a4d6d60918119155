//! A vendor's path, as docs/plugin-guide.md walks it: scaffold a plugin, test it natively, build it, inspect it,
//! sign and package it, check it with the conformance kit; an administrator trusts the key, installs it, and a
//! playbook uses it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::support::{Server, code, qila, root, run, without_test_env, write};

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

    // Package and sign it, as docs/plugin-guide.md says, from the crate's directory.
    let in_crate = |args: &[&str]| {
        let mut cmd = qila(&data);
        cmd.current_dir(&crate_dir).args(args);
        cmd
    };
    assert!(
        crate_dir.join("plugin.yaml").is_file(),
        "the scaffold writes plugin.yaml"
    );
    let (out, stdout, stderr) = run(&mut in_crate(&[
        "plugin",
        "keygen",
        "--vendor",
        "Acme Corp",
        "--out",
        "acme",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let component_arg = component.display().to_string();
    let (out, stdout, stderr) = run(&mut in_crate(&[
        "plugin",
        "pack",
        &component_arg,
        "--key",
        "acme.key",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("acme-greeter-0.1.0.qpkg (acme-greeter 0.1.0, 1 actions, signed by key"),
        "{stdout}"
    );
    // Re-signing in place works as well (a package packed without --key is signed this way).
    let (out, stdout, stderr) = run(&mut in_crate(&[
        "plugin",
        "sign",
        "acme-greeter-0.1.0.qpkg",
        "--key",
        "acme.key",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let (out, stdout, stderr) = run(&mut in_crate(&[
        "plugin",
        "verify",
        "acme-greeter-0.1.0.qpkg",
        "--key",
        "acme.pub",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("signature: good"), "{stdout}");
    let (out, stdout, stderr) = run(&mut in_crate(&[
        "plugin",
        "test",
        "acme-greeter-0.1.0.qpkg",
    ]));
    assert_eq!(
        code(&out),
        0,
        "the conformance kit passes: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("PASS  `greet` answers its example input"),
        "{stdout}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");

    // An administrator trusts the key and installs the package on a running server; a playbook uses it.
    let server = Server::start(&data);
    let as_admin = |args: &[&str]| {
        let mut cmd = in_crate(args);
        cmd.env("QILA_SERVER", &server.base)
            .env("QILA_TOKEN", server.admin.as_deref().unwrap());
        cmd
    };
    let (out, stdout, stderr) = run(&mut as_admin(&["plugin", "trust", "acme.pub"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let (out, stdout, stderr) = run(&mut as_admin(&["plugin", "keys"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("Acme Corp"), "{stdout}");
    let (out, stdout, stderr) = run(&mut as_admin(&[
        "plugin",
        "install",
        "acme-greeter-0.1.0.qpkg",
        "--grant",
        "all",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("installed acme-greeter 0.1.0"), "{stdout}");
    let pb = write(
        work.path(),
        "greet.yaml",
        "name: greet\nversion: 1\ninputs:\n  who: { type: string, default: Ada }\nsteps:\n  hi:\n    uses: acme-greeter.greet\n    with: { name: \"${{ inputs.who }}\" }\noutputs:\n  text: \"${{ steps.hi.output.greeting }}\"\n",
    );
    let pb_arg = pb.display().to_string();
    let (out, stdout, stderr) = run(&mut as_admin(&["playbook", "publish", &pb_arg]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let (out, stdout, stderr) = run(&mut as_admin(&[
        "runs",
        "start",
        "greet",
        "--input",
        "who=Grace",
        "--wait",
        "--json",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let started: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let id = started["id"].as_str().unwrap();
    let (out, stdout, stderr) = run(&mut as_admin(&["runs", "show", id, "--json"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        shown["run"]["outputs"],
        json!({"text": "Hello, Grace!"}),
        "{stdout}"
    );
    drop(server);

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
