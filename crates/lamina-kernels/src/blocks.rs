//! GGUF's super-block formats held as a file stores them: each row of a weight is its
//! blocks of 256 values (ggml's layouts), scales inside, multiplied by lamina's kernels
//! without re-quantizing — a Q4_K_M file's weights take the file's bytes in memory.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::{Activations, lamina_dequantize_blocks, produced};

/// A GGUF super-block type lamina's kernels read as stored (ggml's `block_q*_K`,
/// `block_iq4_xs`): 256 values a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Values of one block.
pub const BLOCK_VALUES: usize = 256;

impl BlockFormat {
    /// Every format.
    pub const ALL: [BlockFormat; 6] = [
        BlockFormat::Q2K,
        BlockFormat::Q3K,
        BlockFormat::Q4K,
        BlockFormat::Q5K,
        BlockFormat::Q6K,
        BlockFormat::IQ4XS,
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
        }
    }

    /// Bytes of one block of 256 values.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q2K => 84,
            BlockFormat::Q3K => 110,
            BlockFormat::Q4K => 144,
            BlockFormat::Q5K => 176,
            BlockFormat::Q6K => 210,
            BlockFormat::IQ4XS => 136,
        }
    }

    /// Values of one block (256).
    pub fn values(self) -> u64 {
        BLOCK_VALUES as u64
    }

    /// Bytes of a row of `cols` values (a multiple of 256).
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / BLOCK_VALUES * self.block_bytes()
    }

    /// Bits a value takes in the file, scales included (4.5 for Q4_K).
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / BLOCK_VALUES as f64
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
        }
    }
}

/// `x @ dequantize(w)^T` for a weight of GGUF super-blocks, `w` u8 `[N, K / 256 * block
/// bytes]` (each row its blocks, as in the file), on lamina's CPU kernels: exact (each row
/// dequantized as gguf-py and ggml dequantize it, then an f32 dot), or with `x` rounded to 8
/// bits per 256 values and the blocks' integer scales multiplied as integers (llama.cpp's
/// `vec_dot_*_q8_K`). Differentiable in `x`. CPU only: other devices hold GGUF weights in
/// MLX's affine layout.
///
/// # Shapes
/// `x [..., K]` (K a multiple of 256), `w [N, K / 256 * block bytes]` -> `[..., N]`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for another device or dtype, or shapes that do not fit.
pub fn blocks_matmul(x: &Array, w: &Array, format: BlockFormat, activations: Activations) -> Result<Array> {
    // The blocks stand in for the scales and biases they hold.
    crate::matmul_call(x, w, (w, w, BLOCK_VALUES as c_int, 8), activations, format.code())
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
