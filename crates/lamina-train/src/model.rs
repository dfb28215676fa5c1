//! What the trainer trains: any model whose forward pass turns labels into a loss —
//! a family's language model, or a backbone under an LM, classification or regression
//! head.

use lamina_backbones::Backbone;
use lamina_core::ModelOutput;
use lamina_families::LanguageModel;
use lamina_heads::{CausalLm, ModelInput, Regressor, SequenceClassifier, TokenClassifier};
use mlx_rs::module::{Module, ModuleParameters};

/// A model the [`Trainer`](crate::Trainer) can train.
pub trait TrainableModel: ModuleParameters + std::fmt::Debug {
    /// Runs the model; with `input.labels` set, the output carries the loss.
    ///
    /// # Errors
    /// Shape and MLX errors.
    fn forward_train(&mut self, input: ModelInput<'_>) -> lamina_core::Result<ModelOutput>;

    /// Switches dropout on (training) or off.
    fn training_mode(&mut self, training: bool);

    /// The vocabulary size, when the model reads token ids the trainer can check.
    fn vocab_size(&self) -> Option<usize>;
}

impl TrainableModel for Box<dyn LanguageModel> {
    fn forward_train(&mut self, input: ModelInput<'_>) -> lamina_core::Result<ModelOutput> {
        self.forward(input)
    }

    fn training_mode(&mut self, training: bool) {
        LanguageModel::training_mode(self.as_mut(), training);
    }

    fn vocab_size(&self) -> Option<usize> {
        Some(self.info().vocab_size)
    }
}

macro_rules! trainable_headed_model {
    ($($name:ident),+) => {$(
        impl<B: Backbone + std::fmt::Debug> TrainableModel for $name<B> {
            fn forward_train(&mut self, input: ModelInput<'_>) -> lamina_core::Result<ModelOutput> {
                Module::forward(self, input)
            }

            fn training_mode(&mut self, training: bool) {
                Module::training_mode(self, training);
            }

            fn vocab_size(&self) -> Option<usize> {
                Some(self.model.embedding().num_embeddings() as usize)
            }
        }
    )+};
}

trainable_headed_model!(CausalLm, SequenceClassifier, TokenClassifier, Regressor);
