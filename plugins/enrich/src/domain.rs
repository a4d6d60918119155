//! `enrich.parse-domain`: a domain's public suffix, registrable domain and subdomain, from the Public Suffix List.

use qila_sdk::prelude::*;

/// The input of `enrich.parse-domain`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParseDomainInput {
    /// A domain name, in ASCII or Unicode (`www.example.co.uk`, `bücher.example`); defanged forms are accepted.
    pub domain: String,
}

/// Where a domain's public suffix comes from in the Public Suffix List.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SuffixSection {
    /// The ICANN section: suffixes operated by registries (`com`, `co.uk`).
    Icann,
    /// The private section: suffixes operated by companies for their customers (`github.io`, `s3.amazonaws.com`).
    Private,
}

/// What the Public Suffix List says about a domain.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DomainInfo {
    /// The domain, lower-case ASCII (IDNA), without a trailing dot.
    pub domain: String,
    /// The domain in Unicode (the same as `domain` unless it is internationalised).
    pub unicode: String,
    /// Whether the domain has internationalised (`xn--`) labels.
    pub is_idn: bool,
    /// How many labels the domain has.
    pub labels: usize,
    /// The last label: `uk` for `www.example.co.uk`.
    pub tld: String,
    /// The public suffix: `co.uk` for `www.example.co.uk`.
    pub public_suffix: String,
    /// Whether the suffix is on the list (an unknown TLD is its own suffix, and not known).
    pub suffix_known: bool,
    /// The section of the list the suffix comes from, when it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix_section: Option<SuffixSection>,
    /// The registrable domain, one label more than the suffix: `example.co.uk`. Absent when the domain is itself a
    /// public suffix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registrable_domain: Option<String>,
    /// What comes before the registrable domain: `www` for `www.example.co.uk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
}

/// Splits a domain into subdomain, registrable domain and public suffix, using the Public Suffix List.
#[action(example = r#"{"domain": "login.example.co.uk"}"#)]
pub fn parse_domain(input: ParseDomainInput) -> Result<DomainInfo, Error> {
    let text = crate::defang::refang_text(input.domain.trim());
    let ascii = match url::Host::parse(text.trim_end_matches('.')) {
        Ok(url::Host::Domain(d)) => d,
        Ok(_) => {
            return Err(Error::invalid_input(format!(
                "`{}` is an IP address, not a domain",
                input.domain
            )));
        }
        Err(e) => {
            return Err(Error::invalid_input(format!(
                "`{}` is not a domain name: {e}",
                input.domain
            )));
        }
    };
    domain_info(&ascii).map_err(|e| Error::invalid_input(format!("`{}` {e}", input.domain)))
}

/// What the Public Suffix List says about `ascii`, a lower-case ASCII domain name (as `url` hands them out).
pub fn domain_info(ascii: &str) -> Result<DomainInfo, String> {
    let ascii = ascii.trim_end_matches('.');
    let labels: Vec<&str> = ascii.split('.').collect();
    if ascii.len() > 253 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(
            "is not a domain name: labels are 1 to 63 characters, names at most 253".to_owned(),
        );
    }
    let suffix = psl::suffix(ascii.as_bytes()).ok_or("has no public suffix")?;
    let public_suffix = std::str::from_utf8(suffix.as_bytes())
        .map_err(|e| e.to_string())?
        .to_owned();
    let suffix_section = suffix.typ().map(|t| match t {
        psl::Type::Icann => SuffixSection::Icann,
        psl::Type::Private => SuffixSection::Private,
    });
    let registrable_domain = psl::domain(ascii.as_bytes())
        .and_then(|d| std::str::from_utf8(d.as_bytes()).ok())
        .map(str::to_owned);
    let subdomain = registrable_domain
        .as_deref()
        .and_then(|r| ascii.strip_suffix(r))
        .and_then(|s| s.strip_suffix('.'))
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let (unicode, _) = idna::domain_to_unicode(ascii);
    Ok(DomainInfo {
        domain: ascii.to_owned(),
        is_idn: labels.iter().any(|l| l.starts_with("xn--")),
        labels: labels.len(),
        tld: labels.last().map_or_else(String::new, |l| (*l).to_owned()),
        unicode,
        suffix_known: suffix.is_known(),
        suffix_section,
        public_suffix,
        registrable_domain,
        subdomain,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::PLUGIN;

    fn run(domain: &str) -> Result<Value, Error> {
        PLUGIN.invoke_json(
            "parse-domain",
            json!({ "domain": domain }),
            &Context::default(),
        )
    }

    #[test]
    fn splits_domains() {
        let out = run("Login.Example.CO.UK.").unwrap();
        assert_eq!(out["domain"], "login.example.co.uk");
        assert_eq!(out["public_suffix"], "co.uk");
        assert_eq!(out["registrable_domain"], "example.co.uk");
        assert_eq!(out["subdomain"], "login");
        assert_eq!(out["tld"], "uk");
        assert_eq!(out["suffix_section"], "icann");
        assert_eq!(out["labels"], 4);

        let out = run("a.b.alice.github.io").unwrap();
        assert_eq!(out["public_suffix"], "github.io");
        assert_eq!(out["suffix_section"], "private");
        assert_eq!(out["registrable_domain"], "alice.github.io");
        assert_eq!(out["subdomain"], "a.b");

        let out = run("example.com").unwrap();
        assert_eq!(out["registrable_domain"], "example.com");
        assert!(out.get("subdomain").is_none());
    }

    #[test]
    fn internationalised_and_unknown() {
        let out = run("www.bücher.de").unwrap();
        assert_eq!(out["domain"], "www.xn--bcher-kva.de");
        assert_eq!(out["unicode"], "www.bücher.de");
        assert_eq!(out["is_idn"], true);
        assert_eq!(out["registrable_domain"], "xn--bcher-kva.de");

        let out = run("пример.рф").unwrap();
        assert_eq!(out["public_suffix"], "xn--p1ai");
        assert_eq!(out["suffix_known"], true);

        let out = run("host.corp.internalzz").unwrap();
        assert_eq!(out["suffix_known"], false);
        assert_eq!(out["public_suffix"], "internalzz");
        assert_eq!(out["registrable_domain"], "corp.internalzz");

        let out = run("co.uk").unwrap();
        assert!(out.get("registrable_domain").is_none());
        assert_eq!(
            run("evil[.]example[.]com").unwrap()["domain"],
            "evil.example.com"
        );
    }

    #[test]
    fn rejects_what_is_not_a_domain() {
        for bad in [
            "192.0.2.1",
            "exa mple.com",
            "",
            "a..b",
            &format!("{}.com", "a".repeat(64)),
        ] {
            assert!(matches!(run(bad), Err(Error::InvalidInput(_))), "{bad}");
        }
    }
}
