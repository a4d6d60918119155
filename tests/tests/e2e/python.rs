//! The Python example plugin, `plugins/python/iocextract`: built here with componentize-py and run through the real
//! sandbox, exactly as `docs/plugin-guide-python.md` tells a vendor to build and check one.
//!
//! The build (shared by every test of this module, once per test binary):
//!
//! 1. finds `python3`;
//! 2. installs componentize-py [`COMPONENTIZE_PY`] into `target/componentize-py` with
//!    `python3 -m pip install --target ...` unless that version is already there;
//! 3. generates the bindings into `target/python-plugins/iocextract-bindings`
//!    (`componentize-py -d wit -d plugins/python/iocextract/wit -w qila:iocextract/iocextract@0.1.0 bindings ...`);
//! 4. builds `target/python-plugins/iocextract.wasm` (`componentize-py ... componentize -p . app -o ...`), unless it
//!    is newer than the plugin's sources, both WIT directories and the installed componentize-py.
//!
//! The paths come from the workspace root, not from `CARGO_TARGET_DIR`: the component and the tool are shared by
//! every build of the workspace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use qila_sandbox::testing::Harness;
use qila_sandbox::{ErrorKind, InvokeError};
use serde_json::{Value, json};

use super::support::{code, qila, root, run};

/// The pinned componentize-py. 0.25.1 emits components that wasmtime 48 links against the host's WASI 0.2 and the
/// `qila:plugin@0.1.0` world; a new version must pass this module before the pin moves.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The world the plugin targets: `action-plugin` narrowed to the `log` import (`plugins/python/iocextract/wit`).
const WORLD: &str = "qila:iocextract/iocextract@0.1.0";

/// What the build produced.
#[derive(Debug)]
struct Built {
    /// The component.
    wasm: PathBuf,
    /// The generated bindings (the `wit_world` package), for the native tests.
    bindings: PathBuf,
}

/// The plugin's source directory.
fn plugin_dir() -> PathBuf {
    root().join("plugins/python/iocextract")
}

/// Where pip installs the pinned componentize-py.
fn tool_dir() -> PathBuf {
    root().join("target/componentize-py")
}

/// The marker pip leaves for the pinned version; its presence means the tool is installed.
fn tool_marker() -> PathBuf {
    tool_dir().join(format!(
        "componentize_py-{COMPONENTIZE_PY}.dist-info/METADATA"
    ))
}

/// Builds the plugin once per test binary; every test waits for the same build and sees the same result.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(built) => built,
        Err(e) => panic!("cannot build the Python example plugin: {e}"),
    }
}

/// Runs `cmd`, returning its output, or an error with `what`, its exit status and its stderr.
fn checked(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `python3` with the environment every step uses: no bytecode files in the source tree.
fn python() -> Command {
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// `componentize-py` from `target/componentize-py`: what `pip install componentize-py` puts on a vendor's `PATH`
/// as a script, run here through `python3` with the `--target` directory on `PYTHONPATH`.
fn componentize_py() -> Command {
    let mut cmd = python();
    cmd.env("PYTHONPATH", tool_dir())
        .arg(tool_dir().join("bin/componentize-py"))
        .arg("-d")
        .arg(root().join("wit"))
        .arg("-d")
        .arg(plugin_dir().join("wit"))
        .arg("-w")
        .arg(WORLD)
        .current_dir(plugin_dir());
    cmd
}

/// Installs the pinned componentize-py into `target/componentize-py` unless it is already there.
fn ensure_componentize_py() -> Result<(), String> {
    if tool_marker().is_file() && tool_dir().join("bin/componentize-py").is_file() {
        return Ok(());
    }
    // Into a fresh directory, then renamed: pip --target refuses to replace another version in place, and an
    // interrupted install must not look complete.
    let staging = root().join(format!("target/componentize-py.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let started = Instant::now();
    let mut pip = python();
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(["--retries", "2", "--timeout", "30", "--target"])
    .arg(&staging)
    .arg(format!("componentize-py=={COMPONENTIZE_PY}"));
    checked(&mut pip, &format!("`python3 -m pip install componentize-py=={COMPONENTIZE_PY}`")).map_err(|e| {
        format!(
            "{e}\nThe Python example plugin needs componentize-py {COMPONENTIZE_PY} from PyPI. If this machine cannot \
             reach PyPI, point pip at a mirror (PIP_INDEX_URL) or install it once by hand into the directory the \
             test uses: python3 -m pip install --target {} componentize-py=={COMPONENTIZE_PY}",
            tool_dir().display()
        )
    })?;
    let _ = std::fs::remove_dir_all(tool_dir());
    std::fs::rename(&staging, tool_dir()).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            staging.display(),
            tool_dir().display()
        )
    })?;
    eprintln!(
        "installed componentize-py {COMPONENTIZE_PY} in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// The newest modification time of the files under `dir` whose names end in one of `exts`.
fn newest(dir: &Path, exts: &[&str]) -> Result<SystemTime, String> {
    let mut latest = SystemTime::UNIX_EPOCH;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let time = if meta.is_dir() {
            if name == "__pycache__" || name == "bindings" {
                continue;
            }
            newest(&path, exts)?
        } else if exts.iter().any(|ext| name.ends_with(ext)) {
            meta.modified()
                .map_err(|e| format!("{}: {e}", path.display()))?
        } else {
            continue;
        };
        latest = latest.max(time);
    }
    Ok(latest)
}

/// The whole build: see the module's documentation.
fn build() -> Result<Built, String> {
    let version = python().arg("--version").output().map_err(|e| {
        format!(
            "`python3` is not on PATH ({e}): the Python example plugin needs CPython 3.10+ with pip"
        )
    })?;
    if !version.status.success() {
        return Err(format!("`python3 --version` failed: {}", version.status));
    }
    ensure_componentize_py()?;

    let out_dir = root().join("target/python-plugins");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let bindings = out_dir.join("iocextract-bindings");
    let _ = std::fs::remove_dir_all(&bindings);
    checked(
        componentize_py().arg("bindings").arg(&bindings),
        "`componentize-py bindings`",
    )?;

    let wasm = out_dir.join("iocextract.wasm");
    let sources = newest(&plugin_dir(), &[".py", ".wit"])?
        .max(newest(&root().join("wit"), &[".wit"])?)
        .max(
            std::fs::metadata(tool_marker())
                .and_then(|m| m.modified())
                .map_err(|e| format!("{}: {e}", tool_marker().display()))?,
        );
    let fresh = std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > sources);
    if fresh {
        return Ok(Built { wasm, bindings });
    }
    let partial = out_dir.join("iocextract.wasm.partial");
    let started = Instant::now();
    checked(
        componentize_py()
            .args(["componentize", "-p", ".", "app", "-o"])
            .arg(&partial),
        "`componentize-py componentize`",
    )?;
    std::fs::rename(&partial, &wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {} ({:.1} MB) with componentize-py {COMPONENTIZE_PY} in {:.1?}",
        wasm.display(),
        size as f64 / 1e6,
        started.elapsed()
    );
    Ok(Built { wasm, bindings })
}

/// One runtime for every test of this module, so that the plugin is compiled once (about 10 s for 19 MB of
/// component) and then shared.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The component loaded with no grants and default limits, as `qila` loads a plugin nobody granted anything.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let wasm = &built().wasm;
        let started = Instant::now();
        let harness = runtime()
            .block_on(Harness::load(wasm))
            .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        eprintln!(
            "loaded (compiled) the Python plugin in {:.1?}",
            started.elapsed()
        );
        harness
    })
}

fn invoke(action: &str, input: Value) -> Result<Value, InvokeError> {
    runtime().block_on(harness().invoke(action, input))
}

#[test]
fn python_plugin_manifest_and_imports() {
    let plugin = &harness().plugin;
    let manifest = plugin.manifest();
    assert_eq!(manifest.name, "iocextract");
    assert_eq!(manifest.vendor, "Qila");
    assert_eq!(manifest.version, "0.1.0");
    let names: Vec<&str> = manifest.actions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["extract", "refang"]);
    for action in &manifest.actions {
        assert!(!action.summary.is_empty(), "{}", action.name);
        for schema in [&action.input_schema, &action.output_schema] {
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{}",
                action.name
            );
        }
        assert_eq!(
            action.input_schema["additionalProperties"], false,
            "{}",
            action.name
        );
        let example = action.example_input.clone().expect("an example input");
        plugin.validate_input(&action.name, &example).unwrap();
    }

    // Pure: it imports `log`, and neither the network nor secrets nor storage.
    let imports = plugin.imports();
    assert!(
        imports.iter().any(|i| i == "qila:plugin/log@0.1.0"),
        "{imports:?}"
    );
    for forbidden in ["qila:plugin/http", "qila:plugin/secrets", "qila:plugin/kv"] {
        assert!(
            !imports.iter().any(|i| i.starts_with(forbidden)),
            "imports {forbidden}: {imports:?}"
        );
    }
}

#[test]
fn python_plugin_runs_its_examples() {
    // The host checks every output against the action's output schema (a mismatch is `invalid-output`), so `Ok`
    // also means the output conforms.
    let plugin = &harness().plugin;
    let example = |name: &str| plugin.action(name).unwrap().example_input.clone().unwrap();

    let started = Instant::now();
    let out = invoke("extract", example("extract")).unwrap();
    let first = started.elapsed();
    assert_eq!(
        out,
        json!({
            "ipv4": ["198.51.100.23"],
            "ipv6": ["2001:db8::bad:1"],
            "domains": ["example.com", "login.example.net"],
            "urls": ["https://login.example.net/verify?id=7"],
            "emails": ["billing@example.com"],
            "md5": ["44d88612fea8a8f36de82e1278abb02f"],
            "sha1": ["3395856ce81f2b7382dee72602f798b642f14140"],
            "sha256": ["275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"],
            "truncated": false,
        })
    );

    let out = invoke("refang", example("refang")).unwrap();
    assert_eq!(
        out,
        json!({
            "text": "Blocked http://evil.example.com/a and 203.0.113.7 (admin@example.org).",
            "replacements": 6,
        })
    );

    // Per-invocation cost: a fresh instance of the pre-initialised interpreter each time.
    let n: u32 = 10;
    let started = Instant::now();
    for _ in 0..n {
        invoke("extract", example("extract")).unwrap();
    }
    eprintln!(
        "extract on its example: first call {first:.1?}, then {:.1?} per call",
        started.elapsed() / n
    );
}

#[test]
fn python_plugin_extracts_from_a_large_text_within_the_default_limits() {
    // About 1 MiB of defanged indicators, under the default 64 MiB memory and 5 s CPU limits.
    let mut text = String::new();
    let mut i = 0u32;
    while text.len() < (1 << 20) - 200 {
        text.push_str(&format!(
            "Host 10.{}.{}[.]{} fetched hxxp://h{i}.example[.]com/p and mailed u{i}[@]example[.]org. ",
            i / 65536 % 256,
            i / 256 % 256,
            i % 256,
        ));
        i += 1;
    }
    harness();
    let started = Instant::now();
    let out = invoke(
        "extract",
        json!({"text": text, "types": ["ipv4", "urls", "emails"], "limit": 10000}),
    )
    .unwrap();
    eprintln!(
        "extract on {} KiB ({i} lines): {:.1?}",
        text.len() >> 10,
        started.elapsed()
    );
    assert!(i > 10000, "{i}");
    assert_eq!(out["ipv4"].as_array().unwrap().len(), 10000);
    assert_eq!(out["ipv4"][0], "10.0.0.0");
    assert_eq!(out["urls"][1], "http://h1.example.com/p");
    assert_eq!(out["emails"][2], "u2@example.org");
    assert_eq!(out["truncated"], true);
}

#[test]
fn python_plugin_refuses_bad_input_with_typed_errors() {
    // Caught by the host against the input schema, before the plugin runs.
    for input in [
        json!({"txt": "1.2.3.4"}),
        json!({"text": 1}),
        json!({"text": "x", "types": ["cve"]}),
        json!({"text": "x", "limit": 0}),
    ] {
        let e = invoke("extract", input.clone()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{input}: {e}");
    }
    // Caught by the plugin: the schema cannot bound a text in bytes. Its message proves the plugin answered.
    let e = invoke("extract", json!({"text": "x".repeat((1 << 20) + 1)})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains("the limit is 1048576 bytes"), "{e}");
    let e = invoke("refang", json!({"text": "é".repeat((1 << 19) + 1)})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
    assert!(e.message.contains("is 1048578 bytes long"), "{e}");

    let e = invoke("explode", json!({})).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}

#[test]
fn python_plugin_native_unit_tests_pass() {
    // The guide's `PYTHONPATH=bindings python3 -m unittest`: the logic and the JSON boundary, without wasm.
    let built = built();
    let out = checked(
        python()
            .args(["-m", "unittest"])
            .env("PYTHONPATH", &built.bindings)
            .current_dir(plugin_dir()),
        "`python3 -m unittest` in plugins/python/iocextract",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("OK"), "{report}");
}

#[test]
fn python_plugin_qila_plugin_inspect() {
    // The guide's last step: `qila plugin inspect FILE` shows the manifest and that nothing but `log` is imported
    // from the contract.
    let wasm = &built().wasm;
    let data = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(qila(data.path()).args(["plugin", "inspect"]).arg(wasm));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("iocextract 0.1.0 by Qila"), "{stdout}");
    let imports = stdout
        .lines()
        .find(|l| l.starts_with("imports:"))
        .unwrap_or_else(|| panic!("no imports line: {stdout}"));
    assert!(imports.contains("qila:plugin/log@0.1.0"), "{imports}");
    assert!(!imports.contains("qila:plugin/http"), "{imports}");
    assert!(!imports.contains("qila:plugin/secrets"), "{imports}");
    assert!(stdout.contains("iocextract.extract"), "{stdout}");
    assert!(stdout.contains("iocextract.refang"), "{stdout}");
}

#[test]
fn python_plugin_passes_the_conformance_kit_packed_and_signed_like_a_rust_plugin() {
    // The same path as a Rust plugin (docs/plugin-guide.md steps 7 to 9): the kit on the bare component, then a
    // signed package of it, verified and checked again.
    let wasm = &built().wasm;
    let work = tempfile::tempdir().unwrap();
    let (out, stdout, stderr) = run(qila(work.path()).args(["plugin", "test"]).arg(wasm));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let (out, stdout, stderr) = run(qila(work.path())
        .current_dir(work.path())
        .args(["plugin", "keygen", "--vendor", "Qila", "--out", "qila"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    std::fs::write(work.path().join("plugin.yaml"), "tlp: red\n").unwrap();
    let (out, stdout, stderr) = run(qila(work.path())
        .current_dir(work.path())
        .args(["plugin", "pack"])
        .arg(wasm)
        .args(["--key", "qila.key", "--out", "iocextract.qpkg"]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let (out, stdout, stderr) = run(qila(work.path()).current_dir(work.path()).args([
        "plugin",
        "verify",
        "iocextract.qpkg",
        "--key",
        "qila.pub",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let (out, stdout, stderr) = run(qila(work.path()).current_dir(work.path()).args([
        "plugin",
        "test",
        "iocextract.qpkg",
        "--json",
    ]));
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["skipped"], 0, "{report}");
}
