//! Structured logging into the host's trace of the run.
//!
//! Messages are attached to the current run and step. In a native test they go to the test double instead (see
//! [`crate::testing::logs`]) and to standard error.
//!
//! ```
//! qila_sdk::log::info("looking up 192.0.2.1");
//! qila_sdk::log::warn(format!("retrying after {} ms", 250));
//! ```

pub use crate::bindings::qila::plugin::log::Level;

/// Writes `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    #[cfg(target_arch = "wasm32")]
    crate::bindings::qila::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
