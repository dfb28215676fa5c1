//! The Mamba family (Mamba 1, Hugging Face `MambaForCausalLM` and the original
//! state-spaces checkpoints).
//!
//! Checkpoint names: `backbone.embeddings` (`backbone.embedding` in the original ones),
//! `backbone.layers.N.{norm, mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D,
//! out_proj}}`, `backbone.norm_f`, `lm_head` (absent when tied).

mod config;
mod presets;

pub use config::{AutoRank, MambaConfig, SsmCfg, TimeStepRank};

use lamina_backbones::{Backbone, MambaBackbone, ModelCache};
use lamina_core::{Config, ModelOutput, Result};
use lamina_heads::{LmHead, ModelInput, lm_head};
use mlx_rs::macros::ModuleParameters;

use crate::hf::ids;
use crate::model::{LanguageModel, ModelInfo, Weights, causal_forward, causal_set_training, drop_common};
use crate::registry::Family;

/// A Mamba causal language model.
#[derive(Debug, Clone, ModuleParameters)]
pub struct MambaForCausalLM {
    /// The Mamba backbone.
    #[param]
    pub backbone: MambaBackbone,
    /// The LM head (tied by default).
    #[param]
    pub lm_head: LmHead,
    /// The config it was built from.
    pub config: MambaConfig,
}

impl MambaForCausalLM {
    /// A model initialised as Mamba does.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a bad config.
    pub fn new(config: MambaConfig) -> Result<Self> {
        config.validated()?;
        let backbone = MambaBackbone::new(&config.backbone()?)?;
        let lm_head = lm_head(
            config.hidden_size as i32,
            config.padded_vocab_size() as i32,
            config.tie_word_embeddings,
        )?;
        Ok(MambaForCausalLM { backbone, lm_head, config })
    }
}

impl LanguageModel for MambaForCausalLM {
    fn forward(&mut self, input: ModelInput<'_>) -> Result<ModelOutput> {
        causal_forward(&mut self.backbone, &mut self.lm_head, input)
    }

    fn set_training(&mut self, training: bool) {
        causal_set_training(&mut self.backbone, &mut self.lm_head, training);
    }

    fn set_gradient_checkpointing(&mut self, on: bool) {
        self.backbone.set_gradient_checkpointing(on);
    }

    fn make_cache(&self) -> Result<ModelCache> {
        self.backbone.make_cache()
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: Family::Mamba,
            vocab_size: self.config.padded_vocab_size(),
            hidden_size: self.config.hidden_size,
            num_layers: self.config.num_hidden_layers,
            max_position_embeddings: None,
            bos_token_id: ids(&self.config.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.config.eos_token_id),
        }
    }

    /// Renames `backbone.embedding` to `backbone.embeddings` and moves PyTorch's conv1d
    /// layout `[D, 1, K]` to MLX's `[D, K, 1]`.
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        let mut out = Weights::with_capacity(weights.len());
        for (key, value) in drop_common(weights, self.config.tie_word_embeddings) {
            let key = match key.strip_prefix("backbone.embedding.") {
                Some(rest) => format!("backbone.embeddings.{rest}"),
                None => key,
            };
            let value = if key.ends_with("conv1d.weight") && value.ndim() == 3 && value.dim(-1) != 1 {
                value.swap_axes(1, 2)?
            } else {
                value
            };
            out.insert(key, value);
        }
        Ok(out)
    }
}

lamina_components::visit_fields!(MambaForCausalLM { backbone, lm_head });
