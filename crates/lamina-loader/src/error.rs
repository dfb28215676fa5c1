//! The loader's error type: every variant names the file (and key) it is about.

use std::path::PathBuf;

use crate::report::LoadReport;

/// A loader result.
pub type Result<T, E = LoaderError> = std::result::Result<T, E>;

/// What can go wrong while loading a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    /// The path is not a checkpoint lamina can read.
    #[error("{}: {reason}", path.display())]
    NotACheckpoint {
        /// The path given.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed or lacks a required key.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file is truncated or corrupt.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A GGUF file is truncated, corrupt or of an unsupported kind.
    #[error("{}: {reason}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor has a dtype lamina cannot hold.
    #[error("{}: tensor `{key}` has unsupported dtype {dtype}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// The shard index names a file that does not exist.
    #[error("{}: names shard `{shard}`, which does not exist", index.display())]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The missing shard's file name.
        shard: String,
    },
    /// The shard index names a file outside the checkpoint folder (an absolute path, a
    /// `..`, or a link leading out of the folder and, for a Hugging Face cache snapshot,
    /// out of the cache entry's `blobs/`).
    #[error("{}: shard `{shard}` lies outside the checkpoint", index.display())]
    OutsideCheckpoint {
        /// The index file.
        index: PathBuf,
        /// The offending entry, as written.
        shard: String,
    },
    /// The checkpoint's tensors do not match the model (strict loading).
    #[error("{0}")]
    Mismatch(LoadReport),
    /// Loading would need more memory than the caller allows.
    #[error("loading needs about {needed} bytes, above the limit of {limit} bytes")]
    MemoryLimit {
        /// Estimated bytes.
        needed: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The tokenizer files cannot be used.
    #[error("{}: {reason}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The config or model is invalid.
    #[error("{}: {source}", path.display())]
    Model {
        /// The file the problem comes from (usually `config.json`).
        path: PathBuf,
        /// The model layer's error.
        #[source]
        source: lamina_core::Error,
    },
    /// MLX failed.
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
    /// The Hub could not give the checkpoint.
    #[cfg(feature = "hub")]
    #[error("{0}")]
    Hub(Box<crate::hub::HubError>),
    /// A loading task panicked or was cancelled.
    #[error("a loading task failed: {0}")]
    Task(String),
}

#[cfg(feature = "hub")]
impl From<crate::hub::HubError> for LoaderError {
    fn from(error: crate::hub::HubError) -> Self {
        LoaderError::Hub(Box::new(error))
    }
}

impl LoaderError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoaderError::Io { path: path.into(), source }
    }

    /// A model-layer error about `path`; a config too large for the memory limit is the
    /// same [`LoaderError::MemoryLimit`] the tensors' sizes give.
    pub fn model(path: impl Into<PathBuf>, source: lamina_core::Error) -> Self {
        match source {
            lamina_core::Error::TooLarge { needed, limit, .. } => LoaderError::MemoryLimit { needed, limit },
            source => LoaderError::Model { path: path.into(), source },
        }
    }
}
