//! The Llama family: Llama 2/3.x, Mistral, TinyLlama, SmolLM2, Code Llama.
//!
//! Checkpoint names: `model.embed_tokens`, `model.layers.N.{input_layernorm, self_attn.
//! {q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`,
//! `lm_head` (absent when tied).

mod config;
mod presets;

pub use config::{LlamaConfig, LlamaModelType};

use lamina_backbones::{Backbone, ModelCache, TransformerBackbone};
use lamina_core::{Config, ModelOutput, Result};
use lamina_heads::{LmHead, ModelInput, lm_head};
use mlx_rs::macros::ModuleParameters;

use crate::hf::ids;
use crate::model::{LanguageModel, ModelInfo, Weights, causal_forward, causal_set_training, drop_common};
use crate::registry::Family;

/// A Llama-family causal language model.
#[derive(Debug, Clone, ModuleParameters)]
pub struct LlamaForCausalLM {
    /// The transformer backbone.
    #[param]
    pub model: TransformerBackbone,
    /// The LM head (tied when `tie_word_embeddings`).
    #[param]
    pub lm_head: LmHead,
    /// The config it was built from.
    pub config: LlamaConfig,
}

impl LlamaForCausalLM {
    /// A randomly initialised model.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a bad config.
    pub fn new(config: LlamaConfig) -> Result<Self> {
        config.validated()?;
        let model = TransformerBackbone::new(&config.backbone()?)?;
        let lm_head =
            lm_head(config.hidden_size as i32, config.vocab_size as i32, config.tie_word_embeddings)?;
        Ok(LlamaForCausalLM { model, lm_head, config })
    }
}

impl LanguageModel for LlamaForCausalLM {
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
            family: Family::Llama,
            vocab_size: self.config.vocab_size,
            hidden_size: self.config.hidden_size,
            num_layers: self.config.num_hidden_layers,
            max_position_embeddings: self.config.max_position_embeddings,
            bos_token_id: ids(&self.config.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.config.eos_token_id),
        }
    }

    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        Ok(drop_common(weights, self.config.tie_word_embeddings))
    }
}

lamina_components::visit_fields!(LlamaForCausalLM { model, lm_head });
