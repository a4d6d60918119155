//! The manifest of a package: what the plugin is, its actions, and the capabilities it asks for.

use qila_model::Tlp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PackageError;

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a package says about its plugin. Everything an administrator decides on at install is in here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format, [`FORMAT_VERSION`].
    pub format: u32,
    /// The plugin's name: the `<plugin>` of `<plugin>.<action>`.
    pub name: String,
    /// Semantic version of the plugin.
    pub version: String,
    /// Who publishes the plugin.
    pub vendor: String,
    /// What the plugin is for.
    pub description: String,
    /// The actions, as the component describes them.
    pub actions: Vec<ActionManifest>,
    /// What the plugin asks to be allowed.
    pub capabilities: Capabilities,
    /// The component this manifest describes.
    pub component: ComponentInfo,
}

/// One action of the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionManifest {
    /// The action's name.
    pub name: String,
    /// One line that says what it does.
    pub summary: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
    /// JSON Schema of its output.
    pub output_schema: Value,
    /// An input it accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_input: Option<Value>,
}

/// The capabilities a plugin asks for. Each maps to what the host enforces at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Host patterns it sends HTTP requests to (`api.example.com:443`, `*.example.org`, `10.0.0.5:8443`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
    /// Secrets it names on HTTP requests, which the host injects at egress (the plugin never sees them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Secrets whose values it asks to read (`secrets.reveal`): a separate grant, audited on every use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveal: Vec<String>,
    /// Host packs it calls: `kv` (its private key-value store), `intel.read`, `cases.write`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
    /// The highest TLP of data it may receive. Unset: `amber` for a plugin with egress, `red` for one without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlp: Option<Tlp>,
    /// The resources it needs.
    #[serde(default)]
    pub limits: LimitRequest,
}

impl Capabilities {
    /// The highest TLP the plugin asks to receive, with the default applied.
    pub fn max_tlp(&self) -> Tlp {
        self.tlp.unwrap_or(if self.egress.is_empty() {
            Tlp::Red
        } else {
            Tlp::Amber
        })
    }
}

/// Resource limits a plugin needs; unset ones take the host's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Largest linear memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time per invocation, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Wall-clock time per invocation, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Largest JSON output, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// The component a manifest describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentInfo {
    /// Hex SHA-256 of the component's bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Largest manifest accepted, in bytes.
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;

impl Manifest {
    /// Parses a manifest and checks its rules.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(PackageError::Manifest(format!(
                "it is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                bytes.len()
            )));
        }
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            PackageError::Manifest(format!("line {} column {}: {e}", e.line(), e.column()))
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks the rules a manifest must follow: format, names, version, unique actions, schemas that are JSON
    /// objects or booleans, capability names.
    pub fn check(&self) -> Result<(), PackageError> {
        let bad = |m: String| Err(PackageError::Manifest(m));
        if self.format != FORMAT_VERSION {
            return bad(format!(
                "format {} is not supported (this host reads format {FORMAT_VERSION})",
                self.format
            ));
        }
        if !is_name(&self.name) {
            return bad(format!(
                "name {:?}: use lower-case letters, digits, `-` and `_`, starting with a letter",
                self.name
            ));
        }
        if !is_version(&self.version) {
            return bad(format!(
                "version {:?} is not a semantic version like 1.2.0",
                self.version
            ));
        }
        if self.vendor.trim().is_empty() {
            return bad("vendor is empty".into());
        }
        if self.actions.is_empty() {
            return bad("the plugin has no actions".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.actions.iter().enumerate() {
            if !is_name(&a.name) {
                return bad(format!(
                    "actions[{i}].name {:?} is not a valid name",
                    a.name
                ));
            }
            if !seen.insert(&a.name) {
                return bad(format!("action `{}` is listed twice", a.name));
            }
            for (what, schema) in [
                ("input_schema", &a.input_schema),
                ("output_schema", &a.output_schema),
            ] {
                if !(schema.is_object() || schema.is_boolean()) {
                    return bad(format!(
                        "actions[{i}].{what} of `{}` is not a JSON Schema (an object or a boolean)",
                        a.name
                    ));
                }
            }
        }
        let caps = &self.capabilities;
        for (what, names) in [("secrets", &caps.secrets), ("reveal", &caps.reveal)] {
            for name in names {
                if !is_secret_name(name) {
                    return bad(format!(
                        "capabilities.{what}: {name:?} is not a secret name (letters, digits, `_`, `-`, `.`)"
                    ));
                }
            }
        }
        for pack in &caps.packs {
            if !is_pack(pack) {
                return bad(format!(
                    "capabilities.packs: {pack:?} is not a host pack name like `kv` or `intel.read`"
                ));
            }
        }
        if self.component.sha256.len() != 64 || hex::decode(&self.component.sha256).is_err() {
            return bad("component.sha256 is not a hex SHA-256".into());
        }
        Ok(())
    }

    /// The manifest as the canonical JSON that a package stores and signs.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers, vectors and JSON values always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

fn is_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn is_pack(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, _) => ok(a),
        (Some(a), Some(b), None) => ok(a) && ok(b),
        _ => false,
    }
}

fn is_version(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            name: "acme-intel".into(),
            version: "1.2.0".into(),
            vendor: "Acme Corp".into(),
            description: "Looks things up.".into(),
            actions: vec![ActionManifest {
                name: "lookup".into(),
                summary: "Looks up an address.".into(),
                input_schema: json!({"type": "object"}),
                output_schema: json!(true),
                example_input: Some(json!({"ip": "192.0.2.1"})),
            }],
            capabilities: Capabilities {
                egress: vec!["api.acme.example:443".into()],
                secrets: vec!["acme_key".into()],
                packs: vec!["kv".into()],
                ..Capabilities::default()
            },
            component: ComponentInfo {
                sha256: "0".repeat(64),
                size: 0,
            },
        }
    }

    #[test]
    fn round_trips_and_checks_rules() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.capabilities.max_tlp(), Tlp::Amber);
        let mut bad = m.clone();
        bad.version = "1.2".into();
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("semantic version")
        );
        let mut bad = m.clone();
        bad.capabilities.packs = vec!["Intel Read".into()];
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("capabilities.packs")
        );
        let mut bad = m;
        bad.actions.push(bad.actions[0].clone());
        assert!(bad.check().unwrap_err().to_string().contains("twice"));
        let e = Manifest::from_json(b"{\"format\": 1, \"nme\": 2}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("nme"), "{e}");
    }
}
