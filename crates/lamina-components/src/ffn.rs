//! Feed-forward networks: gated (SwiGLU: `gate_proj`, `up_proj`, `down_proj`) or plain
//! (`up_proj`, `down_proj`, e.g. a GELU MLP).

use lamina_core::{Activation, Config, Error, FfnKind, Result, ensure_dims, to_dim};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use mlx_rs::{Array, nn};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::fast;
use crate::linear::Linear;

/// How a [`FeedForward`] is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct FeedForwardConfig {
    /// Model width.
    #[validate(range(min = 1))]
    pub hidden_size: usize,
    /// Inner width.
    #[validate(range(min = 1))]
    pub intermediate_size: usize,
    /// Gated or plain.
    #[serde(default)]
    pub kind: FfnKind,
    /// The activation (of the gate, for a gated network).
    #[serde(default)]
    pub activation: Activation,
    /// Biases on every projection.
    #[serde(default)]
    pub bias: bool,
}

impl FeedForwardConfig {
    /// SwiGLU: gated with SiLU, no biases.
    pub fn swiglu(hidden_size: usize, intermediate_size: usize) -> Self {
        FeedForwardConfig {
            hidden_size,
            intermediate_size,
            kind: FfnKind::Gated,
            activation: Activation::Silu,
            bias: false,
        }
    }

    /// Scalar parameters of the network this config builds.
    pub fn num_parameters(&self) -> usize {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let projections = match self.kind {
            FfnKind::Gated => 3,
            FfnKind::Plain => 2,
        };
        let bias = usize::from(self.bias);
        lamina_core::count(&[&[projections, h, i], &[bias, projections - 1, i], &[bias, h]])
    }

    /// A plain two-layer MLP with GELU, with biases.
    pub fn gelu_mlp(hidden_size: usize, intermediate_size: usize) -> Self {
        FeedForwardConfig {
            hidden_size,
            intermediate_size,
            kind: FfnKind::Plain,
            activation: Activation::Gelu,
            bias: true,
        }
    }
}

impl Config for FeedForwardConfig {
    const NAME: &'static str = "FeedForwardConfig";

    fn check(&self) -> Result<()> {
        ensure_dims(
            Self::NAME,
            &[("hidden_size", self.hidden_size), ("intermediate_size", self.intermediate_size)],
        )
    }
}

/// A feed-forward network.
#[derive(Debug, Clone, ModuleParameters)]
pub struct FeedForward {
    /// `[intermediate, hidden]`, gated networks only.
    #[param]
    pub gate_proj: Option<Linear>,
    /// `[intermediate, hidden]`.
    #[param]
    pub up_proj: Linear,
    /// `[hidden, intermediate]`.
    #[param]
    pub down_proj: Linear,
    /// The activation.
    pub activation: Activation,
}

impl FeedForward {
    /// A randomly initialised network.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: FeedForwardConfig) -> Result<Self> {
        config.validated()?;
        let h = to_dim(FeedForwardConfig::NAME, "hidden_size", config.hidden_size)?;
        let i = to_dim(FeedForwardConfig::NAME, "intermediate_size", config.intermediate_size)?;
        let gate_proj = match config.kind {
            FfnKind::Gated => Some(Linear::new(h, i, config.bias)?),
            FfnKind::Plain => None,
        };
        Ok(FeedForward {
            gate_proj,
            up_proj: Linear::new(h, i, config.bias)?,
            down_proj: Linear::new(i, h, config.bias)?,
            activation: config.activation,
        })
    }
}

/// Applies an activation.
///
/// # Errors
/// When MLX fails.
pub fn activate(activation: Activation, x: &Array) -> Result<Array> {
    let y = match activation {
        Activation::Silu => nn::silu(x)?,
        Activation::Gelu => nn::gelu(x)?,
        Activation::GeluApprox => nn::gelu_approximate(x)?,
        Activation::Relu => nn::relu(x)?,
    };
    Ok(y)
}

impl FeedForward {
    /// The gated unit's inner activations in one graph node where lamina's kernel takes
    /// them ([`fast::gated`]).
    fn gated_kernel(&self, x: &Array) -> Result<Option<Array>> {
        let gate = self.gate_proj.as_ref().and_then(Linear::plain_weight);
        fast::gated(x, gate, self.up_proj.plain_weight(), self.activation, false)
    }

    /// `residual + self.forward(x)`, the down projection and the add in one graph node
    /// where lamina's kernels take them ([`Linear::forward_add`]).
    ///
    /// # Shapes
    /// `x [..., hidden]`, `residual [..., hidden]` -> `[..., hidden]`
    ///
    /// # Errors
    /// When MLX fails or the shapes do not fit.
    pub(crate) fn forward_add(&mut self, x: &Array, residual: &Array) -> Result<Array> {
        let inner = self.inner(x)?;
        self.down_proj.forward_add(&inner, residual)
    }

    /// The activations the down projection reads.
    fn inner(&mut self, x: &Array) -> Result<Array> {
        if let Some(inner) = self.gated_kernel(x)? {
            return Ok(inner);
        }
        Ok(match &mut self.gate_proj {
            Some(gate) => activate(self.activation, &gate.forward(x)?)? * self.up_proj.forward(x)?,
            None => activate(self.activation, &self.up_proj.forward(x)?)?,
        })
    }
}

impl Module<&Array> for FeedForward {
    type Output = Array;
    type Error = Error;

    /// # Shapes
    /// `[..., hidden] -> [..., hidden]`
    fn forward(&mut self, x: &Array) -> Result<Array> {
        let inner = self.inner(x)?;
        self.down_proj.forward(&inner)
    }

    fn training_mode(&mut self, mode: bool) {
        if let Some(gate) = &mut self.gate_proj {
            gate.training_mode(mode);
        }
        self.up_proj.training_mode(mode);
        self.down_proj.training_mode(mode);
    }
}

crate::visit_fields!(FeedForward { gate_proj, up_proj, down_proj });

#[cfg(test)]
mod tests {
    use mlx_rs::module::ModuleParameters;

    use super::*;
    use crate::testing::{assert_close, to_vec};

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn swiglu_is_down_of_silu_gate_times_up() {
        let mut ffn = FeedForward::new(FeedForwardConfig::swiglu(2, 3)).unwrap();
        let w = |v: &[f32], s: &[i32]| Linear::from_weights(Array::from_slice(v, s), None);
        ffn.gate_proj = Some(w(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]));
        ffn.up_proj = w(&[2.0, 0.0, 0.0, 2.0, 1.0, -1.0], &[3, 2]);
        ffn.down_proj = w(&[1.0, 1.0, 1.0, 0.0, 0.0, 1.0], &[2, 3]);
        let (a, b) = (0.5f32, -1.0f32);
        let y = ffn.forward(&Array::from_slice(&[a, b], &[1, 2])).unwrap();
        let silu = |x: f32| x * sigmoid(x);
        let inner = [silu(a) * 2.0 * a, silu(b) * 2.0 * b, silu(a + b) * (a - b)];
        assert_close(&y, &[inner[0] + inner[1] + inner[2], inner[2]], 1e-6);
    }

    #[test]
    fn quantized_gated_units_take_the_fused_kernel_with_the_same_result() {
        use crate::quant::{Activations, QuantConfig};
        use crate::testing::{array, fill_params, max_diff};
        for activation in [Activation::Silu, Activation::GeluApprox, Activation::Gelu, Activation::Relu] {
            let config = FeedForwardConfig { activation, ..FeedForwardConfig::swiglu(64, 96) };
            let mut ffn = FeedForward::new(config).unwrap();
            fill_params(&mut ffn, 0.2);
            for linear in [ffn.gate_proj.as_mut().unwrap(), &mut ffn.up_proj, &mut ffn.down_proj] {
                linear
                    .quantize(QuantConfig {
                        group_size: 32,
                        bits: 4,
                        activations: Activations::Exact,
                        blocks: None,
                    })
                    .unwrap();
            }
            let x = array(&[2, 3, 64], 0.1);
            let fused_taken = ffn.gated_kernel(&x).unwrap().is_some();
            assert_eq!(fused_taken, activation != Activation::Relu, "{activation:?}");
            let fused = ffn.forward(&x).unwrap();
            ffn.training_mode(true); // the plain graph
            assert!(ffn.gated_kernel(&x).unwrap().is_none());
            let plain = ffn.forward(&x).unwrap();
            assert!(max_diff(&fused, &plain) < 1e-5, "{activation:?}: {}", max_diff(&fused, &plain));
        }
    }

    #[test]
    fn plain_gelu_mlp_has_no_gate() {
        let ffn = FeedForward::new(FeedForwardConfig::gelu_mlp(4, 8)).unwrap();
        let keys: Vec<String> = ffn.parameters().flatten().keys().map(|k| k.to_string()).collect();
        assert!(keys.iter().all(|k| !k.starts_with("gate_proj")));
        assert_eq!(keys.len(), 4);
        let mut ffn = ffn;
        assert_eq!(ffn.forward(&Array::ones::<f32>(&[2, 3, 4]).unwrap()).unwrap().shape(), &[2, 3, 4]);
    }

    #[test]
    fn activations_match_their_definitions() {
        let x = Array::from_slice(&[-1.5f32, 0.0, 0.7], &[3]);
        let erf_gelu = [-0.100_210_8, 0.0, 0.530_625_4];
        assert_close(&activate(Activation::Gelu, &x).unwrap(), &erf_gelu, 1e-5);
        let tanh_gelu: Vec<f32> = to_vec(&x)
            .iter()
            .map(|&v| {
                0.5 * v * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            })
            .collect();
        assert_close(&activate(Activation::GeluApprox, &x).unwrap(), &tanh_gelu, 1e-5);
        assert_close(&activate(Activation::Relu, &x).unwrap(), &[0.0, 0.0, 0.7], 0.0);
    }

    #[test]
    fn zero_widths_are_rejected() {
        let err = FeedForward::new(FeedForwardConfig::swiglu(8, 0)).unwrap_err().to_string();
        assert!(err.contains("intermediate_size"), "{err}");
    }
}
