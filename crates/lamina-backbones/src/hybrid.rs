//! The Jamba-style hybrid backbone: `embed_tokens`, `layers.N`, `final_layernorm`.

use lamina_blocks::{HybridBlock, HybridBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{BackboneOutput, Config, Error, Result, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::pipeline::{PipelineStage, keep_stage};
use crate::stack::{self, Backbone, BackboneInput, ModelCache};

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
    hidden_size: usize,
    checkpointing: bool,
    pipeline: Option<PipelineStage>,
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
            hidden_size: width,
            checkpointing: config.gradient_checkpointing,
            pipeline: None,
        })
    }
}

impl Backbone for HybridBackbone {
    fn forward(&mut self, input: BackboneInput<'_>) -> Result<BackboneOutput> {
        let stack = stack::Stack::plain(self.checkpointing, self.pipeline.as_ref());
        stack::run(&mut self.embed_tokens, &mut self.layers, &mut self.final_layernorm, stack, input)
    }

    fn embedding(&self) -> &Embedding {
        &self.embed_tokens
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
        mlx_rs::module::Module::training_mode(&mut self.embed_tokens, training);
        for layer in &mut self.layers {
            mlx_rs::module::Module::training_mode(layer, training);
        }
    }
}

lamina_components::visit_fields!(HybridBackbone { embed_tokens, layers });
