//! The one [`Backbone`](crate::Backbone) implementation every backbone shares: embeddings,
//! a stack of blocks and a final norm, under the field names its checkpoints use
//! (`embed_tokens`/`norm`, `embeddings`/`norm_f`, `embed_tokens`/`final_layernorm`), with
//! what the stack keeps beside its parameters in one [`Settings`].

use crate::pipeline::PipelineStage;
use crate::stack::Stack;

/// What a block stack keeps beside its parameters.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Runs of each block in a row.
    pub repeats: usize,
    /// The hidden width.
    pub hidden_size: usize,
    /// Gradient checkpointing per block (without a cache).
    pub checkpointing: bool,
    /// This rank's share of a pipeline, when the blocks are split over ranks.
    pub pipeline: Option<PipelineStage>,
    /// A factor on the embeddings.
    pub embedding_scale: Option<f32>,
}

impl Settings {
    /// One run of each block, no scale, the whole stack.
    pub fn new(hidden_size: usize, checkpointing: bool) -> Self {
        Settings { repeats: 1, hidden_size, checkpointing, pipeline: None, embedding_scale: None }
    }

    /// How one forward pass runs the stack.
    pub fn stack(&self) -> Stack<'_> {
        Stack {
            repeats: self.repeats,
            checkpointing: self.checkpointing,
            embedding_scale: self.embedding_scale,
            pipeline: self.pipeline.as_ref(),
        }
    }
}

/// Implements [`Backbone`](crate::Backbone) (and `VisitLayers`) for a struct with the
/// embedding field `$embedding`, the blocks in `layers`, the final norm `$norm` and a
/// `settings: Settings` field.
macro_rules! block_stack {
    ($backbone:ident { $embedding:ident, $norm:ident }) => {
        impl $crate::Backbone for $backbone {
            fn forward(
                &mut self,
                input: $crate::BackboneInput<'_>,
            ) -> lamina_core::Result<lamina_core::BackboneOutput> {
                let stack = self.settings.stack();
                $crate::stack::run(&mut self.$embedding, &mut self.layers, &mut self.$norm, stack, input)
            }

            fn embedding(&self) -> &lamina_components::Embedding {
                &self.$embedding
            }

            fn make_cache(&self) -> lamina_core::Result<$crate::ModelCache> {
                $crate::stack::caches(&self.layers, self.settings.repeats)
            }

            fn hidden_size(&self) -> usize {
                self.settings.hidden_size
            }

            fn set_gradient_checkpointing(&mut self, on: bool) {
                self.settings.checkpointing = on;
            }

            fn split_for_pipeline(&mut self, stage: $crate::PipelineStage) -> lamina_core::Result<()> {
                $crate::pipeline::keep_stage(&mut self.layers, &stage)?;
                self.settings.pipeline = Some(stage);
                Ok(())
            }

            fn block_bytes(&self) -> Vec<u64> {
                $crate::stack::block_bytes(&self.layers)
            }

            fn training_mode(&mut self, training: bool) {
                mlx_rs::module::Module::training_mode(&mut self.$embedding, training);
                for layer in &mut self.layers {
                    mlx_rs::module::Module::training_mode(layer, training);
                }
            }
        }

        lamina_components::visit_fields!($backbone { $embedding, layers });
    };
}
