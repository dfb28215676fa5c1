//! Sampling as a pipeline: logits processors (repetition penalty), then filters on the
//! log-probabilities (top-p, min-p, top-k), then a draw at a temperature (or argmax at
//! temperature 0). Each stage is a [`LogitsTransform`]; [`SamplerConfig`] builds the usual
//! pipeline, and [`Sampler::with`] adds your own.

use std::collections::BTreeMap;

use lamina_core::{Config, Error, Result};
use mlx_rs::ops::indexing::{Ellipsis, TryIndexMutOp, TryIndexOp, argmax_axis};
use mlx_rs::{Array, Dtype, ops, random};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// One stage of the pipeline.
pub trait LogitsTransform: Send + std::fmt::Debug {
    /// Transforms `[B, V]` scores given the tokens so far (prompt and generated).
    ///
    /// # Errors
    /// When MLX fails.
    fn apply(&self, scores: &Array, history: &[u32]) -> Result<Array>;

    /// Whether the stage works on raw logits (before log-softmax) rather than on
    /// log-probabilities.
    fn on_logits(&self) -> bool {
        false
    }

    /// Whether the stage reads `history` (the generation loop then waits for each token
    /// before building the next step).
    fn needs_history(&self) -> bool {
        false
    }
}

/// Divides the logit of every token seen in the last `window` tokens by `penalty` (or
/// multiplies it, when negative), as transformers and mlx-lm do.
#[derive(Debug, Clone, Copy)]
pub struct RepetitionPenalty {
    /// > 1 discourages repeats.
    pub penalty: f32,
    /// How many recent tokens count.
    pub window: usize,
}

impl LogitsTransform for RepetitionPenalty {
    fn apply(&self, logits: &Array, history: &[u32]) -> Result<Array> {
        let recent = &history[history.len().saturating_sub(self.window)..];
        if recent.is_empty() {
            return Ok(logits.clone());
        }
        let ids: Vec<i32> = recent.iter().map(|&t| t as i32).collect();
        let ids = Array::from_slice(&ids, &[ids.len() as i32]);
        let selected = logits.take_axis(&ids, -1)?;
        let penalized = ops::select(
            &selected.lt(Array::from_f32(0.0))?,
            &selected.multiply(Array::from_f32(self.penalty))?,
            &selected.divide(Array::from_f32(self.penalty))?,
        )?;
        let mut out = logits.clone();
        out.try_index_mut((.., &ids), &penalized)?;
        Ok(out)
    }

    fn on_logits(&self) -> bool {
        true
    }

    fn needs_history(&self) -> bool {
        true
    }
}

/// Subtracts `presence` from the logit of every token seen in the last `window` tokens and
/// `frequency` times its count there (OpenAI's presence and frequency penalties, counted
/// over a recent window as mlx-lm does).
#[derive(Debug, Clone, Copy)]
pub struct OccurrencePenalty {
    /// Subtracted once per distinct token seen.
    pub presence: f32,
    /// Subtracted per occurrence.
    pub frequency: f32,
    /// How many recent tokens count.
    pub window: usize,
}

impl LogitsTransform for OccurrencePenalty {
    fn apply(&self, logits: &Array, history: &[u32]) -> Result<Array> {
        let recent = &history[history.len().saturating_sub(self.window)..];
        let mut counts = std::collections::BTreeMap::<u32, u32>::new();
        for &token in recent {
            *counts.entry(token).or_default() += 1;
        }
        let penalties = counts.iter().map(|(&t, &n)| (t, -(self.presence + self.frequency * n as f32)));
        add_at(logits, penalties)
    }

    fn on_logits(&self) -> bool {
        true
    }

    fn needs_history(&self) -> bool {
        true
    }
}

/// Adds a fixed bias to chosen tokens' logits (OpenAI's `logit_bias`).
#[derive(Debug, Clone)]
pub struct LogitBias(pub BTreeMap<u32, f32>);

impl LogitsTransform for LogitBias {
    fn apply(&self, logits: &Array, _history: &[u32]) -> Result<Array> {
        add_at(logits, self.0.iter().map(|(&t, &b)| (t, b)))
    }

    fn on_logits(&self) -> bool {
        true
    }
}

/// `logits [B, V]` with `value` added at each `(token, value)` (distinct tokens).
///
/// # Errors
/// [`Error::TokenOutOfRange`] for a token outside the vocabulary; MLX errors.
fn add_at(logits: &Array, values: impl Iterator<Item = (u32, f32)>) -> Result<Array> {
    let vocab = logits.dim(-1);
    let (mut ids, mut add) = (Vec::new(), Vec::new());
    for (token, value) in values {
        let id = i32::try_from(token).ok().filter(|&id| id < vocab);
        ids.push(id.ok_or(Error::TokenOutOfRange { id: i64::from(token), vocab_size: vocab as usize })?);
        add.push(value);
    }
    if ids.is_empty() {
        return Ok(logits.clone());
    }
    let n = ids.len() as i32;
    let ids = Array::from_slice(&ids, &[n]);
    let shifted = logits.take_axis(&ids, -1)?.add(Array::from_slice(&add, &[n]))?;
    let mut out = logits.clone();
    out.try_index_mut((.., &ids), &shifted)?;
    Ok(out)
}

/// Keeps the smallest set of tokens whose probability sums to at least `p`.
#[derive(Debug, Clone, Copy)]
pub struct TopP(pub f32);

impl LogitsTransform for TopP {
    fn apply(&self, logprobs: &Array, _history: &[u32]) -> Result<Array> {
        let order = ops::argsort_axis(logprobs, -1)?; // ascending
        let sorted = logprobs.take_along_axis(&order, -1)?.exp()?;
        let cumulative = ops::cumsum(&sorted, -1, None, None)?;
        // A token is kept when the probability mass up to and including it, counted from
        // the top, reaches into the first `p`: its ascending cumulative exceeds `1 - p`.
        let keep_sorted = cumulative.gt(Array::from_f32(1.0 - self.0))?;
        let inverse = ops::argsort_axis(&order, -1)?;
        let keep = keep_sorted.take_along_axis(&inverse, -1)?;
        Ok(ops::select(&keep, logprobs, Array::from_f32(f32::NEG_INFINITY))?)
    }
}

/// Keeps tokens whose probability is at least `min_p` times the most likely one's.
#[derive(Debug, Clone, Copy)]
pub struct MinP(pub f32);

impl LogitsTransform for MinP {
    fn apply(&self, logprobs: &Array, _history: &[u32]) -> Result<Array> {
        let threshold = logprobs.max_axis(-1, true)?.add(Array::from_f32(self.0.ln()))?;
        Ok(ops::select(&logprobs.ge(&threshold)?, logprobs, Array::from_f32(f32::NEG_INFINITY))?)
    }
}

/// Keeps the `k` most likely tokens.
#[derive(Debug, Clone, Copy)]
pub struct TopK(pub usize);

impl LogitsTransform for TopK {
    fn apply(&self, logprobs: &Array, _history: &[u32]) -> Result<Array> {
        let vocab = logprobs.dim(-1);
        let k = i32::try_from(self.0).unwrap_or(i32::MAX).min(vocab);
        if k >= vocab {
            return Ok(logprobs.clone());
        }
        // Indices of everything but the k largest: partition the negated scores.
        let order = ops::argpartition_axis(&logprobs.negative()?, k - 1, -1)?;
        let drop = order.try_index((Ellipsis, k..))?;
        let fill =
            ops::full::<f32>(drop.shape(), Array::from_f32(f32::NEG_INFINITY))?.as_dtype(logprobs.dtype())?;
        Ok(logprobs.put_along_axis(&drop, &fill, -1)?)
    }
}

/// The usual sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct SamplerConfig {
    /// 0 = greedy (argmax).
    #[validate(range(min = 0.0))]
    pub temperature: f32,
    /// Nucleus threshold; 1 = off.
    #[validate(range(exclusive_min = 0.0, max = 1.0))]
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Minimum probability relative to the most likely token; 0 = off.
    #[validate(range(min = 0.0, exclusive_max = 1.0))]
    pub min_p: f32,
    /// Repetition penalty; 1 = off.
    #[validate(range(exclusive_min = 0.0))]
    pub repetition_penalty: f32,
    /// Tokens the repetition, presence and frequency penalties look back over.
    #[validate(range(min = 1))]
    pub repetition_window: usize,
    /// Subtracted from the logit of each token seen in the window; 0 = off.
    #[validate(range(min = -2.0, max = 2.0))]
    #[serde(default)]
    pub presence_penalty: f32,
    /// Subtracted from a token's logit per occurrence in the window; 0 = off.
    #[validate(range(min = -2.0, max = 2.0))]
    #[serde(default)]
    pub frequency_penalty: f32,
    /// Added to chosen tokens' logits before anything else (token id -> bias).
    #[serde(default)]
    pub logit_bias: BTreeMap<u32, f32>,
    /// Seed of the sampler's own random state (its draws do not touch MLX's global one).
    pub seed: Option<u64>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            repetition_window: 20,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: BTreeMap::new(),
            seed: None,
        }
    }
}

impl Config for SamplerConfig {
    const NAME: &'static str = "SamplerConfig";
}

/// A sampling pipeline with its own random state.
#[derive(Debug)]
pub struct Sampler {
    transforms: Vec<Box<dyn LogitsTransform>>,
    temperature: f32,
    key: Array,
}

impl Sampler {
    /// The pipeline `config` describes: logit bias, presence/frequency penalties,
    /// repetition penalty, top-p, min-p, top-k, then temperature (mlx-lm's order).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an out-of-range setting.
    pub fn new(config: &SamplerConfig) -> Result<Self> {
        config.validated()?;
        let seed = match config.seed {
            Some(seed) => seed,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        let mut sampler =
            Sampler { transforms: Vec::new(), temperature: config.temperature, key: random::key(seed)? };
        if config.logit_bias.values().any(|b| !b.is_finite()) {
            return Err(Error::InvalidConfig {
                config: "SamplerConfig",
                field: "logit_bias".into(),
                reason: "every bias must be a finite number".into(),
            });
        }
        if !config.logit_bias.is_empty() {
            sampler = sampler.with(LogitBias(config.logit_bias.clone()));
        }
        if config.presence_penalty != 0.0 || config.frequency_penalty != 0.0 {
            sampler = sampler.with(OccurrencePenalty {
                presence: config.presence_penalty,
                frequency: config.frequency_penalty,
                window: config.repetition_window,
            });
        }
        if config.repetition_penalty != 1.0 {
            sampler = sampler.with(RepetitionPenalty {
                penalty: config.repetition_penalty,
                window: config.repetition_window,
            });
        }
        if config.top_p < 1.0 {
            sampler = sampler.with(TopP(config.top_p));
        }
        if config.min_p > 0.0 {
            sampler = sampler.with(MinP(config.min_p));
        }
        if config.top_k > 0 {
            sampler = sampler.with(TopK(config.top_k));
        }
        Ok(sampler)
    }

    /// Greedy decoding.
    ///
    /// # Errors
    /// When MLX cannot make the key.
    pub fn greedy() -> Result<Self> {
        Self::new(&SamplerConfig { seed: Some(0), ..SamplerConfig::default() })
    }

    /// Appends a stage.
    pub fn with(mut self, transform: impl LogitsTransform + 'static) -> Self {
        self.transforms.push(Box::new(transform));
        self
    }

    /// The temperature (0 = greedy).
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Whether any stage reads the token history.
    pub fn needs_history(&self) -> bool {
        self.transforms.iter().any(|t| t.needs_history())
    }

    /// The filtered log-probabilities the draw is made from.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn logprobs(&self, logits: &Array, history: &[u32]) -> Result<Array> {
        let mut scores = logits.as_dtype(Dtype::Float32)?;
        for t in self.transforms.iter().filter(|t| t.on_logits()) {
            scores = t.apply(&scores, history)?;
        }
        let mut logprobs = scores.subtract(ops::logsumexp_axis(&scores, -1, true)?)?;
        for t in self.transforms.iter().filter(|t| !t.on_logits()) {
            logprobs = t.apply(&logprobs, history)?;
        }
        Ok(logprobs)
    }

    /// The distribution the draw is made from, `[1, V]` probabilities: the filtered
    /// log-probabilities at the temperature, or all mass on the argmax at temperature 0
    /// (what speculative decoding's acceptance rule compares).
    ///
    /// # Errors
    /// When MLX fails.
    pub(crate) fn probabilities(&self, logits: &Array, history: &[u32]) -> Result<Array> {
        let logprobs = self.logprobs(logits, history)?;
        if self.temperature == 0.0 {
            let best = argmax_axis(&logprobs, -1, true)?;
            let ids = ops::arange::<_, i32>(0, logprobs.dim(-1), None)?;
            return Ok(ids.eq(&best)?.as_dtype(Dtype::Float32)?);
        }
        Ok(ops::softmax_axis(&logprobs.multiply(Array::from_f32(1.0 / self.temperature))?, -1, None)?)
    }

    /// A uniform draw in [0, 1) from the sampler's own random state.
    ///
    /// # Errors
    /// When MLX fails.
    pub(crate) fn uniform(&mut self) -> Result<f32> {
        let (next, draw) = random::split(&self.key, 2)?;
        self.key = next;
        Ok(random::uniform::<_, f32>(0.0, 1.0, &[], &draw)?.item_exact::<f32>())
    }

    /// A token drawn from `probs [1, V]` (unnormalized weights are fine).
    ///
    /// # Errors
    /// When MLX fails.
    pub(crate) fn draw(&mut self, probs: &Array) -> Result<u32> {
        let (next, draw) = random::split(&self.key, 2)?;
        self.key = next;
        let token = random::categorical(probs.log()?, -1, None, &draw)?.as_dtype(Dtype::Int32)?;
        Ok(token.try_index(0)?.item_exact::<i32>() as u32)
    }

    /// Draws the next token of each row of `logits [B, V]`: `[B]` int32 ids.
    ///
    /// # Errors
    /// [`Error::Shape`] for logits that are not `[B, V]`; MLX errors.
    pub fn sample(&mut self, logits: &Array, history: &[u32]) -> Result<Array> {
        if logits.ndim() != 2 {
            return Err(Error::Shape {
                name: "logits".into(),
                expected: vec![-1, -1],
                actual: logits.shape().to_vec(),
            });
        }
        if self.temperature == 0.0 && self.transforms.is_empty() {
            // Greedy without filters: the argmax of the logits is that of the log-probabilities.
            return Ok(argmax_axis(logits, -1, None)?.as_dtype(Dtype::Int32)?);
        }
        let logprobs = self.logprobs(logits, history)?;
        let token = if self.temperature == 0.0 {
            argmax_axis(&logprobs, -1, None)?
        } else {
            let (next, draw) = random::split(&self.key, 2)?;
            self.key = next;
            random::categorical(logprobs.multiply(Array::from_f32(1.0 / self.temperature))?, -1, None, &draw)?
        };
        Ok(token.as_dtype(Dtype::Int32)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logprobs(p: &[f32]) -> Array {
        Array::from_slice(&p.iter().map(|x| x.ln()).collect::<Vec<_>>(), &[1, p.len() as i32])
    }

    fn kept(a: &Array) -> Vec<bool> {
        a.as_slice::<f32>().iter().map(|x| x.is_finite()).collect()
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let p = [0.1f32, 0.5, 0.15, 0.25];
        assert_eq!(kept(&TopP(0.7).apply(&logprobs(&p), &[]).unwrap()), [false, true, false, true]);
        assert_eq!(kept(&TopP(0.76).apply(&logprobs(&p), &[]).unwrap()), [false, true, true, true]);
        assert_eq!(kept(&TopP(0.3).apply(&logprobs(&p), &[]).unwrap()), [false, true, false, false]);
    }

    #[test]
    fn min_p_is_relative_to_the_most_likely_token() {
        let p = [0.1f32, 0.5, 0.15, 0.25];
        assert_eq!(kept(&MinP(0.3).apply(&logprobs(&p), &[]).unwrap()), [false, true, true, true]);
        assert_eq!(kept(&MinP(0.6).apply(&logprobs(&p), &[]).unwrap()), [false, true, false, false]);
    }

    #[test]
    fn top_k_keeps_exactly_k() {
        let p = [0.1f32, 0.5, 0.15, 0.25];
        assert_eq!(kept(&TopK(2).apply(&logprobs(&p), &[]).unwrap()), [false, true, false, true]);
        assert_eq!(kept(&TopK(9).apply(&logprobs(&p), &[]).unwrap()), [true; 4]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
        let logits = Array::from_slice(&[2.0f32, -2.0, 1.0, 4.0], &[1, 4]);
        let out = RepetitionPenalty { penalty: 2.0, window: 2 }.apply(&logits, &[3, 0, 1]).unwrap();
        assert_eq!(out.as_slice::<f32>(), &[1.0, -4.0, 1.0, 4.0], "only the last two tokens (0, 1) count");
    }

    #[test]
    fn logit_bias_and_occurrence_penalties_shift_chosen_logits() {
        let logits = Array::from_slice(&[2.0f32, -2.0, 1.0, 4.0], &[1, 4]);
        let bias = LogitBias([(0, 100.0), (3, -100.0)].into());
        assert_eq!(bias.apply(&logits, &[]).unwrap().as_slice::<f32>(), &[102.0, -2.0, 1.0, -96.0]);
        assert!(LogitBias([(4, 1.0)].into()).apply(&logits, &[]).is_err(), "id 4 of a vocabulary of 4");
        let penalty = OccurrencePenalty { presence: 0.5, frequency: 0.25, window: 3 };
        let out = penalty.apply(&logits, &[3, 2, 2, 0]).unwrap();
        assert_eq!(out.as_slice::<f32>(), &[1.25, -2.0, 0.0, 4.0], "token 3 is outside the window");
        // A bias of -100 on the argmax moves greedy decoding, in a batch of rows too.
        let rows = Array::from_slice(&[0.0f32, 1.0, 3.0, 2.0, 5.0, 0.0, 0.0, 1.0], &[2, 4]);
        let config =
            SamplerConfig { logit_bias: [(2, -100.0), (0, -100.0)].into(), ..SamplerConfig::default() };
        let mut sampler = Sampler::new(&config).unwrap();
        assert_eq!(sampler.sample(&rows, &[]).unwrap().as_slice::<i32>(), &[3, 3]);
        let huge = SamplerConfig { logit_bias: [(0, f32::NAN)].into(), ..SamplerConfig::default() };
        assert!(Sampler::new(&huge).is_err());
    }

    #[test]
    fn top_k_of_any_size_is_safe() {
        let p = [0.1f32, 0.5, 0.15, 0.25];
        for k in [1usize << 31, 1 << 32, usize::MAX] {
            assert_eq!(kept(&TopK(k).apply(&logprobs(&p), &[]).unwrap()), [true; 4], "{k}");
        }
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_greedy_is_argmax() {
        let logits = Array::from_slice(&[0.1f32, 0.2, 0.3, 0.25, 0.15], &[1, 5]);
        let draws = |seed| {
            let mut s = Sampler::new(&SamplerConfig {
                temperature: 1.0,
                seed: Some(seed),
                ..SamplerConfig::default()
            })
            .unwrap();
            (0..32).map(|_| s.sample(&logits, &[]).unwrap().as_slice::<i32>()[0]).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let mut greedy = Sampler::greedy().unwrap();
        assert_eq!(greedy.sample(&logits, &[]).unwrap().as_slice::<i32>(), &[2]);
    }

    #[test]
    fn filters_compose_and_bad_settings_are_rejected() {
        let config = SamplerConfig {
            top_k: 2,
            top_p: 0.9,
            min_p: 0.05,
            repetition_penalty: 1.3,
            ..SamplerConfig::default()
        };
        let sampler = Sampler::new(&config).unwrap();
        assert_eq!(sampler.transforms.len(), 4);
        let lp = sampler.logprobs(&Array::from_slice(&[1.0f32, 3.0, 2.0, 0.0], &[1, 4]), &[1]).unwrap();
        assert_eq!(kept(&lp), [false, true, true, false]);
        for bad in [
            SamplerConfig { temperature: -1.0, ..SamplerConfig::default() },
            SamplerConfig { top_p: 0.0, ..SamplerConfig::default() },
            SamplerConfig { min_p: 1.0, ..SamplerConfig::default() },
            SamplerConfig { repetition_penalty: 0.0, ..SamplerConfig::default() },
        ] {
            assert!(Sampler::new(&bad).is_err(), "{bad:?}");
        }
    }
}
