//! Presets by name, `family:name` (`llama:tinyllama`, `mamba:mamba_130m`,
//! `mobilellm:950m`), as the examples take them.

use lamina_core::{Error, Result};
use serde_json::Value;

use crate::llama::{LlamaConfig, LlamaForCausalLM};
use crate::mamba::{MambaConfig, MambaForCausalLM};
use crate::mobilellm::{MOBILELLM_PRESETS, MobileLlmConfig, MobileLlmForCausalLM, get_mobilellm_config};
use crate::model::LanguageModel;
use crate::registry::Family;

/// A preset's config, by family.
#[derive(Debug, Clone, PartialEq)]
pub enum PresetConfig {
    /// A Llama-family preset.
    Llama(LlamaConfig),
    /// A Mamba preset.
    Mamba(MambaConfig),
    /// A MobileLLM preset.
    MobileLlm(MobileLlmConfig),
}

impl PresetConfig {
    /// Looks up `family:name`.
    ///
    /// # Errors
    /// [`Error::UnknownVariant`] listing the known families or names.
    pub fn from_spec(spec: &str) -> Result<Self> {
        let (family, name) = spec.split_once(':').ok_or_else(|| Error::UnknownVariant {
            kind: "preset (`family:name`)",
            value: spec.to_owned(),
            known: "e.g. llama:tinyllama, mamba:mamba_130m, mobilellm:950m".into(),
        })?;
        let unknown = |known: Vec<&str>| Error::UnknownVariant {
            kind: "preset",
            value: spec.to_owned(),
            known: known.join(", "),
        };
        match family {
            "llama" => LlamaConfig::presets()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| PresetConfig::Llama(f()))
                .ok_or_else(|| unknown(LlamaConfig::presets().iter().map(|(n, _)| *n).collect())),
            "mamba" => MambaConfig::presets()
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, f)| PresetConfig::Mamba(f()))
                .ok_or_else(|| unknown(MambaConfig::presets().iter().map(|(n, _)| *n).collect())),
            "mobilellm" => get_mobilellm_config(name)
                .map(PresetConfig::MobileLlm)
                .map_err(|_| unknown(MOBILELLM_PRESETS.to_vec())),
            _ => Err(Error::UnknownVariant {
                kind: "preset family",
                value: family.to_owned(),
                known: "llama, mamba, mobilellm".into(),
            }),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        match self {
            PresetConfig::Llama(_) => Family::Llama,
            PresetConfig::Mamba(_) => Family::Mamba,
            PresetConfig::MobileLlm(_) => Family::MobileLlm,
        }
    }

    /// Parameters, counted from shapes.
    ///
    /// # Errors
    /// For an invalid config.
    pub fn num_parameters(&self) -> Result<usize> {
        match self {
            PresetConfig::Llama(c) => c.num_parameters(),
            PresetConfig::Mamba(c) => c.num_parameters(),
            PresetConfig::MobileLlm(c) => c.num_parameters(),
        }
    }

    /// The config as JSON.
    ///
    /// # Errors
    /// Never for the built-in configs.
    pub fn to_json(&self) -> Result<Value> {
        let value = match self {
            PresetConfig::Llama(c) => serde_json::to_value(c),
            PresetConfig::Mamba(c) => serde_json::to_value(c),
            PresetConfig::MobileLlm(c) => serde_json::to_value(c),
        };
        value.map_err(|source| Error::Json { what: "preset".into(), source })
    }

    /// A model with random weights (allocated lazily: MLX evaluates them on first use).
    ///
    /// # Errors
    /// For an invalid config.
    pub fn build(&self) -> Result<Box<dyn LanguageModel>> {
        Ok(match self {
            PresetConfig::Llama(c) => Box::new(LlamaForCausalLM::new(c.clone())?),
            PresetConfig::Mamba(c) => Box::new(MambaForCausalLM::new(c.clone())?),
            PresetConfig::MobileLlm(c) => Box::new(MobileLlmForCausalLM::new(c.clone())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_and_unknown_ones_list_the_known() {
        assert!(matches!(PresetConfig::from_spec("mobilellm:950m").unwrap(), PresetConfig::MobileLlm(_)));
        assert_eq!(PresetConfig::from_spec("llama:tinyllama").unwrap().family(), Family::Llama);
        assert!(PresetConfig::from_spec("mamba:mamba_130m").is_ok());
        let err = PresetConfig::from_spec("llama:gpt4").unwrap_err().to_string();
        assert!(err.contains("smollm2_135m"), "{err}");
        assert!(PresetConfig::from_spec("bert:base").is_err());
        assert!(PresetConfig::from_spec("tinyllama").is_err());
    }
}
