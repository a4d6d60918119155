//! Compiled components cached on disk by content digest and engine configuration.
//!
//! Compiling a component with Cranelift takes tens of milliseconds; loading a precompiled one takes well under a
//! millisecond. The cache file name is `<sha256 of the component>-<engine compatibility hash>.cwasm`, so a new
//! wasmtime version or configuration never loads an incompatible artifact.
//!
//! Loading a precompiled artifact runs its machine code without re-verifying it, so the cache directory must be
//! writable only by the account that runs Qila — the same trust as the `qila` binary itself.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::SandboxError;

/// Where compiled components are kept, if anywhere.
#[derive(Debug, Clone)]
pub(crate) struct ComponentCache {
    dir: Option<PathBuf>,
    engine_tag: String,
}

impl ComponentCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    fn path_for(&self, digest: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_tag)))
    }

    /// The component for `bytes` (whose SHA-256 is `digest`), from the cache or freshly compiled and cached.
    #[expect(unsafe_code, reason = "deserialises a cached compiled component")]
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> Result<Component, SandboxError> {
        check_component_header(bytes)?;
        if let Some(path) = self.path_for(digest) {
            if path.exists() {
                // SAFETY: the file was written by `store` below from a component compiled by an engine with the same
                // compatibility hash (it is in the name); the cache directory is trusted like the binary (module docs).
                match unsafe { Component::deserialize_file(engine, &path) } {
                    Ok(component) => return Ok(component),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached component")
                    }
                }
            }
            let component = compile(engine, bytes)?;
            if let Err(e) = store(&component, &path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
            }
            return Ok(component);
        }
        compile(engine, bytes)
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, SandboxError> {
    Component::new(engine, bytes)
        .map_err(|e| SandboxError::Contract(format!("cannot compile component: {e:#}")))
}

/// Writes the compiled component atomically (temporary file, then rename), so a crash never leaves half a file.
fn store(component: &Component, path: &Path) -> Result<(), SandboxError> {
    let io = |e| SandboxError::Io(path.to_path_buf(), e);
    let serialized = component
        .serialize()
        .map_err(|e| SandboxError::Contract(format!("{e:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Tells a component from a core module or from something that is not WebAssembly, for a clear error.
fn check_component_header(bytes: &[u8]) -> Result<(), SandboxError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(SandboxError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        ));
    }
    // Bytes 6..8 are the layer: 0 for a core module, 1 for a component.
    match bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err(SandboxError::NotAComponent(
            "this is a core WebAssembly module; build the plugin for the wasm32-wasip2 target (or wrap the module \
             with `wasm-tools component new`)"
                .into(),
        )),
        _ => Err(SandboxError::NotAComponent("unknown WebAssembly layer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_modules_from_components() {
        assert!(check_component_header(b"\0asm\x0d\0\x01\0").is_ok());
        let e = check_component_header(b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("core WebAssembly module"), "{e}");
        let e = check_component_header(b"PK\x03\x04zip!")
            .unwrap_err()
            .to_string();
        assert!(e.contains("magic"), "{e}");
    }
}
