//! RMSNorm and RoPE in one graph node each on the CPU, where MLX expands its fast ops into
//! their fallback graphs (~11 and ~29 nodes per call: at one decoded token per step, more
//! time than the block's matrix products). Same values as MLX's ops (their formulas, in
//! their order); gradients through MLX's own ops.

use std::ffi::c_int;

use lamina_core::Result;
use mlx_rs::Array;

use crate::{absent, lamina_rms_norm, lamina_rope, produced};

/// `x * rsqrt(mean(x^2) + eps) * weight` over the last axis, as MLX's `fast::rms_norm`
/// computes it; with `unit_offset` the weight is `1 + weight` (Gemma's norms). One graph
/// node on lamina's kernel for f32 on the CPU, MLX's op otherwise; differentiable.
///
/// ```
/// use mlx_rs::{Array, fast};
///
/// let x = mlx_rs::random::normal::<f32>(&[3, 40], None, None, None).unwrap();
/// let w = mlx_rs::random::normal::<f32>(&[40], None, None, None).unwrap();
/// let ours = lamina_kernels::rms_norm(&x, Some(&w), 1e-5, false).unwrap();
/// let mlx = fast::rms_norm(&x, Some(&w), 1e-5).unwrap();
/// assert!(ours.subtract(&mlx).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>() < 1e-5);
/// ```
///
/// # Shapes
/// `x [..., K]`, `weight [K]` -> `[..., K]`
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for a weight that is not `[K]`, or an MLX error.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32, unit_offset: bool) -> Result<Array> {
    let weight = weight.map_or_else(absent, Array::as_ptr);
    // SAFETY: valid (or absent) handles for the call; the kernel fills `out`, which
    // `produced` takes.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc = lamina_rms_norm(&mut out, x.as_ptr(), weight, eps, c_int::from(unit_offset));
        produced(rc, out)
    }
}

/// The frequencies of [`rope`]: feature pair `i` turns by `position * scale / period_i`.
#[derive(Debug, Clone, Copy)]
pub enum RopeFrequencies<'a> {
    /// `period_i = base^(2i / dims)`.
    Base(f32),
    /// Explicit periods, f32 `[dims / 2]` (scaled RoPE variants).
    Periods(&'a Array),
}

impl RopeFrequencies<'_> {
    /// The kernels' arguments: the base (unused with periods) and the periods' handle
    /// (absent with a base).
    pub(crate) fn c_args(self) -> (f32, mlx_sys::mlx_array) {
        match self {
            RopeFrequencies::Base(base) => (base, absent()),
            RopeFrequencies::Periods(periods) => (0.0, periods.as_ptr()),
        }
    }
}

/// Rotary position embedding of the first `dims` features of `x`, at positions
/// `offset..offset + L`, as MLX's `fast::rope` computes it (split halves, or interleaved
/// pairs when `traditional`). One graph node on lamina's kernel for f32 on the CPU, MLX's
/// op otherwise; differentiable.
///
/// ```
/// use mlx_rs::{Array, fast};
/// use lamina_kernels::RopeFrequencies;
///
/// let x = mlx_rs::random::normal::<f32>(&[1, 4, 3, 64], None, None, None).unwrap();
/// let ours = lamina_kernels::rope(&x, 64, false, RopeFrequencies::Base(10_000.0), 1.0, 7).unwrap();
/// let mlx = fast::rope(&x, 64, false, 10_000.0, 1.0, 7, None).unwrap();
/// assert!(ours.subtract(&mlx).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>() < 1e-5);
/// ```
///
/// # Shapes
/// `x [..., L, D]` -> `[..., L, D]` (`dims` even, at most `D`; periods `[dims / 2]`)
///
/// # Errors
/// [`lamina_core::Error::Kernel`] for an odd or too large `dims` or periods of the wrong
/// length, or an MLX error.
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    frequencies: RopeFrequencies<'_>,
    scale: f32,
    offset: i32,
) -> Result<Array> {
    let (base, periods) = frequencies.c_args();
    // SAFETY: as in `rms_norm`.
    unsafe {
        let mut out = mlx_sys::mlx_array_new();
        let rc =
            lamina_rope(&mut out, x.as_ptr(), dims, c_int::from(traditional), base, scale, offset, periods);
        produced(rc, out)
    }
}
