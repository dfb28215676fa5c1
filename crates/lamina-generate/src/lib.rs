//! # lamina-generate
//!
//! Text generation on any [`LanguageModel`](lamina_families::LanguageModel):
//!
//! - [`Sampler`]: a pipeline of [`LogitsTransform`]s (repetition penalty, top-p, min-p,
//!   top-k) and a draw at a temperature, with its own seeded random state;
//! - [`Generation`]: prefill in chunks, then decode with the model's cache, streaming
//!   [`TokenEvent`]s whose text never breaks a UTF-8 character, stopping at EOS ids, stop
//!   strings, `max_new_tokens` or the model's maximum length;
//! - [`GrammarCompiler`] / [`Constraint`]: output held to a JSON schema, a regular
//!   expression or a Lark grammar (llguidance's token masks; the `constrained` feature);
//! - [`DraftParams`]: speculative decoding with a draft model or prompt lookup;
//! - [`ChatTemplate`]: the checkpoint's Jinja chat template, rendered with minijinja;
//! - [`ModelContainer`]: a thread-safe handle (model + tokenizer + configuration) that
//!   many tasks can use at once, with async streaming.
//!
//! ```
//! use lamina_generate::{GenerateParams, generate};
//!
//! let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/checkpoints/gemma2_softcap");
//! let mut loaded = lamina_loader::load_blocking(folder, Default::default()).unwrap();
//! let params = GenerateParams { max_new_tokens: 6, ..GenerateParams::default() };
//! let out = generate(loaded.model.as_mut(), None, &[3, 14, 15, 92], &params).unwrap();
//! assert_eq!(out.tokens.len(), 6);
//! // Greedy decoding is deterministic.
//! assert_eq!(generate(loaded.model.as_mut(), None, &[3, 14, 15, 92], &params).unwrap().tokens, out.tokens);
//! ```
#![deny(missing_docs)]

mod batch;
mod chat;
#[cfg_attr(not(feature = "constrained"), path = "constraint_off.rs")]
mod constraint;
mod container;
mod detokenizer;
mod error;
mod generate;
mod grammar;
mod prompt_cache;
mod sampler;
mod sequence;
mod speculative;
mod stop;

pub use batch::{
    BatchConfig, BatchEvent, BatchGenerator, BatchRequest, SequenceId, TokenLogprobs, batch_generate,
    check_kv_quantization,
};
pub use chat::{ChatInput, ChatTemplate, Message, Role};
pub use constraint::{Constraint, Grammar, GrammarCompiler};
pub use container::{GenerationStream, ModelConfiguration, ModelContainer, ModelContext, StreamEvent};
pub use detokenizer::StreamingDetokenizer;
pub use error::{GenerateError, Result};
pub use generate::{
    CachedTokens, FinishReason, GenerateParams, Generation, GenerationOutput, GenerationStats, LengthPolicy,
    TokenEvent, generate,
};
/// How a KV cache is quantized ([`GenerateParams::kv_quantization`],
/// [`BatchConfig::kv_quantization`]).
pub use lamina_components::KvQuantization;
pub use prompt_cache::{CacheHit, PromptCache, load_prompt_cache, save_prompt_cache};
pub use sampler::{
    LogitBias, LogitsTransform, MinP, OccurrencePenalty, RepetitionPenalty, Sampler, SamplerConfig, TopK,
    TopP,
};
pub use speculative::{DraftParams, DraftSource, SharedModel};
pub use stop::{StopCheck, StopStrings};
/// The async stream trait [`GenerationStream`] implements (from `tokio-stream`).
pub use tokio_stream::{Stream, StreamExt};
