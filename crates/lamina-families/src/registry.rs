//! From `config.json`'s `model_type` to a model: the built-in families, and any type a
//! user registers at run time.

use std::collections::BTreeMap;
use std::sync::Arc;

use lamina_core::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use strum::{Display, EnumString};

use crate::llama::{LlamaConfig, LlamaForCausalLM};
use crate::mamba::{MambaConfig, MambaForCausalLM};
use crate::mobilellm::{ClassicMobileLlmConfig, Llama4TextConfig, MobileLlmForCausalLM};
use crate::model::LanguageModel;

/// The model families lamina ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    /// Llama 2/3.x, Mistral, TinyLlama, SmolLM2, Code Llama.
    Llama,
    /// Mamba.
    Mamba,
    /// MobileLLM and MobileLLM-R1.
    #[strum(serialize = "mobilellm")]
    MobileLlm,
    /// A family registered at run time.
    Custom,
}

/// Builds a model from a parsed `config.json`.
pub type ModelBuilder = Arc<dyn Fn(&Value) -> Result<Box<dyn LanguageModel>> + Send + Sync>;

/// `model_type` -> builder.
#[derive(Clone)]
pub struct Registry {
    builders: BTreeMap<String, ModelBuilder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("model_types", &self.known()).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

/// Parses `config.json` (already read as JSON) into a family's config type.
///
/// # Errors
/// [`Error::Json`] naming the first missing or mistyped key.
pub fn parse_config<T: DeserializeOwned>(config: &Value) -> Result<T> {
    serde_json::from_value(config.clone())
        .map_err(|source| Error::Json { what: "config.json".into(), source })
}

impl Registry {
    /// A registry with no types.
    pub fn empty() -> Self {
        Registry { builders: BTreeMap::new() }
    }

    /// The built-in types: `llama`, `mistral`, `mamba`, `llama4_text`, `mobilellm`.
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        let llama: ModelBuilder = Arc::new(|c| {
            Ok(Box::new(LlamaForCausalLM::new(parse_config::<LlamaConfig>(c)?)?) as Box<dyn LanguageModel>)
        });
        registry.register("llama", llama.clone());
        registry.register("mistral", llama);
        registry.register(
            "mamba",
            Arc::new(|c| {
                Ok(Box::new(MambaForCausalLM::new(parse_config::<MambaConfig>(c)?)?)
                    as Box<dyn LanguageModel>)
            }),
        );
        registry.register(
            "llama4_text",
            Arc::new(|c| {
                let config = parse_config::<Llama4TextConfig>(c)?.to_mobilellm()?;
                Ok(Box::new(MobileLlmForCausalLM::new(config)?) as Box<dyn LanguageModel>)
            }),
        );
        registry.register(
            "mobilellm",
            Arc::new(|c| {
                let mut llama_view = c.clone();
                if let Some(map) = llama_view.as_object_mut() {
                    map.remove("model_type");
                }
                let config = parse_config::<ClassicMobileLlmConfig>(&llama_view)?.to_mobilellm()?;
                Ok(Box::new(MobileLlmForCausalLM::new(config)?) as Box<dyn LanguageModel>)
            }),
        );
        registry
    }

    /// Adds (or replaces) a type.
    pub fn register(&mut self, model_type: impl Into<String>, builder: ModelBuilder) {
        self.builders.insert(model_type.into(), builder);
    }

    /// The registered types, sorted.
    pub fn known(&self) -> Vec<&str> {
        self.builders.keys().map(String::as_str).collect()
    }

    /// Whether `model_type` is registered.
    pub fn contains(&self, model_type: &str) -> bool {
        self.builders.contains_key(model_type)
    }

    /// Builds the model `config.json` describes (random weights; the loader applies the
    /// checkpoint's).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without a `model_type`, [`Error::UnknownVariant`] listing
    /// the known types for an unknown one, and the family's own config errors.
    pub fn build(&self, config: &Value) -> Result<Box<dyn LanguageModel>> {
        let model_type = model_type(config)?;
        let builder = self.builders.get(model_type).ok_or_else(|| Error::UnknownVariant {
            kind: "model_type",
            value: model_type.to_owned(),
            known: self.known().join(", "),
        })?;
        builder(config)
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
