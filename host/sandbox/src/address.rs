//! Egress after DNS: which addresses a plugin may reach.
//!
//! A host pattern grants a *name*; the name's addresses are checked too, so that a granted name that resolves (or
//! is made to resolve) to loopback, a private network, a link-local address such as the cloud metadata service
//! `169.254.169.254`, or another restricted range is refused unless the administrator granted that address itself
//! (an IP or CIDR pattern). A `*` or `*.example.com` grant never opens a restricted address.
//!
//! The check runs where the address is chosen: a URL whose host is an IP literal is checked before the request
//! (the HTTP client connects to a literal without resolving it), and a name is resolved by each plugin's own HTTP
//! client through [`PolicyResolver`], which hands the client only the addresses that pass. The addresses checked
//! are exactly the ones connected to: a name that resolves differently the second time (DNS rebinding) has no
//! second time. The client uses no proxy, which would resolve names out of the host's sight.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::PluginPolicy;

/// Why an address is restricted, if it is: `loopback`, `private`, `link-local`, ...
///
/// IPv6 forms that reach an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`) are judged by the IPv4 address they carry.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if o[0] == 0 {
        // 0.0.0.0/8, "this network": 0.0.0.0 connects to the local host on most systems.
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("shared (carrier-grade NAT)")
    } else if o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded_v4 =
        || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        restricted_v4(v4)
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if s[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d, deprecated): judge the address it carries.
        restricted_v4(embedded_v4())
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 (64:ff9b::/96) reaches IPv4 addresses: judge the embedded one.
        restricted_v4(embedded_v4())
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("private (site-local)")
    } else if s[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else {
        None
    }
}

/// A restricted address refused to a plugin: the host it was asked for, the address and why.
///
/// The message says what to grant, and never carries headers or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress to {host}: {}{} {kind} address, which a name pattern or `*` never opens; grant the address (`{ip}` or a \
     range containing it) to allow it",
    if *.resolved { format!("resolves to {ip}, ") } else { String::new() },
    article(kind)
)]
pub struct EgressRefused {
    /// The host of the URL, as the plugin wrote it.
    pub host: String,
    /// The address refused.
    pub ip: IpAddr,
    /// Why it is restricted (see [`restricted`]).
    pub kind: &'static str,
    /// Whether `ip` is what `host` resolved to (rather than `host` itself).
    pub resolved: bool,
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Why a host could not be resolved to an address a plugin may reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolved to is restricted and not granted; this is the first one.
    #[error(transparent)]
    Refused(#[from] EgressRefused),
    /// The lookup failed.
    #[error("cannot resolve {host}: {reason}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// The lookup succeeded with no address.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name looked up.
        host: String,
    },
}

/// Refuses `ip` for a plugin unless it is unrestricted or granted by address. `resolved` says whether `ip` came
/// from resolving `host` (for the message).
pub fn check(
    policy: &PluginPolicy,
    host: &str,
    ip: IpAddr,
    resolved: bool,
) -> Result<(), EgressRefused> {
    match restricted(ip) {
        Some(kind) if !policy.grants_address(ip) => Err(EgressRefused {
            host: host.to_string(),
            ip,
            kind,
            resolved,
        }),
        _ => Ok(()),
    }
}

/// The address `host` names literally (`10.0.0.1`, `[::1]`), if it is an IP literal.
pub fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Resolves `host` (an IP literal is not looked up) and checks every address: the addresses the plugin may
/// connect to, or why there is none. Restricted addresses among allowed ones are dropped.
pub async fn resolve_checked(
    policy: &PluginPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Some(ip) = literal(host) {
        check(policy, host, ip, false)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ResolveError::Lookup {
            host: host.to_string(),
            reason: e.to_string(),
        })?;
    let mut first_refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .filter(|a| match check(policy, host, a.ip(), true) {
            Ok(()) => true,
            Err(why) => {
                first_refusal.get_or_insert(why);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), first_refusal) {
        (true, Some(why)) => Err(why.into()),
        (true, None) => Err(ResolveError::NoAddress {
            host: host.to_string(),
        }),
        (false, _) => Ok(allowed),
    }
}

/// The DNS resolver of one plugin's HTTP client: the system resolver (getaddrinfo, through tokio), keeping only
/// the addresses the plugin's policy allows. A refusal reaches the caller as a [`ResolveError`] in the client
/// error's source chain.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<PluginPolicy>,
}

impl PolicyResolver {
    /// A resolver for a plugin with this policy.
    pub fn new(policy: Arc<PluginPolicy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The client sets the port of each address afterwards.
            let addrs = resolve_checked(&policy, name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for one plugin, or why the host could not build one: then every `http` call of the plugin fails
/// (there is never a fallback client without the policy's resolver).
#[derive(Debug, Clone)]
pub(crate) struct PolicyClient(Result<reqwest::Client, Arc<str>>);

impl PolicyClient {
    /// A client with no redirects (a redirect to a host not granted would bypass the allow-list), no proxy (a
    /// proxy resolves names where the policy cannot see) and a [`PolicyResolver`].
    pub fn new(policy: &Arc<PluginPolicy>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("qila/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
            .build()
            .map_err(|e| Arc::from(e.to_string()));
        Self(client)
    }

    /// The client, or why there is none.
    pub fn get(&self) -> Result<&reqwest::Client, &str> {
        self.0.as_ref().map_err(|e| &**e)
    }
}

/// The [`ResolveError`] somewhere in an error's source chain, if there is one.
pub(crate) fn resolve_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a ResolveError> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<ResolveError>() {
            return Some(found);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn granting(patterns: &[&str]) -> PluginPolicy {
        PluginPolicy {
            egress: patterns.iter().map(|p| p.parse().unwrap()).collect(),
            ..PluginPolicy::default()
        }
    }

    #[test]
    fn classifies_restricted_ranges_in_both_families() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "private (site-local)"),
            ("fc00::1", "private (unique local)"),
            ("fd00::1", "private (unique local)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
        ] {
            assert_eq!(restricted(ip(addr)), Some(kind), "{addr}");
        }
        // Just outside the ranges, and ordinary public addresses.
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.255.255",
            "11.0.0.1",
            "192.0.2.10",
            "2606:4700::1111",
            "2001:db8::1",
            "fbff::1",
            "fe00::1",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
        ] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn only_an_address_grant_opens_a_restricted_address() {
        let any = granting(&["*", "*.internal"]);
        let e = check(&any, "metadata.internal", ip("169.254.169.254"), true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "egress to metadata.internal: resolves to 169.254.169.254, a link-local address, which a name pattern \
             or `*` never opens; grant the address (`169.254.169.254` or a range containing it) to allow it"
        );
        let e = check(&any, "0.0.0.0", ip("0.0.0.0"), false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("egress to 0.0.0.0: an unspecified address"),
            "{e}"
        );
        assert!(check(&any, "example.com", ip("93.184.216.34"), true).is_ok());

        let exact = granting(&["127.0.0.1:8080", "10.20.0.0/16", "[fd00::]/8"]);
        assert!(check(&exact, "x", ip("127.0.0.1"), true).is_ok());
        assert!(check(&exact, "x", ip("::ffff:127.0.0.1"), true).is_err());
        assert!(check(&exact, "x", ip("127.0.0.2"), true).is_err());
        assert!(check(&exact, "x", ip("10.20.3.4"), true).is_ok());
        assert!(check(&exact, "x", ip("10.21.0.1"), true).is_err());
        assert!(check(&exact, "x", ip("fd12::1"), true).is_ok());
        assert!(check(&exact, "x", ip("fe80::1"), true).is_err());
        assert!(check(&exact, "x", ip("93.184.216.34"), true).is_ok());
    }

    #[test]
    fn ip_literals_are_recognised_with_or_without_brackets() {
        assert_eq!(literal("10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(literal("[::1]"), Some(ip("::1")));
        assert_eq!(literal("::1"), Some(ip("::1")));
        assert_eq!(literal("localhost"), None);
        assert_eq!(literal("10.0.0.1.example.com"), None);
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_unless_its_address_is_granted() {
        let any = granting(&["*"]);
        match resolve_checked(&any, "localhost", 80).await {
            Err(ResolveError::Refused(e)) => {
                assert_eq!(e.host, "localhost");
                assert_eq!(e.kind, "loopback");
                assert!(e.resolved);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match resolve_checked(&any, "[::1]", 80).await {
            Err(ResolveError::Refused(e)) => assert!(!e.resolved && e.kind == "loopback"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Granting the addresses opens the name (whichever families `localhost` resolves to here).
        let granted = granting(&["localhost", "127.0.0.0/8", "[::1]"]);
        let addrs = resolve_checked(&granted, "localhost", 8080).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{addrs:?}"
        );
        match resolve_checked(&any, "no-such-host.invalid", 80).await {
            Err(ResolveError::Lookup { host, .. }) => assert_eq!(host, "no-such-host.invalid"),
            other => panic!("expected a lookup failure, got {other:?}"),
        }
    }

    /// The client itself refuses: a request that skips the pre-request checks (as a rebinding name would, by
    /// resolving differently later) never connects, and the refusal is found in the client's error.
    #[tokio::test]
    async fn the_plugin_client_never_connects_to_a_refused_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = PolicyClient::new(&Arc::new(granting(&["*"])));
        let client = client.get().unwrap();
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        match resolve_error(&err) {
            Some(ResolveError::Refused(e)) => assert_eq!(e.kind, "loopback"),
            other => panic!("expected a refusal in {err:?}, got {other:?}"),
        }
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "the client connected: {accepted:?}");

        // With the address granted, the same client connects through its resolver.
        let client = PolicyClient::new(&Arc::new(granting(&["127.0.0.1", "[::1]"])));
        let client = client.get().unwrap().clone();
        let request = tokio::spawn(async move {
            client
                .get(format!("http://localhost:{port}/"))
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
        });
        let accepted =
            tokio::time::timeout(std::time::Duration::from_secs(5), listener.accept()).await;
        assert!(matches!(accepted, Ok(Ok(_))), "no connection: {accepted:?}");
        request.abort();
    }
}
