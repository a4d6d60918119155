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

use std::path::Path;

use qila_model::{ActionCatalog, Diagnostic, Diagnostics, Playbook};

/// Reads a playbook file; an unreadable file becomes a `FILE:1:1: cannot read file: ...` diagnostic.
pub fn read_playbook(path: &Path) -> Result<String, Diagnostics> {
    std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])
    })
}

/// Reads and validates a playbook against `catalog`; unreadable files become a diagnostic too.
pub fn load_playbook(path: &Path, catalog: &dyn ActionCatalog) -> Result<Playbook, Diagnostics> {
    let source = read_playbook(path)?;
    Playbook::load(&source, &path.display().to_string(), catalog)
}
