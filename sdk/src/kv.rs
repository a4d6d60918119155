//! A small key-value store private to the plugin, kept by the host across runs.
//!
//! Each plugin has its own namespace; one plugin cannot read another's keys. In a native test the store is an
//! in-memory map private to the test's thread.
//!
//! ```
//! use qila_sdk::kv;
//!
//! kv::set("cursor", b"42")?;
//! assert_eq!(kv::get("cursor")?.as_deref(), Some(&b"42"[..]));
//! kv::delete("cursor")?;
//! assert_eq!(kv::get("cursor")?, None);
//! # Ok::<(), qila_sdk::Error>(())
//! ```

use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::qila::plugin::kv::get(key).map_err(Error::from);
    #[cfg(not(target_arch = "wasm32"))]
    return Ok(crate::testing::kv_get(key));
}

/// Stores `value` under `key`, replacing any previous value.
pub fn set(key: &str, value: &[u8]) -> Result<(), Error> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::qila::plugin::kv::set(key, value).map_err(Error::from);
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::kv_set(key, value);
        Ok(())
    }
}

/// Removes `key`; removing an absent key succeeds.
pub fn delete(key: &str) -> Result<(), Error> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::qila::plugin::kv::delete(key).map_err(Error::from);
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::kv_delete(key);
        Ok(())
    }
}

/// The JSON value stored under `key`, if any. A stored value that is not a `T` is an [`Error::Failed`].
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    get(key)?
        .map(|bytes| serde_json::from_slice(&bytes).map_err(Error::from))
        .transpose()
}

/// Stores `value` as JSON under `key`.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set(key, &serde_json::to_vec(value)?)
}
