//! The `qila` binary as a user runs it.

use serde_json::Value;

use super::support::{code, qila, run};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn hello_runs_and_prints_the_run_as_json() {
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) =
        run(qila(data.path()).args(["run", "playbooks/hello.yaml", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["playbook"], "hello");
    assert_eq!(report["status"], "succeeded");
    assert!(report["id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(report["outputs"].is_object());
    for step in report["steps"].as_array().unwrap() {
        let keys: Vec<&str> = step
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["attempts", "error", "id", "status"], "{step}");
        assert_eq!(step["status"], "succeeded");
    }
}

#[test]
fn every_bundled_playbook_validates_and_runs() {
    let data = tempfile::tempdir().unwrap();
    let root = qila_e2e::workspace_root();
    let mut files: Vec<_> = std::fs::read_dir(root.join("playbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let (out, _, stderr) = run(qila(data.path()).arg("validate").args(&files));
    assert_eq!(code(&out), 0, "{stderr}");
    for file in &files {
        let (out, _, stderr) = run(qila(data.path()).arg("run").arg(file));
        assert_eq!(code(&out), 0, "{}: {stderr}", file.display());
    }
}

#[test]
fn a_hostile_step_fails_its_run_with_its_kind_while_other_steps_succeed_and_all_is_recorded() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("plugins")).unwrap();
    std::fs::copy(
        qila_e2e::HOSTILE_SPIN,
        data.path().join("plugins/spin.wasm"),
    )
    .unwrap();
    write(
        data.path(),
        "qila.yaml",
        "plugins:\n  spin:\n    limits: { cpu: 200ms, timeout: 5s }\n",
    );
    let pb = write(
        data.path(),
        "burn.yaml",
        "name: burn\nversion: 1\nsteps:\n  burn: { uses: spin.spin }\n  after: { uses: core.echo, needs: [burn] }\n  fine: { uses: core.echo, with: { ok: true } }\n",
    );
    let (out, stdout, stderr) = run(qila(data.path()).arg("run").arg(&pb).arg("--json"));
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["status"], "failed");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps[0]["status"], "failed");
    assert!(
        steps[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("cpu-limit:"),
        "{}",
        steps[0]
    );
    assert_eq!(steps[1]["status"], "skipped");
    assert_eq!(steps[2]["status"], "succeeded");

    // The run and its steps are in the embedded database.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(async {
        let store = qila_store::Store::open(data.path()).await.unwrap();
        store
            .run(report["id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap()
    });
    assert_eq!(stored.status, qila_store::RunStatus::Failed);
    assert_eq!(stored.steps.len(), 3);
    assert_eq!(stored.steps[0].error_kind.as_deref(), Some("cpu-limit"));
    assert_eq!(
        stored.steps[2].output,
        Some(serde_json::json!({"ok": true}))
    );
}

#[test]
fn an_invalid_playbook_exits_2_with_file_line_col() {
    let data = tempfile::tempdir().unwrap();
    let pb = write(
        data.path(),
        "bad.yaml",
        "name: bad\nversion: 1\nsteps:\n  a:\n    uses: core.echo\n    wiht: {}\n",
    );
    let (out, _, stderr) = run(qila(data.path()).arg("run").arg(&pb));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("bad.yaml:6:5:") && stderr.contains("wiht"),
        "{stderr}"
    );
}

#[test]
fn bad_inputs_exit_2_and_say_why() {
    let data = tempfile::tempdir().unwrap();
    let pb = write(
        data.path(),
        "in.yaml",
        "name: ins\nversion: 1\ninputs:\n  ip: { type: string, format: ipv4 }\nsteps:\n  a: { uses: core.echo, with: { ip: \"${{ inputs.ip }}\" } }\n",
    );
    let (out, _, stderr) = run(qila(data.path())
        .arg("run")
        .arg(&pb)
        .args(["--input", "ip=notanip"]));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("input `ip`") && stderr.contains("IPv4"),
        "{stderr}"
    );
    let (out, _, stderr) = run(qila(data.path()).arg("run").arg(&pb));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("ip"),
        "missing required input named: {stderr}"
    );
    let (out, _, stderr) = run(qila(data.path())
        .arg("run")
        .arg(&pb)
        .args(["--input", "ip=10.0.0.1"]));
    assert_eq!(code(&out), 0, "{stderr}");
}

#[test]
fn validate_reports_each_error_at_its_place() {
    let data = tempfile::tempdir().unwrap();
    let unknown_action = write(
        data.path(),
        "action.yaml",
        "name: a\nversion: 1\nsteps:\n  x:\n    uses: enrich.classify-ipp\n",
    );
    let cycle = write(
        data.path(),
        "cycle.yaml",
        "name: c\nversion: 1\nsteps:\n  a: { uses: core.echo, needs: [b] }\n  b: { uses: core.echo, needs: [a] }\n",
    );
    let upstream = write(
        data.path(),
        "upstream.yaml",
        "name: u\nversion: 1\nsteps:\n  a: { uses: core.echo }\n  b: { uses: core.echo, with: { v: \"${{ steps.a.output }}\" } }\n",
    );
    let schema = write(
        data.path(),
        "schema.yaml",
        "name: s\nversion: 1\nsteps:\n  c:\n    uses: enrich.classify-ip\n    with:\n      ip: 42\n",
    );
    let (out, stdout, _) =
        run(qila(data.path())
            .arg("validate")
            .args([&unknown_action, &cycle, &upstream, &schema]));
    assert_eq!(code(&out), 2);
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "one line per error: {stdout}");
    let find = |file: &str| {
        lines
            .iter()
            .find(|l| l.contains(file))
            .copied()
            .unwrap_or_else(|| panic!("{file}: {stdout}"))
    };
    let l = find("action.yaml");
    assert!(
        l.contains("action.yaml:5:") && l.contains("classify-ip"),
        "suggests the right name: {l}"
    );
    let l = find("cycle.yaml");
    assert!(
        l.contains("cycle") && l.contains("a -> b -> a") || l.contains("b -> a -> b"),
        "{l}"
    );
    let l = find("upstream.yaml");
    assert!(
        l.contains("upstream.yaml:5:") && l.contains("steps.a"),
        "{l}"
    );
    let l = find("schema.yaml");
    assert!(l.contains("schema.yaml:7:") && l.contains("42"), "{l}");
}

#[test]
fn plugin_list_and_inspect_show_what_is_loaded() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("plugins")).unwrap();
    write(
        &data.path().join("plugins"),
        "broken.wasm",
        "not a component",
    );
    let (out, stdout, stderr) = run(qila(data.path()).args(["plugin", "list", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["core", "enrich", "notify"]);
    let failed = &list["failed"][0];
    assert!(
        failed["origin"].as_str().unwrap().ends_with("broken.wasm"),
        "{failed}"
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component"),
        "{failed}"
    );

    let (out, stdout, stderr) =
        run(qila(data.path()).args(["plugin", "inspect", "enrich", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let info: Value = serde_json::from_str(&stdout).unwrap();
    assert!(info["digest"].as_str().unwrap().starts_with("sha256:"));
    let actions = info["manifest"]["actions"].as_array().unwrap();
    let classify = actions.iter().find(|a| a["name"] == "classify-ip").unwrap();
    assert_eq!(classify["input_schema"]["type"], "object");
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| !i.as_str().unwrap().contains("qila:plugin/http")),
        "enrich never imports http: {}",
        info["imports"]
    );
}
