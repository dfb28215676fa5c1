//! Pieces of Hugging Face `config.json` shared by the families: token ids written as an
//! integer or a list, and RoPE settings written as `rope_theta` + `rope_scaling` (older
//! transformers) or as `rope_parameters` (transformers 5).

use lamina_components::RopeScaling;
use lamina_core::{Error, Result};
use serde::{Deserialize, Serialize};
use strum::{EnumString, VariantNames};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumString, VariantNames)]
#[strum(serialize_all = "snake_case")]
enum RopeType {
    Default,
    Linear,
    Llama3,
}

/// `rope_scaling` or `rope_parameters` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfRope {
    /// `"default"`, `"linear"` or `"llama3"`.
    #[serde(default)]
    pub rope_type: Option<String>,
    /// The older spelling of `rope_type`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The frequency base (inside `rope_parameters` only).
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// Linear and Llama-3 scaling factor.
    #[serde(default)]
    pub factor: Option<f32>,
    /// Llama-3 low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f32>,
    /// Llama-3 high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f32>,
    /// Llama-3 pretraining context.
    #[serde(default)]
    pub original_max_position_embeddings: Option<u32>,
}

/// The frequency base and scaling a config describes, from either form; `rope_theta`
/// defaults to `default_theta`.
///
/// # Errors
/// [`Error::UnknownVariant`] for an unsupported `rope_type`, [`Error::InvalidConfig`]
/// for a scaling without its `factor`.
pub fn rope_settings(
    config: &'static str,
    rope_theta: Option<f32>,
    rope_scaling: Option<&HfRope>,
    rope_parameters: Option<&HfRope>,
    default_theta: f32,
) -> Result<(f32, RopeScaling)> {
    let spec = rope_parameters.or(rope_scaling);
    let base = rope_parameters.and_then(|p| p.rope_theta).or(rope_theta).unwrap_or(default_theta);
    let Some(spec) = spec else {
        return Ok((base, RopeScaling::Default));
    };
    let name = spec.rope_type.as_deref().or(spec.kind.as_deref()).unwrap_or("default");
    let kind: RopeType = name.parse().map_err(|_| Error::UnknownVariant {
        kind: "rope_type",
        value: name.to_owned(),
        known: RopeType::VARIANTS.join(", "),
    })?;
    let factor = || spec.factor.ok_or_else(|| Error::invalid(config, "rope_scaling.factor", "is required"));
    let scaling = match kind {
        RopeType::Default => RopeScaling::Default,
        RopeType::Linear => RopeScaling::Linear { factor: factor()? },
        RopeType::Llama3 => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: spec.low_freq_factor.unwrap_or(1.0),
            high_freq_factor: spec.high_freq_factor.unwrap_or(4.0),
            original_max_position_embeddings: spec.original_max_position_embeddings.unwrap_or(8192),
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
        let err = rope_settings("X", None, Some(&yarn), None, 1e4).unwrap_err().to_string();
        assert!(err.contains("unknown rope_type `yarn`") && err.contains("llama3"), "{err}");
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
