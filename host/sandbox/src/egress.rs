//! Host patterns that say where a plugin may send HTTP requests.

use std::fmt;
use std::str::FromStr;

/// One allowed destination: `[scheme://]host[:port]`.
///
/// - `host` is a DNS name or an IP address, matched case-insensitively; `*.example.com` matches every subdomain of
///   `example.com` (not `example.com` itself); `*` alone matches every host.
/// - `port` is a number or `*`; when absent, any port is allowed.
/// - `scheme` is `http` or `https`; when absent, both are allowed.
/// - `host` may also be an address range, `10.20.0.0/16` (for IPv6 `[fd00::]/8` or `[fd00::/8]`, with a port
///   `[fd00::]/8:443`).
///
/// A name pattern (and `*`) never opens a loopback, private or link-local address: only an IP or range pattern
/// that contains the address does (see [`crate::address`]).
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
    /// An IP address, `127.0.0.1` or `[::1]`.
    Ip(std::net::IpAddr),
    /// An address range, `10.20.0.0/16` or `[fd00::]/8`.
    Cidr(ipnet::IpNet),
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
        let (host, port) =
            split_host_port(rest).ok_or_else(|| err("the port must be a number or *"))?;
        if host.contains('/') {
            return match host.parse::<ipnet::IpNet>() {
                Ok(net) => Ok(Self {
                    scheme,
                    host: HostMatch::Cidr(net.trunc()),
                    port,
                    source: trimmed.to_string(),
                }),
                Err(_) => Err(err(
                    "a pattern names a host or an address range (10.0.0.0/8), not a path",
                )),
            };
        }
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
        } else if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            // Parsed, so that `0:0::1` matches the URL host `[::1]` and the address check compares addresses.
            HostMatch::Ip(ip)
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

/// Splits `host[:port]`, understanding `[v6]:port` and `[v6]/prefix:port`. `None` when the port is malformed.
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
        // `[fd00::]/8`: the prefix length belongs to the host part.
        let (host, after) = match after.strip_prefix('/') {
            Some(tail) => {
                let (len, after) = tail.split_at(tail.find(':').unwrap_or(tail.len()));
                (format!("{host}/{len}"), after)
            }
            None => (host.to_string(), after),
        };
        return match after.strip_prefix(':') {
            Some(p) => Some((host, parse_port(p)?)),
            None if after.is_empty() => Some((host, None)),
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
                // Bytes, not `str` slices: a non-ASCII host must not split a character.
                let (host, d) = (host.as_bytes(), d.as_bytes());
                host.len() > d.len() + 1
                    && host[host.len() - d.len()..].eq_ignore_ascii_case(d)
                    && host[host.len() - d.len() - 1] == b'.'
            }
            HostMatch::Ip(granted) => host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip == *granted),
            HostMatch::Cidr(net) => host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| net.contains(&ip)),
        }
    }

    /// Whether this pattern names the address `ip` itself (an IP literal or a range containing it): what opens a
    /// loopback, private or link-local address, which no name pattern and no `*` does.
    pub fn grants_address(&self, ip: std::net::IpAddr) -> bool {
        match &self.host {
            HostMatch::Ip(granted) => *granted == ip,
            HostMatch::Cidr(net) => net.contains(&ip),
            HostMatch::Any | HostMatch::Exact(_) | HostMatch::Subdomains(_) => false,
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
        // A host whose suffix would split a multi-byte character is no match, not a panic.
        assert!(!pat.matches("https", "aé.example.coé", 443));
        assert!(!pat.matches("https", "éxample.com", 443));
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
    fn address_ranges_match_and_grant_addresses() {
        let net = p("10.20.0.0/16:443");
        assert!(net.matches("https", "10.20.1.2", 443));
        assert!(!net.matches("https", "10.21.1.2", 443));
        assert!(!net.matches("https", "10.20.1.2", 80));
        assert!(net.grants_address("10.20.9.9".parse().unwrap()));
        assert!(p("[fd00::/8]").grants_address("fd12::1".parse().unwrap()));
        assert!(p("[fd00::]/8").grants_address("fd12::1".parse().unwrap()));
        assert!(p("fd00::/8").grants_address("fd12::1".parse().unwrap()));
        assert!(!p("[fd00::]/8").grants_address("fe80::1".parse().unwrap()));
        let v6_port = p("[fd00::]/8:443");
        assert!(v6_port.matches("https", "[fd00::5]", 443));
        assert!(!v6_port.matches("https", "[fd00::5]", 80));
        // A range is normalised to its network: 10.20.3.4/16 is 10.20.0.0/16.
        assert!(p("10.20.3.4/16").grants_address("10.20.200.1".parse().unwrap()));
        assert!(p("http://192.168.0.0/24:8080").matches("http", "192.168.0.7", 8080));
        assert!(!p("http://192.168.0.0/24:8080").matches("https", "192.168.0.7", 8080));
        // A range never matches a name, not even one that looks like it.
        assert!(!p("10.0.0.0/8").matches("https", "10.0.0.1.example.com", 443));
        // IP literals match in canonical form.
        assert!(p("0:0::1").matches("http", "[::1]", 80));
        assert!(p("0:0::1").grants_address("::1".parse().unwrap()));
        assert!(p("127.0.0.1:8080").grants_address("127.0.0.1".parse().unwrap()));
        assert!(!p("*").grants_address("127.0.0.1".parse().unwrap()));
        assert!(!p("*.internal").grants_address("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("ftp://x.com", "scheme"),
            ("x.com/path", "path"),
            ("10.0.0.0/33", "address range"),
            ("[fd00::]/129", "address range"),
            ("[fd00::]/8x", "address range"),
            ("[fd00::]/8:x", "port"),
            ("x.com:http", "port"),
            ("a.*.com", "wildcard"),
            ("*.", "wildcard"),
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }
}
