//! Errors of the crate. Analysing bytes never fails (unreadable input is "not a bounce"); only
//! reading files for `inspect` can.

use std::path::PathBuf;

use thiserror::Error;

/// Why `inspect` could not read a file.
#[derive(Debug, Error)]
pub enum BounceError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}
