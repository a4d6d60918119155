//! Host patterns that say where a plugin may send HTTP requests.

use std::fmt;
use std::str::FromStr;

/// One allowed destination: `[scheme://]host[:port]`.
///
/// - `host` is a DNS name or an IP address, matched case-insensitively; `*.example.com` matches every subdomain of
///   `example.com` (not `example.com` itself); `*` alone matches every host.
/// - `port` is a number or `*`; when absent, any port is allowed.
/// - `scheme` is `http` or `https`; when absent, both are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: Option<String>,
    host: HostMatch,
    port: Option<u16>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    Subdomains(String),
}

/// Why a host pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host pattern {pattern:?}: {reason}")]
pub struct HostPatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        let err = |reason| HostPatternError {
            pattern: pattern.to_string(),
            reason,
        };
        let trimmed = pattern.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((s, rest)) => {
                let s = s.to_ascii_lowercase();
                if s != "http" && s != "https" {
                    return Err(err("the scheme must be http or https"));
                }
                (Some(s), rest)
            }
            None => (None, trimmed),
        };
        if rest.contains('/') {
            return Err(err("a pattern names a host, not a path"));
        }
        let (host, port) =
            split_host_port(rest).ok_or_else(|| err("the port must be a number or *"))?;
        if host.is_empty() {
            return Err(err("the host is empty"));
        }
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostMatch::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(err(
                    "a wildcard may only stand as the first label, as in *.example.com",
                ));
            }
            HostMatch::Subdomains(domain.to_string())
        } else if host.contains('*') {
            return Err(err(
                "a wildcard may only stand as the first label, as in *.example.com",
            ));
        } else {
            HostMatch::Exact(host)
        };
        Ok(Self {
            scheme,
            host,
            port,
            source: trimmed.to_string(),
        })
    }
}

/// Splits `host[:port]`, understanding `[v6]:port`. `None` when the port is malformed.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let parse_port = |p: &str| -> Option<Option<u16>> {
        if p == "*" {
            Some(None)
        } else {
            p.parse::<u16>().ok().map(Some)
        }
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host.to_string(), parse_port(p)?)),
            None if after.is_empty() => Some((host.to_string(), None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => Some((s.to_string(), None)),
        Some((host, p)) => Some((host.to_string(), parse_port(p)?)),
        None => Some((s.to_string(), None)),
    }
}

impl HostPattern {
    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self
            .scheme
            .as_ref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(scheme))
        {
            return false;
        }
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.');
        match &self.host {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Subdomains(d) => {
                host.len() > d.len() + 1
                    && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                    && host.as_bytes()[host.len() - d.len() - 1] == b'.'
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_host_any_port_and_scheme() {
        let pat = p("hooks.example.com");
        assert!(pat.matches("https", "hooks.example.com", 443));
        assert!(pat.matches("http", "HOOKS.example.com", 8080));
        assert!(!pat.matches("https", "evil.com", 443));
        assert!(!pat.matches("https", "hooks.example.com.evil.com", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let pat = p("*.example.com");
        assert!(pat.matches("https", "a.example.com", 443));
        assert!(pat.matches("https", "a.b.example.com", 443));
        assert!(!pat.matches("https", "example.com", 443));
        assert!(!pat.matches("https", "badexample.com", 443));
    }

    #[test]
    fn scheme_and_port_restrict() {
        let pat = p("https://api.example.com:8443");
        assert!(pat.matches("https", "api.example.com", 8443));
        assert!(!pat.matches("http", "api.example.com", 8443));
        assert!(!pat.matches("https", "api.example.com", 443));
        assert!(p("127.0.0.1:*").matches("http", "127.0.0.1", 1234));
        assert!(p("[::1]:80").matches("http", "[::1]", 80));
        assert!(p("::1").matches("http", "::1", 80));
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("ftp://x.com", "scheme"),
            ("x.com/path", "path"),
            ("x.com:http", "port"),
            ("a.*.com", "wildcard"),
            ("*.", "wildcard"),
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
