//! A dense layer `y = x W^T + b` whose parameters are named as in checkpoints
//! (`weight` `[out, in]`, optional `bias` `[out]`), optionally quantized (`weight` packed,
//! `scales`, `biases`: mlx-community's names; see [`QuantConfig`]) and optionally with a
//! LoRA adapter (`lora_a`, `lora_b`; see [`crate::LoraConfig`]) — both at once is QLoRA.

use lamina_core::Result;
use mlx_rs::Array;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};

use crate::fast::{self, StoredWeight};
use crate::lora::LoraConfig;
use crate::quant::QuantConfig;

/// A dense layer.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Linear {
    /// `[output_dims, input_dims]`.
    #[param]
    pub weight: Param<Array>,
    /// `[output_dims]`, when the layer has a bias.
    #[param]
    pub bias: Param<Option<Array>>,
    /// Quantization scales `[output_dims, input_dims / group_size]`, when quantized.
    #[param]
    pub scales: Param<Option<Array>>,
    /// Quantization biases (offsets), same shape as `scales`, when quantized.
    #[param]
    pub biases: Param<Option<Array>>,
    /// LoRA down-projection `[input_dims, rank]`, when an adapter is attached.
    #[param]
    pub lora_a: Param<Option<Array>>,
    /// LoRA up-projection `[rank, output_dims]`, when an adapter is attached.
    #[param]
    pub lora_b: Param<Option<Array>>,
    /// DoRA's magnitude `[output_dims]`, when a DoRA adapter is attached.
    #[param]
    pub m: Param<Option<Array>>,
    pub(crate) lora: Option<LoraConfig>,
    pub(crate) training: bool,
    quantization: Option<QuantConfig>,
    /// `weight^T` and the weight it was made from: once evaluated, later graphs use it as
    /// a leaf instead of adding a transpose node — at one token per step, graph nodes are
    /// what decoding spends its time on. Holding the source keeps its handle alive, so a
    /// new weight can never reuse that address and be mistaken for it.
    transposed: Option<(Array, Array)>,
}

impl Linear {
    /// A layer with weights drawn uniformly from `±1/sqrt(input_dims)` (as PyTorch and MLX
    /// initialise), with or without a bias.
    ///
    /// # Errors
    /// When MLX cannot allocate the arrays.
    pub fn new(input_dims: i32, output_dims: i32, bias: bool) -> Result<Self> {
        let bound = 1.0 / (input_dims.max(1) as f32).sqrt();
        let weight = mlx_rs::random::uniform::<_, f32>(-bound, bound, &[output_dims, input_dims], None)?;
        let bias = if bias {
            Some(mlx_rs::random::uniform::<_, f32>(-bound, bound, &[output_dims], None)?)
        } else {
            None
        };
        Ok(Self::from_weights(weight, bias))
    }

    /// A layer holding the given arrays.
    pub fn from_weights(weight: Array, bias: Option<Array>) -> Self {
        Linear {
            weight: Param::new(weight),
            bias: Param::new(bias),
            scales: Param::new(None),
            biases: Param::new(None),
            lora_a: Param::new(None),
            lora_b: Param::new(None),
            m: Param::new(None),
            lora: None,
            training: false,
            quantization: None,
            transposed: None,
        }
    }

    /// `(input_dims, output_dims)` (of the unquantized matrix).
    pub fn dims(&self) -> (i32, i32) {
        let shape = self.weight.shape();
        let cols = shape.get(1).copied().unwrap_or(0);
        let input = self.quantization.map_or(cols, |q| q.unpacked_cols(cols));
        (input, shape.first().copied().unwrap_or(0))
    }

    /// How the weight is quantized, if it is.
    pub fn quantization(&self) -> Option<QuantConfig> {
        self.quantization
    }

    /// Quantizes the weight in place (the layer becomes frozen: packed integers do not
    /// train; a LoRA adapter attached afterwards still does).
    ///
    /// # Errors
    /// [`lamina_core::Error::AlreadyApplied`] if the layer is already quantized,
    /// [`lamina_core::Error::GroupSize`] if its input
    /// width is not a multiple of the group size.
    pub fn quantize(&mut self, config: QuantConfig) -> Result<()> {
        if self.quantization.is_some() {
            return Err(lamina_core::Error::AlreadyApplied { layer: "Linear", what: "quantization" });
        }
        let (packed, scales, biases) = config.quantize(&self.weight)?;
        self.set_quantized(config, packed, scales, biases);
        Ok(())
    }

    /// Turns the layer into a quantized one of the same shape with placeholder values (lazy
    /// zeros, never allocated unless evaluated), for loading a quantized checkpoint.
    ///
    /// # Errors
    /// [`lamina_core::Error::GroupSize`] if the input width does not fit the groups.
    pub fn quantize_structure(&mut self, config: QuantConfig) -> Result<()> {
        let (input, output) = self.dims();
        let (packed, groups) = config.placeholders(output, input)?;
        self.set_packed(config, packed, groups);
        Ok(())
    }

    fn set_quantized(&mut self, config: QuantConfig, packed: Array, scales: Array, biases: Array) {
        self.set_packed(config, packed, Some((scales, biases)));
    }

    /// Holds `packed` quantized as `config` says, with its scales and biases (none for a
    /// block format: they live in its blocks).
    fn set_packed(&mut self, config: QuantConfig, packed: Array, groups: Option<(Array, Array)>) {
        use mlx_rs::module::Parameter;
        let (scales, biases) = groups.unzip();
        self.weight = Param::new(packed);
        self.scales = Param::new(scales);
        self.biases = Param::new(biases);
        self.quantization = Some(config);
        self.transposed = None;
        for p in [&mut self.scales, &mut self.biases, &mut self.bias] {
            p.freeze(true);
        }
        self.weight.freeze(true);
    }

    /// The weight as stored, when the layer is exactly a product with it: no bias or
    /// adapter, not training (what the fused kernels may take in its place).
    pub(crate) fn plain_weight(&self) -> Option<StoredWeight<'_>> {
        let plain = self.bias.is_none() && self.lora_a.is_none() && self.m.is_none() && !self.training;
        plain.then(|| self.stored())
    }

    /// The weight as stored and the bias, when the layer is exactly a product plus its
    /// bias: no adapter, not training.
    pub(crate) fn biased_weight(&self) -> Option<(StoredWeight<'_>, Option<&Array>)> {
        let plain = self.lora_a.is_none() && self.m.is_none() && !self.training;
        plain.then(|| (self.stored(), self.bias.value.as_ref()))
    }

    /// The weight as stored, quantized or dense.
    fn stored(&self) -> StoredWeight<'_> {
        StoredWeight::of(
            &self.weight,
            self.quantization,
            self.scales.value.as_ref(),
            self.biases.value.as_ref(),
        )
    }

    /// `residual + self.forward(x)`, in one graph node where lamina's kernels take it (a
    /// plain quantized product: [`fast::residual_product`]): a sublayer's output
    /// projection and the residual add after it.
    ///
    /// # Shapes
    /// `x [..., input_dims]`, `residual [..., output_dims]` -> `[..., output_dims]`
    ///
    /// # Errors
    /// When MLX fails or the shapes do not fit.
    pub(crate) fn forward_add(&mut self, x: &Array, residual: &Array) -> Result<Array> {
        match fast::residual_product(x, self.plain_weight(), residual, self.training)? {
            Some(out) => Ok(out),
            None => Ok(residual.add(self.forward(x)?)?),
        }
    }

    /// The weight as f32 `[output_dims, input_dims]` (dequantized when quantized).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn dense_weight(&self) -> Result<Array> {
        self.stored().values()
    }

    /// Replaces the weight by a dense one, re-quantizing it when the layer is quantized
    /// (GGUF blocks, which lamina does not make, into MLX's 8-bit affine layout in groups of
    /// 32: within a step of 1/255 of each group's range).
    ///
    /// # Errors
    /// When MLX fails.
    pub(crate) fn set_dense_weight(&mut self, weight: Array) -> Result<()> {
        match self.quantization.take() {
            Some(q) => {
                let q = if q.blocks.is_some() {
                    QuantConfig { group_size: 32, bits: 8, activations: q.activations, blocks: None }
                } else {
                    q
                };
                let (packed, scales, biases) = q.quantize(&weight)?;
                self.set_quantized(q, packed, scales, biases);
            }
            None => {
                self.weight = Param::new(weight);
                self.transposed = None;
            }
        }
        Ok(())
    }

    /// `weight^T`, cached while not training. The cache holds the weight it was made from
    /// and is used only while that very array is still the weight, so loading or updating
    /// the weight invalidates it.
    fn weight_t(&mut self) -> Array {
        match &self.transposed {
            Some((source, t)) if same_array(source, &self.weight) => t.clone(),
            _ => {
                let t = self.weight.t();
                self.transposed =
                    if self.training { None } else { Some((self.weight.value.clone(), t.clone())) };
                t
            }
        }
    }

    /// `x W^T`, plus the bias when `with_bias`.
    fn base(&mut self, x: &Array, with_bias: bool) -> Result<Array> {
        let bias = if with_bias { self.bias.value.clone() } else { None };
        let y = match fast::product(x, self.stored(), self.training)? {
            Some(y) => y,
            None => return fast::dense_product(x, &self.weight_t(), bias.as_ref()),
        };
        Ok(match bias {
            Some(bias) => y.add(bias)?,
            None => y,
        })
    }
}

/// Whether two handles refer to the same MLX array (not merely equal values).
fn same_array(a: &Array, b: &Array) -> bool {
    std::ptr::eq(a.as_ptr().ctx, b.as_ptr().ctx)
}

impl Module<&Array> for Linear {
    type Output = Array;
    type Error = lamina_core::Error;

    /// # Shapes
    /// `[..., input_dims] -> [..., output_dims]`
    fn forward(&mut self, x: &Array) -> Result<Array> {
        let (Some(config), Some(a), Some(b)) =
            (self.lora, self.lora_a.value.clone(), self.lora_b.value.clone())
        else {
            return self.base(x, true);
        };
        let Some(m) = self.m.value.clone() else {
            let y = self.base(x, true)?;
            let update = crate::lora::low_rank_update(x, &a, &b, &config, self.training)?;
            return Ok(y.add(update.as_dtype(y.dtype())?)?);
        };
        let y = self.base(x, false)?;
        let update = crate::lora::low_rank_update(x, &a, &b, &config, self.training)?;
        let y = y.add(update.as_dtype(y.dtype())?)?;
        let y = crate::lora::dora_rescale(&y, &self.dense_weight()?, &a, &b, &m, &config)?;
        Ok(match self.bias.as_ref() {
            Some(bias) => y.add(bias)?,
            None => y,
        })
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
        if mode {
            self.transposed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Activations;
    use crate::testing::{assert_close, values};

    #[test]
    fn computes_x_w_transposed_plus_b() {
        let mut layer = Linear::from_weights(
            Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]),
            Some(Array::from_slice(&[0.5f32, -0.5], &[2])),
        );
        let x = Array::from_slice(&[1.0f32, 0.0, -1.0], &[1, 3]);
        let y = layer.forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 2]);
        assert_close(&y, &[-1.5, -2.5], 1e-6);
        assert_eq!(layer.dims(), (3, 2));
    }

    #[test]
    fn half_precision_layers_compute_with_their_stored_weight_and_bias() {
        for dtype in [mlx_rs::Dtype::Bfloat16, mlx_rs::Dtype::Float16] {
            let weight = Array::from_slice(&values(24 * 40, 0.3), &[24, 40]).as_dtype(dtype).unwrap();
            let bias = Array::from_slice(&values(24, 0.7), &[24]).as_dtype(dtype).unwrap();
            let mut layer = Linear::from_weights(weight.clone(), Some(bias.clone()));
            let f32 = |a: &Array| a.as_dtype(mlx_rs::Dtype::Float32).unwrap();
            for rows in [1, 5] {
                let x =
                    Array::from_slice(&values(rows * 40, 0.1), &[rows as i32, 40]).as_dtype(dtype).unwrap();
                let y = layer.forward(&x).unwrap();
                assert_eq!(y.dtype(), dtype);
                let exact = mlx_rs::ops::matmul(f32(&x), f32(&weight).t()).unwrap().add(f32(&bias)).unwrap();
                // Two roundings (product, then bias) of the dtype, relative to the largest output.
                let max = |a: &Array| a.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                let relative = max(&f32(&y).subtract(&exact).unwrap()) / max(&exact);
                let ulp = if dtype == mlx_rs::Dtype::Bfloat16 { 2f32.powi(-8) } else { 2f32.powi(-11) };
                assert!(relative < 4.0 * ulp, "{dtype:?}, {rows} rows: {relative}");
            }
        }
    }

    #[test]
    fn a_quantized_layer_computes_with_its_dequantized_weight() {
        use mlx_rs::module::ModuleParameters;
        let mut layer = Linear::new(128, 16, true).unwrap();
        let x = Array::from_slice(&values(2 * 128, 0.2), &[2, 128]);
        let dense = layer.forward(&x).unwrap();
        layer
            .quantize(QuantConfig { group_size: 64, bits: 8, activations: Activations::Exact, blocks: None })
            .unwrap();
        assert_eq!(layer.dims(), (128, 16));
        let keys: Vec<String> = layer.parameters().flatten().keys().map(|k| k.to_string()).collect();
        assert_eq!(keys.len(), 4, "{keys:?}");
        let quantized = layer.forward(&x).unwrap();
        let reference = Linear::from_weights(layer.dense_weight().unwrap(), layer.bias.value.clone())
            .forward(&x)
            .unwrap();
        let diff = |a: &Array, b: &Array| {
            a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
        };
        assert!(diff(&quantized, &reference) < 1e-4);
        assert!(diff(&quantized, &dense) < 0.05);
        let groups_of_64 =
            QuantConfig { group_size: 64, bits: 4, activations: Activations::Exact, blocks: None };
        assert!(layer.quantize(groups_of_64).is_err());
        assert!(Linear::new(96, 4, false).unwrap().quantize(groups_of_64).is_err());
        assert!(lamina_core::count_trainable_parameters(&layer) == 0);
    }

    #[test]
    fn forward_add_is_the_residual_plus_the_product() {
        let x = Array::from_slice(&values(3 * 64, 0.2), &[3, 1, 64]);
        let residual = Array::from_slice(&values(3 * 16, 0.9), &[3, 1, 16]);
        for (quantized, bias) in [(true, false), (true, true), (false, false)] {
            let mut layer = Linear::from_weights(
                Array::from_slice(&values(16 * 64, 0.4), &[16, 64]),
                bias.then(|| Array::from_slice(&values(16, 0.6), &[16])),
            );
            if quantized {
                layer
                    .quantize(QuantConfig {
                        group_size: 32,
                        bits: 4,
                        activations: Activations::Exact,
                        blocks: None,
                    })
                    .unwrap();
            }
            let added = layer.forward_add(&x, &residual).unwrap();
            let expected = residual.add(layer.forward(&x).unwrap()).unwrap();
            let diff =
                added.subtract(&expected).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            assert_eq!(diff, 0.0, "quantized {quantized}, bias {bias}");
        }
    }

    #[test]
    fn a_replaced_weight_is_never_served_a_stale_transpose() {
        let mut layer = Linear::from_weights(Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[2, 2]), None);
        let x = Array::from_slice(&[1.0f32, 2.0], &[1, 2]);
        assert_close(&layer.forward(&x).unwrap(), &[1.0, 2.0], 0.0);
        // Many replacements in a row: freed handles get reused by the allocator, which a
        // cache keyed by address alone would mistake for the old weight.
        for k in 0..50 {
            let w = k as f32;
            layer.weight = Param::new(Array::from_slice(&[w, 0.0, 0.0, -w], &[2, 2]));
            assert_close(&layer.forward(&x).unwrap(), &[w, -2.0 * w], 0.0);
        }
    }

    #[test]
    fn random_layers_have_the_right_shapes_and_bounds() {
        let layer = Linear::new(16, 8, false).unwrap();
        assert_eq!(layer.weight.shape(), &[8, 16]);
        assert!(layer.bias.is_none());
        let max = layer.weight.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(max <= 0.25, "{max}");
        let x = Array::from_slice(&values(32, 0.0), &[2, 16]);
        assert_eq!(Linear::new(16, 8, true).unwrap().forward(&x).unwrap().shape(), &[2, 8]);
    }
}
