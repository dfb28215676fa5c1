//! Normalisation over the last axis: RMSNorm (optionally weightless) and LayerNorm.

use lamina_core::{Config, NormKind, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::{Array, fast};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// How a [`Norm`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct NormConfig {
    /// RMSNorm or LayerNorm.
    #[serde(default)]
    pub kind: NormKind,
    /// Added to the variance before the square root.
    #[validate(range(min = 0.0))]
    pub eps: f32,
    /// Whether the norm has a learned scale (`weight`). The weightless RMSNorm is what
    /// MobileLLM-R1 (Llama 4) applies to queries and keys.
    #[serde(default = "yes")]
    pub affine: bool,
    /// Scale by `1 + weight` instead of `weight` (Gemma's RMSNorm, whose checkpoints store
    /// the offset from one).
    #[serde(default)]
    pub unit_offset: bool,
}

fn yes() -> bool {
    true
}

impl Config for NormConfig {
    const NAME: &'static str = "NormConfig";

    fn check(&self) -> Result<()> {
        if self.eps.is_nan() {
            return Err(lamina_core::Error::invalid(Self::NAME, "eps", "must be a number"));
        }
        Ok(())
    }
}

impl NormConfig {
    /// RMSNorm with a learned scale.
    pub fn rms(eps: f32) -> Self {
        NormConfig { kind: NormKind::RmsNorm, eps, affine: true, unit_offset: false }
    }

    /// RMSNorm scaling by `1 + weight` (Gemma).
    pub fn rms_unit_offset(eps: f32) -> Self {
        NormConfig { unit_offset: true, ..Self::rms(eps) }
    }

    /// RMSNorm without a scale.
    pub fn rms_weightless(eps: f32) -> Self {
        NormConfig { kind: NormKind::RmsNorm, eps, affine: false, unit_offset: false }
    }

    /// Scalar parameters of a norm over `dims` features.
    pub fn num_parameters(&self, dims: usize) -> usize {
        match (self.affine, self.kind) {
            (false, _) => 0,
            (true, NormKind::RmsNorm) => dims,
            (true, NormKind::LayerNorm) => dims.saturating_mul(2),
        }
    }

    /// LayerNorm with a learned scale and bias.
    pub fn layer(eps: f32) -> Self {
        NormConfig { kind: NormKind::LayerNorm, eps, affine: true, unit_offset: false }
    }
}

/// A normalisation layer: `weight` (and for LayerNorm `bias`) over `dims` features.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Norm {
    /// The learned scale `[dims]`, absent for a weightless norm.
    #[param]
    pub weight: Param<Option<Array>>,
    /// The learned shift `[dims]` of a LayerNorm.
    #[param]
    pub bias: Param<Option<Array>>,
    /// RMSNorm or LayerNorm.
    pub kind: NormKind,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Scale by `1 + weight` (Gemma).
    pub unit_offset: bool,
}

impl Norm {
    /// A norm over `dims` features, scale ones and shift zeros.
    ///
    /// # Errors
    /// [`lamina_core::Error::InvalidConfig`] for a negative or NaN `eps`; when MLX cannot
    /// allocate the arrays.
    pub fn new(dims: i32, config: NormConfig) -> Result<Self> {
        config.validated()?;
        let weight = if config.affine { Some(Array::ones::<f32>(&[dims])?) } else { None };
        let bias = if config.affine && config.kind == NormKind::LayerNorm {
            Some(Array::zeros::<f32>(&[dims])?)
        } else {
            None
        };
        Ok(Norm {
            weight: Param::new(weight),
            bias: Param::new(bias),
            kind: config.kind,
            eps: config.eps,
            unit_offset: config.unit_offset,
        })
    }
}

impl Module<&Array> for Norm {
    type Output = Array;
    type Error = lamina_core::Error;

    /// # Shapes
    /// `[..., dims] -> [..., dims]`
    fn forward(&mut self, x: &Array) -> Result<Array> {
        let weight = self.weight.value.as_ref();
        match self.kind {
            // One graph node on the CPU (MLX expands its op into ~11 there), MLX's op elsewhere.
            NormKind::RmsNorm => crate::fast::rms_norm(x, weight, self.eps, self.unit_offset),
            NormKind::LayerNorm => {
                let offset;
                let weight = match (weight, self.unit_offset) {
                    (Some(w), true) => {
                        offset = w.add(Array::from_f32(1.0).as_dtype(w.dtype())?)?;
                        Some(&offset)
                    }
                    (w, _) => w,
                };
                Ok(fast::layer_norm(x, weight, self.bias.value.as_ref(), self.eps)?)
            }
        }
    }

    fn training_mode(&mut self, _mode: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_close;

    #[test]
    fn rms_norm_scales_to_unit_rms_then_by_weight() {
        let mut norm = Norm::new(2, NormConfig::rms(0.0)).unwrap();
        norm.weight = Param::new(Some(Array::from_slice(&[1.0f32, 2.0], &[2])));
        let y = norm.forward(&Array::from_slice(&[3.0f32, 4.0], &[1, 2])).unwrap();
        let rms = (12.5f32).sqrt();
        assert_close(&y, &[3.0 / rms, 8.0 / rms], 1e-6);
    }

    #[test]
    fn unit_offset_scales_by_one_plus_weight() {
        let mut norm = Norm::new(2, NormConfig::rms_unit_offset(0.0)).unwrap();
        norm.weight = Param::new(Some(Array::from_slice(&[0.0f32, 1.0], &[2])));
        let y = norm.forward(&Array::from_slice(&[3.0f32, 4.0], &[1, 2])).unwrap();
        let rms = (12.5f32).sqrt();
        assert_close(&y, &[3.0 / rms, 8.0 / rms], 1e-6);
    }

    #[test]
    fn weightless_rms_norm_has_no_parameters() {
        let mut norm = Norm::new(4, NormConfig::rms_weightless(1e-6)).unwrap();
        assert_eq!(mlx_rs::module::ModuleParameters::num_parameters(&norm), 0);
        let y = norm.forward(&Array::from_slice(&[2.0f32, 2.0, 2.0, 2.0], &[4])).unwrap();
        assert_close(&y, &[1.0; 4], 1e-5);
    }

    #[test]
    fn negative_or_nan_eps_is_rejected() {
        for eps in [-1e-5, f32::NAN] {
            let err = Norm::new(4, NormConfig::rms(eps)).unwrap_err().to_string();
            assert!(err.contains("eps"), "{err}");
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut norm = Norm::new(3, NormConfig::layer(0.0)).unwrap();
        assert!(norm.bias.is_some());
        let y = norm.forward(&Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])).unwrap();
        let s = (2.0f32 / 3.0).sqrt();
        assert_close(&y, &[-1.0 / s, 0.0, 1.0 / s], 1e-5);
    }
}
