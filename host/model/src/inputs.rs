//! Declared playbook inputs: types, formats, checking and coercion of run-time values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::diag::Pos;

/// The JSON type of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputType {
    /// A JSON string.
    String,
    /// A whole number (JSON number without fraction that fits i64/u64).
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl InputType {
    /// All types, in the order they are listed in messages.
    pub const ALL: [InputType; 6] = [
        InputType::String,
        InputType::Integer,
        InputType::Number,
        InputType::Boolean,
        InputType::Object,
        InputType::Array,
    ];

    /// The name used in YAML (`string`, `integer`, ...).
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Object => "object",
            InputType::Array => "array",
        }
    }

    /// Parses a YAML type name.
    pub fn from_name(s: &str) -> Option<InputType> {
        InputType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Whether `v` has this type.
    pub fn matches(self, v: &Value) -> bool {
        match self {
            InputType::String => v.is_string(),
            InputType::Integer => v.is_i64() || v.is_u64(),
            InputType::Number => v.is_number(),
            InputType::Boolean => v.is_boolean(),
            InputType::Object => v.is_object(),
            InputType::Array => v.is_array(),
        }
    }
}

/// A format a string input must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Dotted-quad IPv4 address.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// IPv4 or IPv6 address.
    Ip,
    /// `address/prefix` network (IPv4 or IPv6).
    Cidr,
    /// An absolute URL with a scheme and a host (`https://example.com/x`).
    Url,
    /// A DNS domain name (letters, digits, `-`, at least two labels).
    Domain,
    /// A DNS host name (one label or more).
    Hostname,
    /// `local@domain`.
    Email,
    /// A UUID in 8-4-4-4-12 hex form.
    Uuid,
    /// A hex digest of MD5, SHA-1, SHA-256 or SHA-512 length.
    Hash,
}

impl Format {
    /// All formats.
    pub const ALL: [Format; 10] = [
        Format::Ipv4,
        Format::Ipv6,
        Format::Ip,
        Format::Cidr,
        Format::Url,
        Format::Domain,
        Format::Hostname,
        Format::Email,
        Format::Uuid,
        Format::Hash,
    ];

    /// The name used in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ipv4 => "ipv4",
            Format::Ipv6 => "ipv6",
            Format::Ip => "ip",
            Format::Cidr => "cidr",
            Format::Url => "url",
            Format::Domain => "domain",
            Format::Hostname => "hostname",
            Format::Email => "email",
            Format::Uuid => "uuid",
            Format::Hash => "hash",
        }
    }

    /// Parses a YAML format name.
    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether `s` satisfies this format.
    pub fn check(self, s: &str) -> bool {
        match self {
            Format::Ipv4 => s.parse::<Ipv4Addr>().is_ok(),
            Format::Ipv6 => s.parse::<Ipv6Addr>().is_ok(),
            Format::Ip => s.parse::<IpAddr>().is_ok(),
            Format::Cidr => s.split_once('/').is_some_and(|(ip, prefix)| {
                let max = match ip.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => 32,
                    Ok(IpAddr::V6(_)) => 128,
                    Err(_) => return false,
                };
                prefix.len() <= 3
                    && prefix.bytes().all(|b| b.is_ascii_digit())
                    && prefix.parse::<u8>().is_ok_and(|p| p <= max)
            }),
            Format::Url => is_url(s),
            Format::Domain => is_hostname(s) && s.trim_end_matches('.').contains('.'),
            Format::Hostname => is_hostname(s),
            Format::Email => s.rsplit_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && !local.chars().any(|c| c.is_whitespace() || c == '@')
                    && is_hostname(domain)
                    && domain.contains('.')
            }),
            Format::Uuid => {
                let groups: Vec<&str> = s.split('-').collect();
                groups.len() == 5
                    && groups
                        .iter()
                        .zip([8, 4, 4, 4, 12])
                        .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
            }
            Format::Hash => {
                matches!(s.len(), 32 | 40 | 64 | 128) && s.bytes().all(|b| b.is_ascii_hexdigit())
            }
        }
    }

    /// How a value of this format is described in messages ("a valid ipv4 address").
    pub fn describe(self) -> &'static str {
        match self {
            Format::Ipv4 => "a valid IPv4 address",
            Format::Ipv6 => "a valid IPv6 address",
            Format::Ip => "a valid IP address",
            Format::Cidr => "a valid CIDR network",
            Format::Url => "a valid URL",
            Format::Domain => "a valid domain name",
            Format::Hostname => "a valid host name",
            Format::Email => "a valid email address",
            Format::Uuid => "a valid UUID",
            Format::Hash => "a valid hex digest (MD5, SHA-1, SHA-256 or SHA-512)",
        }
    }
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn is_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((ip, _)) => return scheme_ok && ip.parse::<Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    scheme_ok && !s.chars().any(char::is_whitespace) && is_hostname(host)
}

/// A declared input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The JSON type.
    pub ty: InputType,
    /// For strings: a format to check.
    pub format: Option<Format>,
    /// The TLP of the input's value (`tlp:`), unless the caller marks it higher.
    pub tlp: Option<crate::Tlp>,
    /// Human description.
    pub description: Option<String>,
    /// Value used when the input is not given.
    pub default: Option<Value>,
    /// Whether the input must be given: true unless there is a default or `required: false`.
    /// An optional input without default resolves to `null`.
    pub required: bool,
    /// Position of the input's name in the playbook.
    pub pos: Pos,
}

impl InputSpec {
    /// The expected type as text: `string`, or `string (ipv4)` with a format.
    pub fn describe(&self) -> String {
        match self.format {
            Some(f) => format!("{} ({})", self.ty.name(), f.name()),
            None => self.ty.name().to_owned(),
        }
    }

    /// Checks a value against the declared type and format; `Err` is a message without a path.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        if !self.ty.matches(v) {
            return Err(format!(
                "expected {}, found {}",
                self.describe(),
                crate::schema::short_json(v)
            ));
        }
        if let (Some(f), Some(s)) = (self.format, v.as_str())
            && !f.check(s)
        {
            return Err(format!("{:?} is not {}", s, f.describe()));
        }
        Ok(())
    }

    /// Converts a command-line string (`--input KEY=VALUE`) to a JSON value of the declared type:
    /// `integer`/`number` parse numbers, `boolean` accepts `true`/`false`/`yes`/`no`/`1`/`0`,
    /// `object`/`array` parse JSON, `string` keeps the text. A string that does not parse is kept as
    /// a string, so the type check reports it.
    pub fn coerce(&self, raw: &str) -> Value {
        let t = raw.trim();
        let parsed = match self.ty {
            InputType::String => None,
            InputType::Integer => t
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| t.parse::<u64>().ok().map(Value::from)),
            InputType::Number => t.parse::<i64>().map(Value::from).ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            }),
            InputType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(Value::Bool(true)),
                "false" | "no" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            InputType::Object | InputType::Array => serde_json::from_str::<Value>(t)
                .ok()
                .filter(|v| self.ty.matches(v)),
        };
        parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(Format::Ipv4.check("10.0.0.1"));
        assert!(!Format::Ipv4.check("10.0.0.256"));
        assert!(Format::Ipv6.check("::1"));
        assert!(Format::Ip.check("::1") && Format::Ip.check("1.2.3.4"));
        assert!(Format::Cidr.check("10.0.0.0/8") && Format::Cidr.check("fe80::/10"));
        assert!(!Format::Cidr.check("10.0.0.0/33") && !Format::Cidr.check("10.0.0.0"));
        assert!(Format::Url.check("https://example.com/a?b=c"));
        assert!(Format::Url.check("http://[::1]:8080/"));
        assert!(!Format::Url.check("example.com") && !Format::Url.check("https://"));
        assert!(Format::Domain.check("example.com") && !Format::Domain.check("localhost"));
        assert!(Format::Hostname.check("localhost"));
        assert!(Format::Email.check("a.b@example.com") && !Format::Email.check("a@b"));
        assert!(Format::Uuid.check("67e55044-10b1-426f-9247-bb680e5fe0c8"));
        assert!(Format::Hash.check(&"a".repeat(64)) && !Format::Hash.check("abc"));
    }
}
