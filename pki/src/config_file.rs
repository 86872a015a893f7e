//! Reading a node's TOML config file: the one place the coordinator's and the smurfs' configs
//! are read and parsed, so both fail the same way (the file named, the cause below it). It lives
//! here, with the other farm files (`farm init` writes the configs).

use std::path::{Path, PathBuf};

/// A config file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// What reading said.
        source: std::io::Error,
    },
    /// The file is not a valid config (TOML syntax, unknown keys, wrong types).
    #[error("parsing {}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        source: toml::de::Error,
    },
}

/// Reads and parses the TOML config file at `path` (which keys are known is `T`'s business).
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_owned(),
        source,
    })
}
