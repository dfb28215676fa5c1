//! Speculative decoding: a draft proposes several tokens, the model checks them all in one
//! forward pass and keeps the prefix its own sampling accepts, plus one token of its own.
//! The acceptance rule is the standard one (Leviathan et al., Chen et al.): draft token `d`
//! is kept with probability `min(1, p(d) / q(d))` (`p` the model's distribution after the
//! sampler's filters and temperature, `q` the draft's), and on a rejection the model's token
//! is drawn from `max(p - q, 0)`; so greedy output is exactly greedy decoding's and sampled
//! output follows the model's distribution.
//!
//! Drafts come from a smaller model with the same vocabulary ([`DraftSource::Model`]) or
//! from the text so far ([`DraftSource::PromptLookup`]: the tokens that followed the longest
//! recent n-gram where it occurred before; no second model, and good at summarising and
//! editing, where the answer repeats its input). Caches are trimmed back on a rejection;
//! where a cache cannot be trimmed (a rotating window that wrapped around, a recurrent
//! state) it is restored from before the check and the accepted tokens are fed again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use lamina_backbones::ModelCache;
use lamina_families::LanguageModel;
use lamina_heads::ModelInput;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp, argmax_axis};
use mlx_rs::{Array, Dtype};

use crate::error::{GenerateError, Result};
use crate::sampler::{Sampler, SamplerConfig};
use crate::sequence::{SequenceState, ids_array, last_logits, prefill};

/// A draft model shared with the caller (locked while a round drafts).
pub type SharedModel = Arc<Mutex<Box<dyn LanguageModel>>>;

/// Where draft tokens come from.
#[derive(Clone)]
pub enum DraftSource {
    /// A smaller model with the same tokenizer (its vocabulary must be the model's).
    Model(SharedModel),
    /// The text so far: the tokens that followed the longest of its last `max_ngram`-token
    /// n-grams (down to one token) where that n-gram occurred before.
    PromptLookup {
        /// The longest n-gram matched.
        max_ngram: usize,
    },
}

impl std::fmt::Debug for DraftSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DraftSource::Model(_) => f.write_str("Model"),
            DraftSource::PromptLookup { max_ngram } => write!(f, "PromptLookup {{ max_ngram: {max_ngram} }}"),
        }
    }
}

impl Eq for DraftSource {}

impl PartialEq for DraftSource {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DraftSource::Model(a), DraftSource::Model(b)) => Arc::ptr_eq(a, b),
            (DraftSource::PromptLookup { max_ngram: a }, DraftSource::PromptLookup { max_ngram: b }) => {
                a == b
            }
            _ => false,
        }
    }
}

/// Speculative decoding's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftParams {
    /// Where drafts come from.
    pub source: DraftSource,
    /// Tokens proposed per round (mlx-lm's `--num-draft-tokens`).
    pub num_draft_tokens: usize,
}

impl DraftParams {
    /// Drafts from `model`, `num_draft_tokens` a round.
    pub fn model(model: SharedModel, num_draft_tokens: usize) -> Self {
        DraftParams { source: DraftSource::Model(model), num_draft_tokens }
    }

    /// Drafts copied from the text so far (n-grams up to `max_ngram` tokens).
    pub fn prompt_lookup(max_ngram: usize, num_draft_tokens: usize) -> Self {
        DraftParams { source: DraftSource::PromptLookup { max_ngram }, num_draft_tokens }
    }
}

/// A draft model's side of one generation.
struct DraftModel {
    model: SharedModel,
    cache: ModelCache,
    sampler: Sampler,
    /// Tokens accepted that the draft model has not read yet.
    lag: Vec<u32>,
}

/// One generation's speculative state.
pub(crate) struct Speculation {
    params: DraftParams,
    draft: Option<DraftModel>,
    /// Tokens the last round accepted, not handed out yet.
    pub queue: VecDeque<u32>,
    /// Draft tokens proposed and accepted so far.
    pub proposed: usize,
    pub accepted: usize,
}

/// Drafts and, for a sampled model draft, the distribution each was drawn from.
#[derive(Default)]
struct Proposal {
    tokens: Vec<u32>,
    distributions: Option<Vec<Array>>,
    /// The draft model's cache before the round, where it cannot be trimmed back.
    draft_snapshot: Option<ModelCache>,
}

impl Speculation {
    /// Prepares drafting for a generation whose processed prompt is `prompt`, with the
    /// model's vocabulary of `vocab_size` (a draft model reads the prompt here).
    pub fn start(
        params: &DraftParams,
        sampler: &SamplerConfig,
        prompt: &[u32],
        vocab_size: usize,
    ) -> Result<Self> {
        if params.num_draft_tokens == 0 {
            return Err(GenerateError::Draft("`num_draft_tokens` must be at least 1".into()));
        }
        let draft = match &params.source {
            DraftSource::PromptLookup { max_ngram: 0 } => {
                return Err(GenerateError::Draft("prompt lookup needs `max_ngram` >= 1".into()));
            }
            DraftSource::PromptLookup { .. } => None,
            DraftSource::Model(shared) => {
                let mut model = lock(shared)?;
                let draft_vocab = model.info().vocab_size;
                if draft_vocab != vocab_size {
                    return Err(GenerateError::Draft(format!(
                        "the draft model's vocabulary has {draft_vocab} tokens, the model's {vocab_size}"
                    )));
                }
                let mut cache = model.make_cache()?;
                if prompt.len() > 1 {
                    let head = &prompt[..prompt.len() - 1];
                    prefill(model.as_mut(), &mut cache, &ids_array(head), 512)?;
                    cache.eval()?;
                }
                let seed = sampler.seed.map(|s| s.wrapping_add(1));
                let sampler = Sampler::new(&SamplerConfig { seed, ..sampler.clone() })?;
                drop(model);
                let lag = prompt.last().copied().into_iter().collect();
                Some(DraftModel { model: shared.clone(), cache, sampler, lag })
            }
        };
        Ok(Speculation { params: params.clone(), draft, queue: VecDeque::new(), proposed: 0, accepted: 0 })
    }

    /// Records a token accepted outside a round (the first, sampled from the prompt).
    pub fn push_accepted(&mut self, id: u32) {
        if let Some(draft) = &mut self.draft {
            draft.lag.push(id);
        }
    }

    /// One round: drafts, one forward pass of the model over the last accepted token and
    /// the drafts, the acceptance rule, the caches trimmed; the accepted tokens (at least
    /// one) go to [`Speculation::queue`].
    pub fn round(
        &mut self,
        model: &mut dyn LanguageModel,
        cache: &mut ModelCache,
        state: &mut SequenceState<'_>,
    ) -> Result<()> {
        let Some(&last) = state.history.last() else {
            return Err(GenerateError::Task("speculative decoding started without a token".into()));
        };
        let room = state.remaining().saturating_sub(1);
        let wanted = self.params.num_draft_tokens.min(room);
        let mut proposal = self.propose(wanted, &state.history)?;
        let fed: Vec<u32> = std::iter::once(last).chain(proposal.tokens.iter().copied()).collect();
        let base = cache.offset();
        let snapshot = (!cache.can_rewind(fed.len() as i32)).then(|| cache.clone());
        let ids = ids_array(&fed);
        let input = ModelInput { check_ids: false, ..ModelInput::new(&ids).with_cache(cache) };
        let logits = model.forward(input)?.logits.index(0); // [L, V]
        let emitted = accept(&proposal, &logits, &mut state.sampler, &state.history)?;
        let kept = emitted.len() - 1; // `last` and the accepted drafts (not the model's token)
        if !cache.can_trim_to(base + kept as i32) {
            if let Some(before) = snapshot {
                *cache = before;
                prefill(model, cache, &ids_array(&fed[..kept]), 512)?;
            }
        }
        cache.trim(base + kept as i32)?;
        cache.eval()?;
        self.settle_draft(&mut proposal, &emitted)?;
        self.proposed += proposal.tokens.len();
        self.accepted += kept - 1;
        self.queue.extend(&emitted[1..]);
        Ok(())
    }

    /// Up to `wanted` draft tokens following `history`.
    fn propose(&mut self, wanted: usize, history: &[u32]) -> Result<Proposal> {
        if wanted == 0 {
            return Ok(Proposal::default());
        }
        let Some(draft) = &mut self.draft else {
            let max_ngram = match self.params.source {
                DraftSource::PromptLookup { max_ngram } => max_ngram,
                DraftSource::Model(_) => 0,
            };
            return Ok(Proposal { tokens: prompt_lookup(history, max_ngram, wanted), ..Proposal::default() });
        };
        let mut model = lock(&draft.model)?;
        let read = (draft.lag.len() + wanted - 1) as i32;
        let draft_snapshot = (!draft.cache.can_rewind(read)).then(|| draft.cache.clone());
        let sampled = draft.sampler.temperature() > 0.0;
        let mut history = history.to_vec();
        let (mut tokens, mut distributions) = (Vec::with_capacity(wanted), Vec::new());
        let mut logits = last_logits(model.as_mut(), &mut draft.cache, &ids_array(&draft.lag))?;
        for step in 0..wanted {
            if sampled {
                distributions.push(draft.sampler.probabilities(&logits, &history)?);
            }
            let token = draft.sampler.sample(&logits, &history)?;
            let id = token.try_index(0)?.item_exact::<i32>() as u32;
            tokens.push(id);
            history.push(id);
            if step + 1 < wanted {
                logits = last_logits(model.as_mut(), &mut draft.cache, &token.reshape(&[1, 1])?)?;
            }
        }
        Ok(Proposal { tokens, distributions: sampled.then_some(distributions), draft_snapshot })
    }

    /// Trims the draft model's cache to the accepted tokens it read, and notes the
    /// accepted ones it has not.
    fn settle_draft(&mut self, proposal: &mut Proposal, emitted: &[u32]) -> Result<()> {
        let Some(draft) = &mut self.draft else { return Ok(()) };
        if proposal.tokens.is_empty() {
            draft.lag.extend(&emitted[1..]);
            return Ok(());
        }
        // The draft read `lag` and every draft but the last; of those, keep what was accepted.
        let read_drafts = proposal.tokens.len() - 1;
        let accepted = emitted.len() - 2; // drafts accepted
        let kept_drafts = accepted.min(read_drafts);
        let keep = draft.cache.offset() - (read_drafts - kept_drafts) as i32;
        if draft.cache.can_trim_to(keep) {
            draft.cache.trim(keep)?;
        } else {
            // Read again from before the round: the lag and the kept drafts.
            let before = proposal.draft_snapshot.take().ok_or_else(|| {
                GenerateError::Draft("the draft model's cache can be neither trimmed nor restored".into())
            })?;
            draft.cache = before;
            let again: Vec<u32> = draft.lag.iter().chain(&proposal.tokens[..kept_drafts]).copied().collect();
            prefill(lock(&draft.model)?.as_mut(), &mut draft.cache, &ids_array(&again), 512)?;
            draft.cache.eval()?;
        }
        draft.lag = emitted[1 + kept_drafts..].to_vec();
        Ok(())
    }
}

/// The acceptance rule over the model's `logits [L, V]` for the last accepted token and the
/// drafts: the tokens to keep, starting with that last token (so at least it and one more).
fn accept(proposal: &Proposal, logits: &Array, sampler: &mut Sampler, history: &[u32]) -> Result<Vec<u32>> {
    let last = history.last().copied().unwrap_or_default();
    let mut emitted = vec![last];
    let mut history = history.to_vec();
    let greedy = sampler.temperature() == 0.0;
    // Greedy with a history-free sampler: every position's choice at once.
    let choices: Option<Vec<u32>> = if greedy && !sampler.needs_history() {
        let best = argmax_axis(&sampler.logprobs(logits, &history)?, -1, None)?.as_dtype(Dtype::Int32)?;
        Some(best.as_slice::<i32>().iter().map(|&t| t as u32).collect())
    } else {
        None
    };
    for position in 0..=proposal.tokens.len() {
        let draft = proposal.tokens.get(position).copied();
        let row = logits.index(position as i32).reshape(&[1, -1])?;
        let chosen = match (&choices, draft) {
            (Some(choices), _) => choices[position],
            (None, _) if greedy => argmax_axis(&sampler.logprobs(&row, &history)?, -1, None)?
                .as_dtype(Dtype::Int32)?
                .try_index(0)?
                .item_exact::<i32>() as u32,
            (None, None) => sampler.draw(&sampler.probabilities(&row, &history)?)?,
            (None, Some(d)) => {
                let p = sampler.probabilities(&row, &history)?;
                let q = proposal.distributions.as_ref().map(|q| &q[position]);
                let p_d = p.index((0, d as i32)).item_exact::<f32>();
                let q_d = q.map_or(Ok(1.0), |q| {
                    Ok::<_, GenerateError>(q.index((0, d as i32)).item_exact::<f32>())
                })?;
                if sampler.uniform()? * q_d < p_d {
                    d
                } else {
                    // The model's own token, from what the draft left of its distribution.
                    let residual = match q {
                        Some(q) => mlx_rs::ops::maximum(&p.subtract(q)?, Array::from_f32(0.0))?,
                        None => {
                            let ids = mlx_rs::ops::arange::<_, i32>(0, p.dim(-1), None)?;
                            mlx_rs::ops::select(
                                &ids.eq(Array::from_int(d as i32))?,
                                Array::from_f32(0.0),
                                &p,
                            )?
                        }
                    };
                    sampler.draw(&residual)?
                }
            }
        };
        emitted.push(chosen);
        history.push(chosen);
        if draft != Some(chosen) {
            break;
        }
    }
    Ok(emitted)
}

/// The tokens that followed the most recent earlier occurrence of the longest suffix of
/// `history` (of `max_ngram` tokens down to one), at most `wanted` of them.
pub(crate) fn prompt_lookup(history: &[u32], max_ngram: usize, wanted: usize) -> Vec<u32> {
    let len = history.len();
    for n in (1..=max_ngram.min(len.saturating_sub(1))).rev() {
        let suffix = &history[len - n..];
        // Most recent first; the match must end before the suffix starts.
        let found = (0..len - n).rev().find(|&start| &history[start..start + n] == suffix);
        if let Some(start) = found {
            let from = start + n;
            let to = (from + wanted).min(len);
            if from < to {
                return history[from..to].to_vec();
            }
        }
    }
    Vec::new()
}

fn lock(model: &SharedModel) -> Result<std::sync::MutexGuard<'_, Box<dyn LanguageModel>>> {
    model.lock().map_err(|_| GenerateError::Draft("the draft model's lock is poisoned".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first token out of the rule, `trials` times: the draft `d` is drawn from `q` (or
    /// fixed, as prompt lookup's), the model's distribution is `p`.
    fn first_tokens(p: &[f32], q: Option<&[f32]>, fixed: u32, trials: usize) -> Vec<usize> {
        let row = |x: &[f32]| Array::from_slice(x, &[1, x.len() as i32]);
        let logits = Array::from_slice(
            &[p, p].concat().iter().map(|x| x.ln()).collect::<Vec<_>>(),
            &[2, p.len() as i32],
        );
        let config = SamplerConfig { temperature: 1.0, seed: Some(7), ..SamplerConfig::default() };
        let mut sampler = Sampler::new(&config).unwrap();
        let mut drafter = Sampler::new(&SamplerConfig { seed: Some(8), ..config }).unwrap();
        let mut counts = vec![0; p.len()];
        for _ in 0..trials {
            let (token, distributions) = match q {
                Some(q) => (drafter.draw(&row(q)).unwrap(), Some(vec![row(q)])),
                None => (fixed, None),
            };
            let proposal = Proposal { tokens: vec![token], distributions, draft_snapshot: None };
            let emitted = accept(&proposal, &logits, &mut sampler, &[0]).unwrap();
            counts[emitted[1] as usize] += 1;
        }
        counts
    }

    #[test]
    fn the_acceptance_rule_keeps_the_models_distribution() {
        let p = [0.5f32, 0.3, 0.15, 0.05];
        let trials = 4000;
        for (q, fixed) in [(Some([0.1f32, 0.1, 0.2, 0.6]), 0), (Some([0.25; 4]), 0), (None, 3), (None, 0)] {
            let counts = first_tokens(&p, q.as_ref().map(|q| &q[..]), fixed, trials);
            for (token, (&count, &want)) in counts.iter().zip(&p).enumerate() {
                let freq = count as f32 / trials as f32;
                // Four standard deviations of a binomial frequency.
                let tolerance = 4.0 * (want * (1.0 - want) / trials as f32).sqrt();
                assert!(
                    (freq - want).abs() < tolerance,
                    "q {q:?} draft {fixed}: token {token} {freq} vs {want}"
                );
            }
        }
        // A rule that always kept the draft would fail: with q far from p the first token
        // would follow q.
        let skewed = first_tokens(&p, Some(&[0.0, 0.0, 0.0, 1.0]), 0, 400);
        assert!(skewed[3] < 60, "{skewed:?}");
    }

    #[test]
    fn prompt_lookup_continues_the_longest_recent_ngram() {
        // "a b c d | x a b c" -> after "a b c" came "d x a".
        let history = [1, 2, 3, 4, 9, 1, 2, 3];
        assert_eq!(prompt_lookup(&history, 3, 3), [4, 9, 1]);
        assert_eq!(prompt_lookup(&history, 3, 10), [4, 9, 1, 2, 3]);
        // The most recent occurrence wins; no match gives nothing.
        assert_eq!(prompt_lookup(&[5, 6, 5, 7, 5], 1, 2), [7, 5]);
        assert!(prompt_lookup(&[1, 2, 3], 2, 4).is_empty());
        assert!(prompt_lookup(&[], 2, 4).is_empty());
    }
}
