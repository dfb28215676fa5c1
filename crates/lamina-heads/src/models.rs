//! Whole models: a backbone under `model` and a head beside it.

use lamina_backbones::{Backbone, BackboneInput, ModelCache};
use lamina_components::{Quantizable, VisitLayers, join};
use lamina_core::{ModelOutput, Pooling, Result};
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;

use crate::classifier::{HeadInput, RegressionHead, SequenceClassifierHead, TokenClassifierHead};
use crate::lm::{LmHead, lm_head, lm_logits};

/// The inputs of a whole model.
#[derive(Debug)]
pub struct ModelInput<'a> {
    /// Token ids `[B, L]`.
    pub input_ids: &'a Array,
    /// The caches, when decoding incrementally.
    pub cache: Option<&'a mut ModelCache>,
    /// `[B, offset + L]`, 1 for real tokens, 0 for padding.
    pub padding_mask: Option<&'a Array>,
    /// Labels; the loss is computed when present (see each head for the shape).
    pub labels: Option<&'a Array>,
    /// Return every layer's hidden states.
    pub output_hidden_states: bool,
    /// Check that every id is inside the vocabulary (a device sync; generation loops whose
    /// ids come from the model itself turn it off).
    pub check_ids: bool,
    /// Compute the LM head's logits for the last position only (`[B, 1, V]`): what a
    /// prefill needs. Ignored when labels are given.
    pub last_position_only: bool,
}

impl<'a> ModelInput<'a> {
    /// Ids only.
    pub fn new(input_ids: &'a Array) -> Self {
        ModelInput {
            input_ids,
            cache: None,
            padding_mask: None,
            labels: None,
            output_hidden_states: false,
            check_ids: true,
            last_position_only: false,
        }
    }

    /// The same input with labels.
    pub fn with_labels(self, labels: &'a Array) -> Self {
        ModelInput { labels: Some(labels), ..self }
    }

    /// The same input with a cache.
    pub fn with_cache(self, cache: &'a mut ModelCache) -> Self {
        ModelInput { cache: Some(cache), ..self }
    }

    /// The backbone's share of the input, plus the padding mask and labels for the head.
    pub fn into_parts(self) -> (BackboneInput<'a>, Option<&'a Array>, Option<&'a Array>) {
        let padding = self.padding_mask;
        let input = BackboneInput {
            input_ids: self.input_ids,
            cache: self.cache,
            padding_mask: self.padding_mask,
            output_hidden_states: self.output_hidden_states,
            check_ids: self.check_ids,
        };
        (input, padding, self.labels)
    }
}

/// A causal language model: `model` + `lm_head` (own or tied).
#[derive(Debug, Clone, ModuleParameters)]
pub struct CausalLm<B: Backbone> {
    /// The backbone.
    #[param]
    pub model: B,
    /// The LM head.
    #[param]
    pub lm_head: LmHead,
}

impl<B: Backbone> CausalLm<B> {
    /// Puts a head on a backbone: tied to the embedding, or with its own random weight.
    ///
    /// # Errors
    /// When MLX cannot allocate the head.
    pub fn new(model: B, tie_word_embeddings: bool) -> Result<Self> {
        let lm_head =
            lm_head(model.hidden_size() as i32, model.embedding().num_embeddings(), tie_word_embeddings)?;
        Ok(CausalLm { model, lm_head })
    }
}

impl<B: Backbone> VisitLayers for CausalLm<B> {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        self.model.visit_layers(&join(prefix, "model"), f)?;
        self.lm_head.visit_layers(&join(prefix, "lm_head"), f)
    }
}

impl<'a, B: Backbone + std::fmt::Debug> Module<ModelInput<'a>> for CausalLm<B> {
    type Output = ModelOutput;
    type Error = lamina_core::Error;

    /// # Shapes
    /// `input_ids [B, L]` -> `logits [B, L, vocab]`
    fn forward(&mut self, input: ModelInput<'a>) -> Result<ModelOutput> {
        let (input, _, labels) = input.into_parts();
        let out = self.model.forward(input)?;
        let head =
            lm_logits(&mut self.lm_head, &out.last_hidden_state, self.model.embedding(), None, labels)?;
        Ok(ModelOutput::new(out, head))
    }

    /// Switches dropout in the backbone and the head.
    fn training_mode(&mut self, mode: bool) {
        self.model.training_mode(mode);
        if let Some(head) = &mut self.lm_head {
            head.training_mode(mode);
        }
    }
}

macro_rules! headed_model {
    ($(#[$doc:meta])* $name:ident, $head:ident, $shape:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, ModuleParameters)]
        pub struct $name<B: Backbone> {
            /// The backbone.
            #[param]
            pub model: B,
            /// The head (transformers' name: `score`).
            #[param]
            pub score: $head,
        }

        impl<B: Backbone> $name<B> {
            /// Puts a randomly initialised head (no bias, as transformers' `score`) on a
            /// backbone.
            ///
            /// # Errors
            /// When MLX cannot allocate the head.
            pub fn new(model: B, outputs: usize, pooling: Pooling) -> Result<Self> {
                let score = $head::new(model.hidden_size() as i32, outputs as i32, false, pooling)?;
                Ok($name { model, score })
            }
        }

        impl<B: Backbone> VisitLayers for $name<B> {
            /// The backbone's layers (the head is not quantizable).
            fn visit_layers(&mut self, prefix: &str, f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>) -> Result<()> {
                self.model.visit_layers(&join(prefix, "model"), f)
            }
        }

        impl<'a, B: Backbone + std::fmt::Debug> Module<ModelInput<'a>> for $name<B> {
            type Output = ModelOutput;
            type Error = lamina_core::Error;

            #[doc = concat!("# Shapes\n`input_ids [B, L]` -> `logits ", $shape, "`")]
            fn forward(&mut self, input: ModelInput<'a>) -> Result<ModelOutput> {
                let (input, padding_mask, labels) = input.into_parts();
                let out = self.model.forward(input)?;
                let head = self.score.forward(HeadInput { hidden: &out.last_hidden_state, padding_mask, labels })?;
                Ok(ModelOutput::new(out, head))
            }

            /// Switches dropout in the backbone and the head.
            fn training_mode(&mut self, mode: bool) {
                self.model.training_mode(mode);
                self.score.training_mode(mode);
            }
        }
    };
}

headed_model!(
    /// Sequence classification: `model` + `score`, one label per sequence.
    SequenceClassifier,
    SequenceClassifierHead,
    "[B, num_labels]"
);
headed_model!(
    /// Token classification: `model` + `score`, one label per token.
    TokenClassifier,
    TokenClassifierHead,
    "[B, L, num_labels]"
);
headed_model!(
    /// Regression: `model` + `score`, real values per sequence.
    Regressor,
    RegressionHead,
    "[B, outputs]"
);
