//! `qila plugin`: list, inspect, new, build; keygen, pack, sign, verify, test; trust, keys, install, grant.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use qila_sandbox::{PluginPolicy, Sandbox, SandboxConfig};

use crate::client::ClientArgs;
use crate::commands::install::GrantArgs;
use crate::commands::{conformance, install, package};
use crate::config::Settings;
use crate::registry::describe;
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
    /// Create a vendor signing key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        /// The vendor's name, recorded in the public key.
        #[arg(long)]
        vendor: String,
        /// The files' path without extension [default: the vendor's name in lower case].
        #[arg(long, value_name = "PREFIX")]
        out: Option<PathBuf>,
    },
    /// Pack a component and the capabilities it asks for into a package file (signed with --key).
    Pack {
        /// The component (`.wasm`).
        component: PathBuf,
        /// The capabilities file [default: ./plugin.yaml when it exists, else none].
        #[arg(long, value_name = "FILE")]
        capabilities: Option<PathBuf>,
        /// The package file to write [default: NAME-VERSION.qpkg].
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Sign with this secret key.
        #[arg(long, value_name = "KEY")]
        key: Option<PathBuf>,
    },
    /// Sign a package with a vendor's secret key (in place unless --out).
    Sign {
        /// The package file.
        package: PathBuf,
        /// The secret key file (`.key`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Write the signed package here instead.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Check a package's signature against public keys (--key), or else the data directory's trusted keys; show
    /// what it asks for. Exit 0 when it verifies, 1 when not.
    Verify {
        /// The package file.
        package: PathBuf,
        /// A vendor's public key file (`.pub`); repeatable.
        #[arg(long = "key", value_name = "PUB")]
        keys: Vec<PathBuf>,
    },
    /// Check a plugin (package or component) against the contract: manifest, schemas, imports, examples, typed
    /// errors, limits. Exit 0 when nothing fails.
    Test {
        /// The package (`.qpkg`) or component (`.wasm`).
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Trust a vendor's public key on the server (admin).
    Trust {
        /// The public key file (`.pub`).
        key: PathBuf,
    },
    /// List the vendor keys the server trusts.
    Keys {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install a package on the server (admin): shows what it asks for and records what you grant.
    Install {
        /// The package file.
        package: PathBuf,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Replace an installed plugin's grants on the server (admin).
    Grant {
        /// The plugin's name.
        name: String,
        #[command(flatten)]
        grants: GrantArgs,
    },
}

/// Runs a `qila plugin` subcommand.
pub async fn plugin(
    settings: &Settings,
    client: &ClientArgs,
    command: PluginCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Keygen { vendor, out } => package::keygen(&vendor, out),
        PluginCommand::Pack {
            component,
            capabilities,
            out,
            key,
        } => package::pack(&component, capabilities, out, key).await,
        PluginCommand::Sign { package, key, out } => package::sign(&package, &key, out),
        PluginCommand::Verify { package, keys } => package::verify(settings, &package, &keys).await,
        PluginCommand::Test { file, json } => conformance::test(&file, json).await,
        PluginCommand::Trust { key } => install::trust(client, &key).await,
        PluginCommand::Keys { json } => install::keys(client, json).await,
        PluginCommand::Install { package, grants } => {
            install::install(client, &package, &grants).await
        }
        PluginCommand::Grant { name, grants } => install::grant(client, &name, &grants).await,
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
    let plugins = runtime.registry.snapshot();
    if json {
        let loaded: Vec<_> = plugins.loaded.values().map(describe).collect();
        let failed: Vec<_> = plugins
            .failures
            .iter()
            .map(|f| serde_json::json!({"origin": f.origin, "error": f.error}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plugins": loaded, "failed": failed})
            )?
        );
    } else {
        println!(
            "{:<12} {:<9} {:<14} {:<10} {:<7} ACTIONS",
            "NAME", "VERSION", "VENDOR", "ORIGIN", "TLP"
        );
        for p in plugins.loaded.values() {
            let m = p.plugin.manifest();
            let actions: Vec<&str> = m.actions.iter().map(|a| a.name.as_str()).collect();
            println!(
                "{:<12} {:<9} {:<14} {:<10} {:<7} {}",
                m.name,
                m.version,
                m.vendor,
                p.origin.to_string(),
                p.max_tlp.as_str(),
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
        let component = if bytes.starts_with(b"QILAPKG") {
            let parsed = qila_package::Package::parse(&bytes).with_context(|| target.to_owned())?;
            if !json {
                package::print_capabilities(&parsed.manifest().capabilities);
                match parsed.signature() {
                    Some(sig) => println!("signed by key {}", sig.key_id),
                    None => println!("unsigned"),
                }
            }
            parsed.component().to_vec()
        } else {
            bytes
        };
        let sandbox = Sandbox::new(SandboxConfig::default())?;
        sandbox.load(&component, PluginPolicy::default()).await?
    } else {
        let runtime = Runtime::open(settings).await?;
        let plugins = runtime.registry.snapshot();
        match plugins.loaded.get(target) {
            Some(p) => p.plugin.clone(),
            None => bail!(
                "no plugin named `{target}`{}",
                qila_model::did_you_mean(target, plugins.loaded.keys().map(String::as_str))
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
                "reveal": policy.reveal,
                "packs": policy.packs,
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
        "grants:  egress [{}], secrets [{}], reveal [{}], packs [{}]",
        egress.join(", "),
        policy.secrets.join(", "),
        policy.reveal.join(", "),
        policy.packs.join(", ")
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
