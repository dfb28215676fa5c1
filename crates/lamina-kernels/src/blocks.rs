//! GGUF's block formats held as a file stores them: each row of a weight is its blocks of
//! 256 values (the K-quants, IQ4_XS) or of 32 (Q5_0, Q5_1, Q8_0, IQ4_NL) in ggml's layouts,
//! scales inside, multiplied by lamina's kernels without re-quantizing — a Q4_K_M file's
//! weights take the file's bytes in memory.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::{Activations, lamina_dequantize_blocks, lamina_kernels_blocks_native, produced};

/// A GGUF block type lamina's kernels read as stored (ggml's `block_q*_K`, `block_iq4_xs`:
/// 256 values a block; `block_q5_0`, `block_q5_1`, `block_q8_0`, `block_iq4_nl`: 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    /// 2-bit values, a 4-bit scale and minimum per 16 (84 bytes a block).
    Q2K,
    /// 3-bit values, a 6-bit scale per 16 (110 bytes).
    Q3K,
    /// 4-bit values, a 6-bit scale and minimum per 32 (144 bytes).
    Q4K,
    /// 5-bit values, a 6-bit scale and minimum per 32 (176 bytes).
    Q5K,
    /// 6-bit values, an 8-bit scale per 16 (210 bytes).
    Q6K,
    /// 4-bit codes of a non-linear table, a 6-bit scale per 32 (136 bytes).
    IQ4XS,
    /// 32 values: 5-bit values - 16, an f16 scale (22 bytes).
    Q5_0,
    /// 32 values: 5-bit values, an f16 scale and offset (24 bytes).
    Q5_1,
    /// 32 values: signed bytes, an f16 scale (34 bytes).
    Q8_0,
    /// 32 values: 4-bit codes of IQ4_XS's table, an f16 scale (18 bytes).
    IQ4NL,
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Values of a super-block (the K-quants and IQ4_XS; the most a block holds).
pub const BLOCK_VALUES: usize = 256;

impl BlockFormat {
    /// Every format.
    pub const ALL: [BlockFormat; 10] = [
        BlockFormat::Q2K,
        BlockFormat::Q3K,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
        BlockFormat::IQ4XS,
        BlockFormat::Q5_0,
        BlockFormat::Q5_1,
        BlockFormat::Q8_0,
        BlockFormat::IQ4NL,
    ];

    /// ggml's name (`Q4_K`).
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q2K => "Q2_K",
            BlockFormat::Q3K => "Q3_K",
            BlockFormat::Q4K => "Q4_K",
            BlockFormat::Q5K => "Q5_K",
            BlockFormat::Q6K => "Q6_K",
            BlockFormat::IQ4XS => "IQ4_XS",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q5_1 => "Q5_1",
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::IQ4NL => "IQ4_NL",
        }
    }

    /// Bytes of one block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q2K => 84,
            BlockFormat::Q3K => 110,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
            BlockFormat::IQ4XS => 136,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q5_1 => 24,
            BlockFormat::Q8_0 => 34,
            BlockFormat::IQ4NL => 18,
        }
    }

    /// Values of one block: 256 for the super-blocks, 32 for Q5_0, Q5_1, Q8_0, IQ4_NL.
    pub fn values(self) -> usize {
        match self {
            BlockFormat::Q5_0 | BlockFormat::Q5_1 | BlockFormat::Q8_0 | BlockFormat::IQ4NL => 32,
            _ => BLOCK_VALUES,
        }
    }

    /// Bytes of a row of `cols` values (a multiple of [`values`](Self::values)).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / self.values() * self.block_bytes()
    }

    /// Bits a value takes in the file, scales included (4.5 for Q4_K).
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.values() as f64
    }

    /// Whether this CPU's kernel tier multiplies the format with a kernel of its own (AVX2
    /// and up, NEON: every format); otherwise the portable tier's per-value loops serve it.
    pub fn native(self) -> bool {
        // SAFETY: a plain integer in, a flag out.
        unsafe { lamina_kernels_blocks_native(self.code()) != 0 }
    }

    /// The kernels' code.
    pub(crate) fn code(self) -> c_int {
        match self {
            BlockFormat::Q2K => 1,
            BlockFormat::Q3K => 2,
            BlockFormat::Q4K => 3,
            BlockFormat::Q5K => 4,
            BlockFormat::Q6K => 5,
            BlockFormat::IQ4XS => 6,
            BlockFormat::Q5_0 => 7,
            BlockFormat::Q5_1 => 8,
            BlockFormat::Q8_0 => 9,
            BlockFormat::IQ4NL => 10,
        }
    }
}

/// `x @ dequantize(w)^T` for a weight of GGUF blocks, `w` u8 `[N, K / values * block
/// bytes]` (each row its blocks, as in the file), on lamina's CPU kernels: exact (each row
/// dequantized as gguf-py and ggml dequantize it, then an f32 dot), or with `x` rounded to 8
/// bits per block (per 256 values with the super-blocks' integer scales multiplied as
/// integers, llama.cpp's `vec_dot_*_q8_K`; per 32 with each block's scale and offset,
/// `vec_dot_*_q8_0`). Differentiable in `x`. CPU only: other devices hold GGUF weights in
/// MLX's affine layout.
///
/// # Shapes
/// `x [..., K]` (K a multiple of the format's values), `w [N, K / values * block bytes]`
/// -> `[..., N]`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub fn blocks_matmul(x: &Array, w: &Array, format: BlockFormat, activations: Activations) -> Result<Array> {
    // The blocks stand in for the scales and biases they hold.
    crate::matmul_call(x, w, (w, w, format.values() as c_int, 8), activations, format.code())
}

/// The f32 values `[N, K]` of a weight of GGUF super-blocks (one graph node, CPU only):
/// bit for bit gguf-py's and ggml's dequantization.
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device, or a `w` that is not u8 rows of whole
/// blocks.
pub fn dequantize_blocks(w: &Array, format: BlockFormat) -> Result<Array> {
    // SAFETY: a valid handle for the call; the kernel fills `out`, which `produced` takes.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_dequantize_blocks(&mut out, w.as_ptr(), format.code());
        produced(rc, out)
    }
}
