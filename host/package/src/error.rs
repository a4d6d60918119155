//! Why a package, a key or a signature was refused.

/// Why a package, a key or a signature was refused. Messages say what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The bytes are not a Qila package, or a part of it is cut short or too large.
    #[error("not a valid Qila plugin package: {0}")]
    Format(String),
    /// The manifest is not valid JSON or breaks a rule.
    #[error("invalid manifest: {0}")]
    Manifest(String),
    /// The component does not match the digest its manifest records: the package was altered.
    #[error(
        "the component's SHA-256 is {actual} but the manifest says {expected}: the package was altered after it was packed"
    )]
    ComponentAltered {
        /// What the manifest records.
        expected: String,
        /// What the component hashes to.
        actual: String,
    },
    /// The package carries no signature.
    #[error(
        "the package is not signed: sign it with `qila plugin sign`, or install it on a server in development mode"
    )]
    Unsigned,
    /// The signing key is not one of the trusted vendor keys.
    #[error(
        "the package is signed by key {key_id}, which is not a trusted vendor key: trust the vendor's public key first (`qila plugin trust KEY.pub`)"
    )]
    UntrustedKey {
        /// The signer's key id.
        key_id: String,
    },
    /// The signature does not verify: the manifest or the component changed after signing, or it was forged.
    #[error(
        "the signature by key {key_id} ({vendor}) does not match the package: the manifest or the component was changed after signing, or the signature is forged"
    )]
    BadSignature {
        /// The key id the signature names.
        key_id: String,
        /// The vendor of that key.
        vendor: String,
    },
    /// A key file is malformed.
    #[error("invalid key: {0}")]
    Key(String),
    /// The operating system's random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}
