//! The Mamba backbone: `embeddings`, `layers.N`, `norm_f`.

use lamina_blocks::{MambaBlock, MambaBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{BackboneOutput, Config, Result, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::pipeline::{PipelineStage, keep_stage};
use crate::stack::{self, Backbone, BackboneInput, ModelCache};

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
    hidden_size: usize,
    checkpointing: bool,
    pipeline: Option<PipelineStage>,
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
            hidden_size: width,
            checkpointing: config.gradient_checkpointing,
            pipeline: None,
        })
    }
}

impl Backbone for MambaBackbone {
    fn forward(&mut self, input: BackboneInput<'_>) -> Result<BackboneOutput> {
        let stack = stack::Stack::plain(self.checkpointing, self.pipeline.as_ref());
        stack::run(&mut self.embeddings, &mut self.layers, &mut self.norm_f, stack, input)
    }

    fn embedding(&self) -> &Embedding {
        &self.embeddings
    }

    fn make_cache(&self) -> Result<ModelCache> {
        stack::caches(&self.layers, 1)
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn set_gradient_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    fn split_for_pipeline(&mut self, stage: PipelineStage) -> Result<()> {
        keep_stage(&mut self.layers, &stage)?;
        self.pipeline = Some(stage);
        Ok(())
    }

    fn block_bytes(&self) -> Vec<u64> {
        stack::block_bytes(&self.layers)
    }

    fn training_mode(&mut self, training: bool) {
        mlx_rs::module::Module::training_mode(&mut self.embeddings, training);
        for layer in &mut self.layers {
            mlx_rs::module::Module::training_mode(layer, training);
        }
    }
}

lamina_components::visit_fields!(MambaBackbone { embeddings, layers });
