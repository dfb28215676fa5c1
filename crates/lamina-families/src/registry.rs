//! From `config.json`'s `model_type` to a model: one table of the built-in families
//! ([`FAMILIES`]), and any type a user registers at run time.

use std::collections::BTreeMap;
use std::sync::Arc;

use lamina_core::{Budget, Error, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use strum::VariantNames;

use crate::decoder::{
    DecoderConfig, DecoderSpec, GEMMA2, GEMMA3, LLAMA, MISTRAL, PHI3, QWEN2, QWEN3, SMOLLM3,
};
use crate::family::{AnyConfig, Family, FamilyConfig, ModelType};
use crate::hf::Preset;
use crate::mamba::MambaConfig;
use crate::mobilellm::{ClassicMobileLlmConfig, Llama4TextConfig, MobileLlmConfig};
use crate::model::LanguageModel;

/// A named preset of some family.
pub type NamedConfig = (&'static str, Box<dyn AnyConfig>);

/// How a row's configs are read and built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Architecture {
    /// A decoder-only transformer read as a [`DecoderConfig`]; the spec says what the row's
    /// family adds over Llama.
    Decoder(DecoderSpec),
    /// Mamba's selective state-space stack ([`MambaConfig`]).
    Mamba,
    /// MobileLLM (classic, or R1's `llama4_text`).
    MobileLlm,
}

/// One row of the built-in families: its `model_type`s, how they are read, their presets.
#[derive(Debug, Clone, Copy)]
pub struct FamilyEntry {
    /// The family.
    pub family: Family,
    /// The `model_type`s the row reads.
    pub model_types: &'static [ModelType],
    /// What they are; a decoder's spec.
    pub architecture: Architecture,
    /// Parses a `config.json` of one of those types.
    pub parse: fn(ModelType, &Value) -> Result<Box<dyn AnyConfig>>,
    /// The presets, by name (the first row of a family holds the family's).
    pub presets: fn() -> Vec<NamedConfig>,
}

/// A decoder row: one family's `model_types` with their spec and presets.
const fn decoder_row(
    family: Family,
    model_types: &'static [ModelType],
    spec: DecoderSpec,
    presets: fn() -> Vec<NamedConfig>,
) -> FamilyEntry {
    FamilyEntry { family, model_types, architecture: Architecture::Decoder(spec), parse: decoder, presets }
}

/// The built-in families. A new Llama-like family is a row here (its spec: what it adds
/// over Llama, [`crate::decoder::DecoderSpec`]) and its presets.
pub const FAMILIES: &[FamilyEntry] = &[
    decoder_row(Family::Llama, &[ModelType::Llama], LLAMA, || decoder_presets(Family::Llama)),
    decoder_row(Family::Llama, &[ModelType::Mistral], MISTRAL, Vec::new),
    decoder_row(Family::Qwen2, &[ModelType::Qwen2], QWEN2, || decoder_presets(Family::Qwen2)),
    decoder_row(Family::Qwen3, &[ModelType::Qwen3], QWEN3, || decoder_presets(Family::Qwen3)),
    decoder_row(Family::Gemma2, &[ModelType::Gemma2], GEMMA2, || decoder_presets(Family::Gemma2)),
    FamilyEntry {
        parse: gemma3,
        ..decoder_row(Family::Gemma3, &[ModelType::Gemma3Text, ModelType::Gemma3], GEMMA3, || {
            decoder_presets(Family::Gemma3)
        })
    },
    decoder_row(Family::Phi3, &[ModelType::Phi3], PHI3, || decoder_presets(Family::Phi3)),
    decoder_row(Family::SmolLm3, &[ModelType::SmolLm3], SMOLLM3, || decoder_presets(Family::SmolLm3)),
    FamilyEntry {
        family: Family::Mamba,
        model_types: &[ModelType::Mamba],
        architecture: Architecture::Mamba,
        parse: mamba,
        presets: || named(MambaConfig::presets()),
    },
    FamilyEntry {
        family: Family::MobileLlm,
        model_types: &[ModelType::MobileLlm, ModelType::Llama4Text],
        architecture: Architecture::MobileLlm,
        parse: mobilellm,
        presets: || named(MobileLlmConfig::presets()),
    },
];

/// The first row of a family (the one holding its presets).
pub fn family_entry(family: Family) -> Option<&'static FamilyEntry> {
    FAMILIES.iter().find(|e| e.family == family)
}

/// The row that reads `model_type`.
pub fn row_of(model_type: ModelType) -> Option<&'static FamilyEntry> {
    FAMILIES.iter().find(|e| e.model_types.contains(&model_type))
}

/// The family that reads `model_type` ([`Family::Custom`] for none).
pub fn family_of(model_type: ModelType) -> Family {
    row_of(model_type).map_or(Family::Custom, |row| row.family)
}

/// The spec of a decoder `model_type`; `None` for the types other architectures read.
pub fn decoder_spec(model_type: ModelType) -> Option<DecoderSpec> {
    match row_of(model_type)?.architecture {
        Architecture::Decoder(spec) => Some(spec),
        Architecture::Mamba | Architecture::MobileLlm => None,
    }
}

/// Parses `config.json` (already read as JSON) into a family's config type.
///
/// # Errors
/// [`Error::Json`] naming the first missing or mistyped key (its path, e.g.
/// `config.json at rope_scaling.factor`).
pub fn parse_config<T: DeserializeOwned>(config: &Value) -> Result<T> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let what = if path == "." { "config.json".to_owned() } else { format!("config.json at `{path}`") };
        Error::Json { what, source: e.into_inner() }
    })
}

fn boxed<C: FamilyConfig + DeserializeOwned>(config: &Value) -> Result<Box<dyn AnyConfig>> {
    Ok(Box::new(parse_config::<C>(config)?))
}

/// Presets of one config type, boxed.
fn named<C: FamilyConfig>(presets: Vec<Preset<C>>) -> Vec<NamedConfig> {
    presets.into_iter().map(|(name, make)| (name, Box::new(make()) as Box<dyn AnyConfig>)).collect()
}

fn decoder_presets(family: Family) -> Vec<NamedConfig> {
    named(DecoderConfig::presets(family))
}

fn decoder(_: ModelType, config: &Value) -> Result<Box<dyn AnyConfig>> {
    boxed::<DecoderConfig>(config)
}

fn mamba(_: ModelType, config: &Value) -> Result<Box<dyn AnyConfig>> {
    boxed::<MambaConfig>(config)
}

fn mobilellm(model_type: ModelType, config: &Value) -> Result<Box<dyn AnyConfig>> {
    /// The keys classic MobileLLM adds to Llama's.
    #[derive(serde::Deserialize)]
    struct Sharing {
        #[serde(default)]
        share_embedding: bool,
        #[serde(default)]
        layer_sharing: bool,
    }
    Ok(Box::new(match model_type {
        ModelType::Llama4Text => parse_config::<Llama4TextConfig>(config)?.to_mobilellm()?,
        _ => {
            // Parsed in two passes rather than through `#[serde(flatten)]`, which loses
            // the path of a bad key.
            let Sharing { share_embedding, layer_sharing } = parse_config(config)?;
            let llama = parse_config::<DecoderConfig>(config)?;
            ClassicMobileLlmConfig { llama, share_embedding, layer_sharing }.to_mobilellm()?
        }
    }))
}

/// Gemma 3: a text-only config (`gemma3_text`), or the multimodal one whose text model is
/// `text_config`, whose omitted keys take transformers' `Gemma3TextConfig` defaults.
fn gemma3(model_type: ModelType, config: &Value) -> Result<Box<dyn AnyConfig>> {
    if model_type == ModelType::Gemma3Text {
        return boxed::<DecoderConfig>(config);
    }
    let text = config
        .get("text_config")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::invalid("config.json", "text_config", "is required for model_type gemma3"))?;
    let mut merged: Map<String, Value> = match json!({
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "sliding_window_pattern": 6,
    }) {
        Value::Object(defaults) => defaults,
        _ => Map::new(),
    };
    merged.extend(text.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged.insert("model_type".into(), json!("gemma3_text"));
    for key in ["eos_token_id", "bos_token_id", "tie_word_embeddings"] {
        if let (false, Some(value)) = (merged.contains_key(key), config.get(key)) {
            merged.insert(key.into(), value.clone());
        }
    }
    boxed::<DecoderConfig>(&Value::Object(merged))
}

/// Builds a model of a user-registered `model_type` from `config.json`, within a budget.
pub type ModelBuilder = Arc<dyn Fn(&Value, Budget) -> Result<Box<dyn LanguageModel>> + Send + Sync>;

/// `model_type` -> model: the built-in table, then the types registered at run time.
#[derive(Clone, Default)]
pub struct Registry {
    custom: BTreeMap<String, ModelBuilder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("model_types", &self.known()).finish()
    }
}

impl Registry {
    /// The built-in families only.
    pub fn with_builtins() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a type; it takes precedence over a built-in of the same name.
    pub fn register(&mut self, model_type: impl Into<String>, builder: ModelBuilder) {
        self.custom.insert(model_type.into(), builder);
    }

    /// Registers a family defined outside lamina: `config.json`s of `model_type` parse
    /// into `C` and build a [`crate::FamilyModel<C>`].
    pub fn register_family<C: FamilyConfig + DeserializeOwned>(&mut self, model_type: impl Into<String>) {
        self.register(model_type, Arc::new(|config, budget| parse_config::<C>(config)?.build(budget)));
    }

    /// Every known type, sorted.
    pub fn known(&self) -> Vec<String> {
        let mut known: Vec<String> = ModelType::VARIANTS.iter().map(|s| (*s).to_owned()).collect();
        known.extend(self.custom.keys().cloned());
        known.sort();
        known.dedup();
        known
    }

    /// Whether `model_type` is known.
    pub fn contains(&self, model_type: &str) -> bool {
        self.custom.contains_key(model_type) || model_type.parse::<ModelType>().is_ok()
    }

    /// The typed config of a built-in `config.json`.
    ///
    /// # Errors
    /// [`Error::UnknownVariant`] for an unknown type, the family's parse and validation
    /// errors.
    pub fn parse(&self, config: &Value) -> Result<Box<dyn AnyConfig>> {
        let name = model_type(config)?;
        let model_type: ModelType = name.parse().map_err(|_| self.unknown(name))?;
        let entry = row_of(model_type).ok_or_else(|| self.unknown(name))?;
        let parsed = (entry.parse)(model_type, config)?;
        Ok(parsed)
    }

    /// Builds the model `config.json` describes (random weights, allocated lazily; the
    /// loader applies the checkpoint's), refused if larger than the machine's memory at
    /// 16 bits per parameter.
    ///
    /// # Errors
    /// As [`Registry::build_within`].
    pub fn build(&self, config: &Value) -> Result<Box<dyn LanguageModel>> {
        self.build_within(config, Budget::default())
    }

    /// Builds the model `config.json` describes after checking its size against `budget`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without a `model_type`, [`Error::UnknownVariant`] listing
    /// the known types for an unknown one, [`Error::TooLarge`] above the budget, and the
    /// family's own config errors.
    pub fn build_within(&self, config: &Value, budget: Budget) -> Result<Box<dyn LanguageModel>> {
        let name = model_type(config)?;
        if let Some(builder) = self.custom.get(name) {
            return builder(config, budget);
        }
        self.parse(config)?.build(budget)
    }

    fn unknown(&self, name: &str) -> Error {
        Error::UnknownVariant { kind: "model_type", value: name.to_owned(), known: self.known().join(", ") }
    }
}

/// The `model_type` of a parsed `config.json`.
///
/// # Errors
/// [`Error::InvalidConfig`] when it is missing or not a string.
pub fn model_type(config: &Value) -> Result<&str> {
    config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid("config.json", "model_type", "is missing or not a string"))
}

#[cfg(test)]
mod tests {
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn every_model_type_round_trips_through_one_row() {
        let registry = Registry::with_builtins();
        for model_type in ModelType::iter() {
            let rows: Vec<&FamilyEntry> =
                FAMILIES.iter().filter(|e| e.model_types.contains(&model_type)).collect();
            assert_eq!(rows.len(), 1, "{model_type} is in {} rows", rows.len());
            let row = rows[0];
            let name = model_type.to_string();
            assert_eq!(name.parse::<ModelType>().ok(), Some(model_type), "{name}");
            assert!(registry.contains(&name), "{name}");
            assert_eq!(family_of(model_type), row.family, "{model_type}");
            for (preset, config) in (row.presets)() {
                assert_eq!(config.family(), row.family, "{model_type}: preset {preset}");
            }
        }
        let listed: usize = FAMILIES.iter().map(|e| e.model_types.len()).sum();
        assert_eq!(listed, ModelType::iter().count(), "a model_type listed twice");
    }

    #[test]
    fn a_config_of_each_decoder_row_reads_back_its_family_and_spec() {
        let registry = Registry::with_builtins();
        for row in FAMILIES {
            let Architecture::Decoder(spec) = row.architecture else { continue };
            for &model_type in row.model_types {
                let config = json!({"model_type": model_type.to_string(), "vocab_size": 32, "hidden_size": 16,
                    "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                    "text_config": {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
                        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                        "head_dim": 8}});
                let parsed = registry.parse(&config).unwrap();
                assert_eq!(parsed.family(), row.family, "{model_type}");
                let text = if model_type == ModelType::Gemma3 { ModelType::Gemma3Text } else { model_type };
                assert_eq!(decoder_spec(text), Some(spec), "{model_type}");
            }
        }
        assert_eq!(decoder_spec(ModelType::Mamba), None);
        assert_eq!(decoder_spec(ModelType::MobileLlm), None);
    }

    #[test]
    fn every_family_has_presets_in_its_first_row() {
        for family in FAMILIES.iter().map(|row| row.family) {
            let first = family_entry(family).unwrap();
            assert!(!(first.presets)().is_empty(), "{family}");
        }
    }

    #[test]
    fn a_family_key_applies_only_where_its_row_reads_it() {
        let with_gemma_keys = |model_type: &str| {
            let config = json!({"model_type": model_type, "vocab_size": 32, "hidden_size": 16,
                "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 8,
                "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"],
                "query_pre_attn_scalar": 64.0, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                "rope_local_base_freq": 77.0});
            parse_config::<DecoderConfig>(&config).unwrap().block(0).unwrap().attention
        };
        let llama = with_gemma_keys("llama");
        assert_eq!((llama.scale, llama.softcap, llama.sliding_window), (None, None, None));
        assert_eq!(llama.rope.unwrap().base, 10_000.0);
        let gemma2 = with_gemma_keys("gemma2");
        assert_eq!((gemma2.scale, gemma2.softcap, gemma2.sliding_window), (Some(0.125), Some(50.0), Some(4)));
        assert_eq!(gemma2.rope.unwrap().base, 10_000.0, "Gemma 2 has no local RoPE base");
        let gemma3 = with_gemma_keys("gemma3_text");
        assert_eq!(gemma3.rope.unwrap().base, 77.0);
        let qwen3 = with_gemma_keys("qwen3");
        assert_eq!((qwen3.scale, qwen3.softcap, qwen3.sliding_window), (None, None, Some(4)));
    }
}
