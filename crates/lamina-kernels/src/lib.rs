//! # lamina-kernels
//!
//! CPU kernels as MLX custom primitives, compiled in C++ against the MLX headers of the
//! wheel lamina builds with, and exposed as functions returning `mlx-rs` arrays — lazy graph
//! nodes like any MLX op, differentiable where training needs them.
//!
//! | function | what | where it runs |
//! | --- | --- | --- |
//! | [`quantized_matmul`] | `x @ dequantize(w)^T` over MLX's affine layout, 2–8 bits, f32 or f16 scales | lamina's kernel on the CPU (AVX-512 / AVX-512 VBMI / AVX2 + FMA picked at run time, a pool whose threads spin briefly, then sleep); MLX's own op elsewhere |
//! | [`blocks_matmul`] | the same over a GGUF super-block weight held as the file stores it (Q2_K-Q6_K, IQ4_XS) | lamina's kernel, CPU only |
//! | [`dequantize_blocks`] | such a weight's f32 values | lamina's kernel, CPU only |
//! | [`quantized_products`] | several quantized products of one `x` in one graph node (q/k/v) | lamina's kernel, CPU and f32 only |
//! | [`quantized_gated`] | `act(x Wg^T) * (x Wu^T)` on quantized weights (SwiGLU, GeGLU) in one node | lamina's kernel, CPU and f32 only |
//! | [`rotated_products`] | the same, the first two outputs rotated by RoPE (a decoded token's q and k) | lamina's kernel, CPU and f32 only |
//! | [`quantized_residual`] | `r + x @ dequantize(w)^T` in one node (a sublayer's output projection and residual add) | lamina's kernel, CPU and f32 only |
//! | [`decode_attention`] | one query position against a KV cache, writing the new key and value in place | lamina's kernel, CPU and f32 only |
//! | [`quantized_decode_attention`] | the same against a KV cache held in MLX's affine quantization, read packed | lamina's kernel, CPU and f32 only |
//! | [`rms_norm`] | RMSNorm of the rows (Gemma's `1 + w` too) in one graph node | lamina's kernel, CPU and f32; MLX's op elsewhere |
//! | [`rope`] | RoPE (split halves or interleaved, base or explicit frequencies) in one graph node | lamina's kernel, CPU and f32; MLX's op elsewhere |
//! | [`prompt_attention`] | a prompt's causal attention (GQA, windows, soft-capping) without `[L, S]` scores, output already `[B, L, H * D]` | lamina's kernel, CPU and f32 only |
//! | [`half_matmul`] | `x @ w^T` for a bf16 or f16 weight read as stored, f32 accumulation | lamina's kernel on the CPU (AVX2 + FMA + F16C at run time; BLAS sgemm on widened tiles for many rows); MLX's own matmul elsewhere |
//!
//! ```
//! use mlx_rs::{Array, ops};
//!
//! let w = mlx_rs::random::normal::<f32>(&[16, 64], None, None, None).unwrap();
//! let (packed, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
//! let x = mlx_rs::random::normal::<f32>(&[1, 64], None, None, None).unwrap();
//! let exact = lamina_kernels::Activations::Exact;
//! let ours = lamina_kernels::quantized_matmul(&x, &packed, &scales, &biases, 32, 4, exact).unwrap();
//! let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, 32, 4).unwrap();
//! let diff = ours.subtract(&mlx).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
//! assert!(diff < 1e-4);
//! ```
#![deny(missing_docs)]

use std::ffi::{CStr, c_char, c_int};

use lamina_core::{Error, Result};
use mlx_rs::Array;

unsafe extern "C" {
    fn lamina_kernel_threads() -> c_int;
    fn lamina_kernel_isa() -> *const c_char;
    fn lamina_kernels_supports_quantized(bits: c_int, group: c_int) -> c_int;
    fn lamina_kernels_blocks_native(format: c_int) -> c_int;
    fn lamina_quantized_matmul(
        out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        w: mlx_sys::mlx_array,
        scales: mlx_sys::mlx_array,
        biases: mlx_sys::mlx_array,
        group: c_int,
        bits: c_int,
        activations: c_int,
        format: c_int,
    ) -> c_int;
    fn lamina_dequantize_blocks(out: *mut mlx_sys::mlx_array, w: mlx_sys::mlx_array, format: c_int) -> c_int;
    fn lamina_half_matmul(
        out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        w: mlx_sys::mlx_array,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lamina_quantized_products(
        outs: *mut mlx_sys::mlx_array,
        count: c_int,
        x: mlx_sys::mlx_array,
        ws: *const mlx_sys::mlx_array,
        ss: *const mlx_sys::mlx_array,
        bs: *const mlx_sys::mlx_array,
        groups: *const c_int,
        bits: *const c_int,
        activations: *const c_int,
        formats: *const c_int,
        shapes: *const c_int,
        ndims: *const c_int,
        gate: c_int,
        rope: *const fused::LaminaRope,
        residual: mlx_sys::mlx_array,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lamina_decode_attention(
        out: *mut mlx_sys::mlx_array,
        keys_out: *mut mlx_sys::mlx_array,
        values_out: *mut mlx_sys::mlx_array,
        q: mlx_sys::mlx_array,
        k: mlx_sys::mlx_array,
        v: mlx_sys::mlx_array,
        keys: mlx_sys::mlx_array,
        values: mlx_sys::mlx_array,
        places: mlx_sys::mlx_array,
        slot: c_int,
        length: c_int,
        scale: f32,
        window: c_int,
        softcap: f32,
        in_place: c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lamina_quantized_decode_attention(
        outs: *mut mlx_sys::mlx_array,
        q: mlx_sys::mlx_array,
        k: mlx_sys::mlx_array,
        v: mlx_sys::mlx_array,
        cache: *const mlx_sys::mlx_array,
        group: c_int,
        bits: c_int,
        slot: c_int,
        length: c_int,
        scale: f32,
        window: c_int,
        softcap: f32,
        in_place: c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lamina_prompt_attention(
        out: *mut mlx_sys::mlx_array,
        q: mlx_sys::mlx_array,
        keys: mlx_sys::mlx_array,
        values: mlx_sys::mlx_array,
        query_start: c_int,
        key_start: c_int,
        scale: f32,
        window: c_int,
        softcap: f32,
    ) -> c_int;
    fn lamina_rms_norm(
        out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        weight: mlx_sys::mlx_array,
        eps: f32,
        unit_offset: c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn lamina_rope(
        out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        dims: c_int,
        traditional: c_int,
        base: f32,
        scale: f32,
        offset: c_int,
        freqs: mlx_sys::mlx_array,
    ) -> c_int;
    fn lamina_move_rows(
        out: *mut mlx_sys::mlx_array,
        sources: *const mlx_sys::mlx_array,
        source_count: c_int,
        spans: *const c_int,
        rows: c_int,
        positions: c_int,
        in_place: c_int,
    ) -> c_int;
    fn lamina_kernels_last_error() -> *const c_char;
}

mod blocks;
mod decode_block;
mod fused;
mod norm_rope;
mod quantized_decode;
mod rows;
pub use blocks::{BLOCK_VALUES, BlockFormat, blocks_matmul, dequantize_blocks};
pub use decode_block::{BlockNorm, BlockShape, BlockWeights, decode_block_in_place};
pub use fused::{
    DecodeAttention, GateActivation, PromptAttention, QuantLayout, QuantizedWeight, Rotation,
    decode_attention, decode_attention_in_place, prompt_attention, quantized_gated, quantized_products,
    quantized_residual, rotated_products,
};
pub use norm_rope::{RopeFrequencies, rms_norm, rope};
pub use quantized_decode::{
    PackedBuffers, PackedKv, QuantizedCache, quantized_decode_attention, quantized_decode_attention_in_place,
};
pub use rows::{RowSpan, move_rows, move_rows_in_place};

/// The threads the kernels run a parallel region on (the calling thread included): one
/// per core this process may use (its CPU affinity on Linux), or `LAMINA_THREADS` when set
/// (1-256). Fixed at the first kernel call.
pub fn threads() -> usize {
    // SAFETY: takes no arguments; starts the pool on first use.
    let n = unsafe { lamina_kernel_threads() };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// The instruction-set tier the kernels run: `portable`, `avx2`, `avx512`,
/// `avx512_vbmi`, `neon` or `neon_dotprod` — the machine's best (cpuid on x86; NEON on
/// every aarch64, with its byte dot products where the OS reports them), capped by
/// `LAMINA_ISA` when set. Fixed at the first kernel call.
pub fn isa() -> &'static str {
    // SAFETY: returns a pointer to a static, NUL-terminated name.
    let name = unsafe { CStr::from_ptr(lamina_kernel_isa()) };
    name.to_str().unwrap_or("unknown")
}

/// How lamina's quantized kernels read `x`, in products of any number of rows (a decoded
/// token, a decoding batch, a prompt). Rounded, each row of `x` gives the same outputs bit
/// for bit whatever rows share its product (a prompt partly served from a cache computes as
/// it would whole); exact, the same to float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activations {
    /// As given: the result is MLX's dequantize-then-matmul to float rounding (mlx-lm's
    /// numbers).
    #[default]
    Exact,
    /// Rounded to 8 bits per block of 32 values, as llama.cpp's Q8_0 activations: weights of
    /// every width (2-6 and 8 bits) multiply as integers (decoding ~1.7x faster on AVX2), each
    /// product off by about 0.3% of its size (the per-group bias term still uses `x`'s exact
    /// sums). Tiers without the integer kernels (NEON) stay exact.
    Int8,
    /// As `Int8`, then the [`EXACT_TOP`] largest outputs of each row recomputed with `x`
    /// exact: the top of an output head's ranking is `Exact`'s (greedy decoding picks what
    /// it would, and sampling sees exact logits where its mass is) at about `Int8`'s speed.
    /// The default for a GGUF file's output head.
    Int8ExactTop,
}

/// How many of a row's largest outputs `Activations::Int8ExactTop` recomputes exactly.
pub const EXACT_TOP: usize = 32;

impl Activations {
    /// The kernels' code: 0 exact, 1 rounded to 8 bits, 2 rounded with the top exact.
    pub(crate) fn code(self) -> c_int {
        match self {
            Activations::Exact => 0,
            Activations::Int8 => 1,
            Activations::Int8ExactTop => 2,
        }
    }
}

/// Whether quantized products of `bits`-wide weights in groups of `group` run on lamina's
/// kernels on this CPU's tier (groups are multiples of 32; NEON has 4- and 8-bit kernels
/// only). Otherwise [`quantized_matmul`] leaves them to MLX's own op, and the fused
/// decoding primitives do not apply.
pub fn supports_quantized(bits: i32, group: i32) -> bool {
    // SAFETY: plain integers in, a flag out.
    unsafe { lamina_kernels_supports_quantized(bits, group) != 0 }
}

/// A handle the kernels read as "absent".
fn absent() -> mlx_sys::mlx_array {
    mlx_sys::mlx_array { ctx: std::ptr::null_mut() }
}

/// The array a kernel call produced, or its error.
///
/// # Safety
/// `out` must be the handle the call filled (freed here on failure).
unsafe fn produced(rc: c_int, out: mlx_sys::mlx_array) -> Result<Array> {
    // SAFETY: as the caller promises.
    let first = unsafe { produced_all(rc, vec![out])? }.into_iter().next();
    first.ok_or(Error::Internal("a kernel call returned no array"))
}

/// The arrays a kernel call produced, or its error.
///
/// # Safety
/// `outs` must be the handles the call filled (all freed here on failure).
unsafe fn produced_all(rc: c_int, outs: Vec<mlx_sys::mlx_array>) -> Result<Vec<Array>> {
    // SAFETY: as the caller promises; the error text is a NUL-terminated thread-local.
    unsafe {
        if rc != 0 {
            for out in outs {
                mlx_sys::mlx_array_free(out);
            }
            let reason = CStr::from_ptr(lamina_kernels_last_error()).to_string_lossy().into_owned();
            return Err(Error::Kernel(reason));
        }
        Ok(outs.into_iter().map(|out| Array::from_ptr(out)).collect())
    }
}

/// [`produced_all`] for a kernel with three outputs (an output and the two cache buffers).
///
/// # Safety
/// As [`produced_all`].
unsafe fn produced_three(rc: c_int, outs: [mlx_sys::mlx_array; 3]) -> Result<(Array, Array, Array)> {
    // SAFETY: as the caller promises.
    let [out, keys, values] = unsafe { produced_all(rc, outs.to_vec())? }
        .try_into()
        .map_err(|_| Error::Internal("a kernel returned the wrong number of arrays"))?;
    Ok((out, keys, values))
}

/// `x @ w^T` for a weight stored in bf16 or f16 (the layout of a dense `Linear`), on
/// lamina's CPU kernel when the default device is the CPU: the weight is read as stored
/// and widened in registers, products accumulate in f32, and the result is rounded once
/// to MLX's promotion of the two dtypes. Through MLX's own matmul for other dtypes or
/// devices. Differentiable (through MLX's ops).
///
/// ```
/// use mlx_rs::{Array, Dtype, ops};
///
/// let w = mlx_rs::random::normal::<f32>(&[8, 40], None, None, None).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
/// let x = mlx_rs::random::normal::<f32>(&[3, 40], None, None, None).unwrap();
/// let ours = lamina_kernels::half_matmul(&x, &w).unwrap();
/// let mlx = ops::matmul(&x, &w.as_dtype(Dtype::Float32).unwrap().t()).unwrap();
/// let diff = ours.subtract(&mlx).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
/// assert!(diff < 1e-4);
/// ```
///
/// # Shapes
/// `x [..., K]`, `w [N, K]` -> `[..., N]`
///
/// # Errors
/// [`Error::Kernel`] when the shapes do not fit together, or an MLX error.
pub fn half_matmul(x: &Array, w: &Array) -> Result<Array> {
    // SAFETY: valid handles for the call; the kernel fills `out`, which `produced` takes.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_half_matmul(&mut out, x.as_ptr(), w.as_ptr());
        produced(rc, out)
    }
}

/// `x @ dequantize(w, scales, biases)^T`: what MLX's `quantized_matmul` computes with
/// `transpose = true` (the layout of a quantized `Linear`), on lamina's CPU kernel when
/// the default device is the CPU, `x` is f32 and `scales`/`biases` are f32 or f16 (both
/// the same; f16 as GGUF stores them, read as stored); through MLX's own op otherwise.
/// `activations`: how the product reads `x` ([`Activations`]).
///
/// # Shapes
/// `x [..., K]`, `w [N, K * bits / 32]` (u32), `scales`/`biases [N, K / group_size]` ->
/// `[..., N]`
///
/// # Errors
/// [`Error::Kernel`] when the shapes do not fit together, or an MLX error.
pub fn quantized_matmul(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: &Array,
    group_size: i32,
    bits: i32,
    activations: Activations,
) -> Result<Array> {
    matmul_call(x, w, (scales, biases, group_size, bits), activations, 0)
}

/// The quantized matmul kernel's call: `layout` is (scales, biases, group, bits), `format`
/// 0 for MLX's affine layout or a [`BlockFormat`]'s code.
fn matmul_call(
    x: &Array,
    w: &Array,
    (scales, biases, group, bits): (&Array, &Array, i32, i32),
    activations: Activations,
    format: c_int,
) -> Result<Array> {
    // SAFETY: the handles are valid arrays for the call; the kernel copies what it keeps
    // (MLX arrays are reference counted) and fills `out`, which the Array then owns.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_quantized_matmul(
            &mut out,
            x.as_ptr(),
            w.as_ptr(),
            scales.as_ptr(),
            biases.as_ptr(),
            group,
            bits,
            activations.code(),
            format,
        );
        produced(rc, out)
    }
}
