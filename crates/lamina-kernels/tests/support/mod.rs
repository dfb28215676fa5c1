//! What lamina-kernels' test files share: deterministic inputs, a relative difference, and a
//! weight quantized by MLX as the kernels take it. (Each test file uses part of it.)
#![allow(dead_code, clippy::unwrap_used)]

use lamina_kernels::{Activations, QuantLayout, QuantizedWeight, quantized_matmul};
use mlx_rs::{Array, Dtype};

/// n deterministic values in [-1, 1).
pub fn wave(n: i32, salt: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 * 0.7548 + salt) * 12.9898).sin()).collect()
}

/// Deterministic values in [-1, 1) of this shape.
pub fn values(shape: &[i32], salt: f32) -> Array {
    Array::from_slice(&wave(shape.iter().product(), salt), shape)
}

/// The largest difference of `a` from `b` relative to b's largest magnitude (at least 1),
/// in f32 whatever their types.
pub fn max_rel_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let f32 = |a: &Array| a.as_dtype(Dtype::Float32).unwrap();
    let diff = f32(a).subtract(f32(b)).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
    let scale = f32(b).abs().unwrap().max(None).unwrap().item_exact::<f32>().max(1.0);
    diff / scale
}

/// A weight quantized by MLX (affine), as a quantized `Linear` holds it.
pub struct Quantized {
    pub packed: Array,
    pub scales: Array,
    pub biases: Array,
    pub group: i32,
    pub bits: i32,
}

impl Quantized {
    /// `w` quantized at this group size and width.
    pub fn of(w: &Array, group: i32, bits: i32) -> Self {
        let (packed, scales, biases) = mlx_rs::ops::quantize(w, group, bits).unwrap();
        Quantized { packed, scales, biases, group, bits }
    }

    /// The same with f16 scales and biases (as GGUF stores them).
    pub fn with_half_scales(self) -> Self {
        let half = |a: Array| a.as_dtype(Dtype::Float16).unwrap();
        Quantized { scales: half(self.scales), biases: half(self.biases), ..self }
    }

    /// The weight as the fused primitives take it.
    pub fn weight(&self, activations: Activations) -> QuantizedWeight<'_> {
        QuantizedWeight {
            weight: &self.packed,
            layout: QuantLayout::Affine {
                scales: &self.scales,
                biases: &self.biases,
                group_size: self.group,
                bits: self.bits,
            },
            activations,
        }
    }

    /// `x @ dequantize(w)^T` by lamina's quantized matmul.
    pub fn product(&self, x: &Array, activations: Activations) -> Array {
        quantized_matmul(x, &self.packed, &self.scales, &self.biases, self.group, self.bits, activations)
            .unwrap()
    }
}
