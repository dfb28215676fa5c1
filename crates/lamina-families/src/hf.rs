//! Pieces of Hugging Face `config.json` shared by the families: token ids written as an
//! integer or a list, and RoPE settings written as `rope_theta` + `rope_scaling` (older
//! transformers) or as `rope_parameters` (transformers 5).

use lamina_components::RopeScaling;
use lamina_core::{Error, Result};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString, VariantNames};

/// A named preset: its name and the function returning its config.
pub type Preset<C> = (&'static str, fn() -> C);

/// One token id or several (`"eos_token_id": 2` or `[128001, 128009]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The ids of an optional field, empty when absent.
pub fn ids(field: &Option<TokenIds>) -> Vec<u32> {
    field.as_ref().map(TokenIds::to_vec).unwrap_or_default()
}

/// The RoPE kinds lamina implements, as `rope_type` (or the older `type`) names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString, VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RopeType {
    /// Unscaled.
    #[default]
    Default,
    /// Positions divided by `factor`.
    Linear,
    /// Llama 3.1's frequency-dependent scaling.
    Llama3,
    /// YaRN.
    Yarn,
    /// LongRoPE (Phi-3; `su` in older configs).
    #[serde(alias = "su")]
    #[strum(serialize = "longrope", serialize = "su")]
    Longrope,
}

/// `rope_scaling` or `rope_parameters` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfRope {
    /// The kind of scaling.
    #[serde(default)]
    pub rope_type: Option<RopeType>,
    /// The older spelling of `rope_type`.
    #[serde(default, rename = "type")]
    pub kind: Option<RopeType>,
    /// The frequency base (inside `rope_parameters` only).
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// Linear, Llama-3 and YaRN scaling factor.
    #[serde(default)]
    pub factor: Option<f32>,
    /// Llama-3 low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f32>,
    /// Llama-3 high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f32>,
    /// Llama-3, YaRN and LongRoPE pretraining context.
    #[serde(default)]
    pub original_max_position_embeddings: Option<u32>,
    /// YaRN: rotations at the fast end of the ramp.
    #[serde(default)]
    pub beta_fast: Option<f32>,
    /// YaRN: rotations at the slow end of the ramp.
    #[serde(default)]
    pub beta_slow: Option<f32>,
    /// YaRN magnitude correction.
    #[serde(default)]
    pub mscale: Option<f32>,
    /// YaRN magnitude correction on every dimension.
    #[serde(default)]
    pub mscale_all_dim: Option<f32>,
    /// LongRoPE factors for long contexts.
    #[serde(default)]
    pub long_factor: Option<Vec<f32>>,
    /// LongRoPE factors for short contexts.
    #[serde(default)]
    pub short_factor: Option<Vec<f32>>,
}

/// Where a config keeps its RoPE settings (either form), and the context lengths that
/// LongRoPE and YaRN read from the config's top level.
#[derive(Debug, Clone, Copy)]
pub struct RopeSource<'a> {
    /// The config's name, for errors.
    pub config: &'static str,
    /// `rope_theta`.
    pub rope_theta: Option<f32>,
    /// `rope_scaling`.
    pub rope_scaling: Option<&'a HfRope>,
    /// `rope_parameters`.
    pub rope_parameters: Option<&'a HfRope>,
    /// The base when none is given.
    pub default_theta: f32,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<usize>,
    /// `original_max_position_embeddings` at the config's top level (Phi-3).
    pub original_max_position_embeddings: Option<usize>,
}

/// The frequency base and scaling a config describes, from either form; `rope_theta`
/// defaults to `default_theta`.
///
/// # Errors
/// [`Error::InvalidConfig`] for a scaling without its `factor` (or LongRoPE without its
/// factors and context lengths).
pub fn rope_settings(
    config: &'static str,
    rope_theta: Option<f32>,
    rope_scaling: Option<&HfRope>,
    rope_parameters: Option<&HfRope>,
    default_theta: f32,
) -> Result<(f32, RopeScaling)> {
    rope_from(RopeSource {
        config,
        rope_theta,
        rope_scaling,
        rope_parameters,
        default_theta,
        max_position_embeddings: None,
        original_max_position_embeddings: None,
    })
}

/// [`rope_settings`] with the context lengths LongRoPE and YaRN need.
///
/// # Errors
/// As [`rope_settings`].
pub fn rope_from(source: RopeSource<'_>) -> Result<(f32, RopeScaling)> {
    let RopeSource { config, rope_theta, rope_scaling, rope_parameters, default_theta, .. } = source;
    let spec = rope_parameters.or(rope_scaling);
    let base = rope_parameters.and_then(|p| p.rope_theta).or(rope_theta).unwrap_or(default_theta);
    let Some(spec) = spec else {
        return Ok((base, RopeScaling::Default));
    };
    let kind = spec.rope_type.or(spec.kind).unwrap_or_default();
    let factor = || spec.factor.ok_or_else(|| Error::invalid(config, "rope_scaling.factor", "is required"));
    let context = |field: &str, value: Option<usize>| {
        value.and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
            Error::invalid(config, field.to_owned(), "is required by this rope_type (and must fit u32)")
        })
    };
    let original =
        spec.original_max_position_embeddings.map(|v| v as usize).or(source.original_max_position_embeddings);
    let scaling = match kind {
        RopeType::Default => RopeScaling::Default,
        RopeType::Linear => RopeScaling::Linear { factor: factor()? },
        RopeType::Llama3 => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: spec.low_freq_factor.unwrap_or(1.0),
            high_freq_factor: spec.high_freq_factor.unwrap_or(4.0),
            original_max_position_embeddings: spec.original_max_position_embeddings.unwrap_or(8192),
        },
        RopeType::Yarn => RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: spec.original_max_position_embeddings.unwrap_or(4096),
            beta_fast: spec.beta_fast.unwrap_or(32.0),
            beta_slow: spec.beta_slow.unwrap_or(1.0),
            mscale: spec.mscale.unwrap_or(1.0),
            mscale_all_dim: spec.mscale_all_dim.unwrap_or(0.0),
        },
        RopeType::Longrope => RopeScaling::Longrope {
            long_factor: spec
                .long_factor
                .clone()
                .ok_or_else(|| Error::invalid(config, "rope_scaling.long_factor", "is required"))?,
            short_factor: spec.short_factor.clone().unwrap_or_default(),
            original_max_position_embeddings: context("original_max_position_embeddings", original)?,
            max_position_embeddings: context("max_position_embeddings", source.max_position_embeddings)?,
        },
    };
    Ok((base, scaling))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> HfRope {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn both_forms_give_the_same_settings() {
        let old =
            parse(r#"{"rope_type": "llama3", "factor": 32.0, "original_max_position_embeddings": 8192}"#);
        let new = parse(
            r#"{"rope_type": "llama3", "factor": 32.0, "original_max_position_embeddings": 8192, "rope_theta": 500000.0}"#,
        );
        let a = rope_settings("X", Some(500_000.0), Some(&old), None, 1e4).unwrap();
        let b = rope_settings("X", None, None, Some(&new), 1e4).unwrap();
        assert_eq!(a, b);
        assert!(matches!(a.1, RopeScaling::Llama3 { factor: 32.0, high_freq_factor: 4.0, .. }));
    }

    #[test]
    fn older_type_key_defaults_and_errors() {
        let linear = parse(r#"{"type": "linear", "factor": 2.0}"#);
        assert_eq!(
            rope_settings("X", None, Some(&linear), None, 1e4).unwrap(),
            (1e4, RopeScaling::Linear { factor: 2.0 })
        );
        assert_eq!(rope_settings("X", Some(5.0), None, None, 1e4).unwrap(), (5.0, RopeScaling::Default));
        let yarn = parse(r#"{"rope_type": "yarn", "factor": 4.0}"#);
        let (_, scaling) = rope_settings("X", None, Some(&yarn), None, 1e4).unwrap();
        assert!(matches!(scaling, RopeScaling::Yarn { factor: 4.0, beta_fast: 32.0, .. }));
        assert!(serde_json::from_str::<HfRope>(r#"{"rope_type": "sideways"}"#).is_err());
        let su = parse(r#"{"type": "su", "long_factor": [1.0, 2.0], "short_factor": [1.0, 1.0]}"#);
        assert_eq!(su.kind, Some(RopeType::Longrope));
        assert!(rope_settings("X", None, Some(&su), None, 1e4).is_err(), "no context lengths");
        let no_factor = parse(r#"{"rope_type": "linear"}"#);
        assert!(rope_settings("X", None, Some(&no_factor), None, 1e4).is_err());
    }

    #[test]
    fn token_ids_are_an_int_or_a_list() {
        let one: TokenIds = serde_json::from_str("2").unwrap();
        let many: TokenIds = serde_json::from_str("[128001, 128009]").unwrap();
        assert_eq!(one.to_vec(), [2]);
        assert_eq!(many.to_vec(), [128001, 128009]);
        assert!(ids(&None).is_empty());
    }
}
