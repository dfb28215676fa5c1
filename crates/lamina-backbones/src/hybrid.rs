//! The Jamba-style hybrid backbone: `embed_tokens`, `layers.N`, `final_layernorm`.

use lamina_blocks::{HybridBlock, HybridBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{Config, Error, Result, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::block_stack::Settings;

/// How a [`HybridBackbone`] is built: one block config per layer, each with its mixer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct HybridBackboneConfig {
    /// Vocabulary size.
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// The blocks, bottom to top.
    #[validate(length(min = 1))]
    pub layers: Vec<HybridBlockConfig>,
    /// The final norm.
    pub final_norm: NormConfig,
    /// Recompute block activations in the backward pass.
    #[serde(default)]
    pub gradient_checkpointing: bool,
}

impl HybridBackboneConfig {
    /// Scalar parameters of the backbone this config builds (embedding included).
    pub fn num_parameters(&self) -> usize {
        let width = self.hidden_size();
        let blocks =
            self.layers.iter().map(HybridBlockConfig::num_parameters).fold(0usize, usize::saturating_add);
        lamina_core::count(&[&[self.vocab_size, width], &[blocks], &[self.final_norm.num_parameters(width)]])
    }

    /// Model width.
    pub fn hidden_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.ffn.hidden_size)
    }
}

impl Config for HybridBackboneConfig {
    const NAME: &'static str = "HybridBackboneConfig";

    fn check(&self) -> Result<()> {
        let width = self.hidden_size();
        for (i, layer) in self.layers.iter().enumerate() {
            layer.validated()?;
            if layer.ffn.hidden_size != width {
                return Err(Error::invalid(
                    Self::NAME,
                    format!("layers[{i}].ffn.hidden_size"),
                    "differs from layer 0",
                ));
            }
        }
        Ok(())
    }
}

/// A hybrid attention/SSM backbone.
#[derive(Debug, Clone, ModuleParameters)]
pub struct HybridBackbone {
    /// `[vocab, hidden]`.
    #[param]
    pub embed_tokens: Embedding,
    /// The blocks.
    #[param]
    pub layers: Vec<HybridBlock>,
    /// The final norm.
    #[param]
    pub final_layernorm: Norm,
    settings: Settings,
}

impl HybridBackbone {
    /// A randomly initialised backbone.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: &HybridBackboneConfig) -> Result<Self> {
        config.validated()?;
        let width = config.hidden_size();
        let dims = to_dim(HybridBackboneConfig::NAME, "hidden_size", width)?;
        Ok(HybridBackbone {
            embed_tokens: Embedding::new(
                to_dim(HybridBackboneConfig::NAME, "vocab_size", config.vocab_size)?,
                dims,
            )?,
            layers: config.layers.iter().map(HybridBlock::new).collect::<Result<_>>()?,
            final_layernorm: Norm::new(dims, config.final_norm)?,
            settings: Settings::new(width, config.gradient_checkpointing),
        })
    }
}

block_stack!(HybridBackbone { embed_tokens, final_layernorm });
