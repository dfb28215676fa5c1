//! # lamina-components
//!
//! The pieces every lamina architecture is built from, each an mlx-rs module whose
//! parameter names are the Hugging Face tensor names:
//!
//! | piece | type | parameters |
//! | --- | --- | --- |
//! | dense layer | [`Linear`] (optionally quantized: [`QuantConfig`]) | `weight`, `bias`, `scales`, `biases` |
//! | norms | [`Norm`] (RMSNorm, weightless RMSNorm, LayerNorm) | `weight`, `bias` |
//! | token embedding | [`Embedding`] (also the tied output projection) | `weight` |
//! | attention | [`Attention`] (MHA/GQA/MQA, QK-norm, RoPE variants, windows) | `q_proj`, `k_proj`, `v_proj`, `o_proj`, `q_norm`, `k_norm` |
//! | feed-forward | [`FeedForward`] (SwiGLU or plain MLP) | `gate_proj`, `up_proj`, `down_proj` |
//! | selective SSM | [`MambaMixer`] | `in_proj`, `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj` |
//! | LoRA | adapters on any [`Linear`] ([`LoraConfig`]) | `lora_a`, `lora_b` |
//!
//! Caches ([`KvCache`], [`RotatingKvCache`], [`SsmState`]) are values the caller holds and
//! passes in through [`LayerInput`]. The layer crates share [`lamina_core::Error`]: their
//! failures are the same kinds (bad config, bad shape, MLX error).
//!
//! ```
//! use lamina_components::{Attention, AttentionConfig, KvCache, LayerCache, LayerInput};
//! use mlx_rs::Array;
//! use mlx_rs::module::Module;
//!
//! // Grouped-query attention: 4 query heads sharing 2 key/value heads, RoPE.
//! let mut attention = Attention::new(AttentionConfig::new(16, 4, 2)).unwrap();
//! let x = Array::ones::<f32>(&[1, 3, 16]).unwrap();
//! let full = attention.forward(LayerInput::new(&x)).unwrap();
//! assert_eq!(full.shape(), &[1, 3, 16]);
//!
//! // The same three positions through a KV cache give the same outputs.
//! let mut cache = LayerCache::Kv(KvCache::new());
//! let cached = attention.forward(LayerInput { x: &x, cache: Some(&mut cache), padding_mask: None }).unwrap();
//! assert!(cached.all_close(&full, 1e-5, 1e-5, None).unwrap());
//! assert_eq!(cache.offset(), 3);
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod attendable;
mod attention;
mod batch_cache;
mod cache;
mod checkpoint;
mod dropout;
mod embedding;
pub mod fast;
mod ffn;
mod linear;
mod lora;
mod mask;
mod norm;
pub mod plan;
mod quant;
mod quantized_cache;
mod rope;
mod ssm;
#[cfg(test)]
mod testing;

pub use attendable::Attendable;
pub use attention::{
    Attention, AttentionConfig, LayerInput, QkNormConfig, QkNormPosition, batch_and_len, softcap,
};
pub use batch_cache::{BatchedKv, KvRows};
pub use cache::{
    BatchKvCache, DecodeScores, KV_STEP, KvCache, LayerCache, RotatingKvCache, SsmState, WindowedKv,
};
pub use checkpoint::checkpointed;
pub use dropout::dropout;
pub use embedding::{Embedding, check_ids};
pub use fast::on_cpu;
pub use ffn::{FeedForward, FeedForwardConfig, activate};
pub use linear::Linear;
pub use lora::{AdapterKind, LoraConfig, trainable_names};
pub use mask::{AttentionMask, MaskSpan, attention_mask, causal_mask};
pub use norm::{Norm, NormConfig};
pub use quant::{Activations, BlockFormat, QuantConfig, Quantizable, VisitLayers, join};
pub use quantized_cache::{KvQuantization, Packed, QuantizedKv, QuantizedKvCache, quantized_attention};
pub use rope::{Rope, RopeConfig, RopeScaling};
pub use ssm::{CausalConv1d, MambaConfig, MambaMixer, ScanInput, selective_scan, ssm_cache};
