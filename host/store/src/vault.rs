//! Encryption of secrets at rest: XChaCha20-Poly1305 under a 256-bit key that lives outside the database.
//!
//! The key is `QILA_SECRET_KEY` (64 hex digits) when set, else the file `DATA_DIR/secret.key`, created with mode
//! 0600 on first use. A copy of the database alone reveals no secret; back the key up apart from it. Each value
//! is sealed with a fresh random nonce and its name as associated data, so a sealed value cannot be moved to
//! another name.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::StoreError;

/// The file name of the key inside the data directory.
pub const KEY_FILE: &str = "secret.key";
const NONCE: usize = 24;
/// The text prefix of a sealed value stored in a text column.
const TEXT_PREFIX: &str = "sealed1:";

/// Seals and opens secret values.
#[derive(Clone)]
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// The vault of `data_dir`: its key from `QILA_SECRET_KEY`, else from `DATA_DIR/secret.key` (created if absent).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        if let Some(hex_key) = std::env::var_os("QILA_SECRET_KEY").filter(|v| !v.is_empty()) {
            let key = hex::decode(hex_key.to_string_lossy().trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| StoreError::Corrupt {
                    table: "QILA_SECRET_KEY",
                    message: "the variable must hold 64 hex digits (a 256-bit key)".into(),
                })?;
            return Ok(Self::from_key(&key));
        }
        let path = data_dir.join(KEY_FILE);
        let io = |e| StoreError::Io(path.clone(), e);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key = hex::decode(String::from_utf8_lossy(&bytes).trim())
                    .ok()
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| StoreError::Corrupt {
                        table: KEY_FILE,
                        message: format!("{} must hold 64 hex digits", path.display()),
                    })?;
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| {
                    StoreError::Io(path.clone(), std::io::Error::other(e.to_string()))
                })?;
                write_private(&path, format!("{}\n", hex::encode(key)).as_bytes()).map_err(io)?;
                Ok(Self::from_key(&key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A vault with a given 32-byte key.
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(key)),
        }
    }

    /// Seals `value` for the name `name`: nonce || ciphertext || tag.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Commit(format!("no randomness: {e}")))?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Commit("cannot encrypt a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`Vault::seal`] sealed for `name`.
    pub fn open_sealed(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = |message: &str| StoreError::Corrupt {
            table: "secrets",
            message: format!("the value of `{name}` {message}"),
        };
        if sealed.len() < NONCE + 16 {
            return Err(corrupt("is too short to be sealed"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: name.as_bytes() })
            .map_err(|_| {
                corrupt("does not decrypt: the data directory's secret.key (or QILA_SECRET_KEY) is not the one it was sealed with")
            })
    }

    /// Seals a text value into text (`sealed1:<hex>`), for text columns.
    pub fn seal_text(&self, name: &str, value: &str) -> Result<String, StoreError> {
        Ok(format!(
            "{TEXT_PREFIX}{}",
            hex::encode(self.seal(name, value.as_bytes())?)
        ))
    }

    /// Opens a value sealed by [`Vault::seal_text`]; `None` when `text` is not sealed (a value written before
    /// encryption at rest, which the store re-seals at start).
    pub fn open_text(&self, name: &str, text: &str) -> Result<Option<String>, StoreError> {
        let Some(hex_part) = text.strip_prefix(TEXT_PREFIX) else {
            return Ok(None);
        };
        let bytes = hex::decode(hex_part).map_err(|_| StoreError::Corrupt {
            table: "secrets",
            message: format!("the sealed value of `{name}` is not hex"),
        })?;
        let plain = self.open_sealed(name, &bytes)?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                table: "secrets",
                message: format!("the value of `{name}` is not UTF-8"),
            })
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path()).unwrap();
        let sealed = vault.seal("api_key", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(vault.open_sealed("api_key", &sealed).unwrap(), b"hunter2");
        assert!(vault.open_sealed("other", &sealed).is_err());
        // The same key file opens it again; another key does not.
        let again = Vault::open(dir.path()).unwrap();
        assert_eq!(again.open_sealed("api_key", &sealed).unwrap(), b"hunter2");
        let e = Vault::from_key(&[9; 32])
            .open_sealed("api_key", &sealed)
            .unwrap_err();
        assert!(e.to_string().contains("secret.key"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = vault.seal_text("hook", "s3cret").unwrap();
        assert_eq!(
            vault.open_text("hook", &text).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(vault.open_text("hook", "plain").unwrap(), None);
    }
}
