//! The MobileLLM family: MobileLLM-R1 checkpoints (`llama4_text`), classic MobileLLM
//! checkpoints (`mobilellm`), and the MobileLLM API's configs and presets.
//!
//! Checkpoint names are Llama's (`model.layers.N.self_attn.*`, ...), except that
//! MobileLLM-R1 names the feed-forward `feed_forward.*`, which `sanitize` maps to `mlp.*`.

mod config;
mod presets;

pub use config::{ClassicMobileLlmConfig, Llama4TextConfig, MobileLlmConfig, MobileLlmVariant};
pub use presets::{MOBILELLM_PRESETS, get_mobilellm_config};

use lamina_backbones::{Backbone, ModelCache, TransformerBackbone};
use lamina_core::{Config, ModelOutput, Result, count_parameters};
use lamina_heads::{LmHead, ModelInput, lm_head};
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;

use crate::model::{LanguageModel, ModelInfo, Weights, causal_forward, causal_set_training, drop_common};
use crate::registry::Family;

/// A MobileLLM causal language model.
#[derive(Debug, Clone, ModuleParameters)]
pub struct MobileLlmForCausalLM {
    /// The transformer backbone.
    #[param]
    pub model: TransformerBackbone,
    /// The LM head (tied by default).
    #[param]
    pub lm_head: LmHead,
    /// The config it was built from.
    pub config: MobileLlmConfig,
}

impl MobileLlmForCausalLM {
    /// A randomly initialised model.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a bad config.
    pub fn new(config: MobileLlmConfig) -> Result<Self> {
        config.validated()?;
        let model = TransformerBackbone::new(&config.backbone()?)?;
        let lm_head = lm_head(config.embed_dim as i32, config.vocab_size as i32, config.tie_word_embeddings)?;
        Ok(MobileLlmForCausalLM { model, lm_head, config })
    }

    /// The number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        count_parameters(self)
    }

    /// The MobileLLM API's `forward(input_ids, attention_mask, labels)`.
    ///
    /// # Errors
    /// Shape errors, ids outside the vocabulary, bad labels.
    pub fn forward_with(
        &mut self,
        input_ids: &Array,
        attention_mask: Option<&Array>,
        labels: Option<&Array>,
    ) -> Result<ModelOutput> {
        let input = ModelInput { padding_mask: attention_mask, labels, ..ModelInput::new(input_ids) };
        LanguageModel::forward(self, input)
    }

    /// Switches dropout on (training) or off.
    pub fn train(&mut self, training: bool) {
        LanguageModel::set_training(self, training);
    }
}

impl LanguageModel for MobileLlmForCausalLM {
    fn forward(&mut self, input: ModelInput<'_>) -> Result<ModelOutput> {
        causal_forward(&mut self.model, &mut self.lm_head, input)
    }

    fn set_training(&mut self, training: bool) {
        causal_set_training(&mut self.model, &mut self.lm_head, training);
    }

    fn set_gradient_checkpointing(&mut self, on: bool) {
        self.model.set_gradient_checkpointing(on);
    }

    fn make_cache(&self) -> Result<ModelCache> {
        self.model.make_cache()
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: Family::MobileLlm,
            vocab_size: self.config.vocab_size,
            hidden_size: self.config.embed_dim,
            num_layers: self.config.num_layers,
            max_position_embeddings: Some(self.config.max_seq_len),
            bos_token_id: self.config.bos_token_id,
            eos_token_ids: self.config.eos_token_ids.clone(),
        }
    }

    /// MobileLLM-R1: `feed_forward.*` becomes `mlp.*`, and mlx-lm's `output.weight`
    /// becomes `lm_head.weight`.
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        let renamed = weights
            .into_iter()
            .map(|(key, value)| {
                let key = if key == "output.weight" {
                    "lm_head.weight".to_owned()
                } else {
                    key.replace(".feed_forward.", ".mlp.")
                };
                (key, value)
            })
            .collect();
        Ok(drop_common(renamed, self.config.tie_word_embeddings))
    }
}

lamina_components::visit_fields!(MobileLlmForCausalLM { model, lm_head });
