//! The cost of the egress check per `http` call: the host-pattern match, the address classification, and the
//! whole pre-request check for an IP literal and for a name (which includes the system resolver's lookup).

use criterion::{Criterion, criterion_group, criterion_main};
use qila_sandbox::PluginPolicy;
use qila_sandbox::address::{check, resolve_checked};

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
        b.iter(|| check(&policy, "x", public))
    });
    c.bench_function("address check (link-local, refused)", |b| {
        b.iter(|| check(&policy, "x", metadata))
    });
    c.bench_function("pre-request check of an IP literal", |b| {
        b.iter(|| rt.block_on(resolve_checked(&policy, "10.20.1.2", 443)))
    });
    c.bench_function(
        "pre-request check of a name (resolver lookup of localhost)",
        |b| b.iter(|| rt.block_on(resolve_checked(&policy, "localhost", 8080))),
    );
}

criterion_group!(benches, egress);
criterion_main!(benches);
