//! Secrets the administrator granted to the plugin by name.
//!
//! Prefer [`crate::http::Request::bearer_secret`], which has the host inject the secret into a request so that
//! the plugin never holds the value. Revealing is a separate, rarer grant, and the host audits every reveal.

use crate::Error;

/// Reveals the value of the granted secret `name`.
///
/// Fails with [`Error::Denied`] when the secret was not granted to the plugin and [`Error::NotFound`] when it has
/// no value. In a native test, grant one with [`crate::testing::grant_secret`].
pub fn reveal(name: &str) -> Result<String, Error> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::qila::plugin::secrets::reveal(name).map_err(Error::from);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::reveal_secret(name);
}
