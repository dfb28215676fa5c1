//! The generation crate's error type.

/// A generation result.
pub type Result<T, E = GenerateError> = std::result::Result<T, E>;

/// What can go wrong while generating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The model failed (shapes, ids, cache).
    #[error(transparent)]
    Model(#[from] lamina_core::Error),
    /// The tokenizer failed.
    #[error(transparent)]
    Loader(#[from] lamina_loader::LoaderError),
    /// MLX failed.
    #[error("MLX: {0}")]
    Mlx(#[from] mlx_rs::error::Exception),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The request needs something the model does not have (a tokenizer, a template).
    #[error("{0}")]
    Unavailable(String),
    /// The prompt plus the new tokens would pass the model's maximum length.
    #[error("{prompt} prompt tokens + {requested} new tokens exceed the model's maximum length of {max}")]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// New tokens asked for.
        requested: usize,
        /// The model's maximum.
        max: usize,
    },
    /// The prompt is empty.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// A saved prompt cache cannot be used.
    #[error("prompt cache {path}: {reason}")]
    PromptCache {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A constraint's grammar is invalid, unsupported or unsatisfiable, the tokenizer cannot
    /// express it, or it allows no token where generation must go on.
    #[error("{0}")]
    Grammar(String),
    /// Speculative decoding cannot run as asked (a draft of another vocabulary, no draft
    /// tokens, a draft combined with a constraint).
    #[error("speculative decoding: {0}")]
    Draft(String),
    /// A background task failed.
    #[error("a generation task failed: {0}")]
    Task(String),
}
