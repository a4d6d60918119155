//! One module per subcommand.

pub mod approve;
pub mod bench;
pub mod bench_siem;
pub mod conformance;
pub mod hunt;
pub mod ingest;
pub mod install;
pub mod package;
pub mod playbook;
pub mod plugin;
pub mod run;
pub mod runs;
pub mod serve;
pub mod token;
pub mod validate;

use std::io::Read;
use std::path::Path;

use qila_model::{ActionCatalog, Diagnostic, Diagnostics, Playbook};

/// Reads a playbook file; an unreadable file becomes a `FILE:1:1: cannot read file: ...` diagnostic, one that
/// is not UTF-8 a diagnostic at its first bad byte, one larger than the loader accepts a diagnostic (read from
/// its first bytes only).
pub fn read_playbook(path: &Path) -> Result<String, Diagnostics> {
    let file = path.display().to_string();
    let unreadable = |e: std::io::Error| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])
    };
    // Read one byte past the limit, so that the loader reports a larger file without it all in memory.
    let limit = qila_model::limits::MAX_SOURCE_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    qila_model::source_text(&bytes, &file).map(str::to_owned)
}

/// Reads and validates a playbook against `catalog`; unreadable files become a diagnostic too.
pub fn load_playbook(path: &Path, catalog: &dyn ActionCatalog) -> Result<Playbook, Diagnostics> {
    let source = read_playbook(path)?;
    Playbook::load(&source, &path.display().to_string(), catalog)
}
