//! The Llama-style backbone: `embed_tokens`, `layers.N`, `norm`.

use lamina_blocks::{TransformerBlock, TransformerBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{Config, Error, Result, ensure_positive, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::block_stack::Settings;

/// How a [`TransformerBackbone`] is built: one block config per layer (layers may differ,
/// e.g. in RoPE or window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct TransformerBackboneConfig {
    /// Vocabulary size.
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// The blocks, bottom to top.
    #[validate(length(min = 1))]
    pub layers: Vec<TransformerBlockConfig>,
    /// The final norm.
    pub final_norm: NormConfig,
    /// Runs of each block (MobileLLM's layer sharing runs each twice).
    #[serde(default = "one")]
    pub layer_repeats: usize,
    /// Recompute block activations in the backward pass (see
    /// [`Backbone::set_gradient_checkpointing`](crate::Backbone::set_gradient_checkpointing)).
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// A factor on the token embeddings before the first block (Gemma: `sqrt(hidden)`,
    /// rounded as the reference rounds it).
    #[serde(default)]
    pub embedding_scale: Option<f32>,
}

fn one() -> usize {
    1
}

impl TransformerBackboneConfig {
    /// `num_layers` identical blocks.
    pub fn uniform(
        vocab_size: usize,
        block: TransformerBlockConfig,
        num_layers: usize,
        final_norm: NormConfig,
    ) -> Self {
        TransformerBackboneConfig {
            vocab_size,
            layers: vec![block; num_layers],
            final_norm,
            layer_repeats: 1,
            gradient_checkpointing: false,
            embedding_scale: None,
        }
    }

    /// Scalar parameters of the backbone this config builds (embedding included).
    pub fn num_parameters(&self) -> usize {
        let width = self.hidden_size();
        let blocks = self
            .layers
            .iter()
            .map(TransformerBlockConfig::num_parameters)
            .fold(0usize, usize::saturating_add);
        lamina_core::count(&[&[self.vocab_size, width], &[blocks], &[self.final_norm.num_parameters(width)]])
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.attention.hidden_size)
    }
}

impl Config for TransformerBackboneConfig {
    const NAME: &'static str = "TransformerBackboneConfig";

    fn check(&self) -> Result<()> {
        ensure_positive(Self::NAME, "layer_repeats", self.layer_repeats)?;
        let width = self.hidden_size();
        for (i, layer) in self.layers.iter().enumerate() {
            layer.validated()?;
            if layer.attention.hidden_size != width {
                return Err(Error::invalid(
                    Self::NAME,
                    format!("layers[{i}].attention.hidden_size"),
                    "differs from layer 0",
                ));
            }
        }
        Ok(())
    }
}

/// A transformer backbone.
#[derive(Debug, Clone, ModuleParameters)]
pub struct TransformerBackbone {
    /// `[vocab, hidden]`.
    #[param]
    pub embed_tokens: Embedding,
    /// The blocks.
    #[param]
    pub layers: Vec<TransformerBlock>,
    /// The final norm.
    #[param]
    pub norm: Norm,
    settings: Settings,
}

impl TransformerBackbone {
    /// A randomly initialised backbone.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &TransformerBackboneConfig) -> Result<Self> {
        config.validated()?;
        let width = config.hidden_size();
        let dims = to_dim(TransformerBackboneConfig::NAME, "hidden_size", width)?;
        Ok(TransformerBackbone {
            embed_tokens: Embedding::new(
                to_dim(TransformerBackboneConfig::NAME, "vocab_size", config.vocab_size)?,
                dims,
            )?,
            layers: config.layers.iter().map(TransformerBlock::new).collect::<Result<_>>()?,
            norm: Norm::new(dims, config.final_norm)?,
            settings: Settings {
                repeats: config.layer_repeats,
                embedding_scale: config.embedding_scale,
                ..Settings::new(width, config.gradient_checkpointing)
            },
        })
    }
}

block_stack!(TransformerBackbone { embed_tokens, norm });
