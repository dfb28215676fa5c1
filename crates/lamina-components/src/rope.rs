//! Rotary position embeddings (RoPE): default, linear, Llama-3, YaRN and LongRoPE (Phi-3's
//! `su`) scaling, in the split-halves layout or the interleaved (`traditional`) one,
//! through MLX's fused kernel. Frequencies are computed as mlx-lm's `rope_utils` does.

use lamina_core::{Error, Result};
use lamina_kernels::RopeFrequencies;
use mlx_rs::{Array, fast};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// How the rotation frequencies are scaled for contexts longer than training's.
/// Serialised as Hugging Face writes `rope_scaling` (tagged by `rope_type`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// Frequencies `base^(-2i/d)`, unscaled.
    #[default]
    Default,
    /// Positions divided by `factor` (position interpolation).
    Linear {
        /// The divisor of positions, > 0.
        factor: f32,
    },
    /// Llama 3.1's frequency-dependent scaling: low frequencies divided by `factor`, high
    /// ones kept, the band between interpolated smoothly.
    Llama3 {
        /// How much the low frequencies are slowed, > 0.
        factor: f32,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
        #[serde(default = "one")]
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        #[serde(default = "four")]
        high_freq_factor: f32,
        /// The context length the model was pretrained with.
        #[serde(default = "eight_k")]
        original_max_position_embeddings: u32,
    },
    /// YaRN: frequencies interpolated between `base^(2i/d)` and `factor` times it along a
    /// ramp between the `beta_fast` and `beta_slow` rotation counts, and the rotated
    /// features scaled by `mscale` (Qwen and DeepSeek long-context configs).
    Yarn {
        /// Context extension factor, > 0.
        factor: f32,
        /// The context length the model was pretrained with.
        #[serde(default = "four_k")]
        original_max_position_embeddings: u32,
        /// Rotations at the fast end of the ramp.
        #[serde(default = "thirty_two")]
        beta_fast: f32,
        /// Rotations at the slow end of the ramp.
        #[serde(default = "one")]
        beta_slow: f32,
        /// Attention-magnitude correction (`0.1 * mscale * ln(factor) + 1`).
        #[serde(default = "one")]
        mscale: f32,
        /// The same correction applied to every dimension (divides the former).
        #[serde(default)]
        mscale_all_dim: f32,
    },
    /// LongRoPE (Phi-3's `longrope`, formerly `su`): per-frequency factors and a magnitude
    /// correction `sqrt(1 + ln(max / original) / ln(original))`. As mlx-lm, the long
    /// factors are used at every length (so that cached decoding stays consistent).
    #[serde(alias = "su")]
    Longrope {
        /// One factor per rotated pair, for contexts longer than the original.
        long_factor: Vec<f32>,
        /// One factor per rotated pair, for contexts within the original (kept for the
        /// checkpoint's sake; see above).
        #[serde(default)]
        short_factor: Vec<f32>,
        /// The context length the model was pretrained with.
        original_max_position_embeddings: u32,
        /// The extended context length (`max_position_embeddings`).
        max_position_embeddings: u32,
    },
}

fn four_k() -> u32 {
    4096
}
fn thirty_two() -> f32 {
    32.0
}

fn one() -> f32 {
    1.0
}
fn four() -> f32 {
    4.0
}
fn eight_k() -> u32 {
    8192
}

/// How a [`Rope`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct RopeConfig {
    /// Rotated features per head (usually `head_dim`), even.
    #[validate(range(min = 2))]
    pub dims: i32,
    /// The frequency base (`rope_theta`).
    #[validate(range(exclusive_min = 0.0))]
    pub base: f32,
    /// Interleaved pairs `(x0, x1), (x2, x3), ...` instead of split halves.
    #[serde(default)]
    pub traditional: bool,
    /// Frequency scaling.
    #[serde(default)]
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Unscaled RoPE over `dims` features with frequency base `base`.
    pub fn new(dims: i32, base: f32) -> Self {
        RopeConfig { dims, base, traditional: false, scaling: RopeScaling::Default }
    }

    /// Cross-field rules: even `dims`, positive factors, distinct Llama-3 band edges.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn check(&self) -> Result<()> {
        self.validate().map_err(|e| Error::invalid("RopeConfig", "rope", e.to_string()))?;
        if self.dims % 2 != 0 {
            return Err(Error::invalid("RopeConfig", "dims", format!("must be even, got {}", self.dims)));
        }
        match &self.scaling {
            RopeScaling::Default => Ok(()),
            RopeScaling::Linear { factor }
            | RopeScaling::Llama3 { factor, .. }
            | RopeScaling::Yarn { factor, .. }
                if factor.is_nan() || *factor <= 0.0 =>
            {
                Err(Error::invalid("RopeConfig", "scaling.factor", format!("must be > 0, got {factor}")))
            }
            RopeScaling::Llama3 {
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
                ..
            } if high_freq_factor.partial_cmp(low_freq_factor) != Some(std::cmp::Ordering::Greater)
                || *low_freq_factor <= 0.0
                || *original_max_position_embeddings == 0 =>
            {
                Err(Error::invalid(
                    "RopeConfig",
                    "scaling",
                    format!(
                        "llama3 needs 0 < low_freq_factor ({low_freq_factor}) < high_freq_factor \
                         ({high_freq_factor}) and original_max_position_embeddings > 0"
                    ),
                ))
            }
            RopeScaling::Longrope { long_factor, original_max_position_embeddings, .. }
                if long_factor.len() != (self.dims / 2) as usize || *original_max_position_embeddings < 2 =>
            {
                Err(Error::invalid(
                    "RopeConfig",
                    "scaling.long_factor",
                    format!(
                        "longrope needs one factor per rotated pair ({}), got {}, and an original context > 1",
                        self.dims / 2,
                        long_factor.len()
                    ),
                ))
            }
            RopeScaling::Yarn { original_max_position_embeddings: 0, .. } => Err(Error::invalid(
                "RopeConfig",
                "scaling.original_max_position_embeddings",
                "must be positive",
            )),
            _ => Ok(()),
        }
    }
}

/// Rotates features by position. Holds no parameters: checkpoints' `rotary_emb.inv_freq`
/// is recomputed, not loaded.
#[derive(Debug, Clone)]
pub struct Rope {
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    /// Explicit frequencies (Llama-3, YaRN, LongRoPE); when set, `base` is unused.
    freqs: Option<Array>,
    /// A factor on the rotated features before rotating (YaRN's and LongRoPE's magnitude
    /// corrections), when not 1.
    input_scale: Option<f32>,
}

impl Rope {
    /// Builds the rotation, precomputing scaled frequencies where the scaling needs them.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: RopeConfig) -> Result<Self> {
        config.check()?;
        let RopeConfig { dims, base, traditional, scaling } = config;
        let plain = Rope { dims, traditional, base: Some(base), scale: 1.0, freqs: None, input_scale: None };
        let with_freqs = |freqs: Vec<f32>, input_scale: f32| Rope {
            dims,
            traditional,
            base: None,
            scale: 1.0,
            freqs: Some(Array::from_slice(&freqs, &[dims / 2])),
            input_scale: (input_scale != 1.0).then_some(input_scale),
        };
        let rope = match scaling {
            RopeScaling::Default => plain,
            RopeScaling::Linear { factor } => Rope { scale: 1.0 / factor, ..plain },
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            } => {
                let (freqs, magnitude) = yarn_freqs(
                    dims,
                    base,
                    factor,
                    original_max_position_embeddings as f32,
                    (beta_fast, beta_slow),
                    (mscale, mscale_all_dim),
                );
                with_freqs(freqs, magnitude)
            }
            RopeScaling::Longrope {
                long_factor,
                original_max_position_embeddings,
                max_position_embeddings,
                ..
            } => {
                let freqs = (0..dims / 2)
                    .zip(&long_factor)
                    .map(|(i, f)| f * base.powf((2 * i) as f32 / dims as f32))
                    .collect();
                let (max, original) =
                    (max_position_embeddings as f32, original_max_position_embeddings as f32);
                let factor = max / original;
                let magnitude = if factor <= 1.0 { 1.0 } else { (1.0 + factor.ln() / original.ln()).sqrt() };
                with_freqs(freqs, magnitude)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let freqs = llama3_freqs(
                    dims,
                    base,
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings as f32,
                );
                with_freqs(freqs, 1.0)
            }
        };
        Ok(rope)
    }

    /// Rotates `x` as if its first position were `offset`.
    ///
    /// # Shapes
    /// `[B, H, L, D] -> [B, H, L, D]` (the first `dims` features of `D` are rotated)
    ///
    /// # Errors
    /// When MLX rejects the input (fewer than `dims` features).
    pub fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        let scaled = self.prescaled(x)?;
        let x = scaled.as_ref().unwrap_or(x);
        // One graph node on the CPU (MLX expands its op into ~29 there), MLX's op elsewhere.
        crate::fast::rope(x, self.dims, self.traditional, self.frequencies(), self.scale, offset)
    }

    /// This rotation at position `offset` as lamina's fused q/k products apply it, when it
    /// is a plain rotation (no magnitude correction to apply before it).
    pub fn rotation(&self, offset: i32) -> Option<lamina_kernels::Rotation<'_>> {
        if self.input_scale.is_some() {
            return None;
        }
        Some(lamina_kernels::Rotation {
            dims: self.dims,
            traditional: self.traditional,
            frequencies: self.frequencies(),
            scale: self.scale,
            offset,
        })
    }

    /// The frequencies as lamina's kernels take them.
    fn frequencies(&self) -> RopeFrequencies<'_> {
        match (&self.freqs, self.base) {
            (Some(periods), _) => RopeFrequencies::Periods(periods),
            (None, base) => RopeFrequencies::Base(base.unwrap_or(10_000.0)),
        }
    }

    /// `x` with the magnitude correction applied, when the scaling has one.
    fn prescaled(&self, x: &Array) -> Result<Option<Array>> {
        self.input_scale.map(|s| scale_leading(x, self.dims, s)).transpose()
    }

    /// Rotates each row `b` of `x` as if its first position were `positions[b]` (a batch of
    /// sequences at different lengths).
    ///
    /// # Shapes
    /// `x [B, H, L, D]`, `positions [B]` int32 -> `[B, H, L, D]`
    ///
    /// # Errors
    /// When MLX rejects the input.
    pub fn forward_positions(&self, x: &Array, positions: &Array) -> Result<Array> {
        let scaled = self.prescaled(x)?;
        let x = scaled.as_ref().unwrap_or(x);
        let (base, freqs) = (self.base, self.freqs.as_ref());
        Ok(fast::rope_dynamic(x, self.dims, self.traditional, base, self.scale, positions, freqs)?)
    }
}

/// `x` with its first `dims` features (of the last axis) multiplied by `factor`.
fn scale_leading(x: &Array, dims: i32, factor: f32) -> Result<Array> {
    let last = x.dim(-1);
    let factor = Array::from_f32(factor).as_dtype(x.dtype())?;
    if dims >= last {
        return Ok(x.multiply(&factor)?);
    }
    use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};
    let head = x.try_index((Ellipsis, ..dims))?.multiply(&factor)?;
    Ok(mlx_rs::ops::concatenate(&[head, x.try_index((Ellipsis, dims..))?], -1)?)
}

/// YaRN's frequencies and magnitude correction, as mlx-lm's `YarnRoPE` computes them.
fn yarn_freqs(
    dims: i32,
    base: f32,
    factor: f32,
    original: f32,
    (beta_fast, beta_slow): (f32, f32),
    (mscale, mscale_all_dim): (f32, f32),
) -> (Vec<f32>, f32) {
    let d = dims as f32;
    let correction_dim =
        |rotations: f32| d * (original / (rotations * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln());
    let low = correction_dim(beta_fast).floor().max(0.0);
    let high = correction_dim(beta_slow).ceil().min(d - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    let get_mscale = |m: f32| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
    let freqs = (0..dims / 2)
        .map(|i| {
            let extra = base.powf((2 * i) as f32 / d);
            let inter = factor * extra;
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let mask = 1.0 - ramp;
            inter * extra / (inter * mask + extra * (1.0 - mask))
        })
        .collect();
    (freqs, get_mscale(mscale) / get_mscale(mscale_all_dim))
}

/// Llama 3.1's scaled wavelengths, as `transformers` and mlx-lm compute them (in f32).
fn llama3_freqs(dims: i32, base: f32, factor: f32, low: f32, high: f32, old_context: f32) -> Vec<f32> {
    let low_wavelen = old_context / low;
    let high_wavelen = old_context / high;
    (0..dims / 2)
        .map(|i| {
            let freq = base.powf((2 * i) as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI * freq;
            if wavelen > low_wavelen {
                freq * factor
            } else if wavelen > high_wavelen {
                let smooth = (old_context / wavelen - low) / (high - low);
                freq / ((1.0 - smooth) / factor + smooth)
            } else {
                freq
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, to_vec, values};

    /// Closed-form rotation of `[1, 1, L, D]` with per-pair inverse frequencies `inv`.
    fn closed_form(
        x: &[f32],
        len: usize,
        dim: usize,
        inv: &[f32],
        offset: usize,
        traditional: bool,
    ) -> Vec<f32> {
        let half = dim / 2;
        let mut out = x.to_vec();
        for pos in 0..len {
            for (i, inv) in inv.iter().enumerate().take(half) {
                let (sin, cos) = ((offset + pos) as f32 * inv).sin_cos();
                let (a, b) = if traditional { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (xa, xb) = (x[pos * dim + a], x[pos * dim + b]);
                out[pos * dim + a] = xa * cos - xb * sin;
                out[pos * dim + b] = xa * sin + xb * cos;
            }
        }
        out
    }

    fn run(config: RopeConfig, offset: usize) -> (Vec<f32>, Vec<f32>) {
        let (len, dim) = (5usize, config.dims as usize);
        let x = values(len * dim, 0.3);
        let out = Rope::new(config)
            .unwrap()
            .forward(&Array::from_slice(&x, &[1, 1, len as i32, dim as i32]), offset as i32);
        (x, to_vec(&out.unwrap()))
    }

    fn inv_freqs(dim: usize, base: f32) -> Vec<f32> {
        (0..dim / 2).map(|i| base.powf(-2.0 * i as f32 / dim as f32)).collect()
    }

    #[test]
    fn default_rope_matches_the_closed_form_in_both_layouts() {
        for traditional in [false, true] {
            let config = RopeConfig { traditional, ..RopeConfig::new(8, 10_000.0) };
            let (x, out) = run(config, 4);
            let expected = closed_form(&x, 5, 8, &inv_freqs(8, 10_000.0), 4, traditional);
            assert_close(&Array::from_slice(&out, &[out.len() as i32]), &expected, 1e-5);
        }
    }

    #[test]
    fn linear_scaling_divides_positions() {
        let config = RopeConfig { scaling: RopeScaling::Linear { factor: 4.0 }, ..RopeConfig::new(8, 500.0) };
        let (x, out) = run(config, 2);
        let inv: Vec<f32> = inv_freqs(8, 500.0).iter().map(|f| f / 4.0).collect();
        assert_close(
            &Array::from_slice(&out, &[out.len() as i32]),
            &closed_form(&x, 5, 8, &inv, 2, false),
            1e-5,
        );
    }

    #[test]
    fn llama3_scaling_keeps_high_slows_low_and_smooths_between() {
        // With base 500000 and 16 dims the wavelengths span all three bands of an
        // original context of 64 positions.
        let (dims, base, factor, old) = (16, 500_000.0f32, 8.0f32, 64.0f32);
        let scaling = RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        };
        let freqs = llama3_freqs(dims, base, factor, 1.0, 4.0, old);
        let plain: Vec<f32> = (0..8).map(|i| base.powf(2.0 * i as f32 / 16.0)).collect();
        let wavelen = |f: f32| 2.0 * std::f32::consts::PI * f;
        let (mut kept, mut slowed, mut smoothed) = (0, 0, 0);
        for (scaled, f) in freqs.iter().zip(&plain) {
            if wavelen(*f) < old / 4.0 {
                assert_eq!(scaled, f);
                kept += 1;
            } else if wavelen(*f) > old {
                assert_eq!(*scaled, f * factor);
                slowed += 1;
            } else {
                assert!(*scaled > *f && *scaled < f * factor);
                smoothed += 1;
            }
        }
        assert!(kept > 0 && slowed > 0 && smoothed > 0, "{kept} {slowed} {smoothed}");
        let config = RopeConfig { scaling, ..RopeConfig::new(dims, base) };
        let (x, out) = run(config, 7);
        let inv: Vec<f32> = freqs.iter().map(|f| 1.0 / f).collect();
        assert_close(
            &Array::from_slice(&out, &[out.len() as i32]),
            &closed_form(&x, 5, 16, &inv, 7, false),
            1e-5,
        );
    }

    #[test]
    fn hugging_face_rope_scaling_parses() {
        let parsed: RopeScaling = serde_json::from_str(
            r#"{"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}"#,
        )
        .unwrap();
        assert!(matches!(parsed, RopeScaling::Llama3 { factor: 32.0, .. }));
        let linear: RopeScaling = serde_json::from_str(r#"{"rope_type": "linear", "factor": 2.0}"#).unwrap();
        assert_eq!(linear, RopeScaling::Linear { factor: 2.0 });
        assert!(serde_json::from_str::<RopeScaling>(r#"{"rope_type": "sideways"}"#).is_err());
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(RopeConfig::new(7, 10_000.0).check().is_err());
        assert!(RopeConfig::new(8, 0.0).check().is_err());
        let zero = RopeConfig { scaling: RopeScaling::Linear { factor: 0.0 }, ..RopeConfig::new(8, 1e4) };
        assert!(zero.check().unwrap_err().to_string().contains("factor"));
        let band = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 4.0,
            high_freq_factor: 1.0,
            original_max_position_embeddings: 8192,
        };
        assert!(RopeConfig { scaling: band, ..RopeConfig::new(8, 1e4) }.check().is_err());
    }
}
