//! Continuous batching: many sequences decode in one forward pass per step, each with its
//! own cache row, sampler, stop conditions and token stream; sequences join (after their
//! own prefill, reusing a cached prefix when one matches) and leave between steps.
//!
//! Each step builds the next tokens' graph before reading the tokens of the step before
//! (as [`Generation`](crate::Generation) does), except for sequences whose sampler reads
//! the history (repetition penalty), which see every token first.

use std::collections::VecDeque;
use std::time::Instant;

use lamina_backbones::ModelCache;
use lamina_components::KvQuantization;
use lamina_families::LanguageModel;
use lamina_loader::Tokenizer;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, Dtype, memory, ops};
use serde::{Deserialize, Serialize};

use crate::error::{GenerateError, Result};
use crate::generate::{GenerateParams, GenerationOutput, TokenEvent};
use crate::prompt_cache::{CacheHit, PromptCache, shared_prefix};
use crate::sequence::{
    Plan, SequenceState, ids_array, last_logits, no_buffer_cache_on_cpu, plan, prefill_quantizing,
};

/// Identifies a sequence of a [`BatchGenerator`].
pub type SequenceId = u64;

/// Checks that `model`'s caches can be quantized as `how` says — MLX takes its settings and
/// the group size divides the head dimension — by quantizing the cache of a one-token
/// forward pass (how a server refuses `--kv-bits` at start rather than at a request).
///
/// # Errors
/// [`GenerateError`] naming the setting that does not fit.
pub fn check_kv_quantization(model: &mut dyn LanguageModel, how: KvQuantization) -> Result<()> {
    let how = how.validated()?;
    let mut cache = model.make_cache()?;
    last_logits(model, &mut cache, &ids_array(&[0]))?;
    cache.quantize_past_start(KvQuantization { start: 0, ..how })?;
    cache.eval()?;
    Ok(())
}

/// How a [`BatchGenerator`] schedules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    /// The most sequences decoding at once; later requests wait.
    pub max_batch: usize,
    /// Prompt tokens admitted per step (at least one request is admitted per step), so
    /// that long prompts do not stall the sequences already decoding for long.
    pub prefill_tokens_per_step: usize,
    /// Bytes of finished sequences' caches kept for reuse (0 = no prompt cache).
    pub prompt_cache_bytes: usize,
    /// Keys and values of full-attention layers stored quantized past its start (each
    /// request's prefill, and the decoding batch once it holds that many positions).
    pub kv_quantization: Option<KvQuantization>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 32,
            prefill_tokens_per_step: 2048,
            prompt_cache_bytes: 512 << 20,
            kv_quantization: None,
        }
    }
}

/// One request to a [`BatchGenerator`].
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// Prompt ids.
    pub prompt: Vec<u32>,
    /// Budget, sampling, stops.
    pub params: GenerateParams,
    /// Report each token's log-probability and this many most likely alternatives
    /// (`None`: no log-probabilities).
    pub top_logprobs: Option<usize>,
}

impl BatchRequest {
    /// A request without log-probabilities.
    pub fn new(prompt: Vec<u32>, params: GenerateParams) -> Self {
        BatchRequest { prompt, params, top_logprobs: None }
    }
}

/// A generated token's log-probability (under the model's distribution, before any
/// sampling filter) and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token's.
    pub logprob: f32,
    /// The most likely tokens and theirs, best first.
    pub top: Vec<(u32, f32)>,
}

/// What a step reports.
#[derive(Debug)]
pub enum BatchEvent {
    /// A sequence's new token.
    Token {
        /// Whose.
        sequence: SequenceId,
        /// The token and the text it completes.
        token: TokenEvent,
        /// When asked for.
        logprobs: Option<TokenLogprobs>,
    },
    /// A sequence ended.
    Done {
        /// Whose.
        sequence: SequenceId,
        /// Text held back until the end (a possible stop string that never completed);
        /// already part of `output.text`.
        tail: String,
        /// The whole result.
        output: GenerationOutput,
        /// Prompt tokens taken from the prompt cache instead of computed.
        cached_tokens: usize,
    },
    /// A request could not start (empty or too long a prompt, ids outside the vocabulary).
    Failed {
        /// Whose.
        sequence: SequenceId,
        /// Why.
        error: GenerateError,
    },
}

/// A request taken from the queue, its prompt checked and planned once.
struct Admitted {
    id: SequenceId,
    request: BatchRequest,
    plan: Plan,
}

/// A token sampled but not read yet.
struct Pending {
    token: Array,
    logprobs: Option<Array>,
}

struct Sequence<'t> {
    id: SequenceId,
    state: SequenceState<'t>,
    top_logprobs: Option<usize>,
    pending: VecDeque<Pending>,
    last: Array,
    cached_tokens: usize,
    cancelled: bool,
}

/// Runs many generations at once on one model; see the module documentation.
pub struct BatchGenerator<'a> {
    model: &'a mut dyn LanguageModel,
    tokenizer: Option<&'a Tokenizer>,
    config: BatchConfig,
    cache: ModelCache,
    active: Vec<Sequence<'a>>,
    waiting: VecDeque<(SequenceId, BatchRequest)>,
    prompt_cache: PromptCache,
    next_id: SequenceId,
}

impl std::fmt::Debug for BatchGenerator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchGenerator")
            .field("active", &self.active.len())
            .field("waiting", &self.waiting.len())
            .field("config", &self.config)
            .finish()
    }
}

impl<'a> BatchGenerator<'a> {
    /// A generator with nothing to do yet.
    ///
    /// # Errors
    /// When the model cannot describe its cache.
    pub fn new(
        model: &'a mut dyn LanguageModel,
        tokenizer: Option<&'a Tokenizer>,
        config: BatchConfig,
    ) -> Result<Self> {
        no_buffer_cache_on_cpu()?;
        config.kv_quantization.map(KvQuantization::validated).transpose()?;
        let fresh = model.make_cache()?;
        Ok(BatchGenerator {
            model,
            tokenizer,
            prompt_cache: PromptCache::new(config.prompt_cache_bytes),
            config,
            cache: ModelCache::batch_like(&fresh)?,
            active: Vec::new(),
            waiting: VecDeque::new(),
            next_id: 0,
        })
    }

    /// Queues a request; it starts at a coming step.
    pub fn insert(&mut self, request: BatchRequest) -> SequenceId {
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back((id, request));
        id
    }

    /// Ends a sequence at the next step (or drops it from the queue) without reporting it.
    /// Returns whether it was known.
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        if let Some(at) = self.waiting.iter().position(|(w, _)| *w == id) {
            self.waiting.remove(at);
            return true;
        }
        match self.active.iter_mut().find(|s| s.id == id) {
            Some(seq) => {
                seq.cancelled = true;
                true
            }
            None => false,
        }
    }

    /// Sequences decoding.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Requests not started yet.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.active.is_empty() && self.waiting.is_empty()
    }

    /// The cache of finished sequences' prefixes.
    pub fn prompt_cache(&mut self) -> &mut PromptCache {
        &mut self.prompt_cache
    }

    /// One step: admit waiting requests (prefilling them), decode one token for every
    /// sequence, and report what was read and what ended.
    ///
    /// # Errors
    /// MLX failures, which leave the batch unusable; a request's own problems are
    /// [`BatchEvent::Failed`] instead.
    pub fn step(&mut self) -> Result<Vec<BatchEvent>> {
        let mut events = Vec::new();
        self.admit(&mut events)?;
        self.retire(&mut events)?;
        if !self.active.is_empty() {
            self.decode(&mut events)?;
        }
        for i in 0..self.active.len() {
            self.read(i, 1, &mut events)?;
        }
        self.retire(&mut events)?;
        Ok(events)
    }

    /// Starts waiting requests, each prompt prefilled on its own (from a cached prefix when
    /// the prompt cache holds one; requests with the same prompt share one prefill).
    fn admit(&mut self, events: &mut Vec<BatchEvent>) -> Result<()> {
        let mut admitted_tokens = 0;
        let (mut fresh, mut joining) = (Vec::new(), Vec::new());
        while self.active.len() + fresh.len() + joining.len() < self.config.max_batch.max(1) {
            let Some(front) = self.waiting.front() else { break };
            if admitted_tokens > 0
                && admitted_tokens + front.1.prompt.len() > self.config.prefill_tokens_per_step
            {
                break;
            }
            let Some((id, request)) = self.waiting.pop_front() else { break };
            admitted_tokens += request.prompt.len();
            let plan = match plan(self.model, &request.prompt, &request.params) {
                Ok(plan) => plan,
                Err(error) => {
                    events.push(BatchEvent::Failed { sequence: id, error });
                    continue;
                }
            };
            match self.prompt_cache.fetch(plan.prompt(&request.prompt))? {
                None => fresh.push(Admitted { id, request, plan }),
                hit => match self.start(&Admitted { id, request, plan }, hit) {
                    Ok(started) => joining.push(started),
                    Err(error) => events.push(BatchEvent::Failed { sequence: id, error }),
                },
            }
        }
        self.start_fresh(&fresh, &mut joining, events);
        // Into the batch together: one copy of its cache, not one per request.
        let (sequences, caches): (Vec<_>, Vec<_>) = joining.into_iter().unzip();
        self.cache.join_all(caches)?;
        self.active.extend(sequences);
        Ok(())
    }

    /// A sequence whose prefill produced `logits [1, V]` (its first token is sampled).
    fn sequence(&self, admitted: &Admitted, logits: &Array, reused: usize) -> Result<Sequence<'a>> {
        let Admitted { id, request, plan } = admitted;
        let prompt = plan.prompt(&request.prompt);
        let mut state = SequenceState::new(self.tokenizer, prompt, plan, &request.params, Instant::now())?;
        let token = state.sample(logits)?;
        let logprobs = request.top_logprobs.map(|_| log_softmax(logits)).transpose()?;
        Ok(Sequence {
            id: *id,
            state,
            top_logprobs: request.top_logprobs,
            pending: VecDeque::from([Pending { token: token.clone(), logprobs }]),
            last: token,
            cached_tokens: reused,
            cancelled: false,
        })
    }

    /// Prefills one request into its own cache (from a cached prefix when given), to join
    /// the batch; one with a budget of 0 leaves at the first retirement, before decoding.
    fn start(&mut self, admitted: &Admitted, hit: Option<CacheHit>) -> Result<(Sequence<'a>, ModelCache)> {
        let (cache, logits, reused) = self.prefill(admitted, hit)?;
        let seq = self.sequence(admitted, &logits, reused)?;
        mlx_rs::transforms::async_eval([&seq.last])?;
        Ok((seq, cache))
    }

    /// The cache and last logits `[1, V]` of `admitted`'s prompt (from a cached prefix when
    /// given), and the positions reused.
    fn prefill(&mut self, admitted: &Admitted, hit: Option<CacheHit>) -> Result<(ModelCache, Array, usize)> {
        let (mut cache, reused) = match hit {
            Some(hit) => (hit.cache, hit.reused),
            None => (self.model.make_cache()?, 0),
        };
        let prompt = &admitted.plan.prompt(&admitted.request.prompt)[reused..];
        let (step, kv) = (admitted.request.params.prefill_step, self.config.kv_quantization);
        let logits = prefill_quantizing(self.model, &mut cache, &ids_array(prompt), step, kv)?;
        Ok((cache, logits, reused))
    }

    /// Starts requests that found nothing in the prompt cache, each prompt prefilled once
    /// (its numbers do not depend on the rows admitted beside it: a padded batch's products
    /// and attention would compute another way). Requests with the same prompt (a request's
    /// several choices) share the prefill and sample apart; a prompt that begins as a later
    /// one does (a chat template's system prompt) goes into the prompt cache, so that the
    /// later one prefills only what follows. A request that fails fails alone; the others
    /// are added to `joining`.
    fn start_fresh(
        &mut self,
        fresh: &[Admitted],
        joining: &mut Vec<(Sequence<'a>, ModelCache)>,
        events: &mut Vec<BatchEvent>,
    ) {
        let prompts: Vec<&[u32]> = fresh.iter().map(|a| a.plan.prompt(&a.request.prompt)).collect();
        let mut prefilled: Vec<(&[u32], ModelCache, Array, usize)> = Vec::new();
        for (n, admitted) in fresh.iter().enumerate() {
            let prompt = prompts[n];
            let known = prefilled.iter().position(|(p, ..)| *p == prompt);
            let started = match known {
                Some(i) => Ok(i),
                None => self.prompt_cache.fetch(prompt).and_then(|hit| self.prefill(admitted, hit)).map(
                    |(cache, logits, reused)| {
                        if prompts[n + 1..]
                            .iter()
                            .any(|later| *later != prompt && shared_prefix(later, prompt) > 1)
                        {
                            self.prompt_cache.insert(prompt.to_vec(), cache.clone());
                        }
                        prefilled.push((prompt, cache, logits, reused));
                        prefilled.len() - 1
                    },
                ),
            }
            .and_then(|i| {
                let (_, cache, logits, reused) = &prefilled[i];
                let seq = self.sequence(admitted, logits, *reused)?;
                mlx_rs::transforms::async_eval([&seq.last])?;
                Ok((seq, cache.clone()))
            });
            match started {
                Ok(started) => joining.push(started),
                Err(error) => events.push(BatchEvent::Failed { sequence: admitted.id, error }),
            }
        }
    }

    /// Runs one token of every sequence through the model and samples the next; a
    /// sequence whose sampling reads the history (a repetition penalty, a grammar) has its
    /// token read first, while the forward pass computes.
    fn decode(&mut self, events: &mut Vec<BatchEvent>) -> Result<()> {
        let inputs = self
            .active
            .iter()
            .map(|s| s.last.reshape(&[1, 1]))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ids = ops::concatenate(&inputs, 0)?;
        if let Some(how) = self.config.kv_quantization {
            self.cache.quantize_past_start(how)?;
        }
        let logits = last_logits(self.model, &mut self.cache, &ids)?; // [B, V]
        if self.active.iter().any(|s| !s.state.samples_ahead()) {
            mlx_rs::transforms::async_eval([&logits])?;
        }
        let mut outputs = Vec::with_capacity(self.active.len());
        for i in 0..self.active.len() {
            if !self.active[i].state.samples_ahead() {
                self.read(i, 0, events)?;
            }
            let seq = &mut self.active[i];
            if seq.state.finished.is_some() || seq.cancelled {
                continue;
            }
            let i = i as i32;
            let row = logits.try_index(i..i + 1)?;
            let token = seq.state.sample(&row)?;
            let logprobs = seq.top_logprobs.map(|_| log_softmax(&row)).transpose()?;
            outputs.push(token.clone());
            seq.pending.push_back(Pending { token: token.clone(), logprobs });
            seq.last = token;
        }
        mlx_rs::transforms::async_eval(&outputs)?;
        Ok(())
    }

    /// Reads sequence `i`'s pending tokens until `keep` remain (or it ends).
    fn read(&mut self, i: usize, keep: usize, events: &mut Vec<BatchEvent>) -> Result<()> {
        let seq = &mut self.active[i];
        while seq.pending.len() > keep && seq.state.finished.is_none() && !seq.cancelled {
            let Some(pending) = seq.pending.pop_front() else { break };
            let id = pending.token.try_index(0)?.item_exact::<i32>() as u32;
            let logprobs = match (&pending.logprobs, seq.top_logprobs) {
                (Some(row), Some(n)) => Some(top_logprobs(row, id, n)?),
                _ => None,
            };
            if let Some(token) = seq.state.accept(id)? {
                events.push(BatchEvent::Token { sequence: seq.id, token, logprobs });
            }
        }
        Ok(())
    }

    /// Takes finished and cancelled sequences out of the batch, keeping their caches in
    /// the prompt cache.
    fn retire(&mut self, events: &mut Vec<BatchEvent>) -> Result<()> {
        for i in (0..self.active.len()).rev() {
            if self.active[i].state.finished.is_none() && !self.active[i].cancelled {
                continue;
            }
            let mut seq = self.active.remove(i);
            let cache = self.cache.leave(i)?;
            // Evaluated now: until then the row's copy would keep the whole batch's buffers
            // alive (measured: the prompt cache held 2 GiB for its 512 MiB of rows).
            cache.eval()?;
            let fed = (cache.offset().max(0) as usize).min(seq.state.history.len());
            self.prompt_cache.insert(seq.state.history[..fed].to_vec(), cache);
            if !seq.cancelled {
                let tail = seq.state.flush()?;
                let output = seq.state.output(memory::peak_memory()?);
                events.push(BatchEvent::Done {
                    sequence: seq.id,
                    tail,
                    output,
                    cached_tokens: seq.cached_tokens,
                });
            }
        }
        Ok(())
    }
}

/// `logits [1, V]` -> log-probabilities `[1, V]` in f32.
fn log_softmax(logits: &Array) -> Result<Array> {
    let logits = logits.as_dtype(Dtype::Float32)?;
    Ok(logits.subtract(ops::logsumexp_axis(&logits, -1, true)?)?)
}

/// The chosen token's log-probability and the `n` best, from a `[1, V]` row.
fn top_logprobs(row: &Array, id: u32, n: usize) -> Result<TokenLogprobs> {
    let values = row.as_slice::<f32>();
    let logprob = values.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY);
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    let n = n.min(order.len());
    let by_value = |a: &u32, b: &u32| values[*b as usize].total_cmp(&values[*a as usize]);
    if n > 0 && n < order.len() {
        order.select_nth_unstable_by(n - 1, by_value);
    }
    order.truncate(n);
    order.sort_by(by_value);
    Ok(TokenLogprobs { logprob, top: order.into_iter().map(|t| (t, values[t as usize])).collect() })
}

/// Generates every prompt to completion, `config.max_batch` at a time; `progress` hears
/// `(finished, total)` after each sequence ends. Results are in the prompts' order; a
/// prompt that cannot start gets its error.
///
/// # Errors
/// MLX failures (which end the whole batch).
pub fn batch_generate(
    model: &mut dyn LanguageModel,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    config: BatchConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Result<GenerationOutput>>> {
    memory::reset_peak_memory()?;
    let mut generator = BatchGenerator::new(model, tokenizer, config)?;
    let mut results: Vec<Option<Result<GenerationOutput>>> = prompts.iter().map(|_| None).collect();
    for prompt in prompts {
        generator.insert(BatchRequest::new(prompt.clone(), params.clone()));
    }
    let mut finished = 0;
    while !generator.is_idle() {
        for event in generator.step()? {
            let (sequence, result) = match event {
                BatchEvent::Done { sequence, output, .. } => (sequence, Ok(output)),
                BatchEvent::Failed { sequence, error } => (sequence, Err(error)),
                BatchEvent::Token { .. } => continue,
            };
            if let Some(slot) = results.get_mut(sequence as usize) {
                *slot = Some(result);
                finished += 1;
                progress(finished, prompts.len());
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(GenerateError::Task("the sequence never ended".into()))))
        .collect())
}
