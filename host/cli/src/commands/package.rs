//! `qila plugin keygen|pack|sign|verify`: a vendor's side of plugin packages.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use qila_package::{
    ActionManifest, Capabilities, ComponentInfo, FORMAT_VERSION, LimitRequest, Manifest, Package,
    PublicKey, SigningKey, TrustedKeys, check_imports,
};
use qila_sandbox::{HostPattern, Plugin, PluginPolicy, Sandbox, SandboxConfig};
use serde::Deserialize;

use crate::config::{Settings, parse_duration, parse_size};

/// The capabilities file a vendor writes beside the plugin (`plugin.yaml`): what the plugin asks for.
///
/// ```yaml
/// egress: ["api.example.com:443"]   # hosts it calls through `http`
/// secrets: [example_api_key]        # injected by the host as bearer tokens
/// reveal: []                        # secrets whose values it reads (audited)
/// packs: [kv]                       # host packs it calls
/// tlp: amber                        # highest TLP of data it may receive
/// limits: { memory: 32MiB, cpu: 2s, timeout: 10s, output: 256KiB }
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesFile {
    #[serde(default)]
    egress: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    reveal: Vec<String>,
    #[serde(default)]
    packs: Vec<String>,
    #[serde(default)]
    tlp: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    memory: Option<String>,
    cpu: Option<String>,
    timeout: Option<String>,
    output: Option<String>,
}

impl CapabilitiesFile {
    /// Reads a capabilities file; errors name the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })
    }

    /// The capabilities as a manifest records them.
    pub fn capabilities(&self, path: &Path) -> anyhow::Result<Capabilities> {
        let at = |what: &str| format!("{}: {what}", path.display());
        for pattern in &self.egress {
            pattern
                .parse::<HostPattern>()
                .with_context(|| at("egress"))?;
        }
        let tlp = match &self.tlp {
            Some(t) => Some(t.parse().with_context(|| at("tlp"))?),
            None => None,
        };
        let l = &self.limits;
        let size = |v: &Option<String>, what: &str| -> anyhow::Result<Option<u64>> {
            v.as_deref()
                .map(|s| parse_size(s).map(|n| n as u64).with_context(|| at(what)))
                .transpose()
        };
        let ms = |v: &Option<String>, what: &str| -> anyhow::Result<Option<u64>> {
            v.as_deref()
                .map(|s| {
                    parse_duration(s)
                        .map(|d| d.as_millis() as u64)
                        .with_context(|| at(what))
                })
                .transpose()
        };
        Ok(Capabilities {
            egress: self.egress.clone(),
            secrets: self.secrets.clone(),
            reveal: self.reveal.clone(),
            packs: self.packs.clone(),
            tlp,
            limits: LimitRequest {
                memory_bytes: size(&l.memory, "limits.memory")?,
                cpu_ms: ms(&l.cpu, "limits.cpu")?,
                timeout_ms: ms(&l.timeout, "limits.timeout")?,
                output_bytes: size(&l.output, "limits.output")?,
            },
        })
    }
}

/// `qila plugin keygen`: a new signing key pair.
pub fn keygen(vendor: &str, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    if vendor.trim().is_empty() {
        bail!("--vendor must name who signs (e.g. --vendor \"Acme Corp\")");
    }
    let prefix = out.unwrap_or_else(|| {
        let slug: String = vendor
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        PathBuf::from(slug.trim_matches('-'))
    });
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    for path in [&secret_path, &public_path] {
        if path.exists() {
            bail!(
                "{} exists; keygen never overwrites a key (choose another --out)",
                path.display()
            );
        }
    }
    let key = SigningKey::generate()?;
    key.save(&secret_path)
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    let public = key.public(vendor);
    std::fs::write(&public_path, public.to_text())
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    println!(
        "secret key: {} (keep it secret; mode 0600)",
        secret_path.display()
    );
    println!(
        "public key: {} (give it to administrators: `qila plugin trust {}`)",
        public_path.display(),
        public_path.display()
    );
    println!("key id:     {}", public.id());
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin pack`: a package from a component and its capabilities file, signed when `key` is given.
pub async fn pack(
    component: &Path,
    capabilities: Option<PathBuf>,
    out: Option<PathBuf>,
    key: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let caps_path = capabilities.or_else(|| {
        let beside = PathBuf::from("plugin.yaml");
        beside.exists().then_some(beside)
    });
    let caps = match &caps_path {
        Some(path) => CapabilitiesFile::load(path)?.capabilities(path)?,
        None => Capabilities::default(),
    };
    let plugin = load_bare(&bytes)
        .await
        .with_context(|| format!("{} is not a plugin component", component.display()))?;
    if let Err(problems) = check_imports(&caps, plugin.imports()) {
        let where_ = caps_path
            .as_deref()
            .map_or("a plugin.yaml (none was found)".to_string(), |p| {
                p.display().to_string()
            });
        let lines: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        bail!(
            "the component imports more than its capabilities declare; declare them in {where_}:\n{}",
            lines.join("\n")
        );
    }
    let manifest = manifest_of(&plugin, caps);
    let mut package = Package::new(manifest, bytes)?;
    if let Some(key) = &key {
        package.sign(&read_signing_key(key)?);
    }
    let m = package.manifest();
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{}-{}.qpkg", m.name, m.version)));
    std::fs::write(&out, package.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "{} ({} {}, {} actions, {}; digest {})",
        out.display(),
        m.name,
        m.version,
        m.actions.len(),
        match package.signature() {
            Some(sig) => format!("signed by key {}", sig.key_id),
            None => "unsigned: sign it with `qila plugin sign`".into(),
        },
        &package.digest()[..16]
    );
    print_capabilities(&m.capabilities);
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin sign`: signs a package (in place unless `out` is given).
pub fn sign(package: &Path, key: &Path, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut parsed = read_package(package)?;
    let key = read_signing_key(key)?;
    parsed.sign(&key);
    let out = out.unwrap_or_else(|| package.to_path_buf());
    std::fs::write(&out, parsed.to_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}: signed by key {}", out.display(), key.id());
    Ok(ExitCode::SUCCESS)
}

/// `qila plugin verify`: checks a package's signature against the given public keys, or else the data
/// directory's trusted keys. Exit 0 when it verifies, 1 when not.
pub async fn verify(
    settings: &Settings,
    package: &Path,
    keys: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let parsed = read_package(package)?;
    let trusted = if keys.is_empty() {
        let store =
            qila_store::Store::open_with(&settings.data_dir(), settings.store_options()).await?;
        let mut list = Vec::new();
        for row in store.trusted_keys().await? {
            list.push(PublicKey::parse(&row.public_key)?);
        }
        store.close().await;
        TrustedKeys::new(list)
    } else {
        let mut list = Vec::new();
        for path in keys {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            list.push(PublicKey::parse(&text).with_context(|| path.display().to_string())?);
        }
        TrustedKeys::new(list)
    };
    let m = parsed.manifest();
    println!(
        "{} {} by {} (component sha256:{}, {} bytes)",
        m.name, m.version, m.vendor, m.component.sha256, m.component.size
    );
    print_capabilities(&m.capabilities);
    match parsed.verify(&trusted) {
        Ok(key) => {
            println!("signature: good, by key {} ({})", key.id(), key.vendor());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("signature: REFUSED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints what a plugin asks for, one capability per line.
pub fn print_capabilities(c: &Capabilities) {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("asks for:");
    println!("  egress:  {}", list(&c.egress));
    println!(
        "  secrets: {} (injected into HTTP requests)",
        list(&c.secrets)
    );
    println!("  reveal:  {} (values it reads; audited)", list(&c.reveal));
    println!("  packs:   {}", list(&c.packs));
    println!("  tlp:     data up to {}", c.max_tlp());
    let l = &c.limits;
    let show =
        |v: Option<u64>, unit: &str| v.map_or("default".to_string(), |v| format!("{v}{unit}"));
    println!(
        "  limits:  memory {}, cpu {}, timeout {}, output {}",
        show(l.memory_bytes, " B"),
        show(l.cpu_ms, " ms"),
        show(l.timeout_ms, " ms"),
        show(l.output_bytes, " B")
    );
}

/// Reads a package file.
pub fn read_package(path: &Path) -> anyhow::Result<Package> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Package::parse(&bytes).with_context(|| path.display().to_string())
}

fn read_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    SigningKey::parse(&text).with_context(|| path.display().to_string())
}

/// Loads a component in a sandbox without grants, to read its description and imports.
pub async fn load_bare(bytes: &[u8]) -> anyhow::Result<Plugin> {
    let sandbox = Sandbox::new(SandboxConfig::default())?;
    Ok(sandbox.load(bytes, PluginPolicy::default()).await?)
}

/// The manifest of a loaded component with the capabilities it asks for.
pub fn manifest_of(plugin: &Plugin, capabilities: Capabilities) -> Manifest {
    let d = plugin.manifest();
    Manifest {
        format: FORMAT_VERSION,
        name: d.name.clone(),
        version: d.version.clone(),
        vendor: d.vendor.clone(),
        description: d.description.clone(),
        actions: d
            .actions
            .iter()
            .map(|a| ActionManifest {
                name: a.name.clone(),
                summary: a.summary.clone(),
                input_schema: a.input_schema.clone(),
                output_schema: a.output_schema.clone(),
                example_input: a.example_input.clone(),
            })
            .collect(),
        capabilities,
        component: ComponentInfo::default(),
    }
}
