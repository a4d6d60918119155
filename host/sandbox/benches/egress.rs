//! The cost of the egress check per `http` call: the host-pattern match, the address classification, the check of
//! an IP literal, and the check of a name in the plugin client's resolver (which includes the system resolver's
//! lookup); and the cost of building a plugin's HTTP client, which the host pays once per loaded plugin rather
//! than per call.

use criterion::{Criterion, criterion_group, criterion_main};
use qila_sandbox::PluginPolicy;
use qila_sandbox::address::{PolicyResolver, check, literal, resolve_checked};

fn policy() -> PluginPolicy {
    let patterns = [
        "hooks.slack.com",
        "*.example.org:443",
        "https://api.virustotal.com",
        "misp.cert.example:8443",
        "10.20.0.0/16",
        "127.0.0.1:8080",
        "*.abuseipdb.com",
        "otx.alienvault.com",
        "[fd00::/8]",
        "api.shodan.io:443",
    ];
    PluginPolicy {
        egress: patterns
            .iter()
            .map(|p| p.parse().expect("pattern"))
            .collect(),
        ..PluginPolicy::default()
    }
}

fn egress(c: &mut Criterion) {
    let policy = policy();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    c.bench_function("host pattern match (10 patterns, last matches)", |b| {
        b.iter(|| policy.allows_egress("https", "api.shodan.io", 443))
    });
    c.bench_function("host pattern match (10 patterns, none matches)", |b| {
        b.iter(|| policy.allows_egress("https", "evil.example.com", 443))
    });
    let public = "93.184.216.34".parse().expect("ip");
    let metadata = "169.254.169.254".parse().expect("ip");
    c.bench_function("address check (public address)", |b| {
        b.iter(|| check(&policy, "x", public, true))
    });
    c.bench_function("address check (link-local, refused)", |b| {
        b.iter(|| check(&policy, "x", metadata, true))
    });
    c.bench_function(
        "whole check of an IP literal URL host (pattern + classification)",
        |b| {
            b.iter(|| {
                let host = std::hint::black_box("10.20.1.2");
                policy.allows_egress("https", host, 443)
                    && literal(host).is_some_and(|ip| check(&policy, host, ip, false).is_ok())
            })
        },
    );
    c.bench_function(
        "resolver check of a name (system lookup of localhost + classification)",
        |b| b.iter(|| rt.block_on(resolve_checked(&policy, "localhost", 8080))),
    );
    let shared = std::sync::Arc::new(policy.clone());
    c.bench_function("HTTP client with the policy's resolver (build)", |b| {
        b.iter(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(std::sync::Arc::new(PolicyResolver::new(shared.clone())))
                .build()
                .expect("the client builds")
        })
    });
}

criterion_group!(benches, egress);
criterion_main!(benches);
