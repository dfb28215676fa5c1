//! # lamina-kernels
//!
//! CPU kernels as MLX custom primitives, compiled in C++ against the MLX headers of the
//! wheel lamina builds with, and exposed as functions returning `mlx-rs` arrays — lazy graph
//! nodes like any MLX op, differentiable where training needs them.
//!
//! | function | what | where it runs |
//! | --- | --- | --- |
//! | [`quantized_matmul`] | `x @ dequantize(w)^T` over MLX's affine layout, 2–8 bits | lamina's kernel on the CPU (AVX2 + FMA picked at run time, threads that sleep between calls); MLX's own op elsewhere |
//!
//! ```
//! use mlx_rs::{Array, ops};
//!
//! let w = mlx_rs::random::normal::<f32>(&[16, 64], None, None, None).unwrap();
//! let (packed, scales, biases) = ops::quantize(&w, 32, 4).unwrap();
//! let x = mlx_rs::random::normal::<f32>(&[1, 64], None, None, None).unwrap();
//! let ours = lamina_kernels::quantized_matmul(&x, &packed, &scales, &biases, 32, 4).unwrap();
//! let mlx = ops::quantized_matmul(&x, &packed, &scales, &biases, true, 32, 4).unwrap();
//! let diff = ours.subtract(&mlx).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
//! assert!(diff < 1e-4);
//! ```
#![deny(missing_docs)]

use std::ffi::{CStr, c_char, c_int};

use lamina_core::{Error, Result};
use mlx_rs::Array;

unsafe extern "C" {
    fn lamina_quantized_matmul(
        out: *mut mlx_sys::mlx_array,
        x: mlx_sys::mlx_array,
        w: mlx_sys::mlx_array,
        scales: mlx_sys::mlx_array,
        biases: mlx_sys::mlx_array,
        group: c_int,
        bits: c_int,
    ) -> c_int;
    fn lamina_kernels_last_error() -> *const c_char;
}

/// `x @ dequantize(w, scales, biases)^T`: what MLX's `quantized_matmul` computes with
/// `transpose = true` (the layout of a quantized `Linear`), on lamina's CPU kernel when
/// the default device is the CPU and `x`, `scales`, `biases` are f32; through MLX's own op
/// otherwise.
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
            group_size,
            bits,
        );
        if rc != 0 {
            mlx_sys::mlx_array_free(out);
            let reason = CStr::from_ptr(lamina_kernels_last_error()).to_string_lossy().into_owned();
            return Err(Error::Kernel(reason));
        }
        Ok(Array::from_ptr(out))
    }
}
