//! The training crate's error type.

use std::path::PathBuf;

/// A training result.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// What can go wrong while training, adapting or quantizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The model failed (shapes, configs, labels).
    #[error(transparent)]
    Model(#[from] lamina_core::Error),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Loader(#[from] lamina_loader::LoaderError),
    /// MLX failed.
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Adapters do not fit the model.
    #[error("{}: {reason}", path.display())]
    Adapters {
        /// The adapter file or folder.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The training data cannot be used.
    #[error("training data: {0}")]
    Data(String),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}

/// Reads a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| TrainError::Json { path: path.to_path_buf(), source })
}

/// Writes a JSON file.
pub(crate) fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|source| TrainError::Json { path: path.to_path_buf(), source })?;
    std::fs::write(path, text + "\n").map_err(|e| TrainError::io(path, e))
}
