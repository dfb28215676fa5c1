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
//!
//! ```
//! use lamina_backbones::{TransformerBackbone, TransformerBackboneConfig};
//! use lamina_blocks::TransformerBlockConfig;
//! use lamina_components::{AttentionConfig, FeedForwardConfig, NormConfig};
//! use lamina_core::Pooling;
//! use lamina_heads::{ModelInput, SequenceClassifier};
//! use mlx_rs::Array;
//! use mlx_rs::module::Module;
//!
//! let block = TransformerBlockConfig::new(
//!     AttentionConfig::new(16, 4, 2),
//!     FeedForwardConfig::swiglu(16, 32),
//!     NormConfig::rms(1e-5),
//! );
//! let backbone = TransformerBackbone::new(&TransformerBackboneConfig::uniform(50, block, 1, NormConfig::rms(1e-5))).unwrap();
//! let mut classifier = SequenceClassifier::new(backbone, 3, Pooling::LastToken).unwrap();
//! let ids = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]);
//! let labels = Array::from_slice(&[0i32, 2], &[2]);
//! let out = classifier.forward(ModelInput { labels: Some(&labels), ..ModelInput::new(&ids) }).unwrap();
//! assert_eq!(out.logits.shape(), &[2, 3]);
//! assert!(out.loss.unwrap().item_exact::<f32>() > 0.0);
//! ```
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
