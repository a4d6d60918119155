//! The package file: a manifest, a component and an optional signature, in one file.
//!
//! Layout (integers little-endian):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `QILAPKG1` |
//! | 4 | manifest length *m* |
//! | *m* | the manifest, canonical JSON ([`Manifest::to_json`]) |
//! | 8 | component length *c* |
//! | *c* | the WebAssembly component |
//! | 4 | `SIG1` (absent when unsigned) |
//! | 1 + *k* | key id length *k*, key id (ASCII hex) |
//! | 64 | ed25519 signature |
//!
//! The signature covers `qila-plugin-package/v1\n` ‖ SHA-256(manifest) ‖ SHA-256(component), so the manifest
//! and the component cannot be changed, swapped or combined with another's without breaking it. The manifest
//! also records the component's SHA-256 and size, which must match.

use sha2::{Digest, Sha256};

use crate::manifest::MAX_MANIFEST_BYTES;
use crate::{Manifest, PackageError, PublicKey, SigningKey, TrustedKeys};

const MAGIC: &[u8; 8] = b"QILAPKG1";
const SIG_MAGIC: &[u8; 4] = b"SIG1";
const DOMAIN: &[u8] = b"qila-plugin-package/v1\n";
/// Largest component accepted, in bytes.
const MAX_COMPONENT_BYTES: u64 = 512 << 20;

/// A signature over a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The id of the key that made it.
    pub key_id: String,
    /// The ed25519 signature.
    pub bytes: [u8; 64],
}

/// A plugin package in memory.
#[derive(Debug, Clone)]
pub struct Package {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    component: Vec<u8>,
    /// SHA-256 of `component`, computed once: hashing a large component dominates verification.
    component_digest: [u8; 32],
    signature: Option<Signature>,
}

impl Package {
    /// A new, unsigned package. Records the component's digest and size in the manifest.
    pub fn new(mut manifest: Manifest, component: Vec<u8>) -> Result<Self, PackageError> {
        let component_digest: [u8; 32] = Sha256::digest(&component).into();
        manifest.component.sha256 = hex::encode(component_digest);
        manifest.component.size = component.len() as u64;
        manifest.check()?;
        let manifest_bytes = manifest.to_json();
        Ok(Self {
            manifest,
            manifest_bytes,
            component,
            component_digest,
            signature: None,
        })
    }

    /// Reads a package file's bytes. Checks the layout, the manifest's rules and that the component matches the
    /// manifest's digest; not the signature (see [`Package::verify`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, PackageError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(8, "the magic bytes")? != MAGIC {
            return Err(PackageError::Format(
                "it does not start with `QILAPKG1` (is it a bare .wasm component? pack it with `qila plugin pack`)"
                    .into(),
            ));
        }
        let m = u32::from_le_bytes(r.array("the manifest length")?) as usize;
        if m > MAX_MANIFEST_BYTES {
            return Err(PackageError::Format(format!(
                "the manifest is {m} bytes; the limit is {MAX_MANIFEST_BYTES}"
            )));
        }
        let manifest_bytes = r.take(m, "the manifest")?.to_vec();
        let c = u64::from_le_bytes(r.array("the component length")?);
        if c > MAX_COMPONENT_BYTES {
            return Err(PackageError::Format(format!(
                "the component is {c} bytes; the limit is {MAX_COMPONENT_BYTES}"
            )));
        }
        let component = r.take(c as usize, "the component")?.to_vec();
        let signature = if r.at == bytes.len() {
            None
        } else {
            if r.take(4, "the signature marker")? != SIG_MAGIC {
                return Err(PackageError::Format(
                    "unexpected bytes after the component".into(),
                ));
            }
            let k = r.take(1, "the key id length")?[0] as usize;
            let key_id = std::str::from_utf8(r.take(k, "the key id")?)
                .map_err(|_| PackageError::Format("the key id is not text".into()))?
                .to_string();
            let bytes = r.array("the signature")?;
            if r.at != r.bytes.len() {
                return Err(PackageError::Format(
                    "unexpected bytes after the signature".into(),
                ));
            }
            Some(Signature { key_id, bytes })
        };
        let manifest = Manifest::from_json(&manifest_bytes)?;
        let component_digest: [u8; 32] = Sha256::digest(&component).into();
        let actual = hex::encode(component_digest);
        if actual != manifest.component.sha256 || component.len() as u64 != manifest.component.size
        {
            return Err(PackageError::ComponentAltered {
                expected: manifest.component.sha256.clone(),
                actual,
            });
        }
        Ok(Self {
            manifest,
            manifest_bytes,
            component,
            component_digest,
            signature,
        })
    }

    /// The package file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.manifest_bytes.len() + self.component.len() + 128);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.manifest_bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.manifest_bytes);
        out.extend_from_slice(&(self.component.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.component);
        if let Some(sig) = &self.signature {
            out.extend_from_slice(SIG_MAGIC);
            out.push(sig.key_id.len() as u8);
            out.extend_from_slice(sig.key_id.as_bytes());
            out.extend_from_slice(&sig.bytes);
        }
        out
    }

    /// Signs the package (replacing any signature).
    pub fn sign(&mut self, key: &SigningKey) {
        self.signature = Some(Signature {
            key_id: key.id(),
            bytes: key.sign(&self.signed_message()),
        });
    }

    /// Checks the signature against the trusted keys and returns the signer's key.
    pub fn verify<'k>(&self, trusted: &'k TrustedKeys) -> Result<&'k PublicKey, PackageError> {
        let sig = self.signature.as_ref().ok_or(PackageError::Unsigned)?;
        let key = trusted
            .get(&sig.key_id)
            .ok_or_else(|| PackageError::UntrustedKey {
                key_id: sig.key_id.clone(),
            })?;
        if key.verify(&self.signed_message(), &sig.bytes) {
            Ok(key)
        } else {
            Err(PackageError::BadSignature {
                key_id: sig.key_id.clone(),
                vendor: key.vendor().to_string(),
            })
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The component's bytes.
    pub fn component(&self) -> &[u8] {
        &self.component
    }

    /// The signature, if any.
    pub fn signature(&self) -> Option<&Signature> {
        self.signature.as_ref()
    }

    /// The package's identity: hex SHA-256 of what the signature covers (the same signed or not).
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.signed_message()))
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN.len() + 64);
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&Sha256::digest(&self.manifest_bytes));
        m.extend_from_slice(&self.component_digest);
        m
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], PackageError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                PackageError::Format(format!(
                    "the file ends inside {what} (at byte {} of {})",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], PackageError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    fn signed() -> (Package, SigningKey) {
        let key = SigningKey::generate().unwrap();
        let mut p = Package::new(sample(), b"\0asm fake component".to_vec()).unwrap();
        p.sign(&key);
        (p, key)
    }

    #[test]
    fn a_signed_package_round_trips_and_verifies() {
        let (p, key) = signed();
        let trusted = TrustedKeys::new(vec![key.public("Acme Corp")]);
        let again = Package::parse(&p.to_bytes()).unwrap();
        assert_eq!(again.verify(&trusted).unwrap().vendor(), "Acme Corp");
        assert_eq!(again.digest(), p.digest());
        assert_eq!(again.manifest().component.size, 19);
    }

    #[test]
    fn unsigned_untrusted_and_forged_packages_are_refused() {
        let (p, key) = signed();
        let trusted = TrustedKeys::new(vec![key.public("Acme Corp")]);
        let unsigned = Package::new(sample(), b"x".to_vec()).unwrap();
        assert!(matches!(
            unsigned.verify(&trusted),
            Err(PackageError::Unsigned)
        ));
        let other = SigningKey::generate().unwrap();
        let mut forged = p.clone();
        forged.sign(&other);
        assert!(matches!(
            forged.verify(&trusted),
            Err(PackageError::UntrustedKey { .. })
        ));
        // A signature made by another key, relabelled with the trusted key's id.
        let mut relabelled = forged;
        relabelled.signature.as_mut().unwrap().key_id = key.id();
        assert!(matches!(
            relabelled.verify(&trusted),
            Err(PackageError::BadSignature { .. })
        ));
    }

    #[test]
    fn altering_any_byte_is_caught() {
        let (p, key) = signed();
        let trusted = TrustedKeys::new(vec![key.public("Acme Corp")]);
        let bytes = p.to_bytes();
        // Flip a byte in the manifest's text, then in the component.
        let manifest_at = bytes.windows(8).position(|w| w == b"Acme Cor").unwrap();
        let mut altered = bytes.clone();
        altered[manifest_at] = b'a';
        let parsed = Package::parse(&altered).unwrap();
        assert!(matches!(
            parsed.verify(&trusted),
            Err(PackageError::BadSignature { .. })
        ));
        let component_at = bytes.windows(4).position(|w| w == b"fake").unwrap();
        let mut altered = bytes.clone();
        altered[component_at] = b'F';
        assert!(matches!(
            Package::parse(&altered),
            Err(PackageError::ComponentAltered { .. })
        ));
        // Truncations anywhere are format errors, never panics.
        for cut in [0, 3, 9, 14, bytes.len() - 70, bytes.len() - 1] {
            let e = Package::parse(&bytes[..cut]);
            assert!(e.is_err(), "cut at {cut}");
        }
        let mut trailing = bytes;
        trailing.push(0);
        assert!(
            Package::parse(&trailing)
                .unwrap_err()
                .to_string()
                .contains("after the signature")
        );
        assert!(
            Package::parse(b"\0asm\x0d\0\x01\0")
                .unwrap_err()
                .to_string()
                .contains("qila plugin pack")
        );
    }
}
