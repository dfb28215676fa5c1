//! Mixed precision: the frozen weights (and so the activations) in bf16 or f16, the
//! trainable parameters and the optimizer state in f32 (the master copy), the loss in
//! f32; with f16, dynamic loss scaling keeps small gradients from flushing to zero.

use mlx_rs::module::ModuleParameters;
use mlx_rs::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The dtype training computes in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, strum::Display, strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Frozen weights and activations in bfloat16.
    Bf16,
    /// Frozen weights and activations in float16, with loss scaling.
    F16,
}

impl Precision {
    /// The dtype of frozen weights and activations.
    pub fn dtype(self) -> Dtype {
        match self {
            Precision::F32 => Dtype::Float32,
            Precision::Bf16 => Dtype::Bfloat16,
            Precision::F16 => Dtype::Float16,
        }
    }

    /// Whether the loss is scaled (f16's narrow exponent range needs it).
    pub fn scales_loss(self) -> bool {
        self == Precision::F16
    }
}

/// Casts the frozen floating-point parameters of `model` to `precision`'s dtype, leaving
/// the trainable ones (the master weights) and quantization scales and offsets as they
/// are. Returns how many were cast.
///
/// # Errors
/// MLX errors.
pub fn cast_frozen(model: &mut (impl ModuleParameters + ?Sized), precision: Precision) -> Result<usize> {
    let target = precision.dtype();
    let trainable: std::collections::HashSet<String> =
        model.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect();
    let mut cast = Vec::new();
    for (key, value) in model.parameters().flatten() {
        let quantization = key.ends_with(".scales") || key.ends_with(".biases");
        let float = matches!(value.dtype(), Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16);
        if float && !quantization && !trainable.contains(key.as_ref()) && value.dtype() != target {
            cast.push((key.clone(), value.as_dtype(target)?));
        }
    }
    mlx_rs::transforms::eval(cast.iter().map(|(_, v)| v))?;
    let count = cast.len();
    model.update_flattened(cast.into_iter().collect());
    Ok(count)
}

/// Dynamic loss scaling (as PyTorch's `GradScaler`): the loss is multiplied by the scale
/// before the backward pass and the gradients divided by it; a step whose gradients
/// overflow is skipped and the scale halved; after `growth_interval` good steps it doubles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The current scale.
    pub scale: f32,
    /// Good steps since the scale last changed.
    pub good_steps: usize,
    /// Good steps before the scale doubles.
    pub growth_interval: usize,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale { scale: 1024.0, good_steps: 0, growth_interval: 200 }
    }
}

impl LossScale {
    /// Records a step's outcome: `finite` gradients keep (and eventually grow) the scale;
    /// an overflow halves it.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale = (self.scale * 2.0).min(65536.0);
                self.good_steps = 0;
            }
        } else {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
        }
    }

    /// The scale as an array.
    pub fn array(&self) -> Array {
        Array::from_f32(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_backs_off_on_overflow_and_grows_after_good_steps() {
        let mut scale = LossScale { growth_interval: 2, ..LossScale::default() };
        scale.update(false);
        assert_eq!(scale.scale, 512.0);
        scale.update(true);
        assert_eq!(scale.scale, 512.0);
        scale.update(true);
        assert_eq!((scale.scale, scale.good_steps), (1024.0, 0));
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
    }
}
