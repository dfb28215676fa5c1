//! JSON files (configs, indexes, adapter and trainer state), with errors naming the file.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{LoaderError, Result};

/// Reads and parses a JSON file.
///
/// # Errors
/// [`LoaderError::Io`] or [`LoaderError::Json`] naming the file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| LoaderError::io(path, e))?;
    parse_json(path, &text)
}

/// Parses the text of the JSON file `path`.
pub(crate) fn parse_json<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| LoaderError::Json { path: path.to_path_buf(), source })
}

/// Writes `value` as pretty-printed JSON with a final newline.
///
/// # Errors
/// [`LoaderError::Io`] or [`LoaderError::Json`] naming the file.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| LoaderError::Json { path: path.to_path_buf(), source })?;
    std::fs::write(path, text + "\n").map_err(|e| LoaderError::io(path, e))
}
