//! # lamina-heads
//!
//! Heads turn a backbone's hidden states into a [`HeadOutput`](lamina_core::HeadOutput):
//! logits, plus the loss when labels are given.
//!
//! | head | parameters | loss |
//! | --- | --- | --- |
//! | [`LmHead`] (`Option<Linear>`) | `weight` (absent when tied to the embedding) | causal LM cross-entropy, shifted, `-100` ignored |
//! | [`SequenceClassifierHead`] | `weight`, `bias` | cross-entropy over sequences |
//! | [`TokenClassifierHead`] | `weight`, `bias` | cross-entropy over tokens, `-100` ignored |
//! | [`RegressionHead`] | `weight`, `bias` | mean squared error |
//!
//! A model names the field holding its head as the checkpoint does (`lm_head`, `score`),
//! so that the keys read `lm_head.weight`, `score.weight`, ... The generic models here
//! ([`CausalLm`], [`SequenceClassifier`], [`TokenClassifier`], [`Regressor`]) put any
//! [`Backbone`](lamina_backbones::Backbone) under `model` and a head beside it, as
//! transformers' `LlamaFor*` classes do, and return a
//! [`ModelOutput`](lamina_core::ModelOutput).
#![deny(missing_docs)]

mod classifier;
mod lm;
pub mod losses;
mod models;
mod pooling;

pub use classifier::{HeadInput, RegressionHead, SequenceClassifierHead, TokenClassifierHead};
pub use lm::{LmHead, lm_head, lm_logits};
pub use models::{CausalLm, ModelInput, Regressor, SequenceClassifier, TokenClassifier};
pub use pooling::pool;
