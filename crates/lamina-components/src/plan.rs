//! The CPU decode plan: a pre-norm transformer block's decoded token as one kernel node
//! instead of the seven its layers make (two norms, the q/k/v products, the attention,
//! the output projection and residual, the gated unit, the down projection and residual).
//! At one token per step a small model is bound by graph nodes rather than arithmetic,
//! so this is where its decoding time goes down.
//!
//! A plan is drawn up from a block's layers for each token ([`DecodePlan::for_block`]): it
//! holds when every one of them is something the kernel computes — f32 on the CPU, no
//! gradient, RMSNorms with weights, plain quantized products at widths the tier takes,
//! RoPE without a magnitude correction, no QK-norm, a gated unit with SiLU or GELU — and the
//! layers compute the token as always otherwise. The plan writes the cache's buffers in
//! place ([`LayerCache`] hands them over only when nothing else shares them).

use lamina_core::{Activation, NormKind, Result};
use lamina_kernels::{BlockShape, BlockWeights, GateActivation, QuantizedWeight};
use mlx_rs::{Array, Dtype, ops};

use crate::fast::{kernel_weight, on_cpu};
use crate::{Attention, FeedForward, LayerCache, Linear, Norm};

/// A pre-norm block's layers as the decode kernel takes them.
#[derive(Debug, Clone, Copy)]
pub struct DecodePlan<'a> {
    attention: &'a Attention,
    weights: BlockWeights<'a>,
    eps: (f32, f32),
    activation: GateActivation,
}

impl<'a> DecodePlan<'a> {
    /// The plan for `h = x + attention(input_layernorm(x))`,
    /// `out = h + mlp(post_attention_layernorm(h))`, when the kernel computes every part
    /// of it with `needs_grad` false; `None` otherwise.
    pub fn for_block(
        input_layernorm: &'a Norm,
        attention: &'a Attention,
        post_attention_layernorm: &'a Norm,
        mlp: &'a FeedForward,
        needs_grad: bool,
    ) -> Option<Self> {
        if needs_grad || attention.q_norm.is_some() || attention.k_norm.is_some() || !on_cpu() {
            return None;
        }
        let activation = match mlp.activation {
            Activation::Silu => GateActivation::Silu,
            Activation::GeluApprox => GateActivation::GeluTanh,
            Activation::Gelu => GateActivation::GeluErf,
            Activation::Relu => return None,
        };
        let product = |layer: &'a Linear| layer.plain_weight().and_then(kernel_weight);
        let products: Option<[QuantizedWeight<'a>; 7]> = (|| {
            Some([
                product(&attention.q_proj)?,
                product(&attention.k_proj)?,
                product(&attention.v_proj)?,
                product(&attention.o_proj)?,
                product(mlp.gate_proj.as_ref()?)?,
                product(&mlp.up_proj)?,
                product(&mlp.down_proj)?,
            ])
        })();
        let [q, k, v, o, gate, up, down] = products?;
        let weights = BlockWeights {
            input_layernorm: rms_weight(input_layernorm)?,
            attention: [q, k, v, o],
            post_attention_layernorm: rms_weight(post_attention_layernorm)?,
            mlp: [gate, up, down],
        };
        if attention.rope().is_some_and(|rope| rope.rotation(0).is_none()) {
            return None;
        }
        Some(DecodePlan {
            attention,
            weights,
            eps: (input_layernorm.eps, post_attention_layernorm.eps),
            activation,
        })
    }

    /// The block's output for one decoded token `x [B, 1, hidden]` (f32), its key and value
    /// written into `cache`; `None` (nothing done) for an input or cache the kernel does not
    /// take: another dtype or length, a cache of another kind, or buffers shared with a
    /// clone or a handed-out array.
    ///
    /// # Errors
    /// The cache's and the kernel's errors.
    pub fn run(&self, x: &Array, cache: &mut LayerCache) -> Result<Option<Array>> {
        if x.dtype() != Dtype::Float32 || x.ndim() != 3 || x.dim(1) != 1 || !cache.has_decode_attention() {
            return Ok(None);
        }
        let config = self.attention.config();
        let (kv_heads, head_dim) = (config.num_kv_heads as i32, config.head_dim() as i32);
        // The shapes of one position's keys and values, for the cache's buffers.
        let token = ops::zeros::<f32>(&[x.dim(0), kv_heads, 1, head_dim])?;
        let position = cache.offset();
        let window = config.sliding_window.map(|w| w as i32);
        cache.decode_in_place(&token, &token, window, |keys, values, slots| {
            let shape = BlockShape {
                heads: config.num_heads as i32,
                kv_heads,
                head_dim,
                eps: self.eps,
                activation: self.activation,
                rotation: self.attention.rope().and_then(|rope| rope.rotation(position)),
                attention: lamina_kernels::DecodeAttention {
                    scale: self.attention.scale(),
                    softcap: config.softcap,
                    ..slots
                },
            };
            // SAFETY: the cache hands its buffers to this closure only when nothing else
            // shares them, and takes the written ones back.
            unsafe { lamina_kernels::decode_block_in_place(x, self.weights, keys, values, shape) }
        })
    }
}

/// The weight of an RMSNorm the kernel computes: f32, no unit offset.
fn rms_weight(norm: &Norm) -> Option<&Array> {
    let weight = norm.weight.value.as_ref()?;
    let plain = norm.kind == NormKind::RmsNorm && !norm.unit_offset && norm.bias.value.is_none();
    (plain && weight.dtype() == Dtype::Float32).then_some(weight)
}
