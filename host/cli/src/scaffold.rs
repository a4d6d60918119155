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
    write(
        "Cargo.toml",
        CARGO_TOML
            .replace("{name}", name)
            .replace("{sdk}", &sdk.display().to_string()),
    )?;
    write("src/lib.rs", LIB_RS.replace("{name}", name))?;
    write(".gitignore", "/target\n".into())?;
    Ok(())
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
qila-sdk = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
schemars = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# A crate of its own, even when created inside another workspace.
[workspace]
"#;

const LIB_RS: &str = r##"//! The `{name}` Qila plugin.

use qila_sdk::prelude::*;

/// Input of `greet`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GreetInput {
    /// Who to greet.
    pub name: String,
}

/// Output of `greet`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct GreetOutput {
    /// The greeting.
    pub greeting: String,
}

/// Greets someone by name.
#[action(example = r#"{"name": "Ada"}"#)]
pub fn greet(input: GreetInput, _ctx: &Context) -> Result<GreetOutput, Error> {
    if input.name.trim().is_empty() {
        return Err(Error::invalid_input("`name` is empty"));
    }
    Ok(GreetOutput { greeting: format!("Hello, {}!", input.name) })
}

qila_sdk::plugin! {
    name: "{name}",
    vendor: "Your Company",
    description: "Describe what the plugin is for.",
    actions: [greet],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        let out = greet(GreetInput { name: "Ada".into() }, &Context::default()).unwrap();
        assert_eq!(out.greeting, "Hello, Ada!");
    }

    #[test]
    fn rejects_an_empty_name_through_the_json_boundary() {
        let err = PLUGIN.invoke_json("greet", serde_json::json!({"name": " "}), &Context::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
    }

    #[test]
    fn manifest_is_well_formed() {
        PLUGIN.check().unwrap();
    }
}
"##;
