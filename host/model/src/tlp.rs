//! The Traffic Light Protocol (FIRST TLP 2.0): how far a piece of data may be shared.
//!
//! Qila labels every value in a run with the TLP of its source, and refuses to hand a value to a plugin whose
//! limit is lower (see `docs/security.md`). Levels are ordered from the most to the least shareable:
//! `CLEAR < GREEN < AMBER < AMBER+STRICT < RED`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A TLP 2.0 level. `WHITE` (TLP 1.0) is read as `CLEAR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Tlp {
    /// May be shared without restriction.
    #[default]
    Clear,
    /// May be shared within the community, not published.
    Green,
    /// May be shared with the recipient's organisation and its clients, on a need-to-know basis.
    Amber,
    /// May be shared within the recipient's organisation only.
    AmberStrict,
    /// For the eyes and ears of the individual recipients only.
    Red,
}

/// A string that is not a TLP level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a TLP level: use clear, green, amber, amber+strict or red (TLP: prefix optional)"
)]
pub struct TlpError(pub String);

impl Tlp {
    /// Every level, from the most to the least shareable.
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    /// The level's lower-case name as written in playbooks and manifests: `clear`, `amber+strict`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "clear",
            Tlp::Green => "green",
            Tlp::Amber => "amber",
            Tlp::AmberStrict => "amber+strict",
            Tlp::Red => "red",
        }
    }

    /// The highest TLP label found in `value`: the `tlp` (or `TLP`) member of any object in it whose value is a
    /// TLP level, at any depth up to 32. Observables and indicators carry their label this way
    /// (`{"type": "ipv4", "value": "192.0.2.1", "tlp": "amber"}`). `None` when there is no label.
    pub fn found_in(value: &Value) -> Option<Tlp> {
        fn walk(value: &Value, depth: usize, best: &mut Option<Tlp>) {
            if depth > 32 {
                return;
            }
            match value {
                Value::Object(map) => {
                    for (key, v) in map {
                        if key.eq_ignore_ascii_case("tlp")
                            && let Some(t) = v.as_str().and_then(|s| s.parse::<Tlp>().ok())
                        {
                            *best = (*best).max(Some(t));
                        } else {
                            walk(v, depth + 1, best);
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, depth + 1, best)),
                _ => {}
            }
        }
        let mut best = None;
        walk(value, 0, &mut best);
        best
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLP:{}", self.as_str().to_ascii_uppercase())
    }
}

impl FromStr for Tlp {
    type Err = TlpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bare = t
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("tlp:"))
            .map_or(t, |_| &t[4..]);
        match bare.to_ascii_lowercase().as_str() {
            "clear" | "white" => Ok(Tlp::Clear),
            "green" => Ok(Tlp::Green),
            "amber" => Ok(Tlp::Amber),
            "amber+strict" | "amber-strict" | "amber_strict" => Ok(Tlp::AmberStrict),
            "red" => Ok(Tlp::Red),
            _ => Err(TlpError(s.to_string())),
        }
    }
}

impl Serialize for Tlp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Tlp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_every_spelling_and_orders_by_restriction() {
        assert_eq!("TLP:AMBER+STRICT".parse::<Tlp>(), Ok(Tlp::AmberStrict));
        assert_eq!("white".parse::<Tlp>(), Ok(Tlp::Clear));
        assert_eq!(" tlp:red ".parse::<Tlp>(), Ok(Tlp::Red));
        assert!(
            "orange"
                .parse::<Tlp>()
                .unwrap_err()
                .to_string()
                .contains("amber+strict")
        );
        assert!(
            Tlp::Clear < Tlp::Green && Tlp::Amber < Tlp::AmberStrict && Tlp::AmberStrict < Tlp::Red
        );
        assert_eq!(Tlp::AmberStrict.to_string(), "TLP:AMBER+STRICT");
        assert_eq!(serde_json::to_value(Tlp::Red).unwrap(), json!("red"));
    }

    #[test]
    fn finds_the_highest_label_at_any_depth() {
        let v = json!({"observables": [
            {"type": "ipv4", "value": "192.0.2.1", "tlp": "green"},
            {"type": "domain", "value": "x.example", "meta": {"TLP": "TLP:RED"}},
        ]});
        assert_eq!(Tlp::found_in(&v), Some(Tlp::Red));
        assert_eq!(Tlp::found_in(&json!({"tlp": "not-a-level"})), None);
        assert_eq!(Tlp::found_in(&json!("red")), None);
    }
}
