//! # lamina-blocks
//!
//! Residual blocks composed from [`lamina_components`], each returning a
//! [`BlockOutput`](lamina_core::BlockOutput):
//!
//! | block | parameters (checkpoint names) |
//! | --- | --- |
//! | [`TransformerBlock`] | `input_layernorm`, `self_attn`, `post_attention_layernorm`, `mlp` |
//! | [`MambaBlock`] | `norm`, `mixer` |
//! | [`HybridBlock`] (Jamba-style) | `input_layernorm`, `self_attn` or `mamba`, `pre_ff_layernorm`, `feed_forward` |
//!
//! Every block implements [`Block`]: a forward over a
//! [`LayerInput`](lamina_components::LayerInput) and the cache its mixer needs.
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
