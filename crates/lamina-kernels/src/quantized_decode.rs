//! One decoded position's attention over a KV cache held quantized (MLX's affine layout):
//! the new key and value quantized and written at their slot, the stored positions read
//! packed.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::fused::DecodeAttention;
use crate::{lamina_quantized_decode_attention, produced_all};

/// A KV cache's buffers in MLX's affine quantization, as `mx.quantize` lays them out.
#[derive(Debug, Clone, Copy)]
pub struct PackedKv<'a> {
    /// Packed values, u32 `[B, H_kv, C, D * bits / 32]`.
    pub data: &'a Array,
    /// A scale per group, f32 `[B, H_kv, C, D / group_size]`.
    pub scales: &'a Array,
    /// A bias per group, like `scales`.
    pub biases: &'a Array,
}

/// A quantized KV cache: its keys, its values and how they are quantized.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedCache<'a> {
    /// The keys.
    pub keys: PackedKv<'a>,
    /// The values.
    pub values: PackedKv<'a>,
    /// Elements of the head dimension sharing a scale and a bias (32, 64 or 128).
    pub group_size: i32,
    /// Bits per element (2-6 or 8, those [`crate::supports_quantized`] takes).
    pub bits: i32,
}

/// The cache's buffers after a decoded position: the same layout as [`QuantizedCache`].
#[derive(Debug, Clone)]
pub struct PackedBuffers {
    /// Key data, scales and biases.
    pub keys: [Array; 3],
    /// Value data, scales and biases.
    pub values: [Array; 3],
}

/// [`crate::decode_attention`] for a quantized cache, in one graph node: `k` and `v`
/// quantized as `mx.quantize` quantizes them and written at slot `how.slot` of copies of
/// the buffers, then `q` attended to slots `..how.length` (GQA, window, soft-cap), the
/// stored rows dequantized a few hundred at a time (never the whole cache). Returns the
/// attention output and the updated buffers. f32 on the CPU only.
///
/// # Shapes
/// `q [B, H, 1, D]`, `k [B, H_kv, 1, D]`, `v [B, H_kv, 1, D_v]`, the cache
/// `[B, H_kv, C, ...]` with `slot < length <= C` -> `[B, 1, H * D_v]`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, widths the CPU's tier does
/// not dequantize, or shapes that do not fit.
pub fn quantized_decode_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    cache: QuantizedCache<'_>,
    how: DecodeAttention,
) -> Result<(Array, PackedBuffers)> {
    attend(q, k, v, cache, how, false)
}

/// [`quantized_decode_attention`] writing into the cache's buffers themselves.
///
/// # Safety
/// As [`crate::decode_attention_in_place`]: nothing else may read the cache's buffers at
/// or after slot `how.slot` once this node runs.
///
/// # Errors
/// As [`quantized_decode_attention`].
pub unsafe fn quantized_decode_attention_in_place(
    q: &Array,
    k: &Array,
    v: &Array,
    cache: QuantizedCache<'_>,
    how: DecodeAttention,
) -> Result<(Array, PackedBuffers)> {
    attend(q, k, v, cache, how, true)
}

fn attend(
    q: &Array,
    k: &Array,
    v: &Array,
    cache: QuantizedCache<'_>,
    how: DecodeAttention,
    in_place: bool,
) -> Result<(Array, PackedBuffers)> {
    let (kc, vc) = (cache.keys, cache.values);
    let inputs = [kc.data, kc.scales, kc.biases, vc.data, vc.scales, vc.biases].map(Array::as_ptr);
    // SAFETY: valid handles for the call; the kernel fills the seven fresh handles, which
    // `produced_all` takes (or frees on failure).
    let arrays = unsafe {
        let mut outs: Vec<mlx_sys::mlx_array> = (0..7).map(|_| mlx_sys::mlx_array_new()).collect();
        let rc = lamina_quantized_decode_attention(
            outs.as_mut_ptr(),
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            inputs.as_ptr(),
            cache.group_size,
            cache.bits,
            how.slot,
            how.length,
            how.scale,
            how.window.unwrap_or(0),
            how.softcap.unwrap_or(0.0),
            c_int::from(in_place),
        );
        produced_all(rc, outs)?
    };
    let mut arrays = arrays.into_iter();
    let mut next = || {
        arrays
            .next()
            .ok_or(lamina_core::Error::Internal("the quantized decode kernel returned too few arrays"))
    };
    let out = next()?;
    let keys = [next()?, next()?, next()?];
    let values = [next()?, next()?, next()?];
    Ok((out, PackedBuffers { keys, values }))
}
