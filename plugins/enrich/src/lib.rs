//! Qila's `enrich` plugin: offline enrichment of indicators, with no capability at all.
//!
//! - `enrich.classify-ip`: version and kind (private, loopback, documentation, ...) of an address or CIDR block;
//! - `enrich.parse-url` and `enrich.parse-domain`: the parts of a URL, a domain's registrable domain and suffix;
//! - `enrich.defang` and `enrich.refang`: make indicators safe to paste, and back;
//! - `enrich.hash` and `enrich.identify-hash`: digests of a text, and which algorithm a digest suggests.

pub mod defang;
pub mod domain;
pub mod hash;
pub mod ip;
pub mod url;

qila_sdk::plugin! {
    name: "enrich",
    vendor: "Qila",
    description: "Offline enrichment of indicators: classify IP addresses, parse URLs and domains (Public Suffix List), \
                  defang and refang, hash and identify hashes. Needs no capability.",
    actions: [
        ip::classify_ip,
        url::parse_url,
        domain::parse_domain,
        defang::defang,
        defang::refang,
        hash::hash,
        hash::identify_hash,
    ],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_checks() {
        PLUGIN.check().unwrap();
        let names: Vec<_> = PLUGIN.action_names().collect();
        assert_eq!(
            names,
            [
                "classify-ip",
                "parse-url",
                "parse-domain",
                "defang",
                "refang",
                "hash",
                "identify-hash"
            ]
        );
        assert!(
            PLUGIN
                .manifest()
                .actions
                .iter()
                .all(|a| a.example_input.is_some())
        );
    }

    #[test]
    fn every_example_runs() {
        for action in PLUGIN.manifest().actions {
            let example = action.example_input.unwrap_or_default();
            PLUGIN
                .invoke(&action.name, &example, &qila_sdk::Context::default())
                .unwrap();
        }
    }
}
