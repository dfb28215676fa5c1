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
    /// Adapters do not fit the model.
    #[error("{}: {reason}", path.display())]
    Adapters {
        /// The adapter file or folder.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A dataset file's row cannot be used.
    #[error("{}:{line}: {reason}", path.display())]
    Dataset {
        /// The file.
        path: PathBuf,
        /// The 1-based line (0 for the file as a whole).
        line: usize,
        /// What is wrong with it.
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
