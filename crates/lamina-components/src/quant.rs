//! Affine quantization (MLX's): `group_size` consecutive values of a row share an f32
//! scale and bias, each value is stored in `bits` bits packed into `u32`s. Checkpoint
//! names follow mlx-community: `weight` (packed), `scales`, `biases`.

use lamina_core::{Config, Error, Result};
pub use lamina_kernels::{Activations, BlockFormat};
use mlx_rs::{Array, Dtype, ops};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// How weights are quantized (`"quantization": {"group_size": 64, "bits": 4}` in an
/// mlx-community `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Validate)]
pub struct QuantConfig {
    /// Values sharing one scale and bias: 32, 64 or 128.
    pub group_size: i32,
    /// Bits per value: 2, 3, 4, 5, 6 or 8.
    pub bits: i32,
    /// How lamina's CPU kernels read `x` in quantized products: a choice of how to
    /// run, not part of the checkpoint (never written to `config.json`; exact when read).
    #[serde(skip)]
    pub activations: Activations,
    /// `None`: MLX's affine layout. A GGUF block format: the weight is the file's blocks as
    /// stored (u8 rows, scales inside; `group_size` the block's values, `bits` the format's
    /// nominal width), on lamina's CPU kernels only. Never written to `config.json`.
    #[serde(skip)]
    pub blocks: Option<BlockFormat>,
}

/// Written with its field names (`QuantConfig { group_size: 64, bits: 4, activations, blocks }`),
/// never by position: both sizes are `i32`, and MLX's own functions take them as
/// `(group_size, bits)`.
impl QuantConfig {
    /// GGUF blocks of `format` held as stored, read as `activations` says.
    pub fn gguf(format: BlockFormat, activations: Activations) -> Self {
        let bits = match format {
            BlockFormat::Q2K => 2,
            BlockFormat::Q3K => 3,
            BlockFormat::Q4K | BlockFormat::IQ4XS | BlockFormat::IQ4NL => 4,
            BlockFormat::Q5K | BlockFormat::Q5_0 | BlockFormat::Q5_1 => 5,
            BlockFormat::Q6K => 6,
            BlockFormat::Q8_0 => 8,
        };
        QuantConfig { group_size: format.values() as i32, bits, activations, blocks: Some(format) }
    }

    /// Bytes of an `[rows, cols]` matrix quantized this way (packed values, f32 scales
    /// and biases; a block format's blocks).
    pub fn bytes(&self, rows: u64, cols: u64) -> u64 {
        if let Some(format) = self.blocks {
            return rows * format.row_bytes(cols as usize) as u64;
        }
        let groups = cols / self.group_size.max(1) as u64;
        rows * (cols * self.bits as u64 / 8 + groups * 2 * 4)
    }

    /// The packed `[rows, cols]` shapes: `(weight, scales/biases)` (a block format's
    /// scales live in its blocks: `[rows, 0]`).
    pub fn shapes(&self, rows: i32, cols: i32) -> (Vec<i32>, Vec<i32>) {
        match self.blocks {
            Some(format) => (vec![rows, format.row_bytes(cols.max(0) as usize) as i32], vec![rows, 0]),
            None => (vec![rows, cols * self.bits / 32], vec![rows, cols / self.group_size]),
        }
    }

    /// Columns of the unquantized matrix whose packed form has `packed_cols` columns.
    pub fn unpacked_cols(&self, packed_cols: i32) -> i32 {
        match self.blocks {
            Some(format) => packed_cols / format.block_bytes() as i32 * format.values() as i32,
            None => packed_cols * 32 / self.bits,
        }
    }

    /// Placeholders of a quantized `[rows, cols]` matrix (lazy zeros, never allocated
    /// unless evaluated), to load a quantized checkpoint into: `(packed, scales, biases)`
    /// for the affine layout; a block format's blocks alone (`scales` and `biases` `None`).
    ///
    /// # Errors
    /// [`Error::GroupSize`] when `cols` is not a multiple of `group_size`.
    pub fn placeholders(&self, rows: i32, cols: i32) -> Result<(Array, Option<(Array, Array)>)> {
        self.check_cols(cols)?;
        let (w, s) = self.shapes(rows, cols);
        if self.blocks.is_some() {
            return Ok((ops::zeros_dtype(&w, Dtype::Uint8)?, None));
        }
        Ok((ops::zeros_dtype(&w, Dtype::Uint32)?, Some((ops::zeros::<f32>(&s)?, ops::zeros::<f32>(&s)?))))
    }

    /// Quantizes `w [rows, cols]`: `(packed, scales, biases)`.
    ///
    /// # Errors
    /// [`Error::GroupSize`] when `cols` is not a multiple of `group_size`;
    /// [`Error::InvalidConfig`] for a block format (lamina reads GGUF blocks, it does not
    /// make them).
    pub fn quantize(&self, w: &Array) -> Result<(Array, Array, Array)> {
        if let Some(format) = self.blocks {
            return Err(Error::invalid(
                Self::NAME,
                "blocks",
                format!("lamina reads {format} blocks, it does not make them"),
            ));
        }
        self.check_cols(w.dim(-1))?;
        Ok(ops::quantize(w.as_dtype(Dtype::Float32)?, self.group_size, self.bits)?)
    }

    /// The f32 values of a quantized matrix.
    ///
    /// # Errors
    /// When MLX rejects the arrays.
    pub fn dequantize(&self, w: &Array, scales: &Array, biases: &Array) -> Result<Array> {
        Ok(ops::dequantize(w, scales, biases, self.group_size, self.bits)?)
    }

    /// Whether a matrix with `cols` columns can be quantized this way.
    ///
    /// # Errors
    /// [`Error::GroupSize`] naming the mismatch.
    pub fn check_cols(&self, cols: i32) -> Result<()> {
        if cols % self.group_size != 0 {
            return Err(Error::GroupSize { cols, group_size: self.group_size });
        }
        Ok(())
    }
}

impl Config for QuantConfig {
    const NAME: &'static str = "QuantConfig";

    fn check(&self) -> Result<()> {
        if let Some(format) = self.blocks {
            let values = format.values() as i32;
            return if self.group_size == values {
                Ok(())
            } else {
                Err(Error::invalid(Self::NAME, "group_size", format!("a {format} block has {values} values")))
            };
        }
        if ![32, 64, 128].contains(&self.group_size) {
            return Err(Error::invalid(
                Self::NAME,
                "group_size",
                format!("must be 32, 64 or 128, got {}", self.group_size),
            ));
        }
        if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
            return Err(Error::invalid(
                Self::NAME,
                "bits",
                format!("must be 2, 3, 4, 5, 6 or 8, got {}", self.bits),
            ));
        }
        Ok(())
    }
}

/// A layer whose weights can be quantized: [`crate::Linear`] and [`crate::Embedding`].
#[derive(Debug)]
pub enum Quantizable<'a> {
    /// A dense layer.
    Linear(&'a mut crate::Linear),
    /// A token embedding.
    Embedding(&'a mut crate::Embedding),
}

/// Walks a module's quantizable layers with their checkpoint paths
/// (`model.layers.0.self_attn.q_proj`): for quantization, LoRA by name, and loading
/// quantized checkpoints.
pub trait VisitLayers {
    /// Calls `f` on every quantizable layer below `prefix`.
    ///
    /// # Errors
    /// The first error `f` returns.
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()>;
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

impl<T: VisitLayers> VisitLayers for Vec<T> {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        for (i, item) in self.iter_mut().enumerate() {
            item.visit_layers(&join(prefix, &i.to_string()), f)?;
        }
        Ok(())
    }
}

impl<T: VisitLayers> VisitLayers for Option<T> {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            Some(inner) => inner.visit_layers(prefix, f),
            None => Ok(()),
        }
    }
}

impl VisitLayers for crate::Linear {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        f(prefix, Quantizable::Linear(self))
    }
}

impl VisitLayers for crate::Embedding {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        f(prefix, Quantizable::Embedding(self))
    }
}

/// Implements [`VisitLayers`] for a struct by visiting the named fields, each under its
/// field name.
#[macro_export]
macro_rules! visit_fields {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::VisitLayers for $ty {
            fn visit_layers(
                &mut self,
                prefix: &str,
                f: &mut dyn FnMut(&str, $crate::Quantizable<'_>) -> lamina_core::Result<()>,
            ) -> lamina_core::Result<()> {
                $( $crate::VisitLayers::visit_layers(&mut self.$field, &$crate::join(prefix, stringify!($field)), f)?; )*
                Ok(())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::array;

    #[test]
    fn error_is_within_the_bound_for_the_bit_width() {
        let w = array(&[16, 128], 0.4);
        for bits in [4, 8] {
            let q = QuantConfig { group_size: 64, bits, activations: Activations::Exact, blocks: None };
            let (packed, scales, biases) = q.quantize(&w).unwrap();
            assert_eq!(packed.shape(), &[16, 128 * bits / 32]);
            assert_eq!(scales.shape(), &[16, 2]);
            let back = q.dequantize(&packed, &scales, &biases).unwrap();
            let err = back.subtract(&w).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            // Values in [-1, 1]: a group's range is at most 2, so the step is at most
            // 2 / (2^bits - 1). MLX anchors each group's extreme value exactly (adjusting
            // the scale), so rounding can cost up to one step rather than half.
            let bound = 2.0 / ((1 << bits) - 1) as f32 + 1e-6;
            assert!(err <= bound, "{bits} bits: error {err} above {bound}");
        }
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(
            QuantConfig { group_size: 48, bits: 4, activations: Activations::Exact, blocks: None }
                .validated()
                .is_err()
        );
        assert!(
            QuantConfig { group_size: 64, bits: 7, activations: Activations::Exact, blocks: None }
                .validated()
                .is_err()
        );
        assert!(
            QuantConfig { group_size: 64, bits: 4, activations: Activations::Exact, blocks: None }
                .quantize(&array(&[2, 96], 0.0))
                .is_err()
        );
        assert_eq!(
            QuantConfig { group_size: 64, bits: 4, activations: Activations::Exact, blocks: None }
                .bytes(10, 128),
            10 * (64 + 2 * 8)
        );
    }
}
