use std::path::PathBuf;

/// Why rules could not be loaded at all (a rule that fails on its own is reported in the
/// [`LoadReport`](crate::LoadReport) instead).
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A rule path given by the user does not exist or cannot be read.
    #[error("cannot read rules from {}: {source}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A processing pipeline is malformed.
    #[error("pipeline {}: {reason}", .path.display())]
    Pipeline {
        /// The pipeline file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
