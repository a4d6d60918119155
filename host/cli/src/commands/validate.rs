//! `qila validate`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Settings;
use crate::runtime::Runtime;

/// Validates every file and prints one `file:line:col: message` line per error; exit 2 when any is invalid.
pub async fn validate(settings: &Settings, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::open(settings).await?;
    // The plugins' actions plus the engine's built-in ones (`core.approval`, `core.sleep`, `core.playbook`).
    let catalog = runtime.playbook_catalog();
    let mut invalid = 0;
    for path in files {
        match super::load_playbook(path, &catalog) {
            Ok(pb) => eprintln!(
                "{}: ok ({} v{}, {} steps)",
                path.display(),
                pb.name,
                pb.version,
                pb.steps.len()
            ),
            Err(diagnostics) => {
                invalid += 1;
                println!("{diagnostics}");
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
