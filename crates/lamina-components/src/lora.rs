//! LoRA: a frozen [`Linear`] plus a trainable low-rank update `scale * (x A) B`, with
//! `scale = alpha / rank`. Names follow mlx-lm's adapters: `linear`, `lora_a`, `lora_b`.

use lamina_core::{Config, Error, Result};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, ModuleParameters, Param};
use mlx_rs::{Array, ops};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::linear::Linear;

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
}

impl Config for LoraConfig {
    const NAME: &'static str = "LoraConfig";
}

impl LoraConfig {
    /// `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

/// A linear layer with a LoRA adapter.
#[derive(Debug, Clone, ModuleParameters)]
pub struct LoraLinear {
    /// The frozen base layer.
    #[param]
    pub linear: Linear,
    /// `[input_dims, rank]`, initialised uniformly in `±1/sqrt(input_dims)`.
    #[param]
    pub lora_a: Param<Array>,
    /// `[rank, output_dims]`, initialised to zero (the adapter starts as the identity).
    #[param]
    pub lora_b: Param<Array>,
    config: LoraConfig,
    training: bool,
}

impl LoraLinear {
    /// Wraps `linear`, freezing it.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(mut linear: Linear, config: LoraConfig) -> Result<Self> {
        config.validated()?;
        let (input, output) = linear.dims();
        let rank = config.rank as i32;
        let bound = 1.0 / (input.max(1) as f32).sqrt();
        linear.freeze_parameters(true);
        Ok(LoraLinear {
            linear,
            lora_a: Param::new(mlx_rs::random::uniform::<_, f32>(-bound, bound, &[input, rank], None)?),
            lora_b: Param::new(Array::zeros::<f32>(&[rank, output])?),
            config,
            training: false,
        })
    }

    /// The adapter's config.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The base layer with the update merged into its weight: `W + scale * (A B)^T`.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn fuse(self) -> Result<Linear> {
        let delta =
            ops::matmul(&*self.lora_a, &*self.lora_b)?.t().multiply(Array::from_f32(self.config.scale()))?;
        let weight = self.linear.weight.add(delta.as_dtype(self.linear.weight.dtype())?)?;
        Ok(Linear::from_weights(weight, self.linear.bias.value))
    }
}

impl Module<&Array> for LoraLinear {
    type Output = Array;
    type Error = Error;

    /// # Shapes
    /// `[..., input_dims] -> [..., output_dims]`
    fn forward(&mut self, x: &Array) -> Result<Array> {
        let base = self.linear.forward(x)?;
        let p = self.config.dropout;
        let input = if self.training && p > 0.0 {
            let keep = mlx_rs::random::bernoulli(&Array::from_f32(1.0 - p), x.shape(), None)?;
            x.multiply(keep)?.divide(Array::from_f32(1.0 - p))?
        } else {
            x.clone()
        };
        let update = ops::matmul(&ops::matmul(&input, &*self.lora_a)?, &*self.lora_b)?;
        Ok(base.add(update.multiply(Array::from_f32(self.config.scale()))?)?)
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{array, max_diff};

    fn adapter() -> LoraLinear {
        let base = Linear::from_weights(array(&[6, 4], 0.0), Some(array(&[6], 1.0)));
        let mut lora = LoraLinear::new(base, LoraConfig { rank: 2, alpha: 8.0, dropout: 0.0 }).unwrap();
        lora.lora_b = Param::new(array(&[2, 6], 2.0));
        lora
    }

    #[test]
    fn starts_as_the_base_layer_and_freezes_it() {
        let base = Linear::from_weights(array(&[6, 4], 0.0), None);
        let mut plain = base.clone();
        let mut lora = LoraLinear::new(base, LoraConfig { rank: 2, alpha: 4.0, dropout: 0.1 }).unwrap();
        let x = array(&[3, 4], 0.5);
        assert!(max_diff(&lora.forward(&x).unwrap(), &plain.forward(&x).unwrap()) < 1e-6);
        let trainable: Vec<String> =
            lora.trainable_parameters().flatten().keys().map(|k| k.to_string()).collect::<Vec<_>>();
        let mut trainable = trainable;
        trainable.sort();
        assert_eq!(trainable, ["lora_a", "lora_b"]);
    }

    #[test]
    fn fused_layer_equals_the_adapted_one() {
        let mut lora = adapter();
        let x = array(&[2, 3, 4], 0.7);
        let adapted = lora.forward(&x).unwrap();
        let mut fused = lora.fuse().unwrap();
        assert!(max_diff(&adapted, &fused.forward(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn dropout_applies_only_in_training() {
        let mut lora = adapter();
        lora.config.dropout = 0.5;
        let x = array(&[64, 4], 0.7);
        let eval = lora.forward(&x).unwrap();
        assert!(max_diff(&eval, &lora.forward(&x).unwrap()) == 0.0);
        lora.training_mode(true);
        assert!(max_diff(&eval, &lora.forward(&x).unwrap()) > 1e-3);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let base = || Linear::from_weights(array(&[2, 2], 0.0), None);
        assert!(LoraLinear::new(base(), LoraConfig { rank: 0, alpha: 1.0, dropout: 0.0 }).is_err());
        assert!(LoraLinear::new(base(), LoraConfig { rank: 1, alpha: 1.0, dropout: 1.0 }).is_err());
    }
}
