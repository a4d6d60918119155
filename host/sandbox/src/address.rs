//! Egress after DNS: which addresses a plugin may reach.
//!
//! A host pattern grants a *name*; the name's addresses are checked too, so that a granted name that resolves (or
//! is made to resolve) to loopback, a private network, a link-local address such as the cloud metadata service
//! `169.254.169.254`, or another restricted range is refused unless the administrator granted that address itself
//! (an IP or CIDR pattern). The check runs twice: before the request, to refuse it with a clear `denied`, and in
//! the HTTP client's resolver, so that the addresses connected to are exactly the ones checked (a name that
//! resolves differently the second time — DNS rebinding — cannot slip through).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::PluginPolicy;

/// Why an address is restricted, if it is: `loopback`, `private`, `link-local`, ...
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return restricted_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first == 0x0064 && v6.segments()[1] == 0xff9b {
                // NAT64 (64:ff9b::/96) reaches IPv4 addresses: judge the embedded one.
                let s = v6.segments();
                let v4 =
                    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
                restricted_v4(v4)
            } else {
                None
            }
        }
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
    } else if ip.is_unspecified() || o[0] == 0 {
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

/// Refuses `ip` for a plugin unless it is unrestricted or granted by address; the message says why and what to
/// grant.
pub fn check(policy: &PluginPolicy, host: &str, ip: IpAddr) -> Result<(), String> {
    match restricted(ip) {
        Some(kind) if !policy.grants_address(ip) => Err(format!(
            "egress to {host}: {ip} is a {kind} address, which no host pattern opens; grant the address itself \
             (`{ip}` or a CIDR) to allow it"
        )),
        _ => Ok(()),
    }
}

/// Resolves `host` and checks every address; the addresses allowed, or why none is.
pub async fn resolve_checked(
    policy: &PluginPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        check(policy, host, ip)?;
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut first_refusal = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match check(policy, host, a.ip()) {
            Ok(()) => true,
            Err(why) => {
                first_refusal.get_or_insert(why);
                false
            }
        })
        .collect();
    match (allowed.is_empty(), first_refusal) {
        (true, Some(why)) => Err(why),
        (true, None) => Err(format!("{host} resolves to no address")),
        (false, _) => Ok(allowed),
    }
}

/// The HTTP client's resolver for one plugin: only the addresses its policy allows.
pub(crate) struct PolicyResolver {
    pub policy: Arc<PluginPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = resolve_checked(&policy, &host, 0)
                .await
                .map_err(|why| -> Box<dyn std::error::Error + Send + Sync> { why.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for one plugin: no redirects (a redirect to a host not granted would bypass the allow-list)
/// and a resolver that enforces the policy's addresses.
pub(crate) fn client_for(policy: &Arc<PluginPolicy>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("qila/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
        }))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_restricted_ranges_in_both_families() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(restricted(ip(addr)), Some(kind), "{addr}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "192.0.2.10"] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn only_an_address_grant_opens_a_restricted_address() {
        let any = PluginPolicy {
            egress: vec!["*".parse().unwrap()],
            ..PluginPolicy::default()
        };
        let e = check(&any, "metadata", ip("169.254.169.254")).unwrap_err();
        assert!(
            e.contains("link-local") && e.contains("grant the address"),
            "{e}"
        );
        let exact = PluginPolicy {
            egress: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "10.20.0.0/16".parse().unwrap(),
            ],
            ..PluginPolicy::default()
        };
        assert!(check(&exact, "x", ip("127.0.0.1")).is_ok());
        assert!(check(&exact, "x", ip("10.20.3.4")).is_ok());
        assert!(check(&exact, "x", ip("10.21.0.1")).is_err());
        assert!(check(&exact, "x", ip("93.184.216.34")).is_ok());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        let any = PluginPolicy {
            egress: vec!["*".parse().unwrap()],
            ..PluginPolicy::default()
        };
        let e = resolve_checked(&any, "localhost", 80).await.unwrap_err();
        assert!(e.contains("localhost") && e.contains("loopback"), "{e}");
        let e = resolve_checked(&any, "[::1]", 80).await.unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }
}
