//! # lamina-blocks
//!
//! Residual blocks composed from [`lamina_components`], each returning a
//! [`BlockOutput`]:
//!
//! | block | parameters (checkpoint names) |
//! | --- | --- |
//! | [`TransformerBlock`] | `input_layernorm`, `self_attn`, `post_attention_layernorm`, `mlp`, and with sandwich norms `pre_feedforward_layernorm`, `post_feedforward_layernorm` (the parallel residual has `input_layernorm` only) |
//! | [`MambaBlock`] | `norm`, `mixer` |
//! | [`HybridBlock`] (Jamba-style) | `input_layernorm`, `self_attn` or `mamba`, `pre_ff_layernorm`, `feed_forward` |
//!
//! Every block implements [`Block`]: a forward over a
//! [`LayerInput`] and the cache its mixer needs.
//!
//! ```
//! use lamina_blocks::{NormPlacement, TransformerBlock, TransformerBlockConfig};
//! use lamina_components::{AttentionConfig, FeedForwardConfig, LayerInput, NormConfig};
//! use mlx_rs::Array;
//! use mlx_rs::module::{Module, ModuleParameters};
//!
//! // A Gemma-style block: (1 + w) RMSNorms around both sublayers.
//! let config = TransformerBlockConfig {
//!     norm_placement: NormPlacement::Sandwich,
//!     ..TransformerBlockConfig::new(
//!         AttentionConfig::new(16, 4, 4),
//!         FeedForwardConfig::swiglu(16, 32),
//!         NormConfig::rms_unit_offset(1e-6),
//!     )
//! };
//! let mut block = TransformerBlock::new(&config).unwrap();
//! assert!(block.parameters().flatten().contains_key("pre_feedforward_layernorm.weight"));
//! let x = Array::ones::<f32>(&[2, 5, 16]).unwrap();
//! assert_eq!(block.forward(LayerInput::new(&x)).unwrap().hidden_states.shape(), &[2, 5, 16]);
//! ```
#![deny(missing_docs)]

mod hybrid;
mod mamba;
mod transformer;

pub use hybrid::{HybridBlock, HybridBlockConfig, HybridMixerConfig};
pub use mamba::{MambaBlock, MambaBlockConfig};
pub use transformer::{NormPlacement, TransformerBlock, TransformerBlockConfig};

use lamina_components::{LayerCache, LayerInput, VisitLayers};
use lamina_core::{BlockOutput, Error, Result};
use mlx_rs::module::{Module, ModuleParameters};

/// A residual block: what backbones stack.
pub trait Block:
    Clone + ModuleParameters + VisitLayers + for<'a> Module<LayerInput<'a>, Output = BlockOutput, Error = Error>
{
    /// A fresh cache of the kind this block's mixer uses.
    ///
    /// # Errors
    /// When the block's config cannot describe a cache (never for built-in blocks).
    fn make_cache(&self) -> Result<LayerCache>;
}
