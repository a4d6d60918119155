//! Qila's `detect-dns` detector: DNS tunnelling and DGA-style query names, which Sigma rules cannot express.
//!
//! For each event with a DNS query name (`dns.question.name`; Sysmon event 22 `QueryName`; Zeek `query`) it looks
//! at the *subdomain*: the labels left of the parent domain (see [`parent_domain`]).
//!
//! - [`LONG_LABEL`]: a subdomain label of at least [`MAX_LABEL`] characters, or a whole name of at least
//!   [`MAX_NAME`]: data encoded into names (iodine, dnscat2, DNSExfiltrator).
//! - [`HIGH_ENTROPY`]: a subdomain of at least [`MIN_ENTROPY_LEN`] characters (dots removed) whose Shannon entropy
//!   is at least [`MIN_ENTROPY`] bits per character: random-looking names, as domain generation algorithms and
//!   encoders make them.
//! - [`TUNNEL_VOLUME`]: per batch, one source (`source.ip`; Sysmon `Image`; Zeek `id.orig_h`) querying at least
//!   [`MIN_DISTINCT_SUBDOMAINS`] distinct subdomains of one parent domain.
//!
//! Findings are aggregated per batch: one per rule and parent domain for the first two rules (group key: the
//! parent domain, the tunnel's end), one per source and parent domain for the third (group key: the source).

use std::collections::{BTreeMap, BTreeSet};

use qila_sdk::Error;
use qila_sdk::detect::{Event, Finding, Level, Rule};
use serde_json::json;

/// A subdomain label at least this long is flagged (DNS allows 63).
pub const MAX_LABEL: usize = 40;
/// A query name at least this long is flagged (DNS allows 253).
pub const MAX_NAME: usize = 100;
/// Entropy is only judged over a subdomain of at least this many characters (without dots): shorter strings
/// cannot reach a meaningful entropy.
pub const MIN_ENTROPY_LEN: usize = 20;
/// Shannon entropy, in bits per character, at or above which a subdomain looks random. English host names stay
/// near 3; base32/base64/hex encodings of data and DGA output reach 4 and more over 20+ characters.
pub const MIN_ENTROPY: f64 = 4.0;
/// Distinct subdomains of one parent domain that one source may query in one batch before it looks like a tunnel.
pub const MIN_DISTINCT_SUBDOMAINS: usize = 20;
/// Query names quoted in a finding's details, at most.
const SAMPLES: usize = 5;

/// Event fields that hold the DNS query name, in order of preference.
pub const QUERY_FIELDS: &[&str] = &["dns.question.name", "QueryName", "query"];
/// Event fields that identify who asked, in order of preference.
pub const SOURCE_FIELDS: &[&str] = &["source.ip", "Image", "id.orig_h", "host.name"];

/// A DNS query name with a very long subdomain label or overall length.
pub const LONG_LABEL: Rule = Rule {
    id: "qila.dns.long-label",
    title: "DNS query with an unusually long name or label (possible DNS tunnelling)",
    level: Level::High,
    tags: &["attack.command-and-control", "attack.t1071.004"],
};

/// A DNS query name whose subdomain looks random.
pub const HIGH_ENTROPY: Rule = Rule {
    id: "qila.dns.high-entropy",
    title: "DNS query with a high-entropy subdomain (possible DGA or encoded data)",
    level: Level::Medium,
    tags: &[
        "attack.command-and-control",
        "attack.t1568.002",
        "attack.t1071.004",
    ],
};

/// Many distinct subdomains of one parent domain queried by one source.
pub const TUNNEL_VOLUME: Rule = Rule {
    id: "qila.dns.tunnel-volume",
    title: "One source queried many distinct subdomains of one domain (possible DNS tunnelling)",
    level: Level::High,
    tags: &["attack.command-and-control", "attack.t1071.004"],
};

qila_sdk::detector! {
    name: "detect-dns",
    description: "Finds DNS tunnelling and DGA-style query names: long labels, high-entropy subdomains, and sources \
                  that query many distinct subdomains of one domain.",
    rules: &[LONG_LABEL, HIGH_ENTROPY, TUNNEL_VOLUME],
    detect: detect,
}

/// One DNS query of the batch, split.
struct Query<'a> {
    index: usize,
    name: String,
    parent: String,
    subdomain: String,
    source: &'a str,
}

/// Runs the three rules over a batch.
pub fn detect(batch: &[Event]) -> Result<Vec<Finding>, Error> {
    let queries: Vec<Query> = batch
        .iter()
        .enumerate()
        .filter_map(|(index, event)| {
            let name = normalise(event.first_str(QUERY_FIELDS)?)?;
            let parent = parent_domain(&name).to_owned();
            let subdomain = name[..name.len() - parent.len()]
                .trim_end_matches('.')
                .to_owned();
            Some(Query {
                index,
                source: event.first_str(SOURCE_FIELDS).unwrap_or("unknown"),
                name,
                parent,
                subdomain,
            })
        })
        .collect();

    let mut long: BTreeMap<&str, Vec<&Query>> = BTreeMap::new();
    let mut random: BTreeMap<&str, Vec<(&Query, f64)>> = BTreeMap::new();
    let mut per_source: BTreeMap<(&str, &str), Vec<&Query>> = BTreeMap::new();
    for q in &queries {
        if is_long(&q.name, &q.subdomain) {
            long.entry(&q.parent).or_default().push(q);
        }
        let letters: String = q.subdomain.chars().filter(|&c| c != '.').collect();
        if letters.chars().count() >= MIN_ENTROPY_LEN {
            let h = shannon_entropy(&letters);
            if h >= MIN_ENTROPY {
                random.entry(&q.parent).or_default().push((q, h));
            }
        }
        if !q.subdomain.is_empty() {
            per_source.entry((q.source, &q.parent)).or_default().push(q);
        }
    }

    let mut findings = Vec::new();
    for (parent, hits) in long {
        let longest = hits
            .iter()
            .flat_map(|q| q.subdomain.split('.'))
            .map(str::len)
            .max()
            .unwrap_or(0);
        findings.push(
            Finding::new(&LONG_LABEL, hits.iter().map(|q| q.index), parent)
                .with_title(format!("{} under {parent}", LONG_LABEL.title))
                .with_details(json!({
                    "parent_domain": parent,
                    "queries": hits.len(),
                    "longest_label": longest,
                    "longest_name": hits.iter().map(|q| q.name.len()).max().unwrap_or(0),
                    "sources": sources(hits.iter().copied()),
                    "samples": samples(hits.iter().copied()),
                })),
        );
    }
    for (parent, hits) in random {
        let max = hits.iter().map(|(_, h)| *h).fold(0.0, f64::max);
        findings.push(
            Finding::new(&HIGH_ENTROPY, hits.iter().map(|(q, _)| q.index), parent)
                .with_title(format!("{} under {parent}", HIGH_ENTROPY.title))
                .with_details(json!({
                    "parent_domain": parent,
                    "queries": hits.len(),
                    "max_entropy": (max * 100.0).round() / 100.0,
                    "sources": sources(hits.iter().map(|(q, _)| *q)),
                    "samples": samples(hits.iter().map(|(q, _)| *q)),
                })),
        );
    }
    for ((source, parent), hits) in per_source {
        let distinct: BTreeSet<&str> = hits.iter().map(|q| q.subdomain.as_str()).collect();
        if distinct.len() >= MIN_DISTINCT_SUBDOMAINS {
            findings.push(
                Finding::new(&TUNNEL_VOLUME, hits.iter().map(|q| q.index), source)
                    .with_title(format!(
                        "{source} queried {} distinct subdomains of {parent}",
                        distinct.len()
                    ))
                    .with_details(json!({
                        "source": source,
                        "parent_domain": parent,
                        "distinct_subdomains": distinct.len(),
                        "queries": hits.len(),
                        "samples": samples(hits.iter().copied()),
                    })),
            );
        }
    }
    Ok(findings)
}

/// Lower-case, without the root's trailing dot; `None` for an empty name.
fn normalise(name: &str) -> Option<String> {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

fn is_long(name: &str, subdomain: &str) -> bool {
    name.len() >= MAX_NAME || subdomain.split('.').any(|l| l.len() >= MAX_LABEL)
}

/// Second-level labels that, under a two-letter country code, form a public suffix (`co.uk`, `com.au`).
const SECOND_LEVEL: &[&str] = &[
    "ac", "co", "com", "edu", "gov", "net", "org", "ne", "or", "go",
];

/// The domain a name belongs to: its last two labels, or three when the last two look like a public suffix of a
/// country (`example.co.uk`). A heuristic without the public suffix list, good enough to group tunnel traffic.
pub fn parent_domain(name: &str) -> &str {
    let labels: Vec<&str> = name.split('.').collect();
    let n = labels.len();
    let keep = if n >= 3 && labels[n - 1].len() == 2 && SECOND_LEVEL.contains(&labels[n - 2]) {
        3
    } else {
        2
    };
    if n <= keep {
        return name;
    }
    let skip: usize = labels[..n - keep].iter().map(|l| l.len() + 1).sum();
    &name[skip..]
}

/// Shannon entropy of `s` in bits per character.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = BTreeMap::new();
    let mut total = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum()
}

fn sources<'a>(queries: impl Iterator<Item = &'a Query<'a>>) -> Vec<&'a str> {
    let set: BTreeSet<&str> = queries.map(|q| q.source).collect();
    set.into_iter().take(10).collect()
}

fn samples<'a>(queries: impl Iterator<Item = &'a Query<'a>>) -> Vec<&'a str> {
    queries.map(|q| q.name.as_str()).take(SAMPLES).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn dns(source: &str, name: &str) -> Value {
        json!({"source.ip": source, "dns.question.name": name, "@timestamp": "2026-01-01T00:00:00Z"})
    }

    #[test]
    fn detector_checks() {
        DETECTOR.check().unwrap();
        let info = DETECTOR.info();
        assert_eq!(info.name, "detect-dns");
        assert_eq!(info.rules.len(), 3);
    }

    #[test]
    fn parent_domains() {
        assert_eq!(parent_domain("www.google.com"), "google.com");
        assert_eq!(parent_domain("google.com"), "google.com");
        assert_eq!(parent_domain("localhost"), "localhost");
        assert_eq!(parent_domain("a.b.example.co.uk"), "example.co.uk");
        assert_eq!(parent_domain("x.evil-tunnel.com"), "evil-tunnel.com");
    }

    #[test]
    fn entropy() {
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!(shannon_entropy("a9x8c7v6b5n4m3q2w1e0rtyu") >= MIN_ENTROPY);
        assert!(shannon_entropy("mail-server-frontend") < MIN_ENTROPY);
    }

    #[test]
    fn benign_names_are_quiet() {
        let batch = [
            dns("10.0.0.1", "www.google.com"),
            dns("10.0.0.1", "mail.google.com."),
            dns("10.0.0.2", "outlook.office365.com"),
            dns("10.0.0.2", "e1234.dscx.akamaiedge.net"),
            json!({"QueryName": "update.microsoft.com", "Image": "C:\\Windows\\svchost.exe"}),
            json!({"message": "no dns here"}),
        ];
        assert_eq!(DETECTOR.detect_values(&batch).unwrap(), []);
    }

    #[test]
    fn long_and_random_names_are_found() {
        let tunnel = "a9x8c7v6b5n4m3q2w1e0rtyuiopasdfghjklzxcvbnm1234.evil-tunnel.com";
        let batch = [
            dns("10.0.0.1", "www.google.com"),
            dns("10.0.0.9", tunnel),
            json!({"QueryName": "k3j4h5g6f7d8s9a0p1o2i3u4.dga-example.net", "Image": "C:\\x\\mal.exe"}),
        ];
        let findings = DETECTOR.detect_values(&batch).unwrap();
        let summary: Vec<(&str, &[u32], &str)> = findings
            .iter()
            .map(|f| {
                (
                    f.rule_id.as_str(),
                    f.events.as_slice(),
                    f.group_key.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("qila.dns.long-label", &[1][..], "evil-tunnel.com"),
                ("qila.dns.high-entropy", &[2][..], "dga-example.net"),
                ("qila.dns.high-entropy", &[1][..], "evil-tunnel.com"),
            ]
        );
        assert_eq!(findings[0].details["sources"], json!(["10.0.0.9"]));
        assert_eq!(findings[1].details["sources"], json!(["C:\\x\\mal.exe"]));
        assert_eq!(findings[0].level, Level::High);
    }

    #[test]
    fn many_subdomains_from_one_source_are_a_tunnel() {
        // Zeek's field names, nested the way Zeek's JSON logs are not: `Event` finds both spellings.
        let mut batch: Vec<Value> = (0..MIN_DISTINCT_SUBDOMAINS)
            .map(|i| json!({"id": {"orig_h": "10.1.1.1"}, "query": format!("c{i}.t.exfil.org")}))
            .collect();
        batch.push(json!({"id.orig_h": "10.1.1.2", "query": "c0.t.exfil.org"}));
        let findings = DETECTOR.detect_values(&batch).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].rule_id, TUNNEL_VOLUME.id);
        assert_eq!(findings[0].group_key, "10.1.1.1");
        assert_eq!(findings[0].events.len(), MIN_DISTINCT_SUBDOMAINS);
        assert_eq!(
            findings[0].details["distinct_subdomains"],
            MIN_DISTINCT_SUBDOMAINS
        );
        // One short of the threshold stays quiet.
        assert_eq!(
            DETECTOR
                .detect_values(&batch[1..MIN_DISTINCT_SUBDOMAINS])
                .unwrap(),
            []
        );
    }

    #[test]
    fn through_the_json_boundary() {
        let out = DETECTOR
            .detect(&[dns("10.0.0.9", &format!("{}.x.io", "q".repeat(45))).to_string()])
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].level, "high");
        assert_eq!(out[0].events, [0]);
        assert!(matches!(
            DETECTOR.detect(&["[1]".to_string()]),
            Err(Error::InvalidInput(_))
        ));
    }
}
