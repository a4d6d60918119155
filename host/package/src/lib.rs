//! Qila plugin packages: one file per plugin version that carries the component, its manifest (what it is, its
//! actions, and the capabilities it asks for) and an ed25519 signature over both.
//!
//! This crate knows the file format, keys and signatures, the manifest and its capabilities, the check of a
//! component's imports against its manifest, and the grants an administrator records at install. It does not
//! run components (that is `qila-sandbox`) and does not store anything (that is `qila-store`).
//!
//! ```
//! use qila_package::{Capabilities, Grants, Manifest, Package, SigningKey, TrustedKeys};
//! # fn demo(manifest: Manifest, component: Vec<u8>) -> Result<(), qila_package::PackageError> {
//! let key = SigningKey::generate()?;
//! let mut package = Package::new(manifest, component)?;
//! package.sign(&key);
//! let bytes = package.to_bytes();
//!
//! let trusted = TrustedKeys::new(vec![key.public("Example Corp")]);
//! let package = Package::parse(&bytes)?;
//! let signer = package.verify(&trusted)?;
//! let grants = Grants::all(&package.manifest().capabilities);
//! # Ok(()) }
//! ```

// A library reports through `tracing` and its errors, never on the process's stdout or stderr.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod container;
mod error;
mod grants;
mod imports;
mod keys;
mod manifest;

pub use container::{Package, Signature};
pub use error::PackageError;
pub use grants::{GrantError, Grants};
pub use imports::{ImportProblem, check_imports};
pub use keys::{PublicKey, SigningKey, TrustedKeys};
pub use manifest::{
    ActionManifest, Capabilities, ComponentInfo, FORMAT_VERSION, LimitRequest, Manifest,
};
