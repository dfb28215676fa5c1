//! The CPU decode plan: a transformer block's decoded token as one kernel node instead of
//! the seven or more its layers make (norms, the q/k/v products, the attention, the output
//! projection and residual, the gated unit, the down projection and residual).
//! At one token per step a small model is bound by graph nodes rather than arithmetic,
//! so this is where its decoding time goes down.
//!
//! A plan is drawn up from a block's layers for each token ([`DecodePlan::for_block`]): it
//! holds when every one of them is something the kernel computes — f32 on the CPU, no
//! gradient, RMSNorms with weights (pre-norm, or Gemma's sandwich), quantized products at
//! widths the tier takes (q/k/v may have biases), QK-norm before RoPE, RoPE without a
//! magnitude correction, a gated unit with SiLU or GELU — and the
//! layers compute the token as always otherwise. The plan writes the cache's buffers in
//! place ([`LayerCache`] hands them over only when nothing else shares them).

use lamina_core::{NormKind, Result};
use lamina_kernels::{BlockNorm, BlockShape, BlockWeights, GateActivation};
use mlx_rs::{Array, Dtype, ops};

use crate::fast::{gate_activation, kernel_weight, on_cpu};
use crate::{Attention, DecodeScores, FeedForward, LayerCache, LayerInput, Linear, Norm, QkNormPosition};

/// A block's layers as the decode plan reads them.
#[derive(Debug, Clone, Copy)]
pub struct BlockLayers<'a> {
    /// The norms before attention (required), after attention (Gemma's sandwich), before
    /// the feed-forward network (required) and after it (Gemma).
    pub norms: [Option<&'a Norm>; 4],
    /// Self-attention.
    pub attention: &'a Attention,
    /// The feed-forward network.
    pub mlp: &'a FeedForward,
}

/// A block's layers as the decode kernel takes them.
#[derive(Debug, Clone, Copy)]
pub struct DecodePlan<'a> {
    attention: &'a Attention,
    weights: BlockWeights<'a>,
    activation: GateActivation,
}

impl<'a> DecodePlan<'a> {
    /// The plan for `h = x + [norm](attention(norm(x)))`, `out = h + [norm](mlp(norm(h)))`
    /// when the kernel computes every part of it with `needs_grad` false; `None` otherwise.
    pub fn for_block(layers: BlockLayers<'a>, needs_grad: bool) -> Option<Self> {
        let BlockLayers { norms, attention, mlp } = layers;
        if needs_grad || !on_cpu() {
            return None;
        }
        let activation = gate_activation(mlp.activation)?;
        let plain = |layer: &'a Linear| layer.plain_weight().and_then(kernel_weight);
        let biased =
            |layer: &'a Linear| layer.biased_weight().and_then(|(w, b)| Some((kernel_weight(w)?, b)));
        let [(q, q_bias), (k, k_bias), (v, v_bias)] =
            [biased(&attention.q_proj)?, biased(&attention.k_proj)?, biased(&attention.v_proj)?];
        let qkv_biases = match (q_bias, k_bias, v_bias) {
            (None, None, None) => None,
            (Some(q), Some(k), Some(v)) if [q, k, v].iter().all(|b| b.dtype() == Dtype::Float32) => {
                Some([q, k, v])
            }
            _ => return None,
        };
        let mlp_weights = [plain(mlp.gate_proj.as_ref()?)?, plain(&mlp.up_proj)?, plain(&mlp.down_proj)?];
        let qk_norms = match (&attention.q_norm, &attention.k_norm, attention.config().qk_norm) {
            (None, None, None) => None,
            (Some(qn), Some(kn), Some(qk)) if qk.position == QkNormPosition::BeforeRope => {
                Some([block_norm(qn)?, block_norm(kn)?])
            }
            _ => return None,
        };
        let weights = BlockWeights {
            norms: [
                Some(block_norm(norms[0]?)?),
                optional_norm(norms[1])?,
                Some(block_norm(norms[2]?)?),
                optional_norm(norms[3])?,
            ],
            qk_norms,
            attention: [q, k, v, plain(&attention.o_proj)?],
            qkv_biases,
            mlp: mlp_weights,
        };
        if attention.rope().is_some_and(|rope| rope.rotation(0).is_none()) {
            return None;
        }
        Some(DecodePlan { attention, weights, activation })
    }

    /// The block's output for one decoded token `x [B, 1, hidden]` (f32), its key and value
    /// written into `cache`; `None` (nothing done) for an input or cache the kernel does not
    /// take: another dtype or length, a cache of another kind, or buffers shared with a
    /// clone or a handed-out array.
    ///
    /// # Errors
    /// The cache's and the kernel's errors.
    pub fn run(&self, x: &Array, cache: &mut LayerCache) -> Result<Option<Array>> {
        if x.dtype() != Dtype::Float32 || x.ndim() != 3 || x.dim(1) != 1 || !cache.decodes_in_place() {
            return Ok(None);
        }
        let config = self.attention.config();
        let (kv_heads, head_dim) = (config.num_kv_heads as i32, config.head_dim() as i32);
        // The shapes of one position's keys and values, for the cache's buffers.
        let token = ops::zeros::<f32>(&[x.dim(0), kv_heads, 1, head_dim])?;
        let position = cache.offset();
        let how = DecodeScores {
            scale: self.attention.scale(),
            window: config.sliding_window.map(|w| w as i32),
            softcap: config.softcap,
        };
        cache.decode_in_place(&token, &token, how, |[keys, values], attention, places| {
            let shape = BlockShape {
                heads: config.num_heads as i32,
                kv_heads,
                head_dim,
                activation: self.activation,
                rotation: self.attention.rope().and_then(|rope| rope.rotation(position)),
                attention,
                places,
            };
            // SAFETY: the cache hands its buffers to this closure only when nothing else
            // shares them, and takes the written ones back.
            unsafe { lamina_kernels::decode_block_in_place(x, self.weights, keys, values, shape) }
        })
    }
}

/// `residual + attention(input)` for a token the plan does not take (a prompt, a quantized
/// cache, a cache shared with a clone): the output projection and the add in one graph
/// node where lamina's kernels take them (on the CPU, in f32, a plain quantized `o_proj`),
/// the attention's layers otherwise.
///
/// # Errors
/// As the attention's `forward`.
pub fn attention_then_add(
    attention: &mut Attention,
    input: LayerInput<'_>,
    residual: &Array,
) -> Result<Array> {
    attention.forward_add(input, residual)
}

/// `residual + mlp(x)`, the down projection and the add in one graph node where lamina's
/// kernels take them (as [`attention_then_add`]).
///
/// # Errors
/// As the network's `forward`.
pub fn mlp_then_add(mlp: &mut FeedForward, x: &Array, residual: &Array) -> Result<Array> {
    mlp.forward_add(x, residual)
}

/// An RMSNorm as the kernel computes it: with an f32 weight and no shift.
fn block_norm(norm: &Norm) -> Option<BlockNorm<'_>> {
    let weight = norm.weight.value.as_ref()?;
    let rms = norm.kind == NormKind::RmsNorm && norm.bias.value.is_none() && weight.dtype() == Dtype::Float32;
    rms.then_some(BlockNorm { weight, eps: norm.eps, unit_offset: norm.unit_offset })
}

/// An optional norm: `Some(None)` when absent, `None` when the kernel cannot compute it.
fn optional_norm(norm: Option<&Norm>) -> Option<Option<BlockNorm<'_>>> {
    match norm {
        None => Some(None),
        Some(norm) => block_norm(norm).map(Some),
    }
}
