//! LoRA on a [`Linear`]: the base `weight`/`bias` frozen, a trainable update
//! `scale * (x A) B` with `scale = alpha / rank`. The adapter's arrays are the layer's
//! `lora_a` `[in, rank]` and `lora_b` `[rank, out]`, the names mlx-lm's adapter files use,
//! so that the base keys stay those of the checkpoint.
//!
//! DoRA (weight-decomposed LoRA, mlx-lm's `--fine-tune-type dora`) adds a trainable
//! magnitude `m` `[out]`, initialised to the row norms of `W`: the layer computes
//! `m / ||W + scale (A B)^T||_row * (x W^T + scale (x A) B) + b`, the norm held constant
//! in the gradient (as mlx-lm's `DoRALinear`).

#[cfg(test)]
use crate::quant::QuantConfig;
use lamina_core::{Config, Error, Result};
use mlx_rs::module::{ModuleParameters, Param, Parameter};
use mlx_rs::{Array, ops};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::linear::Linear;

/// Which low-rank adapter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum AdapterKind {
    /// `W x + scale (x A) B`.
    #[default]
    Lora,
    /// LoRA with a learned per-row magnitude.
    Dora,
}

/// The adapter's shape and strength.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct LoraConfig {
    /// Rank of the update.
    #[validate(range(min = 1))]
    pub rank: usize,
    /// Strength: the update is scaled by `alpha / rank`.
    #[validate(range(exclusive_min = 0.0))]
    pub alpha: f32,
    /// Dropout on the adapter's input while training.
    #[serde(default)]
    #[validate(range(min = 0.0, exclusive_max = 1.0))]
    pub dropout: f32,
    /// LoRA or DoRA (LoRA when absent from a saved config).
    #[serde(default)]
    pub kind: AdapterKind,
}

impl Config for LoraConfig {
    const NAME: &'static str = "LoraConfig";
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16 (a scale of 2), no dropout, LoRA.
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, dropout: 0.0, kind: AdapterKind::Lora }
    }
}

impl LoraConfig {
    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

impl Linear {
    /// Attaches a LoRA adapter and freezes the base weight and bias. `lora_a` starts
    /// uniform in `±1/sqrt(input_dims)`, `lora_b` at zero, so the layer computes what it
    /// did before until it is trained.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config, [`Error::AlreadyApplied`] if an adapter is
    /// already attached.
    pub fn attach_lora(&mut self, config: LoraConfig) -> Result<()> {
        config.validated()?;
        if self.lora.is_some() {
            return Err(Error::AlreadyApplied { layer: "Linear", what: "a LoRA adapter" });
        }
        let (input, output) = self.dims();
        let rank = lamina_core::to_dim("LoraConfig", "rank", config.rank)?;
        let bound = 1.0 / (input.max(1) as f32).sqrt();
        self.lora_a =
            Param::new(Some(mlx_rs::random::uniform::<_, f32>(-bound, bound, &[input, rank], None)?));
        self.lora_b = Param::new(Some(Array::zeros::<f32>(&[rank, output])?));
        if config.kind == AdapterKind::Dora {
            self.m = Param::new(Some(row_norms(&self.dense_weight()?.as_dtype(mlx_rs::Dtype::Float32)?)?));
        }
        self.lora = Some(config);
        self.weight.freeze(true);
        self.bias.freeze(true);
        Ok(())
    }

    /// The attached adapter's config.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Merges the adapter into the base weight, `W + scale * (A B)^T` (for DoRA then each
    /// row rescaled to the magnitude `m`), and removes it: a dense layer is unfrozen; a
    /// quantized one is re-quantized (and stays frozen). A layer without an adapter is
    /// left as it is.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn fuse_lora(&mut self) -> Result<()> {
        let (Some(config), Some(a), Some(b)) =
            (self.lora.take(), self.lora_a.value.take(), self.lora_b.value.take())
        else {
            return Ok(());
        };
        let dense = self.dense_weight()?;
        let mut fused = adapted_weight(&dense.as_dtype(mlx_rs::Dtype::Float32)?, &a, &b, &config)?;
        if let Some(m) = self.m.value.take() {
            let norms = ops::maximum(row_norms(&fused)?, Array::from_f32(f32::MIN_POSITIVE))?;
            fused = fused.multiply(m.divide(&norms)?.expand_dims(-1)?)?;
        }
        let fused = fused.as_dtype(dense.dtype())?;
        let quantized = self.quantization().is_some();
        self.set_dense_weight(fused)?;
        if !quantized {
            self.weight.unfreeze(true);
            self.bias.unfreeze(true);
        }
        Ok(())
    }
}

/// `W + scale * (A B)^T`, `[out, in]`.
fn adapted_weight(weight: &Array, a: &Array, b: &Array, config: &LoraConfig) -> Result<Array> {
    let delta = ops::matmul(a, b)?.t().multiply(Array::from_f32(config.scale()))?;
    Ok(weight.add(delta.as_dtype(weight.dtype())?)?)
}

/// The Euclidean norm of each row of `[out, in]`: `[out]`.
fn row_norms(weight: &Array) -> Result<Array> {
    Ok(weight.square()?.sum_axis(-1, None)?.sqrt()?)
}

/// DoRA's output from LoRA's (without the bias): `m / ||W + scale (A B)^T||_row * y`, the
/// norm a constant of the gradient.
pub(crate) fn dora_rescale(
    y: &Array,
    weight: &Array,
    a: &Array,
    b: &Array,
    m: &Array,
    config: &LoraConfig,
) -> Result<Array> {
    let adapted = adapted_weight(&weight.as_dtype(mlx_rs::Dtype::Float32)?, a, b, config)?;
    // A row of zeros has norm 0 (and m 0): its output stays 0 rather than 0/0.
    let norms =
        ops::maximum(mlx_rs::stop_gradient(&row_norms(&adapted)?)?, Array::from_f32(f32::MIN_POSITIVE))?;
    Ok(y.multiply(m.divide(&norms)?.as_dtype(y.dtype())?)?)
}

/// `scale * (dropout(x) A) B`.
pub(crate) fn low_rank_update(
    x: &Array,
    a: &Array,
    b: &Array,
    config: &LoraConfig,
    training: bool,
) -> Result<Array> {
    let input = crate::dropout::dropout(x, config.dropout, training)?;
    Ok(ops::matmul(&ops::matmul(&input, a)?, b)?.multiply(Array::from_f32(config.scale()))?)
}

/// The names of the trainable parameters of a module, sorted.
pub fn trainable_names(module: &impl ModuleParameters) -> Vec<String> {
    let mut names: Vec<String> =
        module.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use mlx_rs::module::Module;

    use super::*;
    use crate::quant::Activations;
    use crate::testing::{array, max_diff};

    fn adapted() -> Linear {
        let mut layer = Linear::from_weights(array(&[6, 4], 0.0), Some(array(&[6], 1.0)));
        layer.attach_lora(LoraConfig { rank: 2, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() }).unwrap();
        layer.lora_b = Param::new(Some(array(&[2, 6], 2.0)));
        layer
    }

    #[test]
    fn starts_as_the_base_layer_and_freezes_it() {
        let mut layer = Linear::from_weights(array(&[6, 4], 0.0), Some(array(&[6], 1.0)));
        let x = array(&[3, 4], 0.5);
        let before = layer.forward(&x).unwrap();
        layer.attach_lora(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.1, ..LoraConfig::default() }).unwrap();
        assert!(max_diff(&layer.forward(&x).unwrap(), &before) < 1e-6);
        assert_eq!(trainable_names(&layer), ["lora_a", "lora_b"]);
        assert_eq!(layer.lora_a.value.as_ref().map(|a| a.shape().to_vec()), Some(vec![4, 2]));
        assert!(
            layer
                .attach_lora(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, ..LoraConfig::default() })
                .is_err()
        );
    }

    #[test]
    fn fused_layer_equals_the_adapted_one() {
        let mut layer = adapted();
        let x = array(&[2, 3, 4], 0.7);
        let with_adapter = layer.forward(&x).unwrap();
        assert!(
            max_diff(
                &with_adapter,
                &Linear::from_weights(array(&[6, 4], 0.0), Some(array(&[6], 1.0))).forward(&x).unwrap()
            ) > 1e-3
        );
        layer.fuse_lora().unwrap();
        assert!(layer.lora_config().is_none() && layer.lora_a.is_none());
        assert!(max_diff(&with_adapter, &layer.forward(&x).unwrap()) < 1e-5);
        assert_eq!(trainable_names(&layer), ["bias", "weight"]);
    }

    #[test]
    fn qlora_trains_adapters_on_a_quantized_base_and_fuses_back_into_it() {
        let mut layer = Linear::from_weights(array(&[8, 64], 0.0), None);
        layer
            .quantize(QuantConfig { group_size: 32, bits: 8, activations: Activations::Exact, blocks: None })
            .unwrap();
        let x = array(&[3, 64], 0.5);
        let base = layer.forward(&x).unwrap();
        layer.attach_lora(LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, ..LoraConfig::default() }).unwrap();
        assert_eq!(trainable_names(&layer), ["lora_a", "lora_b"]);
        layer.lora_a = Param::new(Some(array(&[64, 2], 3.0)));
        layer.lora_b = Param::new(Some(array(&[2, 8], 1.0)));
        let adapted = layer.forward(&x).unwrap();
        layer.fuse_lora().unwrap();
        assert_eq!(
            layer.quantization(),
            Some(QuantConfig { group_size: 32, bits: 8, activations: Activations::Exact, blocks: None })
        );
        // Re-quantizing the fused weight costs 8-bit rounding: small against the update.
        let update = max_diff(&adapted, &base);
        let error = max_diff(&adapted, &layer.forward(&x).unwrap());
        assert!(error < 0.05 * update, "error {error} vs update {update}");
    }

    /// A DoRA layer's arrays as plain values: `w [out, in]`, `bias [out]`, `a [in, rank]`,
    /// `b [rank, out]`, `m [out]`, and the scale.
    struct DoraValues {
        w: Vec<f32>,
        bias: Vec<f32>,
        a: Vec<f32>,
        b: Vec<f32>,
        m: Vec<f32>,
        scale: f32,
        dims: (usize, usize, usize),
    }

    /// DoRA by hand, in plain loops: `W' = W + s (A B)^T`, `y = m_o / ||W'_o|| (x W'^T)_o + b_o`.
    fn dora_by_hand(p: &DoraValues, x: &[f32], rows: usize) -> Vec<f32> {
        let (input, output, rank) = p.dims;
        let adapted = |o: usize, i: usize| {
            p.w[o * input + i]
                + p.scale * (0..rank).map(|r| p.a[i * rank + r] * p.b[r * output + o]).sum::<f32>()
        };
        let mut y = vec![0.0; rows * output];
        for o in 0..output {
            let norm = (0..input).map(|i| adapted(o, i).powi(2)).sum::<f32>().sqrt();
            for n in 0..rows {
                let dot: f32 = (0..input).map(|i| x[n * input + i] * adapted(o, i)).sum();
                y[n * output + o] = p.m[o] / norm * dot + p.bias[o];
            }
        }
        y
    }

    #[test]
    fn dora_computes_the_weight_decomposed_update() {
        let (rows, input, output, rank) = (3, 4, 6, 2);
        let config = LoraConfig { rank, alpha: 3.0, kind: AdapterKind::Dora, ..LoraConfig::default() };
        let (w, bias, x) = (array(&[6, 4], 0.0), array(&[6], 1.0), array(&[3, 4], 0.7));
        let mut layer = Linear::from_weights(w.clone(), Some(bias.clone()));
        let before = layer.forward(&x).unwrap();
        layer.attach_lora(config).unwrap();
        assert_eq!(trainable_names(&layer), ["lora_a", "lora_b", "m"]);
        // Starts as the base layer: m is W's row norms and B is zero.
        assert!(max_diff(&layer.forward(&x).unwrap(), &before) < 1e-5);
        let (a, b, m) = (array(&[4, 2], 2.0), array(&[2, 6], 3.0), array(&[6], 4.0).abs().unwrap());
        layer.lora_a = Param::new(Some(a.clone()));
        layer.lora_b = Param::new(Some(b.clone()));
        layer.m = Param::new(Some(m.clone()));
        let got = layer.forward(&x).unwrap();
        let v = crate::testing::to_vec;
        let values = DoraValues {
            w: v(&w),
            bias: v(&bias),
            a: v(&a),
            b: v(&b),
            m: v(&m),
            scale: config.scale(),
            dims: (input, output, rank),
        };
        let expected = dora_by_hand(&values, &v(&x), rows);
        assert!(max_diff(&got, &Array::from_slice(&expected, &[3, 6])) < 1e-5);

        // Fused: one dense weight computing the same; the adapter and magnitude are gone.
        layer.fuse_lora().unwrap();
        assert!(layer.m.is_none() && layer.lora_a.is_none());
        assert!(max_diff(&layer.forward(&x).unwrap(), &got) < 1e-5);
        assert_eq!(trainable_names(&layer), ["bias", "weight"]);
    }

    #[test]
    fn dora_on_a_quantized_base_fuses_back_into_it() {
        let mut layer = Linear::from_weights(array(&[8, 64], 0.0), None);
        layer
            .quantize(QuantConfig { group_size: 32, bits: 8, activations: Activations::Exact, blocks: None })
            .unwrap();
        layer
            .attach_lora(LoraConfig { rank: 2, alpha: 4.0, kind: AdapterKind::Dora, ..LoraConfig::default() })
            .unwrap();
        layer.lora_b = Param::new(Some(array(&[2, 8], 1.0)));
        layer.m = Param::new(Some(array(&[8], 2.0).abs().unwrap()));
        let x = array(&[3, 64], 0.5);
        let adapted = layer.forward(&x).unwrap();
        layer.fuse_lora().unwrap();
        let error = max_diff(&adapted, &layer.forward(&x).unwrap());
        assert!(error < 0.02, "8-bit re-quantization error {error}");
    }

    #[test]
    fn dropout_applies_only_in_training() {
        let mut layer = adapted();
        layer.lora = Some(LoraConfig { rank: 2, alpha: 8.0, dropout: 0.5, ..LoraConfig::default() });
        let x = array(&[64, 4], 0.7);
        let eval = layer.forward(&x).unwrap();
        assert_eq!(max_diff(&eval, &layer.forward(&x).unwrap()), 0.0);
        layer.training_mode(true);
        assert!(max_diff(&eval, &layer.forward(&x).unwrap()) > 1e-3);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let mut layer = Linear::from_weights(array(&[2, 2], 0.0), None);
        assert!(
            layer
                .attach_lora(LoraConfig { rank: 0, alpha: 1.0, dropout: 0.0, ..LoraConfig::default() })
                .is_err()
        );
        assert!(
            layer
                .attach_lora(LoraConfig { rank: 1, alpha: 1.0, dropout: 1.0, ..LoraConfig::default() })
                .is_err()
        );
        assert!(layer.lora_config().is_none());
    }
}
