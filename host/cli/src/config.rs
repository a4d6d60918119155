//! Where Qila keeps its data, and the administrator's configuration: what each plugin is granted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use qila_sandbox::{ExpressionLimits, HostPattern, Limits, PluginPolicy};
use serde::Deserialize;

/// Options every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Where the database, the compiled-plugin cache and installed plugins live.
    #[arg(long, global = true, env = "QILA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The configuration file (plugin grants and secret sources) [default: DATA_DIR/qila.yaml, if it exists].
    #[arg(long, global = true, env = "QILA_CONFIG")]
    config: Option<PathBuf>,
    /// A directory of extra plugin components (`*.wasm`) to load beside the bundled ones
    /// [default: DATA_DIR/plugins].
    #[arg(long, global = true, env = "QILA_PLUGINS_DIR")]
    plugins_dir: Option<PathBuf>,
    /// Development mode: accept unsigned and untrusted plugin packages, and load loose components (`*.wasm`)
    /// from the plugins directory. Never on a production server.
    #[arg(long, global = true, env = "QILA_DEV")]
    dev: bool,
    /// When a write counts as done: `process` (it survives the process being killed; an OS crash or power loss
    /// may lose the last second of commits) or `fsync` (every commit waits for the disk).
    #[arg(long, global = true, env = "QILA_DURABILITY", value_enum, default_value_t = DurabilityArg::Process)]
    durability: DurabilityArg,
    /// A PostgreSQL database to keep runs, playbooks and tokens in instead of the data directory's SQLite file
    /// (`postgres://USER@HOST/DB`): several `qila serve` workers may share it. The data directory still holds
    /// the vault's key (`secret.key`), which every worker of one database must share.
    #[arg(long, global = true, env = "QILA_DATABASE_URL", value_parser = database_url)]
    database: Option<String>,
}

/// Checks a `--database` value.
fn database_url(text: &str) -> Result<String, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not a PostgreSQL URL: give postgres://USER@HOST[:PORT]/DATABASE (without --database, \
             the data directory's embedded SQLite is used)"
        ))
    }
}

/// The values of `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// Survives the death of the process (SQLite WAL, `synchronous = NORMAL`).
    Process,
    /// Also survives power loss (`synchronous = FULL`).
    Fsync,
}

impl Settings {
    /// How the store is opened (`--durability`).
    pub fn store_options(&self) -> qila_store::StoreOptions {
        qila_store::StoreOptions {
            durability: match self.durability {
                DurabilityArg::Process => qila_store::Durability::Process,
                DurabilityArg::Fsync => qila_store::Durability::Fsync,
            },
            database: self.database.clone(),
        }
    }

    /// The data directory: `--data-dir`, `QILA_DATA_DIR`, else `$XDG_DATA_HOME/qila`, else `~/.local/share/qila`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("qila");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share/qila"),
            None => PathBuf::from(".qila"),
        }
    }

    /// Whether development mode is on.
    pub fn dev(&self) -> bool {
        self.dev
    }

    /// The directory of extra plugins.
    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir
            .clone()
            .unwrap_or_else(|| self.data_dir().join("plugins"))
    }

    /// The configuration: the file given, else `DATA_DIR/qila.yaml` when it exists, else none (no grants).
    pub fn load_config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Config::load(path),
            None => {
                let default = self.data_dir().join("qila.yaml");
                if default.exists() {
                    Config::load(&default)
                } else {
                    Ok(Config::default())
                }
            }
        }
    }
}

/// The administrator's configuration file.
///
/// ```yaml
/// plugins:
///   notify:
///     egress: ["hooks.slack.com", "*.example.org:443"]
///     secrets: [slack_token]        # injected into HTTP requests as bearer tokens
///     reveal: [smtp_password]       # values the plugin may read (audited)
///     packs: [kv]                   # host packs (default: kv)
///     tlp: green                    # highest TLP it may receive (default: amber with egress, red without)
///     limits: { memory: 64MiB, cpu: 2s, timeout: 30s, output: 1MiB }
/// secrets:
///   slack_token: { env: SLACK_TOKEN }
///   misp_key: { file: /run/secrets/misp_key }
/// expressions:                      # limits of one `${{ }}` evaluation (a step's `with`, an `if`)
///   memory: 16MiB                   # what the expressions may allocate
///   work: 100000000                 # fuel: about one WebAssembly instruction each
///   output: 1MiB                    # the rendered result
///   timeout: 5s
///   context: 64MiB                  # the inputs and step results they read
///   instances: 32                   # evaluations at once
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Grants and limits by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginGrant>,
    /// Where each secret's value comes from.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Limits of expression evaluation.
    #[serde(default)]
    pub expressions: ExpressionsConfig,
    /// The listeners' limits and timeouts.
    #[serde(default)]
    pub server: crate::server_config::ServerConfig,
}

/// The limits of one expression evaluation as written in the file; unset ones keep their defaults
/// ([`ExpressionLimits::default`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpressionsConfig {
    memory: Option<String>,
    work: Option<u64>,
    output: Option<String>,
    timeout: Option<String>,
    context: Option<String>,
    instances: Option<u32>,
}

impl ExpressionsConfig {
    /// The limits, with the defaults for what is not set.
    pub fn limits(&self) -> anyhow::Result<ExpressionLimits> {
        let mut limits = ExpressionLimits::default();
        if let Some(v) = &self.memory {
            limits.memory_bytes = parse_size(v).context("expressions.memory")?;
        }
        if let Some(v) = self.work {
            anyhow::ensure!(v > 0, "expressions.work must be at least 1");
            limits.work = v;
        }
        if let Some(v) = &self.output {
            limits.output_bytes = parse_size(v).context("expressions.output")?;
        }
        if let Some(v) = &self.timeout {
            limits.timeout = parse_duration(v).context("expressions.timeout")?;
        }
        if let Some(v) = &self.context {
            limits.context_bytes = parse_size(v).context("expressions.context")?;
        }
        if let Some(v) = self.instances {
            anyhow::ensure!(v > 0, "expressions.instances must be at least 1");
            limits.max_instances = v;
        }
        Ok(limits)
    }
}

/// What one plugin may do.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginGrant {
    /// Host patterns the plugin may reach: `[scheme://]host[:port]`, `*.domain` for subdomains.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Secret names the host may inject into the plugin's HTTP requests.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Secret names whose values the plugin may read (audited on every use).
    #[serde(default)]
    pub reveal: Vec<String>,
    /// Host packs the plugin may call [default: `kv`].
    #[serde(default = "default_packs")]
    pub packs: Vec<String>,
    /// The highest TLP of data the plugin may receive [default: `amber` with egress, `red` without].
    #[serde(default)]
    pub tlp: Option<String>,
    /// Resource limits; unset ones keep their defaults.
    #[serde(default)]
    pub limits: LimitsConfig,
}

fn default_packs() -> Vec<String> {
    vec!["kv".into()]
}

/// Resource limits as written in the file (`64MiB`, `2s`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    memory: Option<String>,
    cpu: Option<String>,
    timeout: Option<String>,
    output: Option<String>,
    http_body: Option<String>,
}

/// Where a secret's value comes from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the `qila` process.
    Env(String),
    /// A file (its content, with the trailing newline removed).
    File(PathBuf),
}

impl Config {
    /// Reads and parses a configuration file; errors name the file, line and column.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Config = serde_yaml::from_str(&text).map_err(|e| match e.location() {
            Some(l) => anyhow::anyhow!("{}:{}:{}: {e}", path.display(), l.line(), l.column()),
            None => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
        config
            .server
            .apply(
                &mut qila_server::ServerOptions::default(),
                &mut qila_siem::syslog::TcpLimits::default(),
            )
            .with_context(|| path.display().to_string())?;
        for (plugin, grant) in &config.plugins {
            grant
                .policy()
                .with_context(|| format!("{}: plugins.{plugin}", path.display()))?;
        }
        config
            .expressions
            .limits()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// The policy for the plugin `name`: its grants, or none but the `kv` pack.
    pub fn policy_for(&self, name: &str) -> anyhow::Result<PluginPolicy> {
        match self.plugins.get(name) {
            Some(grant) => grant.policy(),
            None => PluginGrant {
                packs: default_packs(),
                ..PluginGrant::default()
            }
            .policy(),
        }
    }

    /// The highest TLP of data plugin `name` may receive: its `tlp:` grant, else `amber` when it has egress and
    /// `red` when it has none.
    pub fn max_tlp_for(
        &self,
        name: &str,
        policy: &PluginPolicy,
    ) -> anyhow::Result<qila_model::Tlp> {
        match self.plugins.get(name).and_then(|g| g.tlp.as_deref()) {
            Some(text) => text.parse().with_context(|| format!("plugins.{name}.tlp")),
            None if policy.egress.is_empty() => Ok(qila_model::Tlp::Red),
            None => Ok(qila_model::Tlp::Amber),
        }
    }

    /// The values of every configured secret that has one.
    pub fn resolve_secrets(&self) -> HashMap<String, String> {
        let mut values = HashMap::new();
        for (name, source) in &self.secrets {
            let value = match source {
                SecretSource::Env(var) => std::env::var(var).ok(),
                SecretSource::File(path) => std::fs::read_to_string(path)
                    .ok()
                    .map(|s| s.trim_end_matches('\n').to_string()),
            };
            match value {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None => {
                    tracing::warn!(secret = %name, "secret has no value (its variable or file is missing)")
                }
            }
        }
        values
    }
}

impl PluginGrant {
    fn policy(&self) -> anyhow::Result<PluginPolicy> {
        let egress = self
            .egress
            .iter()
            .map(|p| p.parse::<HostPattern>())
            .collect::<Result<Vec<_>, _>>()?;
        let mut limits = Limits::default();
        let l = &self.limits;
        if let Some(v) = &l.memory {
            limits.memory_bytes = parse_size(v).context("limits.memory")?;
        }
        if let Some(v) = &l.output {
            limits.max_output_bytes = parse_size(v).context("limits.output")?;
        }
        if let Some(v) = &l.http_body {
            limits.max_http_body_bytes = parse_size(v).context("limits.http_body")?;
        }
        if let Some(v) = &l.cpu {
            limits.cpu = parse_duration(v).context("limits.cpu")?;
        }
        if let Some(v) = &l.timeout {
            limits.timeout = parse_duration(v).context("limits.timeout")?;
        }
        Ok(PluginPolicy {
            egress,
            secrets: self.secrets.clone(),
            reveal: self.reveal.clone(),
            packs: self.packs.clone(),
            limits,
        })
    }
}

/// Parses `512KiB`, `64MiB`, `1GiB`, `1000000` (bytes).
pub fn parse_size(text: &str) -> anyhow::Result<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .with_context(|| format!("{text:?} is not a size like 64MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => bail!("unknown size unit {other:?} in {text:?}; use B, KiB, MiB or GiB"),
    };
    n.checked_mul(factor)
        .with_context(|| format!("{text:?} is too large"))
}

/// Parses `250ms`, `2s`, `1m30s`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text.trim())
        .with_context(|| format!("{text:?} is not a duration like 2s or 250ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512 KiB").unwrap(), 512 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn config_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qila.yaml");
        std::fs::write(&path, "plugins:\n  notify:\n    egres: [x.com]\n").unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("qila.yaml:3:5") && e.contains("egres"), "{e}");
        std::fs::write(&path, "plugins:\n  notify:\n    egress: [\"a.*.com\"]\n").unwrap();
        let e = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(
            e.contains("plugins.notify") && e.contains("wildcard"),
            "{e}"
        );
    }

    #[test]
    fn grants_become_policies() {
        let config: Config = serde_yaml::from_str(
            "plugins:\n  notify:\n    egress: ['*.example.org']\n    secrets: [tok]\n    limits: { memory: 8MiB, timeout: 3s }\n",
        )
        .unwrap();
        let p = config.policy_for("notify").unwrap();
        assert!(p.allows_egress("https", "hooks.example.org", 443));
        assert!(p.allows_secret("tok") && !p.allows_secret("other"));
        assert_eq!(p.limits.memory_bytes, 8 << 20);
        assert_eq!(p.limits.timeout, Duration::from_secs(3));
        let core = config.policy_for("core").unwrap();
        assert!(core.egress.is_empty() && core.secrets.is_empty() && core.reveal.is_empty());
        assert_eq!(core.packs, ["kv"]);
    }
}
