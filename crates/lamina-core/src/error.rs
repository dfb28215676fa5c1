//! The error type of lamina-core, which the other crates' errors wrap.

use std::path::PathBuf;

/// A lamina-core result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lamina-core: bad configs, unparsable JSON, a value
/// outside a closed set, a tensor of the wrong shape, or an error raised by MLX.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value failed validation or a cross-field check.
    #[error("invalid {config}: `{field}` {reason}")]
    InvalidConfig {
        /// The config type, e.g. `AttentionConfig`.
        config: &'static str,
        /// The offending field (or fields, comma-separated).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON document could not be parsed into a config.
    #[error("cannot parse {what} as JSON: {source}")]
    Json {
        /// What was being parsed (a file name or a config type).
        what: String,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A string names no member of a closed set.
    #[error("unknown {kind} `{value}` (known: {known})")]
    UnknownVariant {
        /// The set, e.g. `dtype`.
        kind: &'static str,
        /// The string given.
        value: String,
        /// The members of the set, comma-separated.
        known: String,
    },
    /// A tensor does not have the shape its consumer needs.
    #[error("`{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        /// The tensor (a parameter key or an argument name).
        name: String,
        /// The shape that was needed (`-1` for any size).
        expected: Vec<i32>,
        /// The shape that was given.
        actual: Vec<i32>,
    },
    /// An input to a forward pass is malformed (an id outside the vocabulary, a cache of
    /// the wrong kind, inconsistent batch sizes, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// MLX raised an error while building or evaluating a graph.
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
}

impl Error {
    /// An [`Error::InvalidConfig`] for `field` of `config`.
    pub fn invalid(config: &'static str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { config, field: field.into(), reason: reason.into() }
    }
}
