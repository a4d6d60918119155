//! One module per subcommand.

pub mod bench;
pub mod plugin;
pub mod run;
pub mod validate;

use std::path::Path;

use qila_model::{Diagnostic, Diagnostics, Playbook};

use crate::runtime::Plugins;

/// Reads and validates a playbook against the loaded plugins; unreadable files become a diagnostic too.
pub fn load_playbook(path: &Path, plugins: &Plugins) -> Result<Playbook, Diagnostics> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: file.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])
    })?;
    Playbook::load(&source, &file, plugins)
}
