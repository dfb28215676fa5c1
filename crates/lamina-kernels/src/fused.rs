//! Fused primitives for decoding on the CPU: several quantized products of one input, a
//! gated unit on quantized weights, and one position's attention over a KV cache — each
//! one MLX graph node where the plain graph takes several (at one token per step, graph
//! nodes are what a block spends its time on).

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::{
    Activations, BlockFormat, RopeFrequencies, absent, lamina_decode_attention, lamina_prompt_attention,
    lamina_quantized_products, produced, produced_all, produced_three,
};

/// A quantized weight as a quantized `Linear` holds it.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedWeight<'a> {
    /// Packed values: u32 `[N, K * bits / 32]` (affine), or u8 `[N, K / 256 * block bytes]`
    /// (GGUF blocks).
    pub weight: &'a Array,
    /// How `weight` is laid out.
    pub layout: QuantLayout<'a>,
    /// How the products read `x` (exact, or rounded to 8 bits).
    pub activations: Activations,
}

/// How a [`QuantizedWeight`] is laid out.
#[derive(Debug, Clone, Copy)]
pub enum QuantLayout<'a> {
    /// MLX's affine layout: `scale * q + bias` per group of values.
    Affine {
        /// f32 or f16 `[N, K / group_size]`.
        scales: &'a Array,
        /// The same shape and dtype.
        biases: &'a Array,
        /// Values per scale and bias.
        group_size: i32,
        /// Bits per value (2-8).
        bits: i32,
    },
    /// GGUF super-blocks as the file stores them (scales inside the blocks).
    Blocks(BlockFormat),
}

/// Quantized weights as the C side's parallel lists take them: packed weights, scales and
/// biases (the weight again for blocks, which hold theirs), groups, bits, activations and
/// formats (0 affine, else a [`BlockFormat`]'s code).
pub(crate) struct OperandLists {
    pub(crate) ws: Vec<mlx_sys::mlx_array>,
    pub(crate) ss: Vec<mlx_sys::mlx_array>,
    pub(crate) bs: Vec<mlx_sys::mlx_array>,
    pub(crate) groups: Vec<c_int>,
    pub(crate) bits: Vec<c_int>,
    pub(crate) activations: Vec<c_int>,
    pub(crate) formats: Vec<c_int>,
}

impl OperandLists {
    pub(crate) fn of(weights: &[QuantizedWeight<'_>]) -> Self {
        let mut lists = OperandLists {
            ws: Vec::new(),
            ss: Vec::new(),
            bs: Vec::new(),
            groups: Vec::new(),
            bits: Vec::new(),
            activations: Vec::new(),
            formats: Vec::new(),
        };
        for w in weights {
            let (scales, biases, group, bits, format) = match w.layout {
                QuantLayout::Affine { scales, biases, group_size, bits } => {
                    (scales.as_ptr(), biases.as_ptr(), group_size, bits, 0)
                }
                QuantLayout::Blocks(format) => {
                    (w.weight.as_ptr(), w.weight.as_ptr(), format.values() as c_int, 8, format.code())
                }
            };
            lists.ws.push(w.weight.as_ptr());
            lists.ss.push(scales);
            lists.bs.push(biases);
            lists.groups.push(group);
            lists.bits.push(bits);
            lists.activations.push(w.activations.code());
            lists.formats.push(format);
        }
        lists
    }
}

/// The activation of a gated unit's gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// `x * sigmoid(x)` (SwiGLU).
    Silu,
    /// GELU with the tanh approximation (GeGLU as Gemma computes it).
    GeluTanh,
    /// GELU with the exact `erf`.
    GeluErf,
}

impl GateActivation {
    pub(crate) fn code(self) -> c_int {
        match self {
            GateActivation::Silu => 1,
            GateActivation::GeluTanh => 2,
            GateActivation::GeluErf => 3,
        }
    }
}

/// RoPE of a decoded token's queries and keys, applied by [`rotated_products`]: as
/// [`crate::rope`] with these arguments.
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    /// Features rotated (even, at most the head size).
    pub dims: i32,
    /// Interleaved pairs instead of split halves.
    pub traditional: bool,
    /// The frequencies.
    pub frequencies: RopeFrequencies<'a>,
    /// The scale of positions.
    pub scale: f32,
    /// The token's position.
    pub offset: i32,
}

/// The C side's `LaminaRope`.
#[repr(C)]
pub(crate) struct LaminaRope {
    dims: c_int,
    traditional: c_int,
    base: f32,
    scale: f32,
    offset: c_int,
    periods: mlx_sys::mlx_array,
}

/// What the products kernel does after the products.
#[derive(Default)]
struct Epilogue<'a> {
    rotation: Option<Rotation<'a>>,
    residual: Option<&'a Array>,
}

/// Calls the products kernel for `weights` with output `shapes` (empty: `[..., N]`).
fn products(
    x: &Array,
    weights: &[QuantizedWeight<'_>],
    shapes: &[&[i32]],
    gate: c_int,
    epilogue: Epilogue<'_>,
) -> Result<Vec<Array>> {
    let outputs = if gate == 0 { weights.len() } else { 1 };
    let lists = OperandLists::of(weights);
    let dims: Vec<c_int> = shapes.iter().flat_map(|s| s.iter().copied()).collect();
    let ndims: Vec<c_int> =
        (0..weights.len()).map(|i| shapes.get(i).map_or(0, |s| s.len() as c_int)).collect();
    let count = weights.len() as c_int;
    let rope = epilogue.rotation.map(|r| {
        let (base, periods) = r.frequencies.c_args();
        LaminaRope {
            dims: r.dims,
            traditional: c_int::from(r.traditional),
            base,
            scale: r.scale,
            offset: r.offset,
            periods,
        }
    });
    let rope_ptr = rope.as_ref().map_or(std::ptr::null(), |r| r as *const LaminaRope);
    let residual = epilogue.residual.map_or_else(absent, Array::as_ptr);
    // SAFETY: every handle is a valid array for the call and each list holds `count`
    // entries (`rope` is null or points at a live value); the kernel fills the `outputs`
    // fresh handles, which `produced_all` takes.
    unsafe {
        let mut outs: Vec<mlx_sys::mlx_array> = (0..outputs).map(|_| mlx_sys::mlx_array_new()).collect();
        let rc = lamina_quantized_products(
            outs.as_mut_ptr(),
            count,
            x.as_ptr(),
            lists.ws.as_ptr(),
            lists.ss.as_ptr(),
            lists.bs.as_ptr(),
            lists.groups.as_ptr(),
            lists.bits.as_ptr(),
            lists.activations.as_ptr(),
            lists.formats.as_ptr(),
            dims.as_ptr(),
            ndims.as_ptr(),
            gate,
            rope_ptr,
            residual,
        );
        produced_all(rc, outs)
    }
}

/// `x @ dequantize(w_i)^T` for every weight, in one graph node: one read of `x`, rounded
/// once for the weights that read it rounded to 8 bits alike, and their products' rows
/// split over lamina's threads together (each output bit for bit its product alone).
/// Output `i` has shape
/// `shapes[i]` when given (a reshape of `[..., N_i]`, e.g. `[B, H, 1, D]` for a decoded
/// token's queries), else `[..., N_i]`. f32 `x` on the CPU only.
///
/// ```
/// use mlx_rs::ops;
/// use lamina_kernels::{Activations, QuantLayout, QuantizedWeight};
///
/// let w = mlx_rs::random::normal::<f32>(&[16, 64], None, None, None).unwrap();
/// let (packed, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
/// let q = QuantizedWeight {
///     weight: &packed,
///     layout: QuantLayout::Affine { scales: &scales, biases: &biases, group_size: 32, bits: 4 },
///     activations: Activations::Exact,
/// };
/// let x = mlx_rs::random::normal::<f32>(&[1, 1, 64], None, None, None).unwrap();
/// let outs = lamina_kernels::quantized_products(&x, &[q, q], &[&[1, 4, 1, 4]]).unwrap();
/// assert_eq!(outs[0].shape(), &[1, 4, 1, 4]);
/// assert_eq!(outs[1].shape(), &[1, 1, 16]);
/// ```
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, shapes that do not fit, or
/// an output shape that does not hold its product.
pub fn quantized_products(
    x: &Array,
    weights: &[QuantizedWeight<'_>],
    shapes: &[&[i32]],
) -> Result<Vec<Array>> {
    products(x, weights, shapes, 0, Epilogue::default())
}

/// [`quantized_products`] whose first two outputs, shaped `[B, H, 1, D]` (a decoded
/// token's queries and keys), are rotated by RoPE as [`crate::rope`] rotates them, in the
/// same graph node.
///
/// # Errors
/// As [`quantized_products`], and for fewer than two outputs, outputs not shaped
/// `[B, H, 1, D]` alike in `D`, or a rotation that does not fit them.
pub fn rotated_products(
    x: &Array,
    weights: &[QuantizedWeight<'_>],
    shapes: &[&[i32]],
    rotation: Rotation<'_>,
) -> Result<Vec<Array>> {
    products(x, weights, shapes, 0, Epilogue { rotation: Some(rotation), residual: None })
}

/// `residual + x @ dequantize(weight)^T` in one graph node: a sublayer's output projection
/// and the residual add after it. f32 on the CPU only.
///
/// # Shapes
/// `x [..., K]`, `residual [..., N]` -> `[..., N]`
///
/// # Errors
/// As [`quantized_products`], and for a residual of another shape or dtype.
pub fn quantized_residual(x: &Array, weight: QuantizedWeight<'_>, residual: &Array) -> Result<Array> {
    let epilogue = Epilogue { rotation: None, residual: Some(residual) };
    let first = products(x, &[weight], &[], 0, epilogue)?.into_iter().next();
    first.ok_or(lamina_core::Error::Internal("the products kernel returned no array"))
}

/// `act(x @ dequantize(gate)^T) * (x @ dequantize(up)^T)` in one graph node: a gated
/// feed-forward unit's inner activations (SwiGLU, GeGLU). f32 `x` on the CPU only.
///
/// # Shapes
/// `x [..., K]` -> `[..., N]` (both weights `N` rows)
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub fn quantized_gated(
    x: &Array,
    gate: QuantizedWeight<'_>,
    up: QuantizedWeight<'_>,
    activation: GateActivation,
) -> Result<Array> {
    let first = products(x, &[gate, up], &[], activation.code(), Epilogue::default())?.into_iter().next();
    first.ok_or(lamina_core::Error::Internal("the gated unit's kernel returned no array"))
}

/// How [`decode_attention`] attends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeAttention {
    /// Where the new key and value go (a KV cache's offset; a rotating cache's slot).
    pub slot: i32,
    /// Slots the query attends to, `[0, length)` (they include `slot`).
    pub length: i32,
    /// Score scale (usually `head_dim^-0.5`).
    pub scale: f32,
    /// Attend to the last `window` of those slots only.
    pub window: Option<i32>,
    /// Soft-capping of the scores, `cap * tanh(score / cap)`.
    pub softcap: Option<f32>,
}

/// One decoded position's attention over a KV cache, in one graph node: writes `k` and
/// `v` at slot `how.slot` of copies of the cache buffers (the inputs are left as they
/// are), then attends `q` to slots `..how.length` (GQA by head groups, the window and
/// soft-cap of `how`), softmax in f32. Returns the attention output and the updated
/// buffers. f32 on the CPU only. [`decode_attention_in_place`] writes into the buffers
/// themselves, for their sole owner.
///
/// `places` is for a decoding batch whose rows share the buffers left-padded to one slot:
/// per row, the first slot it attends (the slots before it are padding) and its token's
/// position, int32 `[B, 2]`. Each row's keys are split into parts counted from its first
/// attended key, and a prompt's queries are split the same way ([`prompt_attention`]): a
/// row's numbers do not depend on the batch it decodes in.
///
/// # Shapes
/// `q [B, H, 1, D]`, `k [B, H_kv, 1, D]`, `v [B, H_kv, 1, D_v]`, `keys [B, H_kv, C, D]`,
/// `values [B, H_kv, C, D_v]` with `slot < length <= C` -> `([B, 1, H * D_v], keys, values)`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub fn decode_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    [keys, values]: [&Array; 2],
    how: DecodeAttention,
    places: Option<&Array>,
) -> Result<(Array, Array, Array)> {
    attend_over_cache(q, k, v, [keys, values], how, places, false)
}

/// [`decode_attention`] writing the new key and value into `keys` and `values`
/// themselves, which the outputs then share: no copy of the cache per token.
///
/// # Safety
/// Nothing else may read `keys` or `values` (any array sharing their buffers, evaluated
/// or not) at or after slot `how.slot` once this node runs: the caller owns them alone
/// (lamina's KV caches track that, and copy when they are shared).
///
/// # Errors
/// As [`decode_attention`].
pub unsafe fn decode_attention_in_place(
    q: &Array,
    k: &Array,
    v: &Array,
    [keys, values]: [&Array; 2],
    how: DecodeAttention,
    places: Option<&Array>,
) -> Result<(Array, Array, Array)> {
    attend_over_cache(q, k, v, [keys, values], how, places, true)
}

fn attend_over_cache(
    q: &Array,
    k: &Array,
    v: &Array,
    [keys, values]: [&Array; 2],
    how: DecodeAttention,
    places: Option<&Array>,
    in_place: bool,
) -> Result<(Array, Array, Array)> {
    // SAFETY: valid handles for the call; the kernel fills the three fresh handles, which
    // `produced_three` takes (or frees on failure).
    unsafe {
        let mut outs = [mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new(), mlx_sys::mlx_array_new()];
        let [out, keys_out, values_out] = &mut outs;
        let rc = lamina_decode_attention(
            out,
            keys_out,
            values_out,
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            places.map_or_else(absent, Array::as_ptr),
            how.slot,
            how.length,
            how.scale,
            how.window.unwrap_or(0),
            how.softcap.unwrap_or(0.0),
            c_int::from(in_place),
        );
        produced_three(rc, outs)
    }
}

/// How [`prompt_attention`] attends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptAttention {
    /// The position of the first query (the tokens already in the cache).
    pub query_start: i32,
    /// The position of the first key.
    pub key_start: i32,
    /// Score scale (usually `head_dim^-0.5`).
    pub scale: f32,
    /// Attend to the last `window` positions only.
    pub window: Option<i32>,
    /// Soft-capping of the scores, `cap * tanh(score / cap)`.
    pub softcap: Option<f32>,
}

/// Causal attention of a prompt's queries to keys by position, in one graph node and
/// without `[L, S]` score arrays: query `t` (at `how.query_start + t`) attends to the keys
/// at or before its position (`how.key_start + j`), within `how.window` when set, softmax
/// in f32. The output comes already merged across heads. Differentiable (the gradient of
/// the same attention in MLX's ops); f32 on the CPU only.
///
/// # Shapes
/// `q [B, H, L, D]`, `keys [B, H_kv, S, D]`, `values [B, H_kv, S, D_v]` (any strides) ->
/// `[B, L, H * D_v]`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub fn prompt_attention(q: &Array, keys: &Array, values: &Array, how: PromptAttention) -> Result<Array> {
    // SAFETY: valid handles for the call; the kernel fills `out`, which `produced` takes.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_prompt_attention(
            &mut out,
            q.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            how.query_start,
            how.key_start,
            how.scale,
            how.window.unwrap_or(0),
            how.softcap.unwrap_or(0.0),
        );
        produced(rc, out)
    }
}
