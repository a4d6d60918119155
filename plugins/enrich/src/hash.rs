//! `enrich.hash` and `enrich.identify-hash`.

use md5::Md5;
use qila_sdk::prelude::*;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// MD5 (broken: for matching indicators only).
    Md5,
    /// SHA-1 (broken: for matching indicators only).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

/// The input of `enrich.hash`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashInput {
    /// The text to hash, as UTF-8.
    pub text: String,
    /// The algorithms to use; all four when absent.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
}

/// The digests of a text, lower-case hex.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct HashOutput {
    /// MD5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// SHA-1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha512: Option<String>,
}

/// Hashes a text with MD5, SHA-1, SHA-256 and/or SHA-512.
#[action(example = r#"{"text": "hello", "algorithms": ["sha256"]}"#)]
pub fn hash(input: HashInput) -> Result<HashOutput, Error> {
    let algorithms = input.algorithms.unwrap_or_else(|| {
        vec![
            Algorithm::Md5,
            Algorithm::Sha1,
            Algorithm::Sha256,
            Algorithm::Sha512,
        ]
    });
    if algorithms.is_empty() {
        return Err(Error::invalid_input(
            "at `algorithms`: name at least one algorithm, or leave it out",
        ));
    }
    let bytes = input.text.as_bytes();
    let mut out = HashOutput::default();
    for algorithm in algorithms {
        match algorithm {
            Algorithm::Md5 => out.md5 = Some(hex(&Md5::digest(bytes))),
            Algorithm::Sha1 => out.sha1 = Some(hex(&Sha1::digest(bytes))),
            Algorithm::Sha256 => out.sha256 = Some(hex(&Sha256::digest(bytes))),
            Algorithm::Sha512 => out.sha512 = Some(hex(&Sha512::digest(bytes))),
        }
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The input of `enrich.identify-hash`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyHashInput {
    /// A digest: hex (any case), a TLSH (`T1` and 70 hex digits) or an ssdeep (`blocksize:hash:hash`).
    pub hash: String,
}

/// What a digest could be.
#[derive(Debug, Serialize, JsonSchema)]
pub struct IdentifyHashOutput {
    /// The digest, trimmed, and lower-cased when it is hex.
    pub hash: String,
    /// The algorithms whose digests look like this, most likely first; empty when none does.
    pub candidates: Vec<&'static str>,
    /// The most likely algorithm, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub likely: Option<&'static str>,
}

/// Suggests which algorithm produced a digest, from its length and alphabet.
#[action(example = r#"{"hash": "44D88612FEA8A8F36DE82E1278ABB02F"}"#)]
pub fn identify_hash(input: IdentifyHashInput) -> Result<IdentifyHashOutput, Error> {
    let trimmed = input.hash.trim();
    let is_hex = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_hexdigit());
    let hash = if is_hex {
        trimmed.to_ascii_lowercase()
    } else {
        trimmed.to_owned()
    };
    let candidates: Vec<&'static str> = if is_hex {
        match hash.len() {
            32 => vec!["md5", "ntlm", "md4", "imphash"],
            40 => vec!["sha1", "ripemd160"],
            56 => vec!["sha224", "sha3-224", "sha512/224"],
            64 => vec![
                "sha256",
                "sha3-256",
                "blake2s-256",
                "sha512/256",
                "authentihash",
            ],
            70 => vec!["tlsh"],
            96 => vec!["sha384", "sha3-384"],
            128 => vec!["sha512", "sha3-512", "blake2b-512", "whirlpool"],
            _ => vec![],
        }
    } else if is_tlsh(&hash) {
        vec!["tlsh"]
    } else if is_ssdeep(&hash) {
        vec!["ssdeep"]
    } else {
        vec![]
    };
    Ok(IdentifyHashOutput {
        likely: candidates.first().copied(),
        candidates,
        hash,
    })
}

fn is_tlsh(s: &str) -> bool {
    s.len() == 72 && s.starts_with("T1") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_ssdeep(s: &str) -> bool {
    let base64 = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    let mut parts = s.split(':');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(size), Some(a), Some(b), None)
            if !size.is_empty() && size.bytes().all(|c| c.is_ascii_digit()) && base64(a) && base64(b)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let out = hash(HashInput {
            text: "hello".into(),
            algorithms: None,
        })
        .unwrap();
        assert_eq!(out.md5.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
        assert_eq!(
            out.sha1.as_deref(),
            Some("aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d")
        );
        assert_eq!(
            out.sha256.as_deref(),
            Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
        assert_eq!(
            out.sha512.as_deref(),
            Some(
                "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"
            )
        );
        let empty = hash(HashInput {
            text: String::new(),
            algorithms: Some(vec![Algorithm::Sha256]),
        })
        .unwrap();
        assert_eq!(
            empty.sha256.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert!(empty.md5.is_none());
        assert!(
            hash(HashInput {
                text: "x".into(),
                algorithms: Some(vec![])
            })
            .is_err()
        );
    }

    #[test]
    fn identifies_by_shape() {
        let id = |h: &str| identify_hash(IdentifyHashInput { hash: h.into() }).unwrap();
        let eicar_md5 = id(" 44D88612FEA8A8F36DE82E1278ABB02F ");
        assert_eq!(eicar_md5.hash, "44d88612fea8a8f36de82e1278abb02f");
        assert_eq!(eicar_md5.likely, Some("md5"));
        assert_eq!(id(&"a".repeat(40)).likely, Some("sha1"));
        assert_eq!(id(&"b".repeat(64)).likely, Some("sha256"));
        assert_eq!(id(&"c".repeat(128)).likely, Some("sha512"));
        assert_eq!(id(&"d".repeat(96)).likely, Some("sha384"));
        assert_eq!(id(&format!("T1{}", "E".repeat(70))).likely, Some("tlsh"));
        assert_eq!(id("96:s4Ud1Lj96tHHlZDrwciQmA+4uy1I0G4HYuL8N3TzS8QsO/wqWXLcMSx:sF1LjEtHHlZDrJzrhuyZvHYm8tKp/RWO").likely, Some("ssdeep"));
        assert!(id("not a hash").candidates.is_empty());
        assert!(id(&"e".repeat(33)).likely.is_none());
    }
}
