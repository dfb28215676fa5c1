//! The MobileLLM family: MobileLLM-R1 checkpoints (`llama4_text`), classic MobileLLM
//! checkpoints (`mobilellm`), and the MobileLLM API's configs and presets.
//!
//! Checkpoint names are Llama's (`model.layers.N.self_attn.*`, ...), except that
//! MobileLLM-R1 names the feed-forward `feed_forward.*`, which `sanitize` maps to `mlp.*`.

mod config;
mod presets;

pub use config::{ClassicMobileLlmConfig, Llama4TextConfig, MobileLlmConfig, MobileLlmVariant};
pub use presets::get_mobilellm_config;

use lamina_backbones::TransformerBackbone;
use lamina_core::{ModelOutput, Result, SizeEstimate, count_parameters};
use lamina_heads::ModelInput;
use mlx_rs::Array;

use crate::family::{Family, FamilyConfig};
use crate::family_model::FamilyModel;
use crate::model::{LanguageModel, ModelInfo, Weights, drop_common};

/// A MobileLLM causal language model.
pub type MobileLlmForCausalLM = FamilyModel<MobileLlmConfig>;

impl FamilyConfig for MobileLlmConfig {
    type Backbone = TransformerBackbone;

    fn family(&self) -> Family {
        Family::MobileLlm
    }

    fn estimate(&self) -> SizeEstimate {
        MobileLlmConfig::estimate(self)
    }

    fn build_backbone(&self) -> Result<TransformerBackbone> {
        TransformerBackbone::new(&self.backbone()?)
    }

    fn tie_word_embeddings(&self) -> bool {
        self.tie_word_embeddings
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: Family::MobileLlm,
            vocab_size: self.vocab_size,
            hidden_size: self.embed_dim,
            num_layers: self.num_layers,
            max_position_embeddings: Some(self.max_seq_len),
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids.clone(),
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
        Ok(drop_common(renamed, self.tie_word_embeddings))
    }
}

/// The MobileLLM API's methods.
impl FamilyModel<MobileLlmConfig> {
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
        LanguageModel::training_mode(self, training);
    }
}
