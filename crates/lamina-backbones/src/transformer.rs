//! The Llama-style backbone: `embed_tokens`, `layers.N`, `norm`.

use lamina_blocks::{TransformerBlock, TransformerBlockConfig};
use lamina_components::{Embedding, Norm, NormConfig};
use lamina_core::{BackboneOutput, Config, Error, Result, ensure_positive, to_dim};
use mlx_rs::macros::ModuleParameters;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::pipeline::{PipelineStage, keep_stage};
use crate::stack::{self, Backbone, BackboneInput, ModelCache};

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
    /// [`Backbone::set_gradient_checkpointing`]).
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
    repeats: usize,
    hidden_size: usize,
    checkpointing: bool,
    pipeline: Option<PipelineStage>,
    embedding_scale: Option<f32>,
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
            repeats: config.layer_repeats,
            hidden_size: width,
            checkpointing: config.gradient_checkpointing,
            pipeline: None,
            embedding_scale: config.embedding_scale,
        })
    }
}

impl Backbone for TransformerBackbone {
    fn forward(&mut self, input: BackboneInput<'_>) -> Result<BackboneOutput> {
        let stack = stack::Stack {
            repeats: self.repeats,
            checkpointing: self.checkpointing,
            embedding_scale: self.embedding_scale,
            pipeline: self.pipeline.as_ref(),
        };
        stack::run(&mut self.embed_tokens, &mut self.layers, &mut self.norm, stack, input)
    }

    fn embedding(&self) -> &Embedding {
        &self.embed_tokens
    }

    fn make_cache(&self) -> Result<ModelCache> {
        stack::caches(&self.layers, self.repeats)
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

lamina_components::visit_fields!(TransformerBackbone { embed_tokens, layers });
