//! The generation loop: prefill the prompt in chunks (evaluating only the caches), then
//! decode one token at a time with the model's cache, building the next step's graph
//! while the current one computes (as mlx-lm's `generate_step` does with `async_eval`).

use std::collections::HashSet;
use std::time::Instant;

use lamina_backbones::ModelCache;
use lamina_families::LanguageModel;
use lamina_heads::ModelInput;
use lamina_loader::Tokenizer;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp};
use mlx_rs::{Array, memory};
use serde::{Deserialize, Serialize};
use strum::Display;

use crate::detokenizer::StreamingDetokenizer;
use crate::error::{GenerateError, Result};
use crate::sampler::{Sampler, SamplerConfig};
use crate::stop::{StopCheck, StopStrings};

/// What to do when the prompt plus the new tokens would pass the model's maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LengthPolicy {
    /// Refuse with [`GenerateError::TooLong`].
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
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Prompt tokens per second (prompt tokens / time to the first new token).
    pub prompt_tokens_per_s: f64,
    /// New tokens per second after the first.
    pub generation_tokens_per_s: f64,
    /// MLX's peak memory during the generation.
    pub peak_memory_bytes: usize,
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
    sampler: Sampler,
    detokenizer: Option<StreamingDetokenizer<'a>>,
    stops: StopStrings,
    eos: HashSet<u32>,
    history: Vec<u32>,
    prompt_len: usize,
    budget: usize,
    budget_reason: FinishReason,
    next: Option<Array>,
    tokens: Vec<u32>,
    text: String,
    finished: Option<FinishReason>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("tokens", &self.tokens).field("finished", &self.finished).finish()
    }
}

/// Runs the model on `ids` with the cache; returns the last position's logits `[1, V]`.
fn last_logits(model: &mut dyn LanguageModel, cache: &mut ModelCache, ids: &Array) -> Result<Array> {
    let input = ModelInput { check_ids: false, ..ModelInput::new(ids).with_cache(cache) };
    Ok(model.forward(input)?.logits.index((.., -1, ..)))
}

impl<'a> Generation<'a> {
    /// Prefills `prompt` and prepares to decode.
    ///
    /// # Errors
    /// [`GenerateError::EmptyPrompt`], [`GenerateError::TooLong`] (with
    /// [`LengthPolicy::Error`]), ids outside the vocabulary, MLX errors.
    pub fn start(
        model: &'a mut dyn LanguageModel,
        tokenizer: Option<&'a Tokenizer>,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let info = model.info();
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= info.vocab_size) {
            return Err(lamina_core::Error::TokenOutOfRange {
                id: i64::from(bad),
                vocab_size: info.vocab_size,
            }
            .into());
        }
        let mut prompt = prompt;
        let (mut budget, mut budget_reason) = (params.max_new_tokens, FinishReason::MaxTokens);
        if let Some(max) = info.max_position_embeddings {
            if prompt.len() + params.max_new_tokens > max {
                match params.length_policy {
                    LengthPolicy::Error => {
                        return Err(GenerateError::TooLong {
                            prompt: prompt.len(),
                            requested: params.max_new_tokens,
                            max,
                        });
                    }
                    LengthPolicy::Truncate => {
                        if prompt.len() >= max {
                            prompt = &prompt[prompt.len() + 1 - max..];
                        }
                        budget = max - prompt.len();
                        budget_reason = FinishReason::MaxLength;
                    }
                }
            }
        }
        memory::reset_peak_memory()?;
        let started = Instant::now();
        let mut cache = model.make_cache()?;
        let step = params.prefill_step.max(1);
        let as_array = |ids: &[u32]| {
            Array::from_slice(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, ids.len() as i32])
        };
        let mut rest = prompt;
        while rest.len() > 1 {
            let n = step.min(rest.len() - 1);
            let chunk = as_array(&rest[..n]);
            model
                .forward(ModelInput { check_ids: false, ..ModelInput::new(&chunk).with_cache(&mut cache) })?;
            cache.eval()?;
            rest = &rest[n..];
        }
        let mut sampler = Sampler::new(&params.sampler)?;
        let logits = last_logits(model, &mut cache, &as_array(rest))?;
        let first = sampler.sample(&logits, prompt)?;
        mlx_rs::transforms::async_eval([&first])?;
        Ok(Generation {
            model,
            cache,
            sampler,
            detokenizer: tokenizer.map(StreamingDetokenizer::new),
            stops: StopStrings::new(&params.stop_strings),
            eos: params.eos_token_ids.iter().copied().collect(),
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            budget,
            budget_reason,
            next: Some(first),
            tokens: Vec::new(),
            text: String::new(),
            finished: if budget == 0 { Some(budget_reason) } else { None },
            started,
            first_token: None,
            last_token: None,
        })
    }

    fn advance(&mut self) -> Result<Option<TokenEvent>> {
        if self.finished.is_some() {
            return Ok(None);
        }
        let Some(current) = self.next.take() else {
            return Ok(None);
        };
        // Build the following step before waiting for this one, unless the sampler must
        // see this token first (repetition penalty) or this is the last step allowed.
        let pipelined = !self.sampler.needs_history() && self.tokens.len() + 1 < self.budget;
        if pipelined {
            let following = self.step(&current)?;
            mlx_rs::transforms::async_eval([&following])?;
            self.next = Some(following);
        }
        let id = current.try_index(0)?.item_exact::<i32>() as u32;
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        if self.eos.contains(&id) {
            self.finished = Some(FinishReason::Eos);
            return Ok(None);
        }
        self.tokens.push(id);
        self.history.push(id);
        let mut text = match &mut self.detokenizer {
            Some(d) => d.push(id)?,
            None => String::new(),
        };
        match self.stops.push(&text) {
            StopCheck::Continue(released) => text = released,
            StopCheck::Stop(before, _) => {
                self.text.push_str(&before);
                self.finished = Some(FinishReason::StopString);
                return Ok(Some(TokenEvent { id, text: before }));
            }
        }
        if self.tokens.len() >= self.budget {
            self.finished = Some(self.budget_reason);
        } else if !pipelined {
            let following = self.step(&current)?;
            mlx_rs::transforms::async_eval([&following])?;
            self.next = Some(following);
        }
        self.text.push_str(&text);
        Ok(Some(TokenEvent { id, text }))
    }

    fn step(&mut self, token: &Array) -> Result<Array> {
        let logits = last_logits(self.model, &mut self.cache, &token.reshape(&[1, 1])?)?;
        Ok(self.sampler.sample(&logits, &self.history)?)
    }

    /// Ends the generation (running it to completion first) and returns the result.
    ///
    /// # Errors
    /// As the iteration.
    pub fn output(mut self) -> Result<GenerationOutput> {
        while self.advance()?.is_some() {}
        let mut tail = match &mut self.detokenizer {
            Some(d) => d.finish()?,
            None => String::new(),
        };
        if self.finished != Some(FinishReason::StopString) {
            tail = format!("{}{tail}", self.stops.flush());
            self.text.push_str(&tail);
        }
        let finish_reason = self.finished.unwrap_or(FinishReason::MaxTokens);
        let first = self.first_token.unwrap_or(self.started);
        let prompt_seconds = first.duration_since(self.started).as_secs_f64();
        let decode_seconds = self.last_token.unwrap_or(first).duration_since(first).as_secs_f64();
        let stats = GenerationStats {
            prompt_tokens: self.prompt_len,
            generated_tokens: self.tokens.len(),
            prompt_tokens_per_s: if prompt_seconds > 0.0 {
                self.prompt_len as f64 / prompt_seconds
            } else {
                0.0
            },
            generation_tokens_per_s: if decode_seconds > 0.0 && self.tokens.len() > 1 {
                (self.tokens.len() - 1) as f64 / decode_seconds
            } else {
                0.0
            },
            peak_memory_bytes: memory::peak_memory()?,
        };
        Ok(GenerationOutput { tokens: self.tokens, text: self.text, finish_reason, stats })
    }
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
