//! `qila plugin new`: the files of a new plugin crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The SDK in the source tree this binary was built from.
pub fn default_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../sdk")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk")))
}

/// Writes a plugin crate named `name` into `dir` (which must not exist or be empty).
pub fn create(name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !valid {
        bail!(
            "plugin name {name:?} must start with a lower-case letter and use only a-z, 0-9, `-` and `_`"
        );
    }
    if dir.exists()
        && dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} already exists and is not empty", dir.display());
    }
    if !sdk.join("Cargo.toml").exists() {
        bail!(
            "no qila-sdk at {} (pass --sdk-path or set QILA_SDK_PATH)",
            sdk.display()
        );
    }
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |file: &str, content: String| {
        let path = dir.join(file);
        std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
    };
    let (cargo_toml, lib_rs) = render(name, &sdk.display().to_string());
    write("Cargo.toml", cargo_toml)?;
    write("src/lib.rs", lib_rs)?;
    write(".gitignore", "/target\n*.qpkg\n*.key\n".into())?;
    write("plugin.yaml", PLUGIN_YAML.into())?;
    Ok(())
}

/// The capabilities file of a new plugin: it asks for nothing, which a pure plugin needs.
const PLUGIN_YAML: &str = "\
# What this plugin asks an administrator to grant (`qila plugin pack` records it in the package).
# A component may only import the host interfaces these capabilities cover.
egress: []      # host patterns it calls through `http`, e.g. [\"api.example.com:443\"]
secrets: []     # secrets the host injects into its HTTP requests as bearer tokens
reveal: []      # secrets whose values it reads (audited on every use)
packs: []       # host packs: kv (its private key-value store), ...
# tlp: red      # highest TLP of data it may receive (default: amber with egress, red without)
limits: { memory: 64MiB, cpu: 2s, timeout: 10s, output: 1MiB }
";

/// The scaffold's `Cargo.toml` and `src/lib.rs` for plugin `name` using the SDK at `sdk`.
fn render(name: &str, sdk: &str) -> (String, String) {
    const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.tmpl");
    const LIB_RS: &str = include_str!("../templates/plugin/lib.rs.tmpl");
    (
        CARGO_TOML.replace("{{name}}", name).replace("{{sdk}}", sdk),
        LIB_RS.replace("{{name}}", name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/plugin-guide.md` shows the scaffold's files verbatim (for `hello`): they must not drift apart.
    #[test]
    fn the_plugin_guide_shows_exactly_what_the_scaffold_writes() {
        let guide = include_str!("../../../docs/plugin-guide.md");
        let (cargo_toml, lib_rs) = render("hello", "/path/to/qila/sdk");
        assert!(
            guide.contains(&format!("```toml\n{cargo_toml}```")),
            "Cargo.toml differs from the guide"
        );
        assert!(
            guide.contains(&format!("```rust\n{lib_rs}```")),
            "src/lib.rs differs from the guide"
        );
    }

    #[test]
    fn refuses_bad_names_and_non_empty_directories() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = default_sdk_path();
        let e = create("Bad Name", &dir.path().join("x"), &sdk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lower-case"), "{e}");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let e = create("ok", dir.path(), &sdk).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}
