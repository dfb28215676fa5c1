//! The generation loop: prefill the prompt in chunks (evaluating only the caches), then
//! decode one token at a time with the model's cache, building the next step's graph
//! while the current one computes (as mlx-lm's `generate_step` does with `async_eval`).

use std::time::Instant;

use lamina_backbones::ModelCache;
use lamina_components::KvQuantization;
use lamina_families::LanguageModel;
use lamina_loader::Tokenizer;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, memory};
use serde::{Deserialize, Serialize};
use strum::Display;

use crate::constraint::Constraint;
use crate::error::{GenerateError, Result};
use crate::prompt_cache::shared_prefix;
use crate::sampler::SamplerConfig;
use crate::sequence::{
    SequenceState, ids_array, last_logits, no_buffer_cache_on_cpu, plan, prefill_quantizing,
};
use crate::speculative::{DraftParams, Speculation};

/// What to do when the prompt plus the new tokens would pass the model's maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Refuse with [`GenerateError::TooLong`](crate::GenerateError::TooLong).
    #[default]
    Error,
    /// Generate fewer tokens; drop the oldest prompt tokens if the prompt alone is too long.
    Truncate,
}

/// How to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// Sampling.
    pub sampler: SamplerConfig,
    /// Stop after any of these ids (they are not part of the output).
    pub eos_token_ids: Vec<u32>,
    /// Stop at any of these strings (they are not part of the output).
    pub stop_strings: Vec<String>,
    /// Prompt tokens per prefill chunk.
    pub prefill_step: usize,
    /// Past the model's maximum length.
    pub length_policy: LengthPolicy,
    /// What the output must match (a JSON schema, a regex, a grammar); see
    /// [`GrammarCompiler`](crate::GrammarCompiler).
    #[serde(skip)]
    pub constraint: Option<Constraint>,
    /// Speculative decoding: a draft model or prompt lookup proposes tokens the model
    /// checks several at a time (same output; see [`DraftParams`]).
    #[serde(skip)]
    pub draft: Option<DraftParams>,
    /// Keep at most this many positions in each attention layer's cache (a rotating
    /// window, mlx-lm's `max_kv_size`): bounded memory, the oldest positions forgotten.
    #[serde(default)]
    pub max_kv_size: Option<usize>,
    /// Store keys and values quantized once a full-attention cache passes
    /// [`KvQuantization::start`] positions (mlx-lm's `kv_bits`): long contexts in less memory,
    /// at a small cost in accuracy.
    #[serde(default)]
    pub kv_quantization: Option<KvQuantization>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_new_tokens: 256,
            sampler: SamplerConfig::default(),
            eos_token_ids: Vec::new(),
            stop_strings: Vec::new(),
            prefill_step: 512,
            length_policy: LengthPolicy::Error,
            constraint: None,
            draft: None,
            max_kv_size: None,
            kv_quantization: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence id.
    Eos,
    /// A stop string.
    StopString,
    /// `max_new_tokens`.
    MaxTokens,
    /// The model's maximum length.
    MaxLength,
}

/// Speed and memory of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Prompt tokens, those taken from a cache (`cached_prompt_tokens`) included.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from an earlier generation's cache instead of computed.
    #[serde(default)]
    pub cached_prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Prompt tokens computed per second (not counting cached ones), to the first new token.
    pub prompt_tokens_per_s: f64,
    /// New tokens per second after the first.
    pub generation_tokens_per_s: f64,
    /// MLX's peak memory during the generation.
    pub peak_memory_bytes: usize,
    /// Draft tokens proposed (speculative decoding; 0 without).
    #[serde(default)]
    pub draft_tokens: usize,
    /// Draft tokens the model accepted.
    #[serde(default)]
    pub accepted_draft_tokens: usize,
}

/// One generated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEvent {
    /// Its id.
    pub id: u32,
    /// The text it completes (empty while a character or a possible stop string is held
    /// back; always empty without a tokenizer).
    pub text: String,
}

/// The result of a whole generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// Generated ids (without the EOS id that ended generation).
    pub tokens: Vec<u32>,
    /// Their text (empty without a tokenizer).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Speed and memory.
    pub stats: GenerationStats,
}

/// A running generation; iterate it for tokens as they come, then call
/// [`Generation::output`].
pub struct Generation<'a> {
    model: &'a mut dyn LanguageModel,
    cache: ModelCache,
    state: SequenceState<'a>,
    next: Option<Array>,
    speculation: Option<Speculation>,
    kv: Option<KvQuantization>,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("tokens", &self.state.tokens)
            .field("finished", &self.state.finished)
            .finish()
    }
}

impl<'a> Generation<'a> {
    /// Prefills `prompt` and prepares to decode.
    ///
    /// # Errors
    /// [`GenerateError::EmptyPrompt`](crate::GenerateError::EmptyPrompt), [`GenerateError::TooLong`](crate::GenerateError::TooLong) (with
    /// [`LengthPolicy::Error`]), ids outside the vocabulary, MLX errors.
    pub fn start(
        model: &'a mut dyn LanguageModel,
        tokenizer: Option<&'a Tokenizer>,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<Self> {
        Self::start_from(model, tokenizer, None, prompt, params)
    }

    /// As [`Generation::start`], reusing `cached` (an earlier generation's cache, from
    /// [`Generation::into_cache`]) for the longest prefix of `prompt` it holds, trimmed to
    /// it: only the rest of the prompt is computed (the earlier turns of a chat are not).
    /// A cache that cannot be trimmed to the common prefix is not used.
    ///
    /// # Errors
    /// As [`Generation::start`].
    pub fn start_from(
        model: &'a mut dyn LanguageModel,
        tokenizer: Option<&'a Tokenizer>,
        cached: Option<CachedTokens>,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<Self> {
        let plan = plan(model, prompt, params)?;
        let prompt = plan.prompt(prompt);
        let kv = params.kv_quantization.map(KvQuantization::validated).transpose()?;
        no_buffer_cache_on_cpu()?;
        memory::reset_peak_memory()?;
        let started = Instant::now();
        let (mut cache, reused) = match cached {
            Some(CachedTokens { mut cache, tokens }) => {
                let reused = shared_prefix(&tokens, prompt).min(prompt.len() - 1);
                if reused > 0 && cache.can_trim_to(reused as i32) {
                    cache.trim(reused as i32)?;
                    (cache, reused)
                } else {
                    (fresh_cache(model, params)?, 0)
                }
            }
            None => (fresh_cache(model, params)?, 0),
        };
        let mut state = SequenceState::new(tokenizer, prompt, &plan, params, started)?;
        state.cached = reused;
        let logits =
            prefill_quantizing(model, &mut cache, &ids_array(&prompt[reused..]), params.prefill_step, kv)?;
        let first = state.sample(&logits)?;
        mlx_rs::transforms::async_eval([&first])?;
        let speculation = match &params.draft {
            Some(_) if params.constraint.is_some() => {
                return Err(GenerateError::Draft("a draft cannot be combined with a constraint".into()));
            }
            Some(draft) => Some(Speculation::start(draft, &params.sampler, prompt, model.info().vocab_size)?),
            None => None,
        };
        Ok(Generation { model, cache, state, next: Some(first), speculation, kv })
    }

    fn advance(&mut self) -> Result<Option<TokenEvent>> {
        if self.state.finished.is_some() {
            return Ok(None);
        }
        if let Some(speculation) = &mut self.speculation {
            let id = match self.next.take() {
                Some(first) => {
                    let id = first.try_index(0)?.item_exact::<i32>() as u32;
                    speculation.push_accepted(id);
                    id
                }
                None => {
                    if speculation.queue.is_empty() {
                        if let Some(how) = self.kv {
                            self.cache.quantize_past_start(how)?;
                        }
                        speculation.round(self.model, &mut self.cache, &mut self.state)?;
                    }
                    let Some(id) = speculation.queue.pop_front() else { return Ok(None) };
                    id
                }
            };
            return self.state.accept(id);
        }
        let Some(current) = self.next.take() else {
            return Ok(None);
        };
        // Build the following step's forward pass before waiting for this token (unless it
        // is the last allowed), and its sampling too unless that must see this token first
        // (a repetition penalty, a grammar): then it is built once the token is read, while
        // the forward pass computes.
        let mut logits = None;
        if self.state.may_continue() {
            let ahead = self.forward(&current)?;
            if self.state.samples_ahead() {
                self.next = Some(self.sample(&ahead)?);
            } else {
                mlx_rs::transforms::async_eval([&ahead])?;
                logits = Some(ahead);
            }
        }
        let id = current.try_index(0)?.item_exact::<i32>() as u32;
        let event = self.state.accept(id)?;
        if self.state.finished.is_none() && self.next.is_none() {
            let logits = match logits {
                Some(logits) => logits,
                None => self.forward(&current)?,
            };
            self.next = Some(self.sample(&logits)?);
        }
        Ok(event)
    }

    /// The logits after `token` (its cache quantized first where it has passed the start).
    fn forward(&mut self, token: &Array) -> Result<Array> {
        if let Some(how) = self.kv {
            self.cache.quantize_past_start(how)?;
        }
        last_logits(self.model, &mut self.cache, &token.reshape(&[1, 1])?)
    }

    fn sample(&mut self, logits: &Array) -> Result<Array> {
        let next = self.state.sample(logits)?;
        mlx_rs::transforms::async_eval([&next])?;
        Ok(next)
    }

    /// Ends the generation (running it to completion first) and returns the result.
    ///
    /// # Errors
    /// As the iteration.
    pub fn output(mut self) -> Result<GenerationOutput> {
        while self.advance()?.is_some() {}
        Ok(self.into_cache()?.0)
    }
}

impl Generation<'_> {
    /// Ends the generation where it is (a caller that stopped iterating early gets what was
    /// generated so far) and hands back the cache with the tokens it holds, for
    /// [`Generation::start_from`].
    ///
    /// # Errors
    /// When the detokenizer fails on the held-back text.
    pub fn into_cache(mut self) -> Result<(GenerationOutput, CachedTokens)> {
        self.state.flush()?;
        let mut output = self.state.output(memory::peak_memory()?);
        if let Some(speculation) = &self.speculation {
            output.stats.draft_tokens = speculation.proposed;
            output.stats.accepted_draft_tokens = speculation.accepted;
        }
        let held = (self.cache.offset().max(0) as usize).min(self.state.history.len());
        let tokens = self.state.history[..held].to_vec();
        Ok((output, CachedTokens { cache: self.cache, tokens }))
    }
}

/// The model's empty cache, bounded by `params.max_kv_size`.
fn fresh_cache(model: &dyn LanguageModel, params: &GenerateParams) -> Result<ModelCache> {
    let cache = model.make_cache()?;
    Ok(match params.max_kv_size {
        Some(max) => cache.bounded(i32::try_from(max).unwrap_or(i32::MAX))?,
        None => cache,
    })
}

/// A model's cache and the tokens it holds, in order.
#[derive(Debug)]
pub struct CachedTokens {
    /// The cache.
    pub cache: ModelCache,
    /// The tokens it holds.
    pub tokens: Vec<u32>,
}

impl Iterator for Generation<'_> {
    type Item = Result<TokenEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance().transpose()
    }
}

/// Generates to completion.
///
/// # Errors
/// As [`Generation::start`] and the iteration.
pub fn generate(
    model: &mut dyn LanguageModel,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    params: &GenerateParams,
) -> Result<GenerationOutput> {
    Generation::start(model, tokenizer, prompt, params)?.output()
}
