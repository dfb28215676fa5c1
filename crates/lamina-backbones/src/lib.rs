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
#![deny(missing_docs)]

mod hybrid;
mod mamba;
mod stack;
mod transformer;

pub use hybrid::{HybridBackbone, HybridBackboneConfig};
pub use mamba::{MambaBackbone, MambaBackboneConfig};
pub use stack::{Backbone, BackboneInput, ModelCache};
pub use transformer::{TransformerBackbone, TransformerBackboneConfig};
