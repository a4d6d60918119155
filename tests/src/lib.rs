//! Paths the end-to-end tests need, written by `build.rs`: the workspace root, the hostile plugins
//! (`HOSTILE_SPIN`, ...) it builds, and the bundled plugins (`BUNDLED_CORE`, ...) that the `qila` binary's build
//! leaves in `target/wasm-plugins` — the tests build `qila` (through escargot) before they read those.

include!(concat!(env!("OUT_DIR"), "/paths.rs"));
