//! Request fields into generation settings, each checked against what it may be.

use lamina_core::Config;
use lamina_generate::{GenerateParams, LengthPolicy, SamplerConfig};

use crate::error::ApiError;
use crate::openai::{Sampling, Stop};

/// The most stop strings a request may give.
const MAX_STOPS: usize = 16;

/// The most tokens `logit_bias` may name.
const MAX_LOGIT_BIAS: usize = 1024;

/// What the served model allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The vocabulary's size (token ids are below it).
    pub vocab_size: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

/// The generation settings a request asks for; `max_tokens` overrides `sampling`'s (chat's
/// `max_completion_tokens`), the default of `limits` applies when neither is given.
///
/// # Errors
/// 400 naming the first field out of range.
pub fn generate_params(
    sampling: &Sampling,
    max_tokens: Option<i64>,
    limits: Limits,
    stop_ids: &[u32],
) -> Result<GenerateParams, ApiError> {
    choices(sampling)?;
    let (max_tokens, field) = match (max_tokens, sampling.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_new_tokens = match max_tokens {
        None => limits.default_max_tokens,
        Some(m) if m >= 1 => usize::try_from(m).unwrap_or(usize::MAX),
        Some(m) => {
            return Err(ApiError::invalid(format!("`{field}` must be at least 1, got {m}"), Some(field)));
        }
    };
    let check = |ok: bool, field: &str, rule: &str| {
        if ok { Ok(()) } else { Err(ApiError::invalid(format!("`{field}` {rule}"), Some(field))) }
    };
    let temperature = sampling.temperature.unwrap_or(0.0);
    check((0.0..=2.0).contains(&temperature), "temperature", "must be between 0 and 2")?;
    let top_p = sampling.top_p.unwrap_or(1.0);
    check(top_p > 0.0 && top_p <= 1.0, "top_p", "must be in (0, 1]")?;
    let top_k = sampling.top_k.unwrap_or(0);
    let top_k = usize::try_from(top_k).ok().filter(|&k| k <= limits.vocab_size);
    check(top_k.is_some(), "top_k", &format!("must be 0 (off) to {} (the vocabulary)", limits.vocab_size))?;
    let min_p = sampling.min_p.unwrap_or(0.0);
    check((0.0..1.0).contains(&min_p), "min_p", "must be in [0, 1)")?;
    let repetition_penalty = sampling.repetition_penalty.unwrap_or(1.0);
    check(repetition_penalty > 0.0 && repetition_penalty.is_finite(), "repetition_penalty", "must be > 0")?;
    let presence_penalty = sampling.presence_penalty.unwrap_or(0.0);
    check((-2.0..=2.0).contains(&presence_penalty), "presence_penalty", "must be between -2 and 2")?;
    let frequency_penalty = sampling.frequency_penalty.unwrap_or(0.0);
    check((-2.0..=2.0).contains(&frequency_penalty), "frequency_penalty", "must be between -2 and 2")?;
    let logit_bias = logit_bias(sampling, limits.vocab_size)?;
    let stop_strings = match &sampling.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(many)) => many.clone(),
    };
    check(stop_strings.len() <= MAX_STOPS, "stop", &format!("may hold at most {MAX_STOPS} strings"))?;
    let sampler = SamplerConfig {
        temperature,
        top_p,
        top_k: top_k.unwrap_or(0),
        min_p,
        repetition_penalty,
        presence_penalty,
        frequency_penalty,
        logit_bias,
        seed: sampling.seed,
        ..SamplerConfig::default()
    };
    sampler.validated().map_err(|e| ApiError::invalid(e.to_string(), None))?;
    Ok(GenerateParams {
        max_new_tokens,
        sampler,
        eos_token_ids: stop_ids.to_vec(),
        stop_strings,
        length_policy: LengthPolicy::Truncate,
        ..GenerateParams::default()
    })
}

/// The most choices (`n`) a request may ask for.
pub const MAX_CHOICES: usize = 16;

/// `n`: how many choices, 1 to [`MAX_CHOICES`].
///
/// # Errors
/// 400 naming `n`.
pub fn choices(sampling: &Sampling) -> Result<usize, ApiError> {
    match sampling.n {
        None => Ok(1),
        Some(n) => usize::try_from(n).ok().filter(|n| (1..=MAX_CHOICES).contains(n)).ok_or_else(|| {
            ApiError::invalid(format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"), Some("n"))
        }),
    }
}

/// `logit_bias` as token ids and biases: ids below the vocabulary, biases in -100..=100.
fn logit_bias(
    sampling: &Sampling,
    vocab_size: usize,
) -> Result<std::collections::BTreeMap<u32, f32>, ApiError> {
    let Some(given) = &sampling.logit_bias else { return Ok(Default::default()) };
    let bad = |message: String| ApiError::invalid(message, Some("logit_bias"));
    if given.len() > MAX_LOGIT_BIAS {
        return Err(bad(format!("may name at most {MAX_LOGIT_BIAS} tokens, got {}", given.len())));
    }
    given
        .iter()
        .map(|(key, &bias)| {
            let shown: String = key.chars().take(32).collect();
            let id = key
                .parse::<u32>()
                .ok()
                .filter(|&id| usize::try_from(id).is_ok_and(|id| id < vocab_size))
                .ok_or_else(|| bad(format!("`{shown}` is not a token id below {vocab_size}")))?;
            if !(-100.0..=100.0).contains(&bias) {
                return Err(bad(format!("the bias of token {id} must be between -100 and 100, got {bias}")));
            }
            Ok((id, bias))
        })
        .collect()
}

/// Bytes of prompt text allowed per token of context before tokenizing: generous (text
/// runs ~4 bytes a token; long whitespace or repeated-symbol tokens reach ~16-32).
pub const MAX_BYTES_PER_TOKEN: usize = 64;

/// Refuses prompt text that cannot fit the context whatever its tokens, before the work
/// of templating and tokenizing it.
///
/// # Errors
/// 400 `context_length_exceeded`.
pub fn check_prompt_bytes(bytes: usize, context: Option<usize>, param: &str) -> Result<(), ApiError> {
    match context {
        Some(max) if bytes > max.saturating_mul(MAX_BYTES_PER_TOKEN) => Err(ApiError::invalid(
            format!(
                "the prompt has {bytes} bytes of text, more than this model's context of {max} tokens can hold"
            ),
            Some(param),
        )
        .with_code("context_length_exceeded")),
        _ => Ok(()),
    }
}

/// The prompt must leave room for at least one new token.
///
/// # Errors
/// 400 `context_length_exceeded`.
pub fn check_context(prompt: usize, context: Option<usize>, param: &str) -> Result<(), ApiError> {
    match context {
        Some(max) if prompt >= max => Err(ApiError::invalid(
            format!("the prompt has {prompt} tokens; this model's context is {max} tokens"),
            Some(param),
        )
        .with_code("context_length_exceeded")),
        _ if prompt == 0 => Err(ApiError::invalid("the prompt is empty", Some(param))),
        _ => Ok(()),
    }
}
