//! What an administrator allows one plugin: egress, secrets and resource limits.

use std::time::Duration;

use crate::egress::HostPattern;

/// Resource limits for every invocation of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory the plugin may grow to, in bytes.
    pub memory_bytes: usize,
    /// CPU time the plugin may spend executing WebAssembly in one invocation (time in host calls does not count).
    pub cpu: Duration,
    /// Wall-clock time one invocation may take, host calls included.
    pub timeout: Duration,
    /// Largest JSON output, in bytes.
    pub max_output_bytes: usize,
    /// Largest HTTP response body the host hands back to the plugin, in bytes.
    pub max_http_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_output_bytes: 1 << 20,
            max_http_body_bytes: 4 << 20,
        }
    }
}

/// Everything one plugin is allowed to do beyond computing: its grants and its limits.
///
/// The default grants nothing: no egress, no secrets, no packs; [`Limits::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginPolicy {
    /// Hosts the plugin may reach through the `http` interface.
    pub egress: Vec<HostPattern>,
    /// Names of the secrets the host injects into the plugin's HTTP requests (`bearer-secret`); the plugin never
    /// sees their values.
    pub secrets: Vec<String>,
    /// Names of the secrets whose values the plugin may read (`secrets.reveal`): a separate grant, and every use is
    /// audited through [`crate::SecretStore::audit_reveal`].
    pub reveal: Vec<String>,
    /// Host packs the plugin may call: `kv` (its private key-value store), `intel.read`, ...
    pub packs: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
}

impl PluginPolicy {
    /// Whether the host may inject the secret `name` into the plugin's HTTP requests.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name)
    }

    /// Whether the plugin may read the value of the secret `name`.
    pub fn allows_reveal(&self, name: &str) -> bool {
        self.reveal.iter().any(|s| s == name)
    }

    /// Whether the plugin may call the host pack `pack`.
    pub fn allows_pack(&self, pack: &str) -> bool {
        self.packs.iter().any(|p| p == pack)
    }

    /// Whether an egress pattern names the address `ip` itself (an IP or a range containing it).
    pub fn grants_address(&self, ip: std::net::IpAddr) -> bool {
        self.egress.iter().any(|p| p.grants_address(ip))
    }

    /// The first egress pattern that allows `host:port` for `scheme`, if any.
    pub fn allows_egress(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.egress.iter().any(|p| p.matches(scheme, host, port))
    }
}
