//! Vendor signing keys (ed25519) and the set of keys a host trusts.
//!
//! Both are one line of text, like OpenSSH keys:
//! - a signing key file: `qila-ed25519-secret <base64 of the 32-byte seed>`;
//! - a public key file: `qila-ed25519 <base64 of the 32-byte key> <vendor name>`.
//!
//! A key's id is the first 16 hex digits of the SHA-256 of the public key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};

use crate::PackageError;

const SECRET_TAG: &str = "qila-ed25519-secret";
const PUBLIC_TAG: &str = "qila-ed25519";

/// A vendor's private signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", key_id(&self.0.verifying_key()))
    }
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, PackageError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| PackageError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Parses a signing key file's text.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some(SECRET_TAG), Some(b64)) => {
                let seed: [u8; 32] = decode_32(b64)?;
                Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
            (Some(PUBLIC_TAG), _) => Err(PackageError::Key(
                "this is a public key; signing needs the secret key file (`.key`)".into(),
            )),
            _ => Err(PackageError::Key(format!(
                "a signing key file starts with `{SECRET_TAG} `"
            ))),
        }
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", BASE64.encode(self.0.to_bytes()))
    }

    /// Writes the key file at `path`, readable by its owner only (mode 0600); never overwrites a file.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(self.to_text().as_bytes())?;
        file.sync_all()
    }

    /// The public half, labelled with the vendor's name.
    pub fn public(&self, vendor: &str) -> PublicKey {
        PublicKey {
            key: self.0.verifying_key(),
            vendor: vendor.trim().to_string(),
        }
    }

    /// This key's id.
    pub fn id(&self) -> String {
        key_id(&self.0.verifying_key())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// A vendor's public key: what a host trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    vendor: String,
}

impl PublicKey {
    /// Parses a public key file's text.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let line = text.trim();
        let mut parts = line.splitn(3, char::is_whitespace);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(PUBLIC_TAG), Some(b64), vendor) => {
                let bytes = decode_32(b64)?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map_err(|e| PackageError::Key(format!("not an ed25519 public key: {e}")))?;
                let vendor = vendor.unwrap_or_default().trim().to_string();
                if vendor.is_empty() {
                    return Err(PackageError::Key(
                        "the public key has no vendor name after the key".into(),
                    ));
                }
                Ok(Self { key, vendor })
            }
            (Some(SECRET_TAG), ..) => Err(PackageError::Key(
                "this is a secret signing key: never share it; trust the `.pub` file instead"
                    .into(),
            )),
            _ => Err(PackageError::Key(format!(
                "a public key file reads `{PUBLIC_TAG} <base64 key> <vendor name>`"
            ))),
        }
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}\n",
            BASE64.encode(self.key.as_bytes()),
            self.vendor
        )
    }

    /// The key's id.
    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    /// The vendor the key belongs to.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.key.verify_strict(message, &signature).is_ok()
    }
}

/// The vendor keys a host trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
}

impl TrustedKeys {
    /// A set of trusted keys.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Self { keys }
    }

    /// The key with this id, if trusted.
    pub fn get(&self, id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    /// Every trusted key.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter()
    }
}

fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

fn decode_32(b64: &str) -> Result<[u8; 32], PackageError> {
    let bytes = BASE64
        .decode(b64)
        .map_err(|e| PackageError::Key(format!("the key is not base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|v: Vec<u8>| PackageError::Key(format!("the key is {} bytes, not 32", v.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_files() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.id(), key.id());
        let public = key.public("Acme Corp");
        let parsed = PublicKey::parse(&public.to_text()).unwrap();
        assert_eq!(parsed, public);
        assert_eq!(parsed.vendor(), "Acme Corp");
        assert_eq!(parsed.id().len(), 16);
        let sig = key.sign(b"message");
        assert!(parsed.verify(b"message", &sig));
        assert!(!parsed.verify(b"messagE", &sig));
    }

    #[test]
    fn mixing_up_key_files_says_so() {
        let key = SigningKey::generate().unwrap();
        let e = PublicKey::parse(&key.to_text()).unwrap_err().to_string();
        assert!(e.contains("secret"), "{e}");
        let e = SigningKey::parse(&key.public("x").to_text())
            .unwrap_err()
            .to_string();
        assert!(e.contains("public key"), "{e}");
        assert!(PublicKey::parse("qila-ed25519 AAAA vendor").is_err());
        assert!(PublicKey::parse("qila-ed25519 !!! vendor").is_err());
    }
}
