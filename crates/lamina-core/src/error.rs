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
    /// A token id lies outside the vocabulary.
    #[error("token id {id} is outside the vocabulary [0, {vocab_size})")]
    TokenOutOfRange {
        /// The offending id.
        id: i64,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// Token ids (or labels) are not integers.
    #[error("`{name}` must be integers, got {dtype}")]
    NotIntegers {
        /// The argument (`input_ids`, `labels`).
        name: &'static str,
        /// The dtype given.
        dtype: String,
    },
    /// A label lies outside `[0, classes)` and is not the ignore index.
    #[error("a label is outside [0, {classes}) and is not {ignore_index}")]
    LabelOutOfRange {
        /// The number of classes (the vocabulary for a language model).
        classes: i32,
        /// The label that means "not counted" (-100).
        ignore_index: i32,
    },
    /// A layer was given a cache of another kind.
    #[error("{layer} cannot use a {cache}")]
    CacheKind {
        /// The layer (`an attention layer`, `a Mamba mixer`).
        layer: &'static str,
        /// The kind of cache it was given.
        cache: &'static str,
    },
    /// A model cache holds a different number of layers than the model runs.
    #[error("the cache has {actual} layers, the model runs {expected} blocks")]
    CacheLayers {
        /// Block executions of the model.
        expected: usize,
        /// Layers in the cache.
        actual: usize,
    },
    /// A combination of inputs or settings lamina does not support.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A layer is already quantized, or already carries an adapter.
    #[error("{layer} already has {what}")]
    AlreadyApplied {
        /// The layer kind.
        layer: &'static str,
        /// What it already has (`quantization`, `a LoRA adapter`).
        what: &'static str,
    },
    /// A matrix's width is not a multiple of the quantization group size.
    #[error("{cols} columns are not a multiple of the group size {group_size}")]
    GroupSize {
        /// Columns of the matrix.
        cols: i32,
        /// The group size.
        group_size: i32,
    },
    /// A size from a config or file does not fit the integer type MLX shapes use, or an
    /// arithmetic on sizes overflowed.
    #[error("`{field}` of {config} is {value}, which does not fit {target}")]
    Overflow {
        /// The config (or file) the size comes from.
        config: &'static str,
        /// The field.
        field: String,
        /// The value, as given.
        value: u128,
        /// What it had to fit (`i32`, `u64`).
        target: &'static str,
    },
    /// Building the model would need more memory than allowed.
    #[error(
        "{config} describes a model of about {needed} bytes ({parameters} parameters), above the limit of {limit} bytes"
    )]
    TooLarge {
        /// The config.
        config: &'static str,
        /// Estimated parameters.
        parameters: u64,
        /// Estimated bytes.
        needed: u64,
        /// The limit.
        limit: u64,
    },
    /// A distributed group could not start, or a collective failed.
    #[error("distributed: {0}")]
    Distributed(String),
    /// A lamina kernel refused its inputs or failed.
    #[error("kernel: {0}")]
    Kernel(String),
    /// An internal invariant failed (a bug in lamina, not bad input).
    #[error("internal error: {0}")]
    Internal(&'static str),
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
    ///
    /// ```
    /// let err = lamina_core::Error::invalid("X", "n", "must be positive");
    /// assert_eq!(err.to_string(), "invalid X: `n` must be positive");
    /// ```
    pub fn invalid(config: &'static str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { config, field: field.into(), reason: reason.into() }
    }
}
