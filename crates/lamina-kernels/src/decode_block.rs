//! A whole pre-norm transformer block for one decoded token in one graph node (the CPU
//! decode plan's kernel): the two RMSNorms, the q/k/v products with RoPE, the cache write
//! and attention, the output projection and residual, the gated unit and its down
//! projection and residual.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::{DecodeAttention, GateActivation, QuantizedWeight, Rotation, absent, produced_all};

/// A pre-norm block's weights as the kernel takes them (every product quantized).
#[derive(Debug, Clone, Copy)]
pub struct BlockWeights<'a> {
    /// The RMSNorm weight before attention, f32 `[hidden]`.
    pub input_layernorm: &'a Array,
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    pub attention: [QuantizedWeight<'a>; 4],
    /// The RMSNorm weight before the feed-forward network, f32 `[hidden]`.
    pub post_attention_layernorm: &'a Array,
    /// `gate_proj`, `up_proj`, `down_proj`.
    pub mlp: [QuantizedWeight<'a>; 3],
}

/// A pre-norm block's shapes and settings.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape<'a> {
    /// Query heads.
    pub heads: i32,
    /// Key/value heads.
    pub kv_heads: i32,
    /// Features per head (keys and values alike).
    pub head_dim: i32,
    /// The two norms' epsilons (attention, feed-forward).
    pub eps: (f32, f32),
    /// The gate's activation.
    pub activation: GateActivation,
    /// RoPE of the token's query and key, when the block rotates them.
    pub rotation: Option<Rotation<'a>>,
    /// The cache slot, the attended slots, scale, window and soft-cap.
    pub attention: DecodeAttention,
}

/// The C side's `LaminaBlock`.
#[repr(C)]
struct LaminaBlock {
    heads: c_int,
    kv_heads: c_int,
    head_dim: c_int,
    eps_attention: f32,
    eps_mlp: f32,
    gate: c_int,
    rope_dims: c_int,
    rope_traditional: c_int,
    rope_base: f32,
    rope_scale: f32,
    rope_offset: c_int,
    slot: c_int,
    length: c_int,
    window: c_int,
    scale: f32,
    softcap: f32,
    in_place: c_int,
}

unsafe extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn lamina_decode_block(
        out: *mut mlx_sys::mlx_array,
        keys_out: *mut mlx_sys::mlx_array,
        values_out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        norms: *const mlx_sys::mlx_array,
        ws: *const mlx_sys::mlx_array,
        ss: *const mlx_sys::mlx_array,
        bs: *const mlx_sys::mlx_array,
        groups: *const c_int,
        bits: *const c_int,
        keys: mlx_sys::mlx_array,
        values: mlx_sys::mlx_array,
        periods: mlx_sys::mlx_array,
        block: *const LaminaBlock,
    ) -> c_int;
}

/// One decoded token through a pre-norm block in one graph node, writing its key and
/// value at slot `shape.attention.slot` of `keys` and `values` themselves (which the
/// returned caches then share): `(out, keys, values)`. f32 on the CPU, every product
/// quantized at a width the kernels take.
///
/// # Shapes
/// `x [B, 1, hidden]`, `keys`/`values [B, H_kv, C, D]` -> `([B, 1, hidden], keys, values)`
///
/// # Safety
/// Nothing else may read `keys` or `values` (any array sharing their buffers, evaluated or
/// not) at or after the slot once this node runs: the caller owns them alone (lamina's KV
/// caches track that).
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub unsafe fn decode_block_in_place(
    x: &Array,
    weights: BlockWeights<'_>,
    keys: &Array,
    values: &Array,
    shape: BlockShape<'_>,
) -> Result<(Array, Array, Array)> {
    let products: Vec<QuantizedWeight<'_>> = weights.attention.iter().chain(&weights.mlp).copied().collect();
    let ws: Vec<mlx_sys::mlx_array> = products.iter().map(|w| w.weight.as_ptr()).collect();
    let ss: Vec<mlx_sys::mlx_array> = products.iter().map(|w| w.scales.as_ptr()).collect();
    let bs: Vec<mlx_sys::mlx_array> = products.iter().map(|w| w.biases.as_ptr()).collect();
    let groups: Vec<c_int> = products.iter().map(|w| w.group_size).collect();
    let bits: Vec<c_int> = products.iter().map(|w| w.bits).collect();
    let norms = [weights.input_layernorm.as_ptr(), weights.post_attention_layernorm.as_ptr()];
    let (rope_base, periods) = shape.rotation.map_or((0.0, absent()), |r| r.frequencies.c_args());
    let how = shape.attention;
    let block = LaminaBlock {
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        eps_attention: shape.eps.0,
        eps_mlp: shape.eps.1,
        gate: shape.activation.code(),
        rope_dims: shape.rotation.map_or(0, |r| r.dims),
        rope_traditional: c_int::from(shape.rotation.is_some_and(|r| r.traditional)),
        rope_base,
        rope_scale: shape.rotation.map_or(1.0, |r| r.scale),
        rope_offset: shape.rotation.map_or(0, |r| r.offset),
        slot: how.slot,
        length: how.length,
        window: how.window.unwrap_or(0),
        scale: how.scale,
        softcap: how.softcap.unwrap_or(0.0),
        in_place: 1,
    };
    // SAFETY: every handle is a valid array for the call, each list holds seven entries
    // (two norms); the kernel fills the three fresh handles, which `produced_all` takes.
    let arrays = unsafe {
        let mut outs = [mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new()];
        let [out, keys_out, values_out] = &mut outs;
        let rc = lamina_decode_block(
            out,
            keys_out,
            values_out,
            x.as_ptr(),
            norms.as_ptr(),
            ws.as_ptr(),
            ss.as_ptr(),
            bs.as_ptr(),
            groups.as_ptr(),
            bits.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            periods,
            &block,
        );
        produced_all(rc, outs.to_vec())?
    };
    let mut arrays = arrays.into_iter();
    match (arrays.next(), arrays.next(), arrays.next()) {
        (Some(out), Some(keys), Some(values)) => Ok((out, keys, values)),
        _ => Err(lamina_core::Error::Internal("the decode block kernel returned too few arrays")),
    }
}
