//! Request fields into generation settings, each checked against what it may be.

use lamina_core::Config;
use lamina_generate::{GenerateParams, LengthPolicy, SamplerConfig};

use crate::error::ApiError;
use crate::openai::{Sampling, Stop};

/// The most stop strings a request may give.
const MAX_STOPS: usize = 16;

/// The generation settings a request asks for; `max_tokens` overrides `sampling`'s (chat's
/// `max_completion_tokens`), `default_max_tokens` applies when neither is given.
///
/// # Errors
/// 400 naming the first field out of range.
pub fn generate_params(
    sampling: &Sampling,
    max_tokens: Option<i64>,
    default_max_tokens: usize,
    stop_ids: &[u32],
) -> Result<GenerateParams, ApiError> {
    if let Some(n) = sampling.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(
            format!("n = {n}: only one choice per request is supported"),
            Some("n"),
        ));
    }
    let (max_tokens, field) = match (max_tokens, sampling.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let max_new_tokens = match max_tokens {
        None => default_max_tokens,
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
    check(top_k >= 0, "top_k", "must be 0 (off) or more")?;
    let min_p = sampling.min_p.unwrap_or(0.0);
    check((0.0..1.0).contains(&min_p), "min_p", "must be in [0, 1)")?;
    let repetition_penalty = sampling.repetition_penalty.unwrap_or(1.0);
    check(repetition_penalty > 0.0 && repetition_penalty.is_finite(), "repetition_penalty", "must be > 0")?;
    let stop_strings = match &sampling.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(many)) => many.clone(),
    };
    check(stop_strings.len() <= MAX_STOPS, "stop", &format!("may hold at most {MAX_STOPS} strings"))?;
    let sampler = SamplerConfig {
        temperature,
        top_p,
        top_k: usize::try_from(top_k).unwrap_or(0),
        min_p,
        repetition_penalty,
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
