//! Write [Qila](https://github.com/qila-soar/qila) plugins in Rust.
//!
//! A Qila plugin is a WebAssembly component (target `wasm32-wasip2`) that offers *actions* to playbooks,
//! addressed `<plugin>.<action>`. Each action is a plain Rust function from a JSON input to a JSON output; the SDK
//! generates the manifest and the actions' JSON Schemas from the types, and the glue the component model needs.
//!
//! ```
//! use qila_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct GreetInput {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct GreetOutput {
//!     greeting: String,
//! }
//!
//! /// Greets someone by name.
//! #[action(example = r#"{"name": "Ada"}"#)]
//! fn greet(input: GreetInput, ctx: &Context) -> Result<GreetOutput, Error> {
//!     if input.name.is_empty() {
//!         return Err(Error::invalid_input("`name` is empty"));
//!     }
//!     qila_sdk::log::info(format!("greeting {} (attempt {})", input.name, ctx.attempt()));
//!     Ok(GreetOutput { greeting: format!("Hello, {}!", input.name) })
//! }
//!
//! qila_sdk::plugin! {
//!     name: "hello",
//!     vendor: "Example Corp",
//!     description: "Greets people.",
//!     actions: [greet],
//! }
//!
//! // Actions stay plain functions: call them directly in a unit test...
//! let out = greet(GreetInput { name: "Ada".into() }, &Context::default())?;
//! assert_eq!(out.greeting, "Hello, Ada!");
//! // ...or through the JSON boundary, exactly as the host calls them.
//! let out = PLUGIN.invoke_json("greet", serde_json::json!({"name": "Ada"}), &Context::default())?;
//! assert_eq!(out["greeting"], "Hello, Ada!");
//! assert!(PLUGIN.check().is_ok());
//! # Ok::<(), Error>(())
//! ```
//!
//! # Host calls
//!
//! Beyond computation, a plugin can only do what the host lets it through the interfaces of the WIT contract
//! (`wit/plugin.wit`): [`log`], [`http`], [`secrets`] and [`kv`]. The host checks each call against what the
//! administrator granted the plugin.
//!
//! # Native tests
//!
//! The crate, including the generated bindings, compiles for the native target too, so `cargo test` runs a
//! plugin's unit tests without WebAssembly. There is no host natively: the host-call wrappers use the per-thread
//! test doubles of [`testing`] instead (HTTP fails with [`Error::Denied`] until a test installs a handler with
//! [`testing::mock_http`]). Do not call the raw imports in [`bindings`] natively: they panic.
//!
//! To run the *built component* through the real sandbox in a test, use the host crate's harness,
//! `qila_sandbox::testing::Harness` (see `docs/plugin-guide.md`).

#![warn(missing_docs)]

/// The bindings `wit-bindgen` generates from the WIT contract (`qila:plugin/action-plugin`).
///
/// Plugins do not need them directly: [`plugin!`] implements [`bindings::Guest`] and exports it.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "action-plugin",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "qila_sdk::bindings",
    });
}

/// The bindings `wit-bindgen` generates for the detector world (`qila:plugin/detector-plugin`), sharing `types`
/// and `log` with [`bindings`].
///
/// Detectors do not need them directly: [`detector!`] implements [`detector_bindings::Guest`] and exports it.
#[allow(missing_docs, clippy::all)]
pub mod detector_bindings {
    wit_bindgen::generate!({
        world: "detector-plugin",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "qila_sdk::detector_bindings",
        with: {
            "qila:plugin/types@0.1.0": crate::bindings::qila::plugin::types,
            "qila:plugin/log@0.1.0": crate::bindings::qila::plugin::log,
        },
    });
}

mod context;
pub mod detect;
mod error;
pub mod http;
pub mod kv;
pub mod log;
mod plugin;
pub mod secrets;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use bindings::qila::plugin::types::{ActionInfo, Manifest};
pub use context::Context;
pub use error::Error;
#[doc(hidden)]
pub use plugin::__private;
pub use plugin::Plugin;

/// Declares a plugin action.
///
/// The function takes its input by value (a `Deserialize + JsonSchema` type) and, optionally, a `&Context`, and
/// returns `Result<Output, E>` where `Output: Serialize + JsonSchema` and `E: Into<Error>`:
///
/// - the first paragraph of its doc comment becomes the action's summary (a doc comment is required);
/// - its name is the function's name in kebab-case (`classify_ip` → `classify-ip`), or `name = "..."`;
/// - `example = r#"{...}"#` gives an example input, shown in the docs and checked by [`Plugin::check`].
///
/// The function itself is left untouched, so unit tests call it directly. Beside it, the attribute declares a
/// hidden item of the same name that [`plugin!`] uses: list the function's name (or path) in `actions: [...]`.
///
/// ```
/// use qila_sdk::prelude::*;
///
/// /// Echoes its input.
/// #[action(name = "echo", example = r#"{"any": "json"}"#)]
/// fn echo_value(input: serde_json::Value) -> Result<serde_json::Value, Error> {
///     Ok(input)
/// }
/// # assert_eq!(echo_value(serde_json::json!(1)).unwrap(), 1);
/// ```
pub use qila_sdk_macros::action;

/// Declares a detector plugin and exports it as the component's `describe-detector` and `detect`.
///
/// Invoke it once, at the root of the detector's crate (a `cdylib` built for `wasm32-wasip2`):
///
/// ```ignore
/// qila_sdk::detector! {
///     name: "detect-dns",                      // lower-case letters, digits, `-` and `_`
///     description: "DNS tunnelling and DGA-style names.",
///     rules: &[LONG_LABEL, HIGH_ENTROPY],      // `qila_sdk::detect::Rule` constants
///     detect: detect,                          // fn(&[Event]) -> Result<Vec<Finding>, Error>
/// }
/// ```
///
/// The version is the crate's `CARGO_PKG_VERSION`. The macro also declares `pub static DETECTOR:
/// qila_sdk::detect::Detector` for tests: [`detect::Detector::detect_values`] and [`detect::Detector::check`].
/// See [`detect`] for a complete example.
#[macro_export]
macro_rules! detector {
    (
        name: $name:expr,
        description: $description:expr,
        rules: $rules:expr,
        detect: $detect:expr $(,)?
    ) => {
        /// The detector, as the SDK sees it: its rules, and its detection behind the JSON boundary.
        pub static DETECTOR: $crate::detect::Detector = $crate::detect::Detector::new(
            $name,
            ::core::env!("CARGO_PKG_VERSION"),
            $description,
            $rules,
            $detect,
        );

        #[doc(hidden)]
        pub struct __QilaDetector;

        impl $crate::detector_bindings::Guest for __QilaDetector {
            fn describe_detector() -> $crate::detector_bindings::DetectorInfo {
                DETECTOR.info()
            }

            fn detect(
                batch: ::std::vec::Vec<$crate::detector_bindings::Json>,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::detector_bindings::Finding>,
                $crate::detector_bindings::Error,
            > {
                DETECTOR.detect(&batch).map_err(::core::convert::Into::into)
            }
        }

        // Only WebAssembly builds export the symbols: natively, several detectors can link into one test binary.
        #[cfg(target_arch = "wasm32")]
        $crate::detector_bindings::export!(__QilaDetector with_types_in $crate::detector_bindings);
    };
}

/// What an action module needs: `use qila_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{Context, Error, action, plugin};
    pub use schemars::JsonSchema;
    pub use serde::{Deserialize, Serialize};
}

/// Declares the plugin and exports it as the component's `describe` and `invoke`.
///
/// Invoke it once, at the root of the plugin's crate:
///
/// ```ignore
/// qila_sdk::plugin! {
///     name: "enrich",                     // the `<plugin>` of `<plugin>.<action>`
///     vendor: "Qila",
///     description: "Offline enrichment of indicators.",
///     actions: [classify_ip, parse_url],  // functions marked #[action], by name or path
/// }
/// ```
///
/// The version is the crate's `CARGO_PKG_VERSION`. The macro also declares `pub static PLUGIN: qila_sdk::Plugin`
/// for tests: [`Plugin::manifest`], [`Plugin::invoke_json`] and [`Plugin::check`].
#[macro_export]
macro_rules! plugin {
    (
        name: $name:expr,
        vendor: $vendor:expr,
        description: $description:expr,
        actions: [$($action:ty),+ $(,)?] $(,)?
    ) => {
        /// The plugin, as the SDK sees it: its manifest, and its actions behind their JSON boundary.
        pub static PLUGIN: $crate::Plugin = $crate::Plugin::new(
            $name,
            ::core::env!("CARGO_PKG_VERSION"),
            $vendor,
            $description,
            &[$(<$action>::ACTION),+],
        );

        #[doc(hidden)]
        pub struct __QilaPlugin;

        impl $crate::bindings::Guest for __QilaPlugin {
            fn describe() -> $crate::bindings::Manifest {
                PLUGIN.manifest()
            }

            fn invoke(
                action: ::std::string::String,
                input: $crate::bindings::Json,
                context: $crate::bindings::InvocationContext,
            ) -> ::core::result::Result<$crate::bindings::Json, $crate::bindings::Error> {
                PLUGIN
                    .invoke(&action, &input, &$crate::Context::from(context))
                    .map_err(::core::convert::Into::into)
            }
        }

        // Only WebAssembly builds export the symbols: natively, several plugins can then link into one test binary.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__QilaPlugin with_types_in $crate::bindings);
    };
}
