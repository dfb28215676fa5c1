//! What every generated sequence tracks, alone or in a batch: the length plan, the
//! prefill, and the bookkeeping of each new token (EOS ids, detokenizing, stop strings,
//! the token budget, timing).

use std::collections::HashSet;
use std::time::Instant;

use lamina_backbones::ModelCache;
use lamina_families::LanguageModel;
use lamina_heads::ModelInput;
use lamina_loader::Tokenizer;
use mlx_rs::Array;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp};

use crate::constraint::{Constraint, ConstraintState};
use crate::detokenizer::StreamingDetokenizer;
use crate::error::{GenerateError, Result};
use crate::generate::{
    FinishReason, GenerateParams, GenerationOutput, GenerationStats, LengthPolicy, TokenEvent,
};
use crate::sampler::Sampler;
use crate::stop::{StopCheck, StopStrings};

/// Which part of a prompt will be processed and how many tokens may follow it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Leading prompt tokens dropped by [`LengthPolicy::Truncate`].
    skip: usize,
    pub budget: usize,
    pub budget_reason: FinishReason,
}

impl Plan {
    /// The tokens of `prompt` (the one the plan was made for) that will be processed.
    pub fn prompt<'p>(&self, prompt: &'p [u32]) -> &'p [u32] {
        &prompt[self.skip.min(prompt.len())..]
    }
}

/// Checks the prompt against the model and applies the length policy.
pub(crate) fn plan(model: &dyn LanguageModel, prompt: &[u32], params: &GenerateParams) -> Result<Plan> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let info = model.info();
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= info.vocab_size) {
        return Err(
            lamina_core::Error::TokenOutOfRange { id: i64::from(bad), vocab_size: info.vocab_size }.into()
        );
    }
    let mut plan = Plan { skip: 0, budget: params.max_new_tokens, budget_reason: FinishReason::MaxTokens };
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
                        plan.skip = prompt.len() + 1 - max;
                    }
                    plan.budget = max - (prompt.len() - plan.skip);
                    plan.budget_reason = FinishReason::MaxLength;
                }
            }
        }
    }
    Ok(plan)
}

/// `[1, L]` int32 ids.
pub(crate) fn ids_array(ids: &[u32]) -> Array {
    Array::from_slice(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, ids.len() as i32])
}

/// Runs `ids` through the model with the cache; the last position's logits `[B, V]`.
pub(crate) fn last_logits(
    model: &mut dyn LanguageModel,
    cache: &mut ModelCache,
    ids: &Array,
) -> Result<Array> {
    let input =
        ModelInput { check_ids: false, last_position_only: true, ..ModelInput::new(ids).with_cache(cache) };
    Ok(model.forward(input)?.logits.index((.., -1, ..)))
}

/// Generation on the CPU keeps no freed MLX buffers: MLX's buffer cache holds every array a
/// prompt's layers freed (~20 MB of a 256-token SmolLM2 prompt), and on the CPU, where the
/// allocator behind it is malloc's, reusing them saves nothing measurable (decode and
/// prefill speed unchanged; peak RSS of a whole generate process 190 -> 169 MiB). Sets
/// MLX's process-wide cache limit to 0 when the default device is the CPU.
///
/// # Errors
/// When MLX fails.
pub(crate) fn no_buffer_cache_on_cpu() -> Result<()> {
    if lamina_components::on_cpu() {
        mlx_rs::memory::set_cache_limit(0)?;
    }
    Ok(())
}

/// Feeds `ids [B, L]` in chunks of `step` positions (evaluating only the cache after each
/// but the last); returns the last position's logits `[B, V]`.
pub(crate) fn prefill(
    model: &mut dyn LanguageModel,
    cache: &mut ModelCache,
    ids: &Array,
    step: usize,
) -> Result<Array> {
    prefill_quantizing(model, cache, ids, step, None)
}

/// As [`prefill`], quantizing the cache's full-attention layers once they pass `kv`'s start
/// (checked before each chunk, as mlx-lm does).
pub(crate) fn prefill_quantizing(
    model: &mut dyn LanguageModel,
    cache: &mut ModelCache,
    ids: &Array,
    step: usize,
    kv: Option<lamina_components::KvQuantization>,
) -> Result<Array> {
    let (len, step) = (ids.dim(1), i32::try_from(step.max(1)).unwrap_or(i32::MAX));
    let mut start = 0;
    let quantize = |cache: &mut ModelCache| kv.map_or(Ok(()), |how| cache.quantize_past_start(how));
    while len - start > step {
        quantize(cache)?;
        let chunk = ids.try_index((.., start..start + step))?;
        model.forward(ModelInput { check_ids: false, ..ModelInput::new(&chunk).with_cache(cache) })?;
        cache.eval()?;
        start += step;
    }
    quantize(cache)?;
    last_logits(model, cache, &ids.try_index((.., start..))?)
}

/// The per-token bookkeeping of one sequence.
pub(crate) struct SequenceState<'t> {
    pub sampler: Sampler,
    constraint: Option<ConstraintState>,
    detokenizer: Option<StreamingDetokenizer<'t>>,
    stops: StopStrings,
    eos: HashSet<u32>,
    /// Prompt and every token read since, EOS included: the ids the cache was fed.
    pub history: Vec<u32>,
    prompt_len: usize,
    /// Prompt tokens taken from a cache (not computed).
    pub cached: usize,
    budget: usize,
    budget_reason: FinishReason,
    pub tokens: Vec<u32>,
    text: String,
    pub finished: Option<FinishReason>,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl<'t> SequenceState<'t> {
    /// State for a sequence whose processed prompt is `prompt` (the plan's part of it).
    pub fn new(
        tokenizer: Option<&'t Tokenizer>,
        prompt: &[u32],
        plan: &Plan,
        params: &GenerateParams,
        started: Instant,
    ) -> Result<Self> {
        Ok(SequenceState {
            sampler: Sampler::new(&params.sampler)?,
            constraint: params.constraint.as_ref().map(Constraint::start),
            detokenizer: tokenizer.map(StreamingDetokenizer::new),
            stops: StopStrings::new(&params.stop_strings),
            eos: params.eos_token_ids.iter().copied().collect(),
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            cached: 0,
            budget: plan.budget,
            budget_reason: plan.budget_reason,
            tokens: Vec::new(),
            text: String::new(),
            finished: if plan.budget == 0 { Some(plan.budget_reason) } else { None },
            started,
            first_token: None,
            last_token: None,
        })
    }

    /// Whether the next token can be sampled before this one is read: nothing reads the
    /// history (a repetition penalty does, and a grammar's matcher).
    pub fn samples_ahead(&self) -> bool {
        !self.sampler.needs_history() && self.constraint.is_none()
    }

    /// Tokens the budget still allows.
    pub fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.tokens.len())
    }

    /// Whether the budget leaves room for a token after the next.
    pub fn may_continue(&self) -> bool {
        self.tokens.len() + 1 < self.budget
    }

    /// Draws the next token from `logits [1, V]` (`[B, V]` without a constraint): the
    /// grammar's mask is computed while MLX computes the logits, then added to them.
    pub fn sample(&mut self, logits: &Array) -> Result<Array> {
        let Some(constraint) = &mut self.constraint else {
            return Ok(self.sampler.sample(logits, &self.history)?);
        };
        mlx_rs::transforms::async_eval([logits])?;
        let masked = constraint.apply(logits, &self.eos)?;
        Ok(self.sampler.sample(&masked, &self.history)?)
    }

    /// Takes a new token: `None` for an EOS id; sets `finished` when the sequence ends.
    pub fn accept(&mut self, id: u32) -> Result<Option<TokenEvent>> {
        let now = Instant::now();
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.history.push(id);
        if self.eos.contains(&id) {
            self.finished = Some(FinishReason::Eos);
            return Ok(None);
        }
        self.tokens.push(id);
        if let Some(constraint) = &mut self.constraint {
            constraint.consume(id)?;
        }
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
        } else if self.constraint.as_ref().is_some_and(ConstraintState::is_complete) {
            self.finished = Some(FinishReason::Eos);
        }
        self.text.push_str(&text);
        Ok(Some(TokenEvent { id, text }))
    }

    /// Text still held back when the sequence ends (an incomplete character, a possible
    /// stop string that never completed); added to the output's text.
    pub fn flush(&mut self) -> Result<String> {
        let mut tail = match &mut self.detokenizer {
            Some(d) => d.finish()?,
            None => String::new(),
        };
        if self.finished != Some(FinishReason::StopString) {
            tail = format!("{}{tail}", self.stops.flush());
            self.text.push_str(&tail);
        } else {
            tail.clear();
        }
        Ok(tail)
    }

    /// The result (call [`SequenceState::flush`] first).
    pub fn output(&self, peak_memory_bytes: usize) -> GenerationOutput {
        let first = self.first_token.unwrap_or(self.started);
        let prompt_seconds = first.duration_since(self.started).as_secs_f64();
        let decode_seconds = self.last_token.unwrap_or(first).duration_since(first).as_secs_f64();
        let generated = self.tokens.len();
        let computed = self.prompt_len - self.cached.min(self.prompt_len);
        let stats = GenerationStats {
            prompt_tokens: self.prompt_len,
            cached_prompt_tokens: self.cached,
            generated_tokens: generated,
            prompt_tokens_per_s: if prompt_seconds > 0.0 { computed as f64 / prompt_seconds } else { 0.0 },
            generation_tokens_per_s: if decode_seconds > 0.0 && generated > 1 {
                (generated - 1) as f64 / decode_seconds
            } else {
                0.0
            },
            peak_memory_bytes,
            ..GenerationStats::default()
        };
        GenerationOutput {
            tokens: self.tokens.clone(),
            text: self.text.clone(),
            finish_reason: self.finished.unwrap_or(FinishReason::MaxTokens),
            stats,
        }
    }
}
