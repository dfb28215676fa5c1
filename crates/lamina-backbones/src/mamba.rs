//! The Mamba backbone: `embeddings`, `layers.N`, `norm_f`.

use lamina_blocks::{MambaBlock, MambaBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{Config, Result, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::block_stack::Settings;

/// How a [`MambaBackbone`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct MambaBackboneConfig {
    /// Vocabulary size.
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// Number of blocks.
    #[validate(range(min = 1))]
    pub num_layers: usize,
    /// Every block.
    pub block: MambaBlockConfig,
    /// The final norm.
    pub final_norm: NormConfig,
    /// Recompute block activations in the backward pass.
    #[serde(default)]
    pub gradient_checkpointing: bool,
}

impl MambaBackboneConfig {
    /// Scalar parameters of the backbone this config builds (embedding included).
    pub fn num_parameters(&self) -> usize {
        let width = self.block.mixer.hidden_size;
        lamina_core::count(&[
            &[self.vocab_size, width],
            &[self.num_layers, self.block.num_parameters()],
            &[self.final_norm.num_parameters(width)],
        ])
    }
}

impl Config for MambaBackboneConfig {
    const NAME: &'static str = "MambaBackboneConfig";

    fn check(&self) -> Result<()> {
        self.block.validated()
    }
}

/// A Mamba backbone.
#[derive(Debug, Clone, ModuleParameters)]
pub struct MambaBackbone {
    /// `[vocab, hidden]`.
    #[param]
    pub embeddings: Embedding,
    /// The blocks.
    #[param]
    pub layers: Vec<MambaBlock>,
    /// The final norm.
    #[param]
    pub norm_f: Norm,
    settings: Settings,
}

impl MambaBackbone {
    /// A backbone initialised as Mamba does.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a bad config.
    pub fn new(config: &MambaBackboneConfig) -> Result<Self> {
        config.validated()?;
        let width = config.block.mixer.hidden_size;
        let dims = to_dim(MambaBackboneConfig::NAME, "hidden_size", width)?;
        Ok(MambaBackbone {
            embeddings: Embedding::new(
                to_dim(MambaBackboneConfig::NAME, "vocab_size", config.vocab_size)?,
                dims,
            )?,
            layers: (0..config.num_layers).map(|_| MambaBlock::new(&config.block)).collect::<Result<_>>()?,
            norm_f: Norm::new(dims, config.final_norm)?,
            settings: Settings::new(width, config.gradient_checkpointing),
        })
    }
}

block_stack!(MambaBackbone { embeddings, norm_f });
