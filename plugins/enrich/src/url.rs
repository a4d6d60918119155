//! `enrich.parse-url`: the parts of a URL.

use std::collections::BTreeMap;

use qila_sdk::prelude::*;

use crate::domain::{DomainInfo, domain_info};

/// The input of `enrich.parse-url`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParseUrlInput {
    /// An absolute URL. Defanged forms (`hxxps[://]example[.]com`) are accepted, and a URL without a scheme
    /// (`example.com/a`) is read as `http://`.
    pub url: String,
}

/// What a URL's host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostType {
    /// A domain name.
    Domain,
    /// An IPv4 address.
    Ipv4,
    /// An IPv6 address.
    Ipv6,
}

/// The parts of a URL.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ParseUrlOutput {
    /// The URL, refanged and normalised (WHATWG URL Standard).
    pub url: String,
    /// The scheme, lower-case: `https`.
    pub scheme: String,
    /// The user name, if the URL has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Whether the URL carries a password (the password itself is not returned).
    pub has_password: bool,
    /// The host: a lower-case ASCII domain, an IPv4 address, or an IPv6 address in brackets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What the host is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_type: Option<HostType>,
    /// Whether the host is an IP address.
    pub is_ip: bool,
    /// The port: the explicit one, or the scheme's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether the port was written in the URL (a port equal to the scheme's default is not kept by normalisation).
    pub explicit_port: bool,
    /// The path, percent-encoded: `/a/b.php`.
    pub path: String,
    /// The query, without `?`, percent-encoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The query's parameters, decoded: each name with its values in order.
    pub params: BTreeMap<String, Vec<String>>,
    /// The fragment, without `#`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fragment: Option<String>,
    /// For a domain host: its public suffix, registrable domain and subdomain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainInfo>,
}

/// Parses a URL into scheme, host, port, path, query parameters and fragment, with the host's registrable domain.
#[action(
    example = r#"{"url": "hxxps://login.example.co.uk:8443/auth?next=%2Fhome&id=1&id=2#top"}"#
)]
pub fn parse_url(input: ParseUrlInput) -> Result<ParseUrlOutput, Error> {
    let text = crate::defang::refang_text(input.url.trim());
    let url = match url::Url::parse(&text) {
        Err(url::ParseError::RelativeUrlWithoutBase) if !text.contains("://") => {
            url::Url::parse(&format!("http://{text}"))
        }
        other => other,
    }
    .map_err(|e| Error::invalid_input(format!("`{}` is not a URL: {e}", input.url)))?;

    let (host_type, domain) = match url.host() {
        Some(url::Host::Domain(d)) => (Some(HostType::Domain), domain_info(d).ok()),
        Some(url::Host::Ipv4(_)) => (Some(HostType::Ipv4), None),
        Some(url::Host::Ipv6(_)) => (Some(HostType::Ipv6), None),
        None => (None, None),
    };
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        params
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    Ok(ParseUrlOutput {
        scheme: url.scheme().to_owned(),
        username: Some(url.username())
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
        has_password: url.password().is_some(),
        host: url.host_str().map(str::to_owned),
        is_ip: matches!(host_type, Some(HostType::Ipv4 | HostType::Ipv6)),
        host_type,
        port: url.port_or_known_default(),
        explicit_port: url.port().is_some(),
        path: url.path().to_owned(),
        query: url.query().map(str::to_owned),
        params,
        fragment: url.fragment().map(str::to_owned),
        domain,
        url: url.into(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::PLUGIN;

    fn run(url: &str) -> Result<Value, Error> {
        PLUGIN.invoke_json("parse-url", json!({ "url": url }), &Context::default())
    }

    #[test]
    fn parses_every_part() {
        let out = run("hxxps://user:pw@Login.Example.CO.UK:8443/auth/../x.php?next=%2Fhome&id=1&id=2&flag#top").unwrap();
        assert_eq!(
            out["url"],
            "https://user:pw@login.example.co.uk:8443/x.php?next=%2Fhome&id=1&id=2&flag#top"
        );
        assert_eq!(out["scheme"], "https");
        assert_eq!(out["username"], "user");
        assert_eq!(out["has_password"], true);
        assert_eq!(out["host"], "login.example.co.uk");
        assert_eq!(out["host_type"], "domain");
        assert_eq!(out["is_ip"], false);
        assert_eq!(out["port"], 8443);
        assert_eq!(out["explicit_port"], true);
        assert_eq!(out["path"], "/x.php");
        assert_eq!(
            out["params"],
            json!({"next": ["/home"], "id": ["1", "2"], "flag": [""]})
        );
        assert_eq!(out["fragment"], "top");
        assert_eq!(out["domain"]["registrable_domain"], "example.co.uk");
        assert_eq!(out["domain"]["subdomain"], "login");
    }

    #[test]
    fn ip_hosts_default_ports_and_no_scheme() {
        let out = run("http://192.0.2.1/").unwrap();
        assert_eq!(
            (
                out["host_type"].clone(),
                out["is_ip"].clone(),
                out["port"].clone()
            ),
            (json!("ipv4"), json!(true), json!(80))
        );
        assert!(out.get("domain").is_none());
        let out = run("https://[2001:db8::1]:443/a").unwrap();
        assert_eq!(out["host"], "[2001:db8::1]");
        assert_eq!(out["host_type"], "ipv6");
        assert_eq!(out["explicit_port"], false);
        let out = run("evil[.]example[.]com/payload.exe").unwrap();
        assert_eq!(out["url"], "http://evil.example.com/payload.exe");
        assert_eq!(run("mailto:bob@example.com").unwrap()["scheme"], "mailto");
    }

    #[test]
    fn rejects_non_urls() {
        for bad in ["http://exa mple.com/", "https://", "http://[::1/", ""] {
            assert!(matches!(run(bad), Err(Error::InvalidInput(_))), "{bad}");
        }
    }
}
