//! Builds the bundled plugins (`plugins/`, a workspace of its own) for `wasm32-wasip2` and embeds them in the
//! `qila` binary, with the example playbooks of `playbooks/` (which `qila serve` publishes), so that one binary
//! carries everything a fresh installation needs.

use std::path::PathBuf;

use qila_wasm_build::ComponentBuild;

/// The bundled plugins: crate directory under `plugins/` and the artifact its cdylib builds to.
const BUNDLED: &[(&str, &str)] = &[
    ("core", "qila_plugin_core"),
    ("enrich", "qila_plugin_enrich"),
    ("notify", "qila_plugin_notify"),
];

/// The bundled detector plugins (the `detector-plugin` world), run by the SIEM on every stored batch.
const DETECTORS: &[(&str, &str)] = &[("detect-dns", "qila_plugin_detect_dns")];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists");
    let all: Vec<&(&str, &str)> = BUNDLED.iter().chain(DETECTORS).collect();
    let members: Vec<&str> = all.iter().map(|(dir, _)| *dir).collect();
    let artifacts: Vec<&str> = all.iter().map(|(_, file)| *file).collect();
    let paths = ComponentBuild {
        manifest: &root.join("plugins/Cargo.toml"),
        target_dir: &root.join("target/wasm-plugins"),
        members: &members,
        packages: &[],
        watch: &[
            root.join("sdk/src"),
            root.join("sdk/macros/src"),
            root.join("sdk/Cargo.toml"),
            root.join("wit"),
        ],
    }
    .run(&artifacts);

    let mut code = String::from(
        "/// The plugins built from `plugins/` and embedded in the binary: (name, component bytes).\n",
    );
    code.push_str("pub const BUNDLED_PLUGINS: &[(&str, &[u8])] = &[\n");
    for ((name, _), path) in BUNDLED.iter().zip(&paths) {
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    code.push_str(
        "/// The detector plugins built from `plugins/` and embedded in the binary: (name, component bytes).\n",
    );
    code.push_str("pub const BUNDLED_DETECTORS: &[(&str, &[u8])] = &[\n");
    for ((name, _), path) in DETECTORS.iter().zip(&paths[BUNDLED.len()..]) {
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");

    // The example playbooks: every `playbooks/*.yaml`, by file name, in name order.
    let playbooks = root.join("playbooks");
    println!("cargo:rerun-if-changed={}", playbooks.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&playbooks)
        .expect("cannot read playbooks/")
        .map(|e| e.expect("cannot read playbooks/").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    code.push_str(
        "/// The example playbooks of `playbooks/`, embedded in the binary: (file name, YAML source).\n",
    );
    code.push_str("pub const BUNDLED_PLAYBOOKS: &[(&str, &str)] = &[\n");
    for path in &files {
        let name = path.file_name().expect("a file name").to_string_lossy();
        code.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");

    // The SIEM pack's own Sigma rules: every `plugins/siem/rules/**/*.yml`, by path under `rules/`.
    let rules = root.join("plugins/siem/rules");
    println!("cargo:rerun-if-changed={}", rules.display());
    let mut rule_files = Vec::new();
    collect_rules(&rules, &mut rule_files);
    rule_files.sort();
    code.push_str(
        "/// The SIEM pack's Sigma rules of `plugins/siem/rules/`, embedded in the binary: (path, YAML).\n",
    );
    code.push_str("pub const BUNDLED_RULES: &[(&str, &str)] = &[\n");
    for path in &rule_files {
        let name = path
            .strip_prefix(&rules)
            .unwrap_or(path)
            .display()
            .to_string();
        code.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            format!("rules/{name}"),
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("bundled.rs"), code).expect("cannot write bundled.rs");
}

/// Every `.yml`/`.yaml` file under `dir`, recursively.
fn collect_rules(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            collect_rules(&path, out);
        } else if path.extension().is_some_and(|x| x == "yml" || x == "yaml") {
            out.push(path);
        }
    }
}
