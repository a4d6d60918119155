//! `enrich.defang` and `enrich.refang`: make indicators safe to paste (not clickable, not resolvable), and back.

use std::net::Ipv6Addr;

use qila_sdk::prelude::*;

/// The input of `enrich.defang` and `enrich.refang`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FangInput {
    /// A URL, domain, IP address or email address.
    pub value: String,
}

/// The output of `enrich.defang` and `enrich.refang`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FangOutput {
    /// The value, defanged or refanged.
    pub value: String,
}

/// Defangs a URL, domain, IP address or email address: `https://evil.example/a` becomes `hxxps[://]evil[.]example/a`.
///
/// Schemes `http`, `https` and `ftp` become `hxxp`, `hxxps` and `fxp`; `://` becomes `[://]`; in the host (or the
/// whole value, when it is not a URL) `.` becomes `[.]`, `@` becomes `[@]` and an IPv6 address's `:` becomes `[:]`.
/// A value that is already defanged is refanged first, so defanging twice changes nothing.
#[action(example = r#"{"value": "https://evil.example.com/login.php"}"#)]
pub fn defang(input: FangInput) -> Result<FangOutput, Error> {
    Ok(FangOutput {
        value: defang_text(&refang_text(input.value.trim())),
    })
}

/// Refangs a defanged indicator: `hxxps[://]evil[.]example/a` becomes `https://evil.example/a`.
///
/// Understands `hxxp`/`hXXp`/`hxxps`/`fxp`, `[.]`, `(.)`, `{.}`, `[dot]`, `(dot)`, `[:]`, `[://]`, `[@]`, `(at)`,
/// `[at]` and `[/]`, in any case.
#[action(example = r#"{"value": "hxxps[://]evil[.]example[.]com/login.php"}"#)]
pub fn refang(input: FangInput) -> Result<FangOutput, Error> {
    Ok(FangOutput {
        value: refang_text(input.value.trim()),
    })
}

/// The replacements [`refang_text`] makes, matched ignoring ASCII case, longest first where they overlap.
const REFANG: &[(&str, &str)] = &[
    ("[://]", "://"),
    ("[:]//", "://"),
    ("[:/]/", "://"),
    ("hxxps", "https"),
    ("hxxp", "http"),
    ("h**ps", "https"),
    ("h**p", "http"),
    ("fxp", "ftp"),
    ("[.]", "."),
    ("(.)", "."),
    ("{.}", "."),
    ("[dot]", "."),
    ("(dot)", "."),
    ("{dot}", "."),
    ("[:]", ":"),
    ("[@]", "@"),
    ("(@)", "@"),
    ("[at]", "@"),
    ("(at)", "@"),
    ("[/]", "/"),
];

/// Refangs `text` (see [`refang`]).
pub fn refang_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while let Some(c) = rest.chars().next() {
        for (from, to) in REFANG {
            if rest
                .get(..from.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(from))
            {
                // A scheme is only a scheme at the start of a word and before `:` or `[:`.
                let is_scheme = from.starts_with(['h', 'f']);
                let is_real_scheme = || {
                    out.chars().next_back().is_none_or(|p| !p.is_alphanumeric())
                        && rest[from.len()..].starts_with([':', '['])
                };
                if !is_scheme || is_real_scheme() {
                    out.push_str(to);
                    rest = &rest[from.len()..];
                    continue 'outer;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Defangs clean `text` (see [`defang`]).
pub fn defang_text(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => "hxxp".to_owned(),
            "https" => "hxxps".to_owned(),
            "ftp" => "fxp".to_owned(),
            _ => scheme.to_owned(),
        };
        let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(host_end);
        return format!("{scheme}[://]{}{tail}", defang_host(authority));
    }
    defang_host(text)
}

fn defang_host(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<Ipv6Addr>().is_ok() {
        return host.replace(':', "[:]");
    }
    host.replace('.', "[.]").replace('@', "[@]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defangs_each_kind_of_indicator() {
        for (clean, defanged) in [
            (
                "https://evil.example.com/login.php?a=b.c",
                "hxxps[://]evil[.]example[.]com/login.php?a=b.c",
            ),
            ("http://192.0.2.1:8080/x", "hxxp[://]192[.]0[.]2[.]1:8080/x"),
            ("ftp://files.example.org", "fxp[://]files[.]example[.]org"),
            ("evil.example.com", "evil[.]example[.]com"),
            ("192.0.2.1", "192[.]0[.]2[.]1"),
            ("2001:db8::1", "2001[:]db8[:][:]1"),
            ("alice@mail.example.com", "alice[@]mail[.]example[.]com"),
        ] {
            let out = defang(FangInput {
                value: clean.into(),
            })
            .unwrap()
            .value;
            assert_eq!(out, defanged);
            assert_eq!(
                refang(FangInput { value: out.clone() }).unwrap().value,
                clean
            );
            // Defanging is idempotent.
            assert_eq!(defang(FangInput { value: out }).unwrap().value, defanged);
        }
    }

    #[test]
    fn refangs_common_styles() {
        for (defanged, clean) in [
            ("hXXps://evil(.)example{.}com", "https://evil.example.com"),
            ("hxxp[:]//example[dot]com", "http://example.com"),
            ("HXXP[://]example(DOT)org[/]a", "http://example.org/a"),
            ("fxpro[.]com", "fxpro.com"),
            ("bob(at)example[.]net", "bob@example.net"),
            ("user[@]example[.]io", "user@example.io"),
            ("fe80[:][:]1", "fe80::1"),
            ("shxxp.example", "shxxp.example"),
            ("already.clean/path", "already.clean/path"),
            ("ünï[.]cödé", "ünï.cödé"),
        ] {
            assert_eq!(refang_text(defanged), clean, "{defanged}");
        }
    }
}
