//! The Mamba selective-state-space mixer (Mamba 1): `in_proj`, a depthwise causal
//! `conv1d`, `x_proj`, `dt_proj`, `A_log`, `D`, `out_proj`, as Hugging Face names them.
//!
//! A prompt runs through the parallel (chunked associative) scan; decoding one token at
//! a time carries the convolution window and the SSM state in an [`SsmState`], O(1) per
//! token. Both paths compute the same function (see the tests).

mod scan;

pub use scan::{ScanInput, selective_scan};

use lamina_core::{Config, Error, Result, ensure_positive};
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::{Module, Param};
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, nn, ops};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::attention::batch_and_len;
use crate::cache::{LayerCache, SsmState};
use crate::linear::Linear;

/// How a [`MambaMixer`] is built. Field names follow Hugging Face's `MambaConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Validate)]
pub struct MambaConfig {
    /// Model width.
    #[validate(range(min = 1))]
    pub hidden_size: usize,
    /// SSM state size `N` per channel.
    #[validate(range(min = 1))]
    pub state_size: usize,
    /// Width of the causal convolution.
    #[validate(range(min = 1))]
    pub conv_kernel: usize,
    /// Inner width `D` (`expand * hidden_size`).
    #[validate(range(min = 1))]
    pub intermediate_size: usize,
    /// Rank of the time-step projection (`ceil(hidden_size / 16)` in Mamba).
    #[validate(range(min = 1))]
    pub time_step_rank: usize,
    /// Biases on `in_proj` and `out_proj`.
    #[serde(default)]
    pub use_bias: bool,
    /// Bias on `conv1d`.
    #[serde(default = "yes")]
    pub use_conv_bias: bool,
    /// Positions per chunk of the parallel scan: memory `B * chunk * D * N` floats per
    /// intermediate.
    #[serde(default = "default_chunk")]
    #[validate(range(min = 1))]
    pub scan_chunk: usize,
}

fn yes() -> bool {
    true
}
/// Measured on 2 CPU cores with the 130m shape (`bench_ssm`): chunks of 8 beat 16, 32,
/// 64 and 128 (the work is the `[T, D, N]` traffic; the scan adds `log2(T)` passes).
fn default_chunk() -> usize {
    8
}

impl MambaConfig {
    /// Mamba's defaults for a width: state 16, kernel 4, `expand` times wider inside.
    pub fn new(hidden_size: usize, expand: usize) -> Self {
        MambaConfig {
            hidden_size,
            state_size: 16,
            conv_kernel: 4,
            intermediate_size: expand.saturating_mul(hidden_size),
            time_step_rank: hidden_size.div_ceil(16),
            use_bias: false,
            use_conv_bias: true,
            scan_chunk: default_chunk(),
        }
    }
}

impl MambaConfig {
    /// Scalar parameters of the mixer this config builds.
    pub fn num_parameters(&self) -> usize {
        let (h, d, n, k, r) = (
            self.hidden_size,
            self.intermediate_size,
            self.state_size,
            self.conv_kernel,
            self.time_step_rank,
        );
        let (bias, conv_bias) = (usize::from(self.use_bias), usize::from(self.use_conv_bias));
        lamina_core::count(&[
            &[2, d, h],
            &[bias, 2, d], // in_proj
            &[d, k],
            &[conv_bias, d], // conv1d
            &[r, d],
            &[2, n, d], // x_proj
            &[d, r],
            &[d], // dt_proj
            &[d, n],
            &[d], // A_log, D
            &[h, d],
            &[bias, h], // out_proj
        ])
    }
}

impl Config for MambaConfig {
    const NAME: &'static str = "MambaConfig";

    fn check(&self) -> Result<()> {
        ensure_positive(Self::NAME, "scan_chunk", self.scan_chunk)?;
        lamina_core::ensure_dims(
            Self::NAME,
            &[
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("state_size", self.state_size),
                ("conv_kernel", self.conv_kernel),
                ("time_step_rank", self.time_step_rank),
                ("scan_chunk", self.scan_chunk),
            ],
        )?;
        lamina_core::ensure_product_fits(Self::NAME, "2 * intermediate_size", &[2, self.intermediate_size])?;
        lamina_core::ensure_product_fits(
            Self::NAME,
            "time_step_rank + 2 * state_size",
            &[self.time_step_rank.saturating_add(self.state_size.saturating_mul(2))],
        )
    }
}

/// A depthwise causal convolution over the sequence, weight in MLX's layout
/// `[channels, kernel, 1]` (`sanitize` moves PyTorch's `[channels, 1, kernel]`).
#[derive(Debug, Clone, ModuleParameters)]
pub struct CausalConv1d {
    /// `[D, K, 1]`.
    #[param]
    pub weight: Param<Array>,
    /// `[D]`.
    #[param]
    pub bias: Param<Option<Array>>,
}

impl CausalConv1d {
    /// Convolves a window that already holds the `K - 1` previous inputs.
    ///
    /// # Shapes
    /// `[B, L + K - 1, D] -> [B, L, D]`
    fn forward(&self, window: &Array) -> Result<Array> {
        let kernel = self.weight.dim(1);
        let len = window.dim(1) - kernel + 1;
        let taps = self.weight.squeeze_axes(&[-1])?.transpose()?; // [K, D]
        let mut out = match self.bias.as_ref() {
            Some(bias) => ops::broadcast_to(bias, &[window.dim(0), len, bias.dim(0)])?,
            None => ops::zeros_dtype(&[window.dim(0), len, window.dim(2)], window.dtype())?,
        };
        for k in 0..kernel {
            let tap = taps.try_index(k)?;
            out = out.add(window.try_index((.., k..k + len, ..))?.multiply(&tap)?)?;
        }
        Ok(out)
    }
}

/// The Mamba mixer.
#[derive(Debug, Clone, ModuleParameters)]
#[allow(non_snake_case)]
pub struct MambaMixer {
    /// `[2 D, hidden]`: the input and the gate `z`.
    #[param]
    pub in_proj: Linear,
    /// The depthwise causal convolution.
    #[param]
    pub conv1d: CausalConv1d,
    /// `[R + 2 N, D]`: time-step rank, `B` and `C`.
    #[param]
    pub x_proj: Linear,
    /// `[D, R]` with bias `[D]`.
    #[param]
    pub dt_proj: Linear,
    /// `log(-A)`, `[D, N]`.
    #[param]
    pub A_log: Param<Array>,
    /// The skip connection's scale, `[D]`.
    #[param]
    pub D: Param<Array>,
    /// `[hidden, D]`.
    #[param]
    pub out_proj: Linear,
    config: MambaConfig,
}

impl MambaMixer {
    /// A mixer initialised as Mamba does: `A = -[1..N]` per channel, `D = 1`, time-step
    /// biases the inverse softplus of steps log-uniform in `[0.001, 0.1]`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: MambaConfig) -> Result<Self> {
        config.validated()?;
        let dim = |field: &str, value: usize| lamina_core::to_dim(MambaConfig::NAME, field, value);
        let (h, d) =
            (dim("hidden_size", config.hidden_size)?, dim("intermediate_size", config.intermediate_size)?);
        let (n, k) = (dim("state_size", config.state_size)?, dim("conv_kernel", config.conv_kernel)?);
        let r = dim("time_step_rank", config.time_step_rank)?;
        let conv_bound = 1.0 / (k as f32).sqrt();
        let conv1d = CausalConv1d {
            weight: Param::new(mlx_rs::random::uniform::<_, f32>(-conv_bound, conv_bound, &[d, k, 1], None)?),
            bias: Param::new(if config.use_conv_bias {
                Some(mlx_rs::random::uniform::<_, f32>(-conv_bound, conv_bound, &[d], None)?)
            } else {
                None
            }),
        };
        let (dt_min, dt_max) = (0.001f32.ln(), 0.1f32.ln());
        let dt = mlx_rs::random::uniform::<_, f32>(dt_min, dt_max, &[d], None)?.exp()?;
        let inv_softplus = dt.add(ops::negative(&ops::expm1(&ops::negative(&dt)?)?)?.log()?)?;
        let dt_bound = 1.0 / (r as f32).sqrt();
        let dt_proj = Linear::from_weights(
            mlx_rs::random::uniform::<_, f32>(-dt_bound, dt_bound, &[d, r], None)?,
            Some(inv_softplus),
        );
        let a = ops::arange::<_, f32>(1.0, n as f32 + 1.0, None)?;
        Ok(MambaMixer {
            in_proj: Linear::new(h, 2 * d, config.use_bias)?,
            conv1d,
            x_proj: Linear::new(d, r + 2 * n, false)?,
            dt_proj,
            A_log: Param::new(ops::broadcast_to(a.log()?, &[d, n])?),
            D: Param::new(Array::ones::<f32>(&[d])?),
            out_proj: Linear::new(d, h, config.use_bias)?,
            config,
        })
    }

    /// The config this mixer was built from.
    pub fn config(&self) -> &MambaConfig {
        &self.config
    }
}

impl<'a> Module<crate::attention::LayerInput<'a>> for MambaMixer {
    type Output = Array;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden] -> [B, L, hidden]`; the state, when given, is advanced by `L`.
    fn forward(&mut self, input: crate::attention::LayerInput<'a>) -> Result<Array> {
        let x = input.x;
        let (b, l) = batch_and_len(x, self.config.hidden_size)?;
        let state = match input.cache {
            None => None,
            Some(LayerCache::Ssm(state)) => Some(state),
            Some(other) => {
                return Err(Error::CacheKind { layer: "a Mamba mixer", cache: other.kind() });
            }
        };
        let (d, k, n, r) = (
            self.config.intermediate_size as i32,
            self.config.conv_kernel as i32,
            self.config.state_size as i32,
            self.config.time_step_rank as i32,
        );
        let xz = self.in_proj.forward(x)?;
        let (x_in, z) = (xz.try_index((.., .., ..d))?, xz.try_index((.., .., d..))?); // [B, L, D] each

        let previous = match state.as_ref().and_then(|s| s.conv.as_ref()) {
            Some(conv) if conv.shape() == [b, k - 1, d] => conv.clone(),
            Some(conv) => {
                return Err(Error::Shape {
                    name: "SSM state conv window".into(),
                    expected: vec![b, k - 1, d],
                    actual: conv.shape().to_vec(),
                });
            }
            None => ops::zeros_dtype(&[b, k - 1, d], x_in.dtype())?,
        };
        let window = ops::concatenate(&[&previous, &x_in], 1)?; // [B, K - 1 + L, D]
        let xc = nn::silu(self.conv1d.forward(&window)?)?; // [B, L, D]

        let dbc = self.x_proj.forward(&xc)?; // [B, L, R + 2N]
        let dt = nn::softplus(self.dt_proj.forward(&dbc.try_index((.., .., ..r))?)?)?; // [B, L, D]
        let (bm, cm) = (dbc.try_index((.., .., r..r + n))?, dbc.try_index((.., .., r + n..))?);
        let a = ops::negative(&self.A_log.exp()?)?; // [D, N]
        let h0 = state.as_ref().and_then(|s| s.ssm.as_ref());
        if let Some(h0) = h0 {
            if h0.shape() != [b, d, n] {
                return Err(Error::Shape {
                    name: "SSM state".into(),
                    expected: vec![b, d, n],
                    actual: h0.shape().to_vec(),
                });
            }
        }
        let scan = ScanInput { x: &xc, dt: &dt, a: &a, b: &bm, c: &cm, h0 };
        let (y, h) = selective_scan(scan, self.config.scan_chunk as i32)?;
        let y = y.add(xc.multiply(&*self.D)?)?.multiply(nn::silu(&z)?)?;
        if let Some(state) = state {
            state.conv = Some(window.try_index((.., l.., ..))?);
            state.ssm = Some(h);
            state.offset += l;
            state.row_offsets.iter_mut().for_each(|o| *o += l);
        }
        self.out_proj.forward(&y)
    }

    fn training_mode(&mut self, mode: bool) {
        for projection in [&mut self.in_proj, &mut self.x_proj, &mut self.dt_proj, &mut self.out_proj] {
            projection.training_mode(mode);
        }
    }
}

/// A fresh state for this mixer's cache slot.
pub fn ssm_cache() -> LayerCache {
    LayerCache::Ssm(SsmState::new())
}

crate::visit_fields!(MambaMixer { in_proj, x_proj, dt_proj, out_proj });

#[cfg(test)]
mod tests {
    use mlx_rs::module::ModuleParameters;

    use super::*;
    use crate::attention::LayerInput;
    use crate::testing::{array, fill_params, max_diff};

    fn mixer() -> MambaMixer {
        let config = MambaConfig {
            state_size: 4,
            intermediate_size: 12,
            time_step_rank: 2,
            scan_chunk: 5,
            ..MambaConfig::new(8, 2)
        };
        let mut m = MambaMixer::new(config).unwrap();
        fill_params(&mut m, 0.4);
        m
    }

    #[test]
    fn parameter_names_and_shapes_follow_hugging_face() {
        let m = MambaMixer::new(MambaConfig::new(16, 2)).unwrap();
        let params = m.parameters().flatten();
        let shape = |k: &str| params.get(k).map(|a| a.shape().to_vec()).unwrap();
        assert_eq!(shape("in_proj.weight"), [64, 16]);
        assert_eq!(shape("conv1d.weight"), [32, 4, 1]);
        assert_eq!(shape("conv1d.bias"), [32]);
        assert_eq!(shape("x_proj.weight"), [1 + 32, 32]);
        assert_eq!(shape("dt_proj.weight"), [32, 1]);
        assert_eq!(shape("dt_proj.bias"), [32]);
        assert_eq!(shape("A_log"), [32, 16]);
        assert_eq!(shape("D"), [32]);
        assert_eq!(shape("out_proj.weight"), [16, 32]);
        assert_eq!(params.len(), 9);
    }

    #[test]
    fn recurrent_steps_equal_the_parallel_form() {
        let mut m = mixer();
        let x = array(&[2, 17, 8], 0.3);
        let parallel = m.forward(LayerInput::new(&x)).unwrap();
        assert_eq!(parallel.shape(), &[2, 17, 8]);
        for chunks in [&[1; 17][..], &[6, 1, 1, 9][..], &[2, 15][..]] {
            let mut cache = ssm_cache();
            let mut outs = Vec::new();
            let mut start = 0;
            for &len in chunks {
                let part = x.try_index((.., start..start + len, ..)).unwrap();
                outs.push(
                    m.forward(LayerInput { x: &part, cache: Some(&mut cache), padding_mask: None }).unwrap(),
                );
                start += len;
            }
            let stepped = ops::concatenate(&outs, 1).unwrap();
            assert!(max_diff(&parallel, &stepped) < 1e-4, "{chunks:?}: {}", max_diff(&parallel, &stepped));
            assert_eq!(cache.offset(), 17);
        }
    }

    #[test]
    fn the_output_is_causal() {
        let mut m = mixer();
        let x = array(&[1, 9, 8], 0.3);
        let full = m.forward(LayerInput::new(&x)).unwrap();
        let prefix = m.forward(LayerInput::new(&x.try_index((.., ..4, ..)).unwrap())).unwrap();
        assert!(max_diff(&full.try_index((.., ..4, ..)).unwrap(), &prefix) < 1e-5);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        for (config, field) in [
            (MambaConfig { state_size: 0, ..MambaConfig::new(8, 2) }, "state_size"),
            (MambaConfig { intermediate_size: 0, ..MambaConfig::new(8, 2) }, "intermediate_size"),
            (MambaConfig { scan_chunk: 0, ..MambaConfig::new(8, 2) }, "scan_chunk"),
        ] {
            match MambaMixer::new(config) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_kv_cache_or_a_mismatched_state_is_an_error() {
        let mut m = mixer();
        let x = array(&[1, 3, 8], 0.0);
        let mut kv = LayerCache::Kv(crate::cache::KvCache::new());
        assert!(m.forward(LayerInput { x: &x, cache: Some(&mut kv), padding_mask: None }).is_err());
        let mut cache = ssm_cache();
        m.forward(LayerInput { x: &x, cache: Some(&mut cache), padding_mask: None }).unwrap();
        let other_batch = array(&[2, 1, 8], 0.0);
        let err = m
            .forward(LayerInput { x: &other_batch, cache: Some(&mut cache), padding_mask: None })
            .unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
    }
}
