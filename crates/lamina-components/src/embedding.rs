//! Token embeddings, which can also serve as the output projection (tied weights).

use lamina_core::{Error, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::{Array, Dtype, ops};

use crate::fast::{self, StoredWeight};
use crate::quant::QuantConfig;

/// A lookup table of `num_embeddings` vectors of `dims` features, optionally quantized
/// (`weight` packed, `scales`, `biases`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct Embedding {
    /// `[num_embeddings, dims]` (packed when quantized).
    #[param]
    pub weight: Param<Array>,
    /// Quantization scales, when quantized.
    #[param]
    pub scales: Param<Option<Array>>,
    /// Quantization biases, when quantized.
    #[param]
    pub biases: Param<Option<Array>>,
    quantization: Option<QuantConfig>,
    training: bool,
}

impl Embedding {
    /// A table initialised from N(0, 1), as PyTorch and MLX do.
    ///
    /// # Errors
    /// When MLX cannot allocate the array.
    pub fn new(num_embeddings: i32, dims: i32) -> Result<Self> {
        let weight = mlx_rs::random::normal::<f32>(&[num_embeddings, dims], None, None, None)?;
        Ok(Self::from_weight(weight))
    }

    /// A table holding `weight`.
    pub fn from_weight(weight: Array) -> Self {
        Embedding {
            weight: Param::new(weight),
            scales: Param::new(None),
            biases: Param::new(None),
            quantization: None,
            training: false,
        }
    }

    /// Features per row (of the unquantized table).
    pub fn dims(&self) -> i32 {
        let cols = self.weight.shape().get(1).copied().unwrap_or(0);
        self.quantization.map_or(cols, |q| q.unpacked_cols(cols))
    }

    /// How the table is quantized, if it is.
    pub fn quantization(&self) -> Option<QuantConfig> {
        self.quantization
    }

    /// Quantizes the table in place.
    ///
    /// # Errors
    /// [`Error::AlreadyApplied`] if already quantized, [`Error::GroupSize`] if `dims` does
    /// not fit the groups.
    pub fn quantize(&mut self, config: QuantConfig) -> Result<()> {
        if self.quantization.is_some() {
            return Err(Error::AlreadyApplied { layer: "Embedding", what: "quantization" });
        }
        let (packed, scales, biases) = config.quantize(&self.weight)?;
        self.set_quantized(config, packed, scales, biases);
        Ok(())
    }

    /// Quantized placeholders of the same shape, for loading a quantized checkpoint.
    ///
    /// # Errors
    /// [`Error::GroupSize`] if `dims` does not fit the groups.
    pub fn quantize_structure(&mut self, config: QuantConfig) -> Result<()> {
        let (packed, groups) = config.placeholders(self.num_embeddings(), self.dims())?;
        self.set_packed(config, packed, groups);
        Ok(())
    }

    fn set_quantized(&mut self, config: QuantConfig, packed: Array, scales: Array, biases: Array) {
        self.set_packed(config, packed, Some((scales, biases)));
    }

    /// Holds `packed` quantized as `config` says, with its scales and biases (none for a
    /// block format).
    fn set_packed(&mut self, config: QuantConfig, packed: Array, groups: Option<(Array, Array)>) {
        use mlx_rs::module::Parameter;
        let (scales, biases) = groups.unzip();
        self.weight = Param::new(packed);
        self.scales = Param::new(scales);
        self.biases = Param::new(biases);
        self.quantization = Some(config);
        self.weight.freeze(true);
        self.scales.freeze(true);
        self.biases.freeze(true);
    }

    /// The table as stored.
    fn stored(&self) -> StoredWeight<'_> {
        StoredWeight::of(
            &self.weight,
            self.quantization,
            self.scales.value.as_ref(),
            self.biases.value.as_ref(),
        )
    }

    /// The number of rows (the vocabulary size for token embeddings).
    pub fn num_embeddings(&self) -> i32 {
        self.weight.shape().first().copied().unwrap_or(0)
    }

    /// Projects hidden states onto the table: logits over the vocabulary with the
    /// embedding's weight (tied input and output embeddings).
    ///
    /// # Shapes
    /// `[..., dims] -> [..., num_embeddings]`
    ///
    /// # Errors
    /// When the last axis of `x` is not `dims`.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match fast::product(x, self.stored(), self.training)? {
            Some(y) => Ok(y),
            None => Ok(ops::matmul(x, self.weight.t())?),
        }
    }

    /// Checks that `ids` is an integer array whose values lie in `[0, num_embeddings)`.
    /// (Out-of-range ids would otherwise read arbitrary memory or clamp silently.)
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] naming the offending id.
    pub fn check_ids(&self, ids: &Array) -> Result<()> {
        check_ids(ids, self.num_embeddings())
    }
}

/// Checks that `ids` is an integer array whose values lie in `[0, vocab_size)`.
///
/// # Errors
/// [`Error::NotIntegers`] for a float array, [`Error::TokenOutOfRange`] for an id out
/// of range.
pub fn check_ids(ids: &Array, vocab_size: i32) -> Result<()> {
    let integral = matches!(
        ids.dtype(),
        Dtype::Int8
            | Dtype::Int16
            | Dtype::Int32
            | Dtype::Int64
            | Dtype::Uint8
            | Dtype::Uint16
            | Dtype::Uint32
            | Dtype::Uint64
    );
    if !integral {
        return Err(Error::NotIntegers { name: "input_ids", dtype: format!("{:?}", ids.dtype()) });
    }
    if ids.size() == 0 {
        return Ok(());
    }
    let ids64 = ids.as_type::<i64>()?;
    let min = ids64.min(None)?.item_exact::<i64>();
    let max = ids64.max(None)?.item_exact::<i64>();
    if min < 0 || max >= i64::from(vocab_size) {
        let bad = if min < 0 { min } else { max };
        return Err(Error::TokenOutOfRange { id: bad, vocab_size: vocab_size.max(0) as usize });
    }
    Ok(())
}

impl Module<&Array> for Embedding {
    type Output = Array;
    type Error = Error;

    /// # Shapes
    /// `[...]` (integer ids) `-> [..., dims]`
    fn forward(&mut self, ids: &Array) -> Result<Array> {
        self.stored().rows(ids)
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Activations;
    use crate::testing::{array, assert_close, max_diff};

    fn table() -> Embedding {
        Embedding::from_weight(Array::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0], &[3, 2]))
    }

    #[test]
    fn looks_up_rows_and_projects_back() {
        let mut e = table();
        let ids = Array::from_slice(&[2i32, 0], &[1, 2]);
        let h = e.forward(&ids).unwrap();
        assert_eq!(h.shape(), &[1, 2, 2]);
        assert_close(&h, &[4.0, 5.0, 0.0, 1.0], 0.0);
        let logits = e.as_linear(&Array::from_slice(&[1.0f32, 1.0], &[1, 2])).unwrap();
        assert_close(&logits, &[1.0, 5.0, 9.0], 0.0);
    }

    #[test]
    fn a_quantized_table_looks_up_and_projects_like_its_dequantized_self() {
        let mut e = Embedding::from_weight(array(&[10, 64], 0.3));
        e.quantize(QuantConfig { group_size: 32, bits: 8, activations: Activations::Exact, blocks: None })
            .unwrap();
        assert_eq!((e.num_embeddings(), e.dims()), (10, 64));
        let dense = Embedding::from_weight(e.stored().values().unwrap());
        let ids = Array::from_slice(&[3i32, 9, 0], &[1, 3]);
        let mut dense_mut = dense.clone();
        assert!(max_diff(&e.forward(&ids).unwrap(), &dense_mut.forward(&ids).unwrap()) < 1e-6);
        let h = array(&[2, 64], 0.1);
        assert!(max_diff(&e.as_linear(&h).unwrap(), &dense.as_linear(&h).unwrap()) < 1e-4);
    }

    #[test]
    fn out_of_range_and_float_ids_are_rejected() {
        let e = table();
        assert!(e.check_ids(&Array::from_slice(&[0i32, 2], &[2])).is_ok());
        let err = e.check_ids(&Array::from_slice(&[0i32, 3], &[2])).unwrap_err().to_string();
        assert!(err.contains("token id 3") && err.contains("[0, 3)"), "{err}");
        assert!(e.check_ids(&Array::from_slice(&[-1i32], &[1])).is_err());
        assert!(e.check_ids(&Array::from_slice(&[1.0f32], &[1])).is_err());
    }
}
