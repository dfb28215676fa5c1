//! A whole transformer block for one decoded token in one graph node (the CPU decode
//! plan's kernel): its RMSNorms (pre-norm, or Gemma's sandwich), the q/k/v products (with
//! biases, QK-norm and RoPE), the cache write and attention, the output projection and
//! residual, the gated unit and its down projection and residual.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::fused::OperandLists;
use crate::{DecodeAttention, GateActivation, QuantizedWeight, Rotation, absent, produced_three};

/// An RMSNorm as the block kernel computes it: `x * rsqrt(mean(x^2) + eps) * w`, or
/// `* (1 + w)` with `unit_offset` (Gemma).
#[derive(Debug, Clone, Copy)]
pub struct BlockNorm<'a> {
    /// The weight, f32 `[features]`.
    pub weight: &'a Array,
    /// Added to the mean square.
    pub eps: f32,
    /// Scale by `1 + weight`.
    pub unit_offset: bool,
}

/// A block's weights as the kernel takes them (every product quantized).
#[derive(Debug, Clone, Copy)]
pub struct BlockWeights<'a> {
    /// The norms before attention (required), after attention (Gemma), before the
    /// feed-forward network (required) and after it (Gemma), each `[hidden]`.
    pub norms: [Option<BlockNorm<'a>>; 4],
    /// Per-head RMSNorms of the queries and keys before RoPE (`[head_dim]`).
    pub qk_norms: Option<[BlockNorm<'a>; 2]>,
    /// `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    pub attention: [QuantizedWeight<'a>; 4],
    /// f32 biases of `q_proj`, `k_proj`, `v_proj` (Qwen2).
    pub qkv_biases: Option<[&'a Array; 3]>,
    /// `gate_proj`, `up_proj`, `down_proj`.
    pub mlp: [QuantizedWeight<'a>; 3],
}

/// A block's shapes and settings.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape<'a> {
    /// Query heads.
    pub heads: i32,
    /// Key/value heads.
    pub kv_heads: i32,
    /// Features per head (keys and values alike).
    pub head_dim: i32,
    /// The gate's activation.
    pub activation: GateActivation,
    /// RoPE of the token's query and key, when the block rotates them.
    pub rotation: Option<Rotation<'a>>,
    /// The cache slot, the attended slots, scale, window and soft-cap.
    pub attention: DecodeAttention,
    /// For a decoding batch left-padded into shared buffers: each row's first attended slot
    /// and position, int32 `[B, 2]` (as [`crate::decode_attention`] takes them; the rows'
    /// positions replace the rotation's offset).
    pub places: Option<&'a Array>,
}

/// The C side's `LaminaBlock`.
#[repr(C)]
struct LaminaBlock {
    heads: c_int,
    kv_heads: c_int,
    head_dim: c_int,
    norm_eps: [f32; 4],
    norm_unit_offset: [c_int; 4],
    qk_norm_eps: [f32; 2],
    qk_norm_unit_offset: [c_int; 2],
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
        qk_norms: *const mlx_sys::mlx_array,
        ws: *const mlx_sys::mlx_array,
        ss: *const mlx_sys::mlx_array,
        bs: *const mlx_sys::mlx_array,
        groups: *const c_int,
        bits: *const c_int,
        activations: *const c_int,
        formats: *const c_int,
        qkv_biases: *const mlx_sys::mlx_array,
        keys: mlx_sys::mlx_array,
        values: mlx_sys::mlx_array,
        periods: mlx_sys::mlx_array,
        places: mlx_sys::mlx_array,
        block: *const LaminaBlock,
    ) -> c_int;
}

/// One decoded token through a block in one graph node, writing its key and
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
    let lists = OperandLists::of(&products);
    let norm = |n: Option<BlockNorm<'_>>| n.map_or_else(absent, |n| n.weight.as_ptr());
    let norms = weights.norms.map(norm);
    let qk_norms = weights.qk_norms.map_or([absent(), absent()], |n| n.map(|n| n.weight.as_ptr()));
    let qkv_biases = weights.qkv_biases.map_or([absent(), absent(), absent()], |b| b.map(Array::as_ptr));
    let eps = |n: Option<BlockNorm<'_>>| n.map_or(0.0, |n| n.eps);
    let offset = |n: Option<BlockNorm<'_>>| c_int::from(n.is_some_and(|n| n.unit_offset));
    let (rope_base, periods) = shape.rotation.map_or((0.0, absent()), |r| r.frequencies.c_args());
    let how = shape.attention;
    let block = LaminaBlock {
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
        norm_eps: weights.norms.map(eps),
        norm_unit_offset: weights.norms.map(offset),
        qk_norm_eps: weights.qk_norms.map_or([0.0; 2], |n| n.map(|n| n.eps)),
        qk_norm_unit_offset: weights.qk_norms.map_or([0; 2], |n| n.map(|n| c_int::from(n.unit_offset))),
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
    // SAFETY: every handle is a valid array or empty for the call, each list holds the
    // entries the C side reads (4 norms, 2 QK-norms, 7 products, 3 biases); the kernel
    // fills the three fresh handles, which `produced_three` takes.
    unsafe {
        let mut outs = [mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new()];
        let [out, keys_out, values_out] = &mut outs;
        let rc = lamina_decode_block(
            out,
            keys_out,
            values_out,
            x.as_ptr(),
            norms.as_ptr(),
            qk_norms.as_ptr(),
            lists.ws.as_ptr(),
            lists.ss.as_ptr(),
            lists.bs.as_ptr(),
            lists.groups.as_ptr(),
            lists.bits.as_ptr(),
            lists.activations.as_ptr(),
            lists.formats.as_ptr(),
            qkv_biases.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            periods,
            shape.places.map_or_else(absent, Array::as_ptr),
            &block,
        );
        produced_three(rc, outs)
    }
}
