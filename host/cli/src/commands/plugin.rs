//! `qila plugin`: list, inspect, new, build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use qila_sandbox::{PluginPolicy, Sandbox, SandboxConfig};

use crate::config::Settings;
use crate::runtime::Runtime;
use crate::scaffold;

/// Subcommands of `qila plugin`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// List loaded plugins (bundled and from the plugins directory) and files that failed to load.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a plugin's actions with their schemas, its imports, digest and grants.
    Inspect {
        /// The plugin's name, or a path to a component file.
        plugin: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a new plugin crate that builds and passes its own test at once.
    New {
        /// The plugin's name (lower-case letters, digits, `-`, `_`).
        name: String,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to the qila-sdk crate [default: the SDK of the source tree this qila was built from].
        #[arg(long, env = "QILA_SDK_PATH")]
        sdk_path: Option<PathBuf>,
    },
    /// Build a plugin crate to a component (release, wasm32-wasip2) and check it loads in the sandbox.
    Build {
        /// The plugin crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Runs a `qila plugin` subcommand.
pub async fn plugin(settings: &Settings, command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::List { json } => list(settings, json).await,
        PluginCommand::Inspect { plugin, json } => inspect(settings, &plugin, json).await,
        PluginCommand::New {
            name,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk_path.unwrap_or_else(scaffold::default_sdk_path);
            scaffold::create(&name, &dir, &sdk)?;
            println!("created plugin `{name}` in {}", dir.display());
            println!(
                "next: cd {} && cargo test && qila plugin build",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Build { dir } => build(&dir).await,
    }
}

async fn list(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(settings).await?;
    let plugins = &runtime.plugins;
    if json {
        let loaded: Vec<_> = plugins
            .loaded
            .values()
            .map(|(p, origin)| {
                let m = p.manifest();
                serde_json::json!({
                    "name": m.name, "version": m.version, "vendor": m.vendor, "origin": origin.to_string(),
                    "digest": p.digest(), "actions": m.actions.iter().map(|a| &a.name).collect::<Vec<_>>(),
                })
            })
            .collect();
        let failed: Vec<_> = plugins
            .failures
            .iter()
            .map(|f| serde_json::json!({"origin": f.origin.to_string(), "error": f.error}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plugins": loaded, "failed": failed})
            )?
        );
    } else {
        println!(
            "{:<12} {:<9} {:<14} {:<10} ACTIONS",
            "NAME", "VERSION", "VENDOR", "ORIGIN"
        );
        for (p, origin) in plugins.loaded.values() {
            let m = p.manifest();
            let actions: Vec<&str> = m.actions.iter().map(|a| a.name.as_str()).collect();
            println!(
                "{:<12} {:<9} {:<14} {:<10} {}",
                m.name,
                m.version,
                m.vendor,
                origin.to_string(),
                actions.join(", ")
            );
        }
        for f in &plugins.failures {
            println!("failed to load {}: {}", f.origin, f.error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn inspect(settings: &Settings, target: &str, json: bool) -> anyhow::Result<ExitCode> {
    let plugin = if Path::new(target).is_file() {
        let bytes = std::fs::read(target).with_context(|| format!("cannot read {target}"))?;
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        sandbox.load(&bytes, PluginPolicy::default()).await?
    } else {
        let runtime = Runtime::open(settings).await?;
        match runtime.plugins.loaded.get(target) {
            Some((p, _)) => p.clone(),
            None => bail!(
                "no plugin named `{target}`{}",
                qila_model::did_you_mean(target, runtime.plugins.loaded.keys().map(String::as_str))
            ),
        }
    };
    let m = plugin.manifest();
    let policy = plugin.policy();
    if json {
        let value = serde_json::json!({
            "manifest": m,
            "digest": format!("sha256:{}", plugin.digest()),
            "size": plugin.size(),
            "imports": plugin.imports(),
            "grants": {
                "egress": policy.egress.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "secrets": policy.secrets,
                "limits": {
                    "memory_bytes": policy.limits.memory_bytes,
                    "cpu_ms": policy.limits.cpu.as_millis() as u64,
                    "timeout_ms": policy.limits.timeout.as_millis() as u64,
                    "max_output_bytes": policy.limits.max_output_bytes,
                },
            },
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} {} by {}", m.name, m.version, m.vendor);
    println!("  {}", m.description);
    println!(
        "digest:  sha256:{}  ({} bytes)",
        plugin.digest(),
        plugin.size()
    );
    println!("imports: {}", plugin.imports().join(", "));
    let egress: Vec<String> = policy.egress.iter().map(ToString::to_string).collect();
    println!(
        "grants:  egress [{}], secrets [{}]",
        egress.join(", "),
        policy.secrets.join(", ")
    );
    let l = &policy.limits;
    println!(
        "limits:  memory {} MiB, cpu {:?}, timeout {:?}, output {} KiB",
        l.memory_bytes >> 20,
        l.cpu,
        l.timeout,
        l.max_output_bytes >> 10
    );
    for a in &m.actions {
        println!("\n{}.{}  {}", m.name, a.name, a.summary);
        println!("  input:  {}", a.input_schema);
        println!("  output: {}", a.output_schema);
        if let Some(example) = &a.example_input {
            println!("  example input: {example}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(dir: &Path) -> anyhow::Result<ExitCode> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: give the directory of a plugin crate",
            dir.display()
        );
    }
    let status = std::process::Command::new(cargo())
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    let artifact = component_path(&manifest)?;
    let bytes =
        std::fs::read(&artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    let plugin = sandbox
        .load(&bytes, PluginPolicy::default())
        .await
        .with_context(|| format!("{} was built but does not load", artifact.display()))?;
    let actions: Vec<&str> = plugin
        .manifest()
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    println!("{}", artifact.display());
    println!(
        "plugin `{}` {} ({} bytes, sha256:{}): {}",
        plugin.name(),
        plugin.manifest().version,
        bytes.len(),
        plugin.digest(),
        actions.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Where `cargo build --release --target wasm32-wasip2` puts the crate's component, from `cargo metadata` (which
/// knows the target directory, workspaces and `[lib] name` overrides).
fn component_path(manifest: &Path) -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(cargo())
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let target_dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", manifest.display()))?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .context("cargo metadata does not list this crate")?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .context(
            "the crate has no cdylib target: add `crate-type = [\"cdylib\", \"rlib\"]` under [lib]",
        )?;
    let name = lib["name"]
        .as_str()
        .context("cdylib target without a name")?
        .replace('-', "_");
    Ok(PathBuf::from(target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm")))
}
