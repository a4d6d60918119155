//! What an administrator grants a plugin at install: all it asks for, or less, never more.

use qila_model::Tlp;
use serde::{Deserialize, Serialize};

use crate::{Capabilities, LimitRequest};

/// The grants recorded for one installed plugin. The host enforces exactly these at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host patterns it may reach.
    #[serde(default)]
    pub egress: Vec<String>,
    /// Secrets the host injects into its HTTP requests.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Secrets whose values it may read (audited).
    #[serde(default)]
    pub reveal: Vec<String>,
    /// Host packs it may call.
    #[serde(default)]
    pub packs: Vec<String>,
    /// The highest TLP of data it may receive.
    #[serde(default)]
    pub tlp: Tlp,
    /// Resource limits (unset: the host's defaults).
    #[serde(default)]
    pub limits: LimitRequest,
}

/// A grant that goes beyond what the plugin asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot grant {what} `{value}`: the plugin does not ask for it (it asks for: {asked})")]
pub struct GrantError {
    /// Which kind of grant (`egress`, `secret`, ...).
    pub what: &'static str,
    /// The value granted.
    pub value: String,
    /// What the plugin asks for, comma-separated.
    pub asked: String,
}

impl Grants {
    /// Everything the plugin asks for.
    pub fn all(caps: &Capabilities) -> Self {
        Self {
            egress: caps.egress.clone(),
            secrets: caps.secrets.clone(),
            reveal: caps.reveal.clone(),
            packs: caps.packs.clone(),
            tlp: caps.max_tlp(),
            limits: caps.limits,
        }
    }

    /// Nothing but computation, data up to TLP:CLEAR, and the limits it asks for.
    pub fn none(caps: &Capabilities) -> Self {
        Self {
            limits: caps.limits,
            ..Self::default()
        }
    }

    /// Checks that every grant is one the plugin asked for, and the TLP is at most what it asked for.
    pub fn check_within(&self, caps: &Capabilities) -> Result<(), GrantError> {
        let lists: [(&'static str, &Vec<String>, &Vec<String>); 4] = [
            ("egress", &self.egress, &caps.egress),
            ("secret", &self.secrets, &caps.secrets),
            ("reveal of secret", &self.reveal, &caps.reveal),
            ("pack", &self.packs, &caps.packs),
        ];
        for (what, granted, asked) in lists {
            if let Some(extra) = granted.iter().find(|g| !asked.contains(g)) {
                return Err(GrantError {
                    what,
                    value: extra.clone(),
                    asked: if asked.is_empty() {
                        "nothing".into()
                    } else {
                        asked.join(", ")
                    },
                });
            }
        }
        if self.tlp > caps.max_tlp() {
            return Err(GrantError {
                what: "TLP",
                value: self.tlp.to_string(),
                asked: format!("data up to {}", caps.max_tlp()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_may_trim_but_never_extend() {
        let caps = Capabilities {
            egress: vec!["a.example".into(), "b.example".into()],
            secrets: vec!["key".into()],
            ..Capabilities::default()
        };
        let all = Grants::all(&caps);
        assert!(all.check_within(&caps).is_ok());
        assert_eq!(all.tlp, Tlp::Amber);
        let mut trimmed = all.clone();
        trimmed.egress.pop();
        trimmed.tlp = Tlp::Green;
        assert!(trimmed.check_within(&caps).is_ok());
        let mut more = all.clone();
        more.egress.push("evil.example".into());
        let e = more.check_within(&caps).unwrap_err().to_string();
        assert!(
            e.contains("evil.example") && e.contains("a.example, b.example"),
            "{e}"
        );
        let mut red = all;
        red.tlp = Tlp::Red;
        assert!(
            red.check_within(&caps)
                .unwrap_err()
                .to_string()
                .contains("TLP:AMBER")
        );
        assert!(Grants::none(&caps).check_within(&caps).is_ok());
    }
}
