//! The Mamba family (Mamba 1, Hugging Face `MambaForCausalLM` and the original
//! state-spaces checkpoints).
//!
//! Checkpoint names: `backbone.embeddings` (`backbone.embedding` in the original ones),
//! `backbone.layers.N.{norm, mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D,
//! out_proj}}`, `backbone.norm_f`, `lm_head` (absent when tied).

mod config;
mod presets;

pub use config::{AutoRank, MambaConfig, SsmCfg, TimeStepRank};

use lamina_backbones::MambaBackbone;
use lamina_core::{Result, SizeEstimate};

use crate::family::{Family, FamilyConfig};
use crate::family_model::FamilyModel;
use crate::hf::ids;
use crate::model::{ModelInfo, Weights, drop_common};

/// A Mamba causal language model.
pub type MambaForCausalLM = FamilyModel<MambaConfig>;

impl FamilyConfig for MambaConfig {
    type Backbone = MambaBackbone;
    const BACKBONE_KEY: &'static str = "backbone";

    fn family(&self) -> Family {
        Family::Mamba
    }

    fn estimate(&self) -> SizeEstimate {
        MambaConfig::estimate(self)
    }

    fn build_backbone(&self) -> Result<MambaBackbone> {
        MambaBackbone::new(&self.backbone()?)
    }

    fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: Family::Mamba,
            vocab_size: self.padded_vocab_size(),
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            max_position_embeddings: None,
            bos_token_id: ids(&self.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.eos_token_id),
        }
    }

    /// Renames `backbone.embedding` to `backbone.embeddings` and moves PyTorch's conv1d
    /// layout `[D, 1, K]` to MLX's `[D, K, 1]`.
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        let mut out = Weights::with_capacity(weights.len());
        for (key, value) in drop_common(weights, self.tie_word_embeddings) {
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
