//! # lamina-backbones
//!
//! Token embeddings, a stack of blocks and a final norm, returning a
//! [`BackboneOutput`](lamina_core::BackboneOutput). Field names are the checkpoints':
//!
//! | backbone | parameters |
//! | --- | --- |
//! | [`TransformerBackbone`] (Llama) | `embed_tokens`, `layers.N`, `norm` |
//! | [`MambaBackbone`] | `embeddings`, `layers.N`, `norm_f` |
//! | [`HybridBackbone`] (Jamba) | `embed_tokens`, `layers.N`, `final_layernorm` |
//!
//! All three implement [`Backbone`], thread a caller-held [`ModelCache`] through their
//! blocks, can return every layer's hidden states, and support MobileLLM's layer sharing
//! (`layer_repeats = 2` runs each block twice in a row).
//!
//! ```
//! use lamina_backbones::{Backbone, BackboneInput, TransformerBackbone, TransformerBackboneConfig};
//! use lamina_blocks::TransformerBlockConfig;
//! use lamina_components::{AttentionConfig, FeedForwardConfig, NormConfig};
//! use mlx_rs::Array;
//!
//! let block = TransformerBlockConfig::new(
//!     AttentionConfig::new(16, 4, 2),
//!     FeedForwardConfig::swiglu(16, 32),
//!     NormConfig::rms(1e-5),
//! );
//! let config = TransformerBackboneConfig::uniform(100, block, 2, NormConfig::rms(1e-5));
//! let mut backbone = TransformerBackbone::new(&config).unwrap();
//! let ids = Array::from_slice(&[1i32, 5, 9], &[1, 3]);
//! let input = BackboneInput { output_hidden_states: true, ..BackboneInput::new(&ids) };
//! let out = backbone.forward(input).unwrap();
//! assert_eq!(out.last_hidden_state.shape(), &[1, 3, 16]);
//! assert_eq!(out.hidden_states.unwrap().len(), 3); // embeddings + 2 blocks
//! let too_big = Array::from_slice(&[100i32], &[1, 1]);
//! assert!(backbone.forward(BackboneInput::new(&too_big)).is_err());
//! ```
#![deny(missing_docs)]

#[macro_use]
mod block_stack;
mod hybrid;
mod mamba;
mod pipeline;
mod stack;
mod transformer;

pub use hybrid::{HybridBackbone, HybridBackboneConfig};
pub use mamba::{MambaBackbone, MambaBackboneConfig};
pub use pipeline::{PipelineStage, layer_of, renumber, split_by_bytes};
pub use stack::{Backbone, BackboneInput, ModelCache};
pub use transformer::{TransformerBackbone, TransformerBackboneConfig};
