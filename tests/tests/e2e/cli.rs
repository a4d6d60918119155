//! The `qila` binary as a user runs it: each test with a data directory of its own.

use std::path::Path;

use serde_json::{Value, json};

use super::support::{code, data_dir_with_plugins, qila, root, run, write};

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// A run and its steps, as stored.
struct Stored {
    run: qila_store::RunRow,
    steps: Vec<qila_store::StepRow>,
}

impl std::ops::Deref for Stored {
    type Target = qila_store::RunRow;
    fn deref(&self) -> &qila_store::RunRow {
        &self.run
    }
}

/// The run `id` and its steps from the database of `data_dir`.
fn stored_run(data_dir: &Path, id: &str) -> Stored {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = qila_store::Store::open(data_dir).await.unwrap();
        let run = store
            .run(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("run {id} is not in {}", data_dir.display()));
        let steps = store.steps(id).await.unwrap();
        Stored { run, steps }
    })
}

#[test]
fn hello_runs_prints_the_run_as_json_and_records_it() {
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) =
        run(qila(data.path()).args(["run", "playbooks/hello.yaml", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for key in ["id", "playbook", "status", "outputs", "steps"] {
        assert!(report.get(key).is_some(), "no `{key}`: {report}");
    }
    assert_eq!(report["playbook"], "hello");
    assert_eq!(report["status"], "succeeded");
    let id = report["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        report["outputs"],
        json!({
            "greeting": "Hello, analyst!",
            "kind": "documentation",
            "routable": false,
            "summary": "Hello, analyst! 192.0.2.10 is documentation (IPv4)."
        })
    );
    let steps = report["steps"].as_array().unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["greet", "classify", "summary"]);
    for step in steps {
        assert_eq!(keys(step), ["attempts", "error", "id", "status"], "{step}");
        assert_eq!(step["status"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1, "{step}");
        assert_eq!(step["error"], Value::Null, "{step}");
    }

    // The run and its steps are in `<data-dir>/qila.db`.
    assert!(data.path().join("qila.db").is_file());
    let stored = stored_run(data.path(), id);
    assert_eq!(stored.playbook, "hello");
    assert_eq!(stored.status, qila_store::RunStatus::Succeeded);
    assert_eq!(stored.outputs.as_ref(), Some(&report["outputs"]));
    let stored_steps: Vec<(&str, &str, qila_store::StepStatus)> = stored
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.action.as_str(), s.status))
        .collect();
    assert_eq!(
        stored_steps,
        [
            ("greet", "core.echo", qila_store::StepStatus::Succeeded),
            (
                "classify",
                "enrich.classify-ip",
                qila_store::StepStatus::Succeeded
            ),
            ("summary", "core.echo", qila_store::StepStatus::Succeeded),
        ]
    );
    assert_eq!(
        stored.steps[0].output,
        Some(json!({"message": "Hello, analyst!"}))
    );
}

#[test]
fn every_bundled_playbook_validates_and_runs() {
    let data = tempfile::tempdir().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(root().join("playbooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let (out, stdout, stderr) = run(qila(data.path()).arg("validate").args(&files));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert_eq!(stdout, "", "no diagnostics");
    assert_eq!(
        stderr.lines().filter(|l| l.contains(": ok (")).count(),
        files.len(),
        "{stderr}"
    );
    for file in &files {
        let (out, stdout, stderr) = run(qila(data.path()).arg("run").arg(file).arg("--json"));
        assert_eq!(code(&out), 0, "{}: {stdout}{stderr}", file.display());
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(
            report["status"],
            "succeeded",
            "{}: {report}",
            file.display()
        );
    }
}

#[test]
fn a_hostile_step_fails_its_run_with_its_kind_while_an_independent_step_succeeds() {
    let data = data_dir_with_plugins(&[
        ("spin.wasm", Path::new(qila_e2e::HOSTILE_SPIN)),
        ("balloon.wasm", Path::new(qila_e2e::HOSTILE_BALLOON)),
    ]);
    write(
        data.path(),
        "qila.yaml",
        "plugins:\n  spin:\n    limits: { cpu: 200ms, timeout: 5s }\n  balloon:\n    limits: { memory: 16MiB }\n",
    );
    let pb = write(
        data.path(),
        "burn.yaml",
        "name: burn\nversion: 1\nsteps:\n  burn: { uses: spin.spin }\n  after: { uses: core.echo, needs: [burn] }\n  fine: { uses: core.echo, with: { ok: true } }\n  pop: { uses: balloon.inflate }\n",
    );
    // Loose components load in development mode only.
    let (out, stdout, stderr) = run(qila(data.path())
        .args(["--dev", "run"])
        .arg(&pb)
        .arg("--json"));
    assert_eq!(code(&out), 1, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["status"], "failed");
    let step = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}: {report}"))
            .clone()
    };
    let burn = step("burn");
    assert_eq!(burn["status"], "failed", "{burn}");
    assert_eq!(
        burn["error"], "cpu-limit: plugin used more than its CPU limit of 200ms",
        "{burn}"
    );
    let pop = step("pop");
    assert_eq!(pop["status"], "failed", "{pop}");
    assert!(
        pop["error"]
            .as_str()
            .unwrap()
            .starts_with("memory-limit: plugin memory limit of 16777216 bytes exceeded"),
        "{pop}"
    );
    assert_eq!(step("after")["status"], "skipped");
    assert_eq!(step("fine")["status"], "succeeded");

    // The run and its steps are in the embedded database.
    let stored = stored_run(data.path(), report["id"].as_str().unwrap());
    assert_eq!(stored.status, qila_store::RunStatus::Failed);
    assert_eq!(stored.steps.len(), 4);
    let by_id = |id: &str| stored.steps.iter().find(|s| s.step_id == id).unwrap();
    assert_eq!(by_id("burn").error_kind.as_deref(), Some("cpu-limit"));
    assert_eq!(by_id("pop").error_kind.as_deref(), Some("memory-limit"));
    assert_eq!(by_id("after").status, qila_store::StepStatus::Skipped);
    assert_eq!(by_id("fine").output, Some(json!({"ok": true})));

    // Without `--json` the same run says the same on stderr, and still exits 1.
    let (out, _, stderr) = run(qila(data.path()).args(["--dev", "run"]).arg(&pb));
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(stderr.contains("burn cpu-limit:"), "{stderr}");
}

#[test]
fn an_invalid_playbook_exits_2_with_file_line_col() {
    let data = tempfile::tempdir().unwrap();
    let pb = write(
        data.path(),
        "bad.yaml",
        "name: bad\nversion: 1\nsteps:\n  a:\n    uses: core.echo\n    wiht: {}\n",
    );
    let (out, stdout, stderr) = run(qila(data.path()).arg("run").arg(&pb));
    assert_eq!(code(&out), 2, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    let expected = format!(
        "{}:6:5: steps.a: unknown key `wiht` (did you mean `with`?)",
        pb.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
    // A file that cannot be read is a diagnostic too.
    let (out, _, stderr) = run(qila(data.path())
        .arg("run")
        .arg(data.path().join("missing.yaml")));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("missing.yaml:1:1: cannot read file"),
        "{stderr}"
    );
}

#[test]
fn bad_inputs_exit_2_and_say_why() {
    let data = tempfile::tempdir().unwrap();
    let pb = write(
        data.path(),
        "in.yaml",
        "name: ins\nversion: 1\ninputs:\n  ip: { type: string, format: ipv4 }\nsteps:\n  a: { uses: core.echo, with: { ip: \"${{ inputs.ip }}\" } }\noutputs:\n  ip: \"${{ steps.a.output.ip }}\"\n",
    );
    let (out, stdout, stderr) = run(qila(data.path())
        .arg("run")
        .arg(&pb)
        .args(["--input", "ip=notanip"]));
    assert_eq!(code(&out), 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("input `ip`") && stderr.contains("notanip") && stderr.contains("IPv4"),
        "{stderr}"
    );
    let (out, _, stderr) = run(qila(data.path()).arg("run").arg(&pb));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("input `ip`") && stderr.contains("required"),
        "names the missing input: {stderr}"
    );
    let (out, _, stderr) = run(qila(data.path()).arg("run").arg(&pb).args([
        "--input",
        "nope=1",
        "--input",
        "ip=10.0.0.1",
    ]));
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("nope"),
        "an undeclared input is refused: {stderr}"
    );
    let (out, stdout, stderr) = run(qila(data.path())
        .arg("run")
        .arg(&pb)
        .args(["--input", "ip=10.0.0.1"]));
    assert_eq!(code(&out), 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap(),
        json!({"ip": "10.0.0.1"})
    );
}

#[test]
fn validate_reports_each_error_once_at_its_place() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let files = [
        write(
            d,
            "key.yaml",
            "name: k\nversion: 1\nsteps:\n  a:\n    uses: core.echo\n    wiht: {}\n",
        ),
        write(
            d,
            "action.yaml",
            "name: a\nversion: 1\nsteps:\n  x:\n    uses: enrich.classify-ipp\n",
        ),
        write(
            d,
            "cycle.yaml",
            "name: c\nversion: 1\nsteps:\n  a: { uses: core.echo, needs: [b] }\n  b: { uses: core.echo, needs: [a] }\n",
        ),
        write(
            d,
            "upstream.yaml",
            "name: u\nversion: 1\nsteps:\n  a: { uses: core.echo }\n  b: { uses: core.echo, with: { v: \"${{ steps.a.output }}\" } }\n",
        ),
        write(
            d,
            "schema.yaml",
            "name: s\nversion: 1\nsteps:\n  c:\n    uses: enrich.classify-ip\n    with:\n      ip: 42\n",
        ),
        // Two errors in one file: both are reported, each on its own line.
        write(
            d,
            "two.yaml",
            "name: t\nversion: 1\nsteps:\n  a:\n    uses: core.echoo\n  b:\n    uses: enrich.classify-ip\n    with: { ip: 42 }\n",
        ),
        write(
            d,
            "good.yaml",
            "name: g\nversion: 1\nsteps:\n  a: { uses: core.echo }\n",
        ),
    ];
    let (out, stdout, stderr) = run(qila(d).arg("validate").args(&files));
    assert_eq!(code(&out), 2, "{stdout}{stderr}");
    let p = |name: &str| d.join(name).display().to_string();
    let expected = [
        format!(
            "{}:6:5: steps.a: unknown key `wiht` (did you mean `with`?); allowed keys: uses, needs, if, with, description, for_each, retry, timeout, on_error, concurrency",
            p("key.yaml")
        ),
        format!(
            "{}:5:11: steps.x.uses: plugin `enrich` has no action `classify-ipp` (did you mean `classify-ip`?)",
            p("action.yaml")
        ),
        format!(
            "{}:4:33: steps.a.needs: cycle in needs: a -> b -> a",
            p("cycle.yaml")
        ),
        format!(
            "{}:5:36: steps.b.with.v: `steps.a` is not upstream of step `b` (add `a` to its `needs`)",
            p("upstream.yaml")
        ),
        format!(
            "{}:7:11: steps.c.with.ip: 42 is not of type \"string\"",
            p("schema.yaml")
        ),
        format!(
            "{}:5:11: steps.a.uses: plugin `core` has no action `echoo` (did you mean `echo`?)",
            p("two.yaml")
        ),
        format!(
            "{}:8:17: steps.b.with.ip: 42 is not of type \"string\"",
            p("two.yaml")
        ),
    ];
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines, expected,
        "one `file:line:col: message` line per error"
    );
    assert!(
        stderr.contains(&format!("{}: ok (g v1, 1 steps)", p("good.yaml"))),
        "{stderr}"
    );
}

#[test]
fn plugin_list_shows_loaded_plugins_and_files_that_failed() {
    let data = data_dir_with_plugins(&[("spin.wasm", Path::new(qila_e2e::HOSTILE_SPIN))]);
    let broken = write(
        &data.path().join("plugins"),
        "broken.wasm",
        "not a component",
    );
    write(
        &data.path().join("plugins"),
        "notes.txt",
        "ignored: not *.wasm",
    );
    // Without development mode a loose component is refused, and the failure says what to do.
    let (out, stdout, stderr) = run(qila(data.path()).args(["plugin", "list", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "spin"),
        "{list}"
    );
    assert!(
        list["failed"].as_array().unwrap().iter().any(|f| {
            let e = f["error"].as_str().unwrap();
            e.contains("unsigned") && e.contains("qila plugin install") && e.contains("--dev")
        }),
        "{list}"
    );

    let (out, stdout, stderr) = run(qila(data.path()).args(["--dev", "plugin", "list", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let loaded: Vec<(&str, &str)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["origin"].as_str().unwrap()))
        .collect();
    let spin_origin = data.path().join("plugins/spin.wasm").display().to_string();
    assert_eq!(
        loaded,
        [
            ("core", "bundled"),
            ("enrich", "bundled"),
            ("notify", "bundled"),
            ("spin", spin_origin.as_str()),
        ]
    );
    assert_eq!(
        list["failed"],
        json!([{
            "origin": broken.display().to_string(),
            "error": "not a WebAssembly component: the file does not start with the WebAssembly magic bytes",
        }])
    );

    let (out, stdout, stderr) = run(qila(data.path()).args(["--dev", "plugin", "list"]));
    assert_eq!(code(&out), 0, "{stderr}");
    for name in ["core", "enrich", "notify", "spin"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name}: {stdout}"
        );
    }
    assert!(
        stdout.contains(&format!(
            "failed to load {}: not a WebAssembly component",
            broken.display()
        )),
        "{stdout}"
    );
}

#[test]
fn plugin_inspect_shows_digest_imports_and_action_schemas() {
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) =
        run(qila(data.path()).args(["plugin", "inspect", "enrich", "--json"]));
    assert_eq!(code(&out), 0, "{stderr}");
    let info: Value = serde_json::from_str(&stdout).unwrap();
    let digest = info["digest"].as_str().unwrap();
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}"
    );
    assert_eq!(info["manifest"]["name"], "enrich");
    let actions = info["manifest"]["actions"].as_array().unwrap();
    let classify = actions
        .iter()
        .find(|a| a["name"] == "classify-ip")
        .unwrap_or_else(|| panic!("{info}"));
    assert_eq!(classify["input_schema"]["type"], "object");
    assert!(
        classify["input_schema"]["properties"]["ip"].is_object(),
        "{classify}"
    );
    assert!(classify["output_schema"].is_object(), "{classify}");
    let imports: Vec<&str> = info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(!imports.is_empty(), "{info}");
    assert!(
        imports.iter().all(|i| !i.starts_with("qila:plugin/http")),
        "enrich never imports http: {imports:?}"
    );
    let (_, stdout, _) = run(qila(data.path()).args(["plugin", "inspect", "notify", "--json"]));
    let notify: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        notify["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("qila:plugin/http")),
        "notify imports http: {notify}"
    );

    let (out, _, stderr) = run(qila(data.path()).args(["plugin", "inspect", "enrih"]));
    assert_eq!(code(&out), 1, "{stderr}");
    assert!(
        stderr.contains("no plugin named `enrih`") && stderr.contains("enrich"),
        "{stderr}"
    );
}
