//! The [`LanguageModel`] trait every family's causal LM implements, so that loaders,
//! generation and training can hold any of them as `Box<dyn LanguageModel>`.

use std::collections::HashMap;

use lamina_backbones::ModelCache;
use lamina_components::VisitLayers;
use lamina_core::{ModelOutput, Result};
use lamina_heads::ModelInput;
use mlx_rs::Array;
use mlx_rs::module::ModuleParameters;

use crate::family::Family;

/// Named tensors, as read from a checkpoint.
pub type Weights = HashMap<String, Array>;

/// Facts about a model that callers need besides its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The family.
    pub family: Family,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Blocks (before layer sharing).
    pub num_layers: usize,
    /// The longest sequence the model was trained for, when known.
    pub max_position_embeddings: Option<usize>,
    /// Beginning-of-sequence id, when the config gives one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids from `config.json`.
    pub eos_token_ids: Vec<u32>,
}

/// A causal language model of any family.
/// It also walks its quantizable layers ([`VisitLayers`]) under their checkpoint paths.
pub trait LanguageModel: ModuleParameters + VisitLayers + std::fmt::Debug + Send {
    /// Runs the model.
    ///
    /// # Shapes
    /// `input_ids [B, L]` -> `logits [B, L, vocab]`
    ///
    /// # Errors
    /// Shape errors, ids outside the vocabulary, a cache that does not fit, bad labels.
    fn forward(&mut self, input: ModelInput<'_>) -> Result<ModelOutput>;

    /// Fresh caches for incremental decoding.
    ///
    /// # Errors
    /// Only for configs that cannot describe a cache.
    fn make_cache(&self) -> Result<ModelCache>;

    /// Vocabulary, width, layers, context length, special ids.
    fn info(&self) -> ModelInfo;

    /// Switches dropout (and LoRA dropout) on or off.
    fn training_mode(&mut self, training: bool);

    /// Switches gradient checkpointing (per block) on or off.
    fn set_gradient_checkpointing(&mut self, on: bool);

    /// Recomputes each block's activations in the backward pass instead of keeping them:
    /// lower peak memory for more compute (`enable_gradient_checkpointing()` of the
    /// MobileLLM and transformers APIs).
    fn enable_gradient_checkpointing(&mut self) {
        self.set_gradient_checkpointing(true);
    }

    /// Keeps only the blocks of `stage` and runs as that stage of a pipeline over its
    /// group (see [`lamina_backbones::PipelineStage`]); call it before weights are applied,
    /// with the blocks' checkpoint keys renumbered from the stage's first
    /// ([`lamina_backbones::renumber`]).
    ///
    /// # Errors
    /// [`lamina_core::Error::Distributed`] for a range outside the model,
    /// [`lamina_core::Error::Unsupported`] for a model that cannot be split (the default).
    fn split_for_pipeline(&mut self, stage: lamina_backbones::PipelineStage) -> Result<()> {
        let _ = stage;
        Err(lamina_core::Error::Unsupported("splitting this model over pipeline ranks"))
    }

    /// Bytes each block's parameters take as built (for balancing a pipeline); empty for
    /// a model that cannot be split.
    fn block_bytes(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Fixes the checkpoint's quirks (renamed keys, PyTorch layouts, tensors that are
    /// recomputed rather than loaded) before the weights are applied.
    ///
    /// # Errors
    /// When a tensor cannot be converted.
    fn sanitize(&self, weights: Weights) -> Result<Weights>;
}

/// Drops tensors that are recomputed, not loaded (`rotary_emb.inv_freq`), and a stray
/// `lm_head.weight` when the head is tied.
pub(crate) fn drop_common(mut weights: Weights, tied: bool) -> Weights {
    weights.retain(|key, _| !key.contains("rotary_emb.inv_freq"));
    if tied {
        weights.remove("lm_head.weight");
    }
    weights
}
