//! # lamina-generate
//!
//! Text generation on any [`LanguageModel`](lamina_families::LanguageModel):
//!
//! - [`Sampler`]: a pipeline of [`LogitsTransform`]s (repetition penalty, top-p, min-p,
//!   top-k) and a draw at a temperature, with its own seeded random state;
//! - [`Generation`]: prefill in chunks, then decode with the model's cache, streaming
//!   [`TokenEvent`]s whose text never breaks a UTF-8 character, stopping at EOS ids, stop
//!   strings, `max_new_tokens` or the model's maximum length;
//! - [`ChatTemplate`]: the checkpoint's Jinja chat template, rendered with minijinja;
//! - [`ModelContainer`]: a thread-safe handle (model + tokenizer + configuration) that
//!   many tasks can use at once, with async streaming.
#![deny(missing_docs)]

mod chat;
mod container;
mod detokenizer;
mod error;
mod generate;
mod sampler;
mod stop;

pub use chat::{ChatTemplate, Message, Role};
pub use container::{GenerationStream, ModelConfiguration, ModelContainer, ModelContext, StreamEvent};
pub use detokenizer::StreamingDetokenizer;
pub use error::{GenerateError, Result};
pub use generate::{
    FinishReason, GenerateParams, Generation, GenerationOutput, GenerationStats, LengthPolicy, TokenEvent,
    generate,
};
pub use sampler::{LogitsTransform, MinP, RepetitionPenalty, Sampler, SamplerConfig, TopK, TopP};
pub use stop::{StopCheck, StopStrings};
/// The async stream trait [`GenerationStream`] implements (from `tokio-stream`).
pub use tokio_stream::{Stream, StreamExt};
