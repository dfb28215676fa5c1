//! A dense layer `y = x W^T + b` whose parameters are named as in checkpoints
//! (`weight` `[out, in]`, optional `bias` `[out]`), with an optional LoRA adapter
//! (`lora_a`, `lora_b`; see [`crate::LoraConfig`]).

use lamina_core::Result;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::{Array, ops};

use crate::lora::LoraConfig;

/// A dense layer.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Linear {
    /// `[output_dims, input_dims]`.
    #[param]
    pub weight: Param<Array>,
    /// `[output_dims]`, when the layer has a bias.
    #[param]
    pub bias: Param<Option<Array>>,
    /// LoRA down-projection `[input_dims, rank]`, when an adapter is attached.
    #[param]
    pub lora_a: Param<Option<Array>>,
    /// LoRA up-projection `[rank, output_dims]`, when an adapter is attached.
    #[param]
    pub lora_b: Param<Option<Array>>,
    pub(crate) lora: Option<LoraConfig>,
    pub(crate) training: bool,
    /// `weight^T` as a view of the weight it was made from (identified by its handle):
    /// once evaluated, later graphs use it as a leaf instead of adding a transpose node —
    /// at one token per step, graph nodes are what decoding spends its time on.
    transposed: Option<(usize, Array)>,
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
            lora_a: Param::new(None),
            lora_b: Param::new(None),
            lora: None,
            training: false,
            transposed: None,
        }
    }

    /// `(input_dims, output_dims)`.
    pub fn dims(&self) -> (i32, i32) {
        let shape = self.weight.shape();
        (shape.get(1).copied().unwrap_or(0), shape.first().copied().unwrap_or(0))
    }

    /// `weight^T`, cached while not training (the cache is keyed by the weight's handle,
    /// so loading or updating the weight invalidates it).
    fn weight_t(&mut self) -> Array {
        let handle = self.weight.as_ptr().ctx as usize;
        match &self.transposed {
            Some((h, t)) if *h == handle => t.clone(),
            _ => {
                let t = self.weight.t();
                self.transposed = if self.training { None } else { Some((handle, t.clone())) };
                t
            }
        }
    }

    fn base(&mut self, x: &Array) -> Result<Array> {
        let weight_t = self.weight_t();
        Ok(match self.bias.as_ref() {
            Some(bias) => ops::addmm(bias, x, &weight_t, None, None)?,
            None => ops::matmul(x, &weight_t)?,
        })
    }
}

impl Module<&Array> for Linear {
    type Output = Array;
    type Error = lamina_core::Error;

    /// # Shapes
    /// `[..., input_dims] -> [..., output_dims]`
    fn forward(&mut self, x: &Array) -> Result<Array> {
        let y = self.base(x)?;
        match (&self.lora, self.lora_a.as_ref(), self.lora_b.as_ref()) {
            (Some(config), Some(a), Some(b)) => {
                let update = crate::lora::low_rank_update(x, a, b, config, self.training)?;
                Ok(y.add(update)?)
            }
            _ => Ok(y),
        }
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
