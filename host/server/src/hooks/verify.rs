//! Webhook credentials: what a request presents, read from its headers alone ([`presented`]), and its check
//! against a hook's secret ([`verify`]).
//!
//! Three schemes, all keyed by the bytes of the hook's secret:
//! - **Standard Webhooks** (<https://www.standardwebhooks.com>): `webhook-id`, `webhook-timestamp` (unix
//!   seconds, within the tolerance of the server's clock) and `webhook-signature: v1,<base64>` (space-separated,
//!   several during a key rotation) of HMAC-SHA256 over `<id>.<timestamp>.<body>`; the secret as these clients
//!   take it is `whsec_<base64 of the key>` ([`whsec`]);
//! - **GitHub-style**: `X-Hub-Signature-256: sha256=<hex>` (or `X-Qila-Signature`) of HMAC-SHA256 over the body,
//!   with the delivery's id in `X-GitHub-Delivery` (or `X-Qila-Delivery`);
//! - **the secret itself**, in `X-Qila-Hook-Secret` or `Authorization: Bearer`.
//!
//! Everything [`presented`] refuses is refused for any playbook, published or not; [`verify`] does the same work
//! for a playbook that does not exist (with a key no request can match), so that its answer and its time do not
//! tell which names exist.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use qila_model::WebhookSignature;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The longest delivery id taken (`webhook-id`, `X-GitHub-Delivery`).
pub(crate) const MAX_ID_BYTES: usize = 256;
/// The most signatures one `webhook-signature` header may list.
pub(crate) const MAX_SIGNATURES: usize = 8;
/// The prefix of a Standard Webhooks secret.
pub(crate) const WHSEC: &str = "whsec_";

type Mac256 = [u8; 32];

/// The credentials a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented {
    /// The hook's secret itself.
    Secret(String),
    /// A GitHub-style HMAC of the body, and the delivery's id.
    Hub { mac: Mac256, delivery: String },
    /// A Standard Webhooks signature (one or more candidates) of `<id>.<timestamp>.<body>`.
    Standard {
        id: String,
        timestamp: i64,
        macs: Vec<Mac256>,
    },
}

impl Presented {
    /// Whether a hook declared with `signature` takes these credentials.
    pub(crate) fn accepted_by(&self, signature: WebhookSignature) -> bool {
        match signature {
            WebhookSignature::None => true,
            WebhookSignature::HmacSha256 => matches!(self, Self::Hub { .. }),
            WebhookSignature::StandardWebhooks => matches!(self, Self::Standard { .. }),
        }
    }

    /// Whether the body must be read (under the budget of unverified bytes) before the sender is known.
    pub(crate) fn signs_body(&self) -> bool {
        !matches!(self, Self::Secret(_))
    }
}

/// Why the headers alone refuse a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error(
        "send the webhook's credentials: a Standard Webhooks signature (webhook-id, webhook-timestamp, \
         webhook-signature), an X-Hub-Signature-256 with X-GitHub-Delivery, or the secret in X-Qila-Hook-Secret"
    )]
    Missing,
    #[error("{0} must be one header of at most {MAX_ID_BYTES} visible ASCII characters")]
    Id(&'static str),
    #[error(
        "Standard Webhooks needs the headers webhook-id, webhook-timestamp and webhook-signature; {0} is missing"
    )]
    Incomplete(&'static str),
    #[error("webhook-timestamp must be the unix time in seconds")]
    Timestamp,
    #[error(
        "webhook-timestamp is {0} s from the server's clock; it may be at most {1} s off (the limit, \
         `webhook_tolerance`): a delivery is accepted only while it is fresh"
    )]
    Stale(i64, i64),
    #[error(
        "webhook-signature must list `v1,<base64 of the 32-byte HMAC-SHA256>` signatures, separated by spaces \
         (at most {MAX_SIGNATURES})"
    )]
    Signature,
    #[error("{0} must be `sha256=<64 hex digits>` (the HMAC-SHA256 of the body)")]
    Hub(&'static str),
    #[error(
        "{0} needs the delivery's id in X-GitHub-Delivery (or X-Qila-Delivery): a delivery is accepted once"
    )]
    NoDelivery(&'static str),
}

/// One header's value as text: `Ok(None)` when absent, an error when repeated or not visible ASCII.
fn one<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, &'static str> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(name);
    }
    value.to_str().map(|v| Some(v.trim())).map_err(|_| name)
}

fn id(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, HeaderError> {
    match one(headers, name).map_err(HeaderError::Id)? {
        None => Ok(None),
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_ID_BYTES
                && v.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(v.to_owned()))
        }
        Some(_) => Err(HeaderError::Id(name)),
    }
}

/// The credentials in `headers`, checked for form (and a Standard Webhooks timestamp against `now`, unix
/// seconds, within `tolerance` seconds). A signature takes precedence over a bare secret sent beside it.
pub(crate) fn presented(
    headers: &HeaderMap,
    now: i64,
    tolerance: i64,
) -> Result<Presented, HeaderError> {
    let signature = one(headers, "webhook-signature").map_err(|_| HeaderError::Signature)?;
    if let Some(signature) = signature {
        let id = id(headers, "webhook-id")?.ok_or(HeaderError::Incomplete("webhook-id"))?;
        let timestamp = one(headers, "webhook-timestamp")
            .map_err(|_| HeaderError::Timestamp)?
            .ok_or(HeaderError::Incomplete("webhook-timestamp"))?;
        if timestamp.is_empty()
            || timestamp.len() > 12
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(HeaderError::Timestamp);
        }
        let timestamp: i64 = timestamp.parse().map_err(|_| HeaderError::Timestamp)?;
        let off = timestamp.saturating_sub(now);
        if off.saturating_abs() > tolerance {
            return Err(HeaderError::Stale(off, tolerance));
        }
        let entries: Vec<&str> = signature.split(' ').filter(|e| !e.is_empty()).collect();
        if entries.len() > MAX_SIGNATURES {
            return Err(HeaderError::Signature);
        }
        let macs: Vec<Mac256> = entries
            .iter()
            .filter_map(|e| e.strip_prefix("v1,"))
            .filter_map(|b64| BASE64.decode(b64).ok())
            .filter_map(|bytes| Mac256::try_from(bytes.as_slice()).ok())
            .collect();
        if macs.is_empty() {
            return Err(HeaderError::Signature);
        }
        return Ok(Presented::Standard {
            id,
            timestamp,
            macs,
        });
    }
    for name in ["x-hub-signature-256", "x-qila-signature"] {
        let Some(value) = one(headers, name).map_err(HeaderError::Hub)? else {
            continue;
        };
        let hex_digest = value
            .strip_prefix("sha256=")
            .or_else(|| (name == "x-qila-signature").then_some(value))
            .ok_or(HeaderError::Hub(name))?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(hex_digest, &mut mac).map_err(|_| HeaderError::Hub(name))?;
        let delivery = match id(headers, "x-github-delivery")? {
            Some(d) => d,
            None => id(headers, "x-qila-delivery")?.ok_or(HeaderError::NoDelivery(name))?,
        };
        return Ok(Presented::Hub { mac, delivery });
    }
    let secret = match one(headers, "x-qila-hook-secret") {
        Ok(Some(s)) => Some(s),
        _ => one(headers, "authorization").ok().flatten().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }),
    };
    match secret {
        Some(s) if !s.is_empty() => Ok(Presented::Secret(s.to_owned())),
        _ => Err(HeaderError::Missing),
    }
}

/// A key no secret is: what an unknown playbook (or one that does not take the scheme) is checked with.
const NO_KEY: &[u8] = b"qila: no such webhook; this key matches nothing that can be sent";

/// Whether `presented` proves `key` (the hook's secret; `None`: no hook takes these credentials, and the same
/// work is done to refuse them) over `body`. Constant time in the secret.
pub(crate) fn verify(key: Option<&[u8]>, presented: &Presented, body: &[u8]) -> bool {
    let known = key.is_some();
    let key = key.unwrap_or(NO_KEY);
    let matched = match presented {
        Presented::Secret(given) => {
            // Digests, so that neither the length nor the bytes of the secret show in the time taken.
            let given = Sha256::digest(given.as_bytes());
            let secret = Sha256::digest(key);
            bool::from(given.ct_eq(&secret))
        }
        Presented::Hub { mac, .. } => bool::from(hub_mac(key, body).ct_eq(mac)),
        Presented::Standard {
            id,
            timestamp,
            macs,
        } => {
            let expected = standard_mac(key, id, *timestamp, body);
            macs.iter()
                .fold(0u8, |any, mac| any | expected.ct_eq(mac).unwrap_u8())
                == 1
        }
    };
    known && matched
}

/// HMAC-SHA256 of `body`, as GitHub signs it.
pub(crate) fn hub_mac(key: &[u8], body: &[u8]) -> Mac256 {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `<id>.<timestamp>.<body>`, as Standard Webhooks signs it.
pub(crate) fn standard_mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Mac256 {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// A hook's secret in the form Standard Webhooks clients take: `whsec_<base64 of the key bytes>`.
pub(crate) fn whsec(secret: &str) -> String {
    format!("{WHSEC}{}", BASE64.encode(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn standard(id: &str, ts: i64, body: &[u8], key: &[u8]) -> HeaderMap {
        let sig = BASE64.encode(standard_mac(key, id, ts, body));
        headers(&[
            ("webhook-id", id.into()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", format!("v1a,xyz v1,{sig}")),
        ])
    }

    #[test]
    fn the_standard_webhooks_reference_vector_verifies() {
        // From the `standardwebhooks` crate's own tests (secret, id, timestamp, body and signature).
        let key = BASE64.decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let mac = standard_mac(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(
            BASE64.encode(mac),
            "tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn each_scheme_is_read_from_its_headers_and_checked() {
        let body = br#"{"a":1}"#;
        let p = presented(&standard("msg_1", NOW - 10, body, KEY), NOW, 300).unwrap();
        assert!(verify(Some(KEY), &p, body));
        assert!(!verify(Some(KEY), &p, b"{}"), "another body");
        assert!(!verify(Some(b"other"), &p, body), "another key");
        assert!(!verify(None, &p, body), "no hook");
        assert!(p.accepted_by(WebhookSignature::StandardWebhooks));
        assert!(!p.accepted_by(WebhookSignature::HmacSha256));

        let hub = headers(&[
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hub_mac(KEY, body))),
            ),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
            ),
            (
                "x-qila-hook-secret",
                String::from_utf8(KEY.to_vec()).unwrap(),
            ),
        ]);
        let p = presented(&hub, NOW, 300).unwrap();
        assert!(
            matches!(p, Presented::Hub { .. }),
            "the signature wins over the secret"
        );
        assert!(verify(Some(KEY), &p, body));
        assert!(!verify(Some(KEY), &p, b"x"));

        let p = presented(
            &headers(&[("authorization", "Bearer s3cret".into())]),
            NOW,
            300,
        )
        .unwrap();
        assert!(verify(Some(b"s3cret"), &p, b""));
        assert!(!verify(Some(b"s3cre"), &p, b""));
        assert!(!p.accepted_by(WebhookSignature::HmacSha256));
        assert!(p.accepted_by(WebhookSignature::None));
    }

    #[test]
    fn malformed_stale_and_incomplete_headers_are_refused_before_any_hook_is_looked_up() {
        let body = b"{}";
        let stale = presented(&standard("m", NOW - 301, body, KEY), NOW, 300);
        assert_eq!(stale, Err(HeaderError::Stale(-301, 300)));
        let future = presented(&standard("m", NOW + 301, body, KEY), NOW, 300);
        assert_eq!(future, Err(HeaderError::Stale(301, 300)));
        let cases: Vec<(Vec<(&'static str, String)>, HeaderError)> = vec![
            (vec![], HeaderError::Missing),
            (
                vec![("webhook-signature", "v1,AAAA".into())],
                HeaderError::Incomplete("webhook-id"),
            ),
            (
                vec![
                    ("webhook-signature", "v1,AAAA".into()),
                    ("webhook-id", "x".into()),
                    ("webhook-timestamp", "-5".into()),
                ],
                HeaderError::Timestamp,
            ),
            (
                vec![
                    ("webhook-signature", "v1,AAAA".into()),
                    ("webhook-id", "x".into()),
                    ("webhook-timestamp", NOW.to_string()),
                ],
                HeaderError::Signature,
            ),
            (
                vec![
                    ("webhook-signature", "v1,AAAA".into()),
                    ("webhook-id", "a b".into()),
                    ("webhook-timestamp", NOW.to_string()),
                ],
                HeaderError::Id("webhook-id"),
            ),
            (
                vec![("x-hub-signature-256", "sha256=zz".into())],
                HeaderError::Hub("x-hub-signature-256"),
            ),
            (
                vec![("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))],
                HeaderError::NoDelivery("x-hub-signature-256"),
            ),
            (
                vec![
                    ("x-qila-hook-secret", "a".into()),
                    ("x-qila-hook-secret", "b".into()),
                ],
                HeaderError::Missing,
            ),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                presented(&headers(&pairs), NOW, 300),
                Err(expected),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn the_whsec_form_decodes_to_the_key_bytes() {
        let secret = "9f3c2a";
        let form = whsec(secret);
        let key = BASE64.decode(form.strip_prefix(WHSEC).unwrap()).unwrap();
        assert_eq!(key, secret.as_bytes());
    }

    /// Header values a sender might put anywhere: fixtures, near-misses and noise.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("v1,".to_owned()),
            Just("sha256=".to_owned()),
            "[ -~]{0,80}",
            "v1,[A-Za-z0-9+/=]{0,60}",
            "sha256=[0-9a-fA-F]{60,68}",
            "[0-9]{1,14}",
        ]
    }

    fn name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "x-hub-signature-256",
            "x-qila-signature",
            "x-github-delivery",
            "x-qila-delivery",
            "x-qila-hook-secret",
            "authorization",
        ])
    }

    proptest! {
        // `PROPTEST_CASES` sets how many cases (256 by default).
        #![proptest_config(ProptestConfig { max_shrink_iters: 256, ..ProptestConfig::default() })]

        /// Arbitrary headers and bodies never panic, and are never accepted without a valid signature over that
        /// body with that key (nor the secret itself).
        #[test]
        fn arbitrary_headers_are_never_accepted_without_the_key(
            pairs in prop::collection::vec((name(), value()), 0..8),
            body in prop::collection::vec(any::<u8>(), 0..256),
            now in 0i64..4_000_000_000,
        ) {
            let mut h = HeaderMap::new();
            for (k, v) in &pairs {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(*k, v);
                }
            }
            if let Ok(p) = presented(&h, now, 300) {
                prop_assert!(!verify(None, &p, &body));
                let accepted = verify(Some(KEY), &p, &body);
                let genuine = match &p {
                    Presented::Secret(s) => s.as_bytes() == KEY,
                    Presented::Hub { mac, .. } => *mac == hub_mac(KEY, &body),
                    Presented::Standard { id, timestamp, macs } => {
                        macs.contains(&standard_mac(KEY, id, *timestamp, &body))
                    }
                };
                prop_assert_eq!(accepted, genuine);
            }
        }

        /// A valid Standard Webhooks signature is accepted at any time within the tolerance, and any change to
        /// the id, the timestamp, the body or one byte of the signature is refused.
        #[test]
        fn a_valid_signature_is_accepted_and_any_change_refused(
            id in "[!-~]{1,64}",
            off in -300i64..=300,
            body in prop::collection::vec(any::<u8>(), 0..512),
            flip in 0usize..32,
        ) {
            let ts = NOW + off;
            let h = standard(&id, ts, &body, KEY);
            let p = presented(&h, NOW, 300).unwrap();
            prop_assert!(verify(Some(KEY), &p, &body));
            let mut other = body.clone();
            other.push(b'x');
            prop_assert!(!verify(Some(KEY), &p, &other));
            let moved = Presented::Standard { id: id.clone(), timestamp: ts + 1, macs: vec![standard_mac(KEY, &id, ts, &body)] };
            prop_assert!(!verify(Some(KEY), &moved, &body));
            let mut mac = standard_mac(KEY, &id, ts, &body);
            mac[flip] ^= 1;
            let flipped = Presented::Standard { id, timestamp: ts, macs: vec![mac] };
            prop_assert!(!verify(Some(KEY), &flipped, &body));
        }
    }
}
