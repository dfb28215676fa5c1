//! What a family is: a typed config that says how it maps onto a backbone
//! ([`FamilyConfig`]), and the closed sets that name families and `model_type`s.

use std::fmt::Debug;

use lamina_backbones::Backbone;
use lamina_core::{Budget, Config, Error, Result, SizeEstimate};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strum::{Display, EnumIter, EnumString, VariantNames};

use crate::family_model::FamilyModel;
use crate::model::{LanguageModel, ModelInfo, Weights, drop_common};

/// The model families lamina ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, EnumIter, VariantNames)]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    /// Llama 2/3.x, Mistral, TinyLlama, SmolLM2, Code Llama.
    Llama,
    /// Qwen2 and Qwen2.5.
    Qwen2,
    /// Qwen3 (dense).
    Qwen3,
    /// Gemma 2.
    Gemma2,
    /// Gemma 3 (text).
    Gemma3,
    /// Phi-3 and Phi-3.5 (dense).
    Phi3,
    /// SmolLM3.
    #[strum(serialize = "smollm3")]
    SmolLm3,
    /// Mamba.
    Mamba,
    /// MobileLLM and MobileLLM-R1.
    #[strum(serialize = "mobilellm")]
    MobileLlm,
    /// A family registered at run time.
    Custom,
}

/// The `model_type`s of `config.json` that lamina reads.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ModelType {
    /// Llama.
    #[default]
    Llama,
    /// Mistral.
    Mistral,
    /// Qwen2 / Qwen2.5.
    Qwen2,
    /// Qwen3.
    Qwen3,
    /// Gemma 2.
    Gemma2,
    /// Gemma 3, text only.
    #[serde(rename = "gemma3_text")]
    #[strum(serialize = "gemma3_text")]
    Gemma3Text,
    /// Gemma 3 with its vision tower (the text model is read from `text_config`).
    Gemma3,
    /// Phi-3.
    Phi3,
    /// SmolLM3.
    #[serde(rename = "smollm3")]
    #[strum(serialize = "smollm3")]
    SmolLm3,
    /// Mamba.
    Mamba,
    /// MobileLLM-R1 (Llama 4 text).
    #[serde(rename = "llama4_text")]
    #[strum(serialize = "llama4_text")]
    Llama4Text,
    /// Classic MobileLLM.
    #[serde(rename = "mobilellm")]
    #[strum(serialize = "mobilellm")]
    MobileLlm,
}

/// A family's config: everything that makes a family, beside its presets. One generic
/// [`FamilyModel`] turns any of them into a [`LanguageModel`].
pub trait FamilyConfig: Config + Clone + Debug + Send + Sync + 'static {
    /// The backbone the config describes.
    type Backbone: Backbone + Clone + Debug + Send + 'static;

    /// The checkpoint key of the backbone (`model.` for most, `backbone.` for Mamba).
    const BACKBONE_KEY: &'static str = "model";

    /// The family.
    fn family(&self) -> Family;

    /// Parameters (head included) and blocks, counted from the config alone with
    /// saturating arithmetic: what is checked against a [`Budget`] before any layer is
    /// built.
    fn estimate(&self) -> SizeEstimate;

    /// Builds the backbone (random weights; a loader replaces them).
    ///
    /// # Errors
    /// For an invalid config.
    fn build_backbone(&self) -> Result<Self::Backbone>;

    /// Whether the LM head reuses the token embedding.
    fn tie_word_embeddings(&self) -> bool;

    /// Vocabulary, width, layers, context, special ids.
    fn info(&self) -> ModelInfo;

    /// Fixes the checkpoint's quirks; by default drops `rotary_emb.inv_freq` and a stray
    /// `lm_head.weight` of a tied model.
    ///
    /// # Errors
    /// When a tensor cannot be converted.
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        Ok(drop_common(weights, self.tie_word_embeddings()))
    }

    /// `cap` of the final logits' soft-capping (Gemma 2), if any.
    fn final_logit_softcapping(&self) -> Option<f32> {
        None
    }
}

/// Any family's config behind one type: what the registry parses and presets hold.
pub trait AnyConfig: Debug + Send + Sync {
    /// The family.
    fn family(&self) -> Family;

    /// The size estimate (see [`FamilyConfig::estimate`]).
    fn estimate(&self) -> SizeEstimate;

    /// Parameters, counted from shapes without allocating anything.
    ///
    /// # Errors
    /// For an invalid config.
    fn num_parameters(&self) -> Result<usize>;

    /// The config as JSON.
    ///
    /// # Errors
    /// When a value cannot be represented.
    fn to_json(&self) -> Result<Value>;

    /// A model with random weights (allocated lazily), refused when its estimate exceeds
    /// `budget`.
    ///
    /// # Errors
    /// For an invalid config or one too large for the budget.
    fn build(&self, budget: Budget) -> Result<Box<dyn LanguageModel>>;
}

impl<C: FamilyConfig> AnyConfig for C {
    fn family(&self) -> Family {
        FamilyConfig::family(self)
    }

    fn estimate(&self) -> SizeEstimate {
        FamilyConfig::estimate(self)
    }

    fn num_parameters(&self) -> Result<usize> {
        self.validated()?;
        usize::try_from(FamilyConfig::estimate(self).parameters)
            .map_err(|_| Error::invalid(C::NAME, "parameters", "overflow"))
    }

    fn to_json(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|source| Error::Json { what: C::NAME.into(), source })
    }

    fn build(&self, budget: Budget) -> Result<Box<dyn LanguageModel>> {
        Ok(Box::new(FamilyModel::new_within(self.clone(), budget)?))
    }
}
