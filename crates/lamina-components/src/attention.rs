//! Multi-head attention with grouped or multi-query KV heads, optional biases, optional
//! QK-norm, RoPE (or none, per layer), causal and sliding-window masks, through MLX's
//! fused `scaled_dot_product_attention`.

use lamina_core::{
    Config, Error, Result, ensure_dims, ensure_divides, ensure_positive, ensure_product_fits, to_dim,
};
use mlx_rs::Array;
use mlx_rs::fast::scaled_dot_product_attention;
use mlx_rs::macros::ModuleParameters;
use mlx_rs::module::Module;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::attendable::Attendable;
use crate::batch_cache::KvRows;
use crate::cache::{DecodeScores, LayerCache};
use crate::fast;
use crate::linear::Linear;
use crate::mask::{AttentionMask, MaskSpan, attention_mask, causal_mask};
use crate::norm::{Norm, NormConfig};
use crate::quantized_cache::{KvQuantization, Packed, QuantizedKv, quantized_attention};
use crate::rope::{Rope, RopeConfig};

/// Where QK-norm is applied relative to RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNormPosition {
    /// Normalise, then rotate (Qwen3, OLMo 2).
    #[default]
    BeforeRope,
    /// Rotate, then normalise (Llama 4 / MobileLLM-R1).
    AfterRope,
}

/// QK-norm: a per-head norm of queries and keys over `head_dim`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QkNormConfig {
    /// The norm (RMSNorm with a weight `[head_dim]`, or weightless).
    pub norm: NormConfig,
    /// Before or after RoPE.
    #[serde(default)]
    pub position: QkNormPosition,
}

/// How an [`Attention`] is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct AttentionConfig {
    /// Model width.
    #[validate(range(min = 1))]
    pub hidden_size: usize,
    /// Query heads.
    #[validate(range(min = 1))]
    pub num_heads: usize,
    /// Key/value heads: `num_heads` (MHA), a divisor of it (GQA) or 1 (MQA).
    #[validate(range(min = 1))]
    pub num_kv_heads: usize,
    /// Features per head; `hidden_size / num_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Biases on `q_proj`, `k_proj`, `v_proj`.
    #[serde(default)]
    pub qkv_bias: bool,
    /// Bias on `o_proj`.
    #[serde(default)]
    pub o_bias: bool,
    /// QK-norm, if any.
    #[serde(default)]
    pub qk_norm: Option<QkNormConfig>,
    /// RoPE, or `None` for a layer without positions (NoPE).
    #[serde(default)]
    pub rope: Option<RopeConfig>,
    /// Attend only to the last `sliding_window` positions.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Score scale; `head_dim^-0.5` when absent (Gemma: `query_pre_attn_scalar^-0.5`).
    #[serde(default)]
    pub scale: Option<f32>,
    /// Soft-capping of the scores, `cap * tanh(scores / cap)` before the mask (Gemma 2's
    /// `attn_logit_softcapping`). Attention then runs unfused.
    #[serde(default)]
    pub softcap: Option<f32>,
}

impl AttentionConfig {
    /// Plain multi-head attention with default RoPE (base 10000).
    pub fn new(hidden_size: usize, num_heads: usize, num_kv_heads: usize) -> Self {
        let head_dim = hidden_size.checked_div(num_heads).unwrap_or(0);
        AttentionConfig {
            hidden_size,
            num_heads,
            num_kv_heads,
            head_dim: None,
            qkv_bias: false,
            o_bias: false,
            qk_norm: None,
            rope: Some(RopeConfig::new(head_dim as i32, 10_000.0)),
            sliding_window: None,
            scale: None,
            softcap: None,
        }
    }

    /// Scalar parameters of the layer this config builds.
    pub fn num_parameters(&self) -> usize {
        let (h, d) = (self.hidden_size, self.head_dim());
        let (heads, kv) = (self.num_heads, self.num_kv_heads);
        let (qkv_bias, o_bias) = (usize::from(self.qkv_bias), usize::from(self.o_bias));
        let norm = self.qk_norm.map_or(0, |c| c.norm.num_parameters(d));
        lamina_core::count(&[
            &[h, heads, d],
            &[2, h, kv, d],
            &[heads, d, h], // projections
            &[qkv_bias, heads, d],
            &[qkv_bias, 2, kv, d],
            &[o_bias, h], // biases
            &[2, norm],
        ])
    }

    /// Features per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size.checked_div(self.num_heads).unwrap_or(0))
    }
}

impl Config for AttentionConfig {
    const NAME: &'static str = "AttentionConfig";

    fn check(&self) -> Result<()> {
        ensure_divides(Self::NAME, "num_kv_heads", self.num_kv_heads, "num_heads", self.num_heads)?;
        if self.head_dim.is_none() {
            ensure_divides(Self::NAME, "num_heads", self.num_heads, "hidden_size", self.hidden_size)?;
        }
        ensure_positive(Self::NAME, "head_dim", self.head_dim())?;
        ensure_dims(
            Self::NAME,
            &[
                ("hidden_size", self.hidden_size),
                ("num_heads", self.num_heads),
                ("num_kv_heads", self.num_kv_heads),
                ("head_dim", self.head_dim()),
                ("sliding_window", self.sliding_window.unwrap_or(0)),
            ],
        )?;
        ensure_product_fits(Self::NAME, "num_heads * head_dim", &[self.num_heads, self.head_dim()])?;
        if let Some(window) = self.sliding_window {
            ensure_positive(Self::NAME, "sliding_window", window)?;
        }
        if self.softcap.is_some_and(|c| c.is_nan() || c <= 0.0) {
            return Err(Error::invalid(Self::NAME, "softcap", "must be > 0"));
        }
        if let Some(rope) = &self.rope {
            rope.check()?;
            if rope.dims as usize > self.head_dim() {
                return Err(Error::invalid(
                    Self::NAME,
                    "rope.dims",
                    format!("({}) exceeds head_dim ({})", rope.dims, self.head_dim()),
                ));
            }
        }
        Ok(())
    }
}

/// The inputs of one attention (or block) call.
#[derive(Debug)]
pub struct LayerInput<'a> {
    /// `[B, L, hidden_size]`.
    pub x: &'a Array,
    /// The layer's cache, when decoding incrementally.
    pub cache: Option<&'a mut LayerCache>,
    /// `[B, offset + L]`, 1 for real tokens and 0 for padding (attention layers only).
    pub padding_mask: Option<&'a Array>,
}

impl<'a> LayerInput<'a> {
    /// An input with no cache and no padding.
    pub fn new(x: &'a Array) -> Self {
        LayerInput { x, cache: None, padding_mask: None }
    }
}

/// Self-attention. Parameter names are the checkpoints': `q_proj`, `k_proj`, `v_proj`,
/// `o_proj`, `q_norm`, `k_norm`.
#[derive(Debug, Clone, ModuleParameters)]
pub struct Attention {
    /// `[num_heads * head_dim, hidden_size]`.
    #[param]
    pub q_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden_size]`.
    #[param]
    pub k_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden_size]`.
    #[param]
    pub v_proj: Linear,
    /// `[hidden_size, num_heads * head_dim]`.
    #[param]
    pub o_proj: Linear,
    /// QK-norm of queries (`[head_dim]` weight unless weightless).
    #[param]
    pub q_norm: Option<Norm>,
    /// QK-norm of keys.
    #[param]
    pub k_norm: Option<Norm>,
    rope: Option<Rope>,
    config: AttentionConfig,
    training: bool,
}

impl Attention {
    /// A randomly initialised attention layer.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad config.
    pub fn new(config: AttentionConfig) -> Result<Self> {
        config.validated()?;
        let dim = |field: &str, value: usize| to_dim(AttentionConfig::NAME, field, value);
        let (hidden, d) = (dim("hidden_size", config.hidden_size)?, dim("head_dim", config.head_dim())?);
        let (heads, kv_heads) =
            (dim("num_heads", config.num_heads)?, dim("num_kv_heads", config.num_kv_heads)?);
        let norm = |qk: &QkNormConfig| Norm::new(d, qk.norm);
        Ok(Attention {
            q_proj: Linear::new(hidden, heads * d, config.qkv_bias)?,
            k_proj: Linear::new(hidden, kv_heads * d, config.qkv_bias)?,
            v_proj: Linear::new(hidden, kv_heads * d, config.qkv_bias)?,
            o_proj: Linear::new(heads * d, hidden, config.o_bias)?,
            q_norm: config.qk_norm.as_ref().map(norm).transpose()?,
            k_norm: config.qk_norm.as_ref().map(norm).transpose()?,
            rope: config.rope.clone().map(Rope::new).transpose()?,
            config,
            training: false,
        })
    }

    /// The rotation of queries and keys, when the layer has one.
    pub(crate) fn rope(&self) -> Option<&Rope> {
        self.rope.as_ref()
    }

    /// The config this layer was built from.
    pub fn config(&self) -> &AttentionConfig {
        &self.config
    }

    /// Attention of `q [B, H, L, D]` over quantized keys and values through MLX's quantized
    /// products, off the CPU (`[B, H, L, D_v]`); `None` on the CPU, where the caller
    /// dequantizes them for the usual attention.
    fn over_quantized(
        &self,
        q: &Array,
        [keys, values]: [&Packed; 2],
        how: KvQuantization,
        mask: &AttentionMask,
        span: MaskSpan,
    ) -> Result<Option<Array>> {
        if fast::on_cpu() {
            return Ok(None);
        }
        let keep = match mask {
            AttentionMask::None => None,
            AttentionMask::Causal => Some(causal_mask(span, None)?),
            AttentionMask::Explicit(m) => Some(m.clone()),
        };
        let out =
            quantized_attention(q, keys, values, how, self.scale(), self.config.softcap, keep.as_ref())?;
        Ok(Some(out))
    }

    /// RoPE, the cache and the attention itself for heads-first `q`, `k`, `v`, merged
    /// back across heads.
    ///
    /// # Shapes
    /// `q [B, H, L, D]`, `k`/`v [B, H_kv, L, D]` -> `[B, L, H * D]`
    fn attend(
        &mut self,
        q: Array,
        k: Array,
        v: Array,
        mut cache: Option<&mut LayerCache>,
        padding_mask: Option<&Array>,
    ) -> Result<Array> {
        let l = q.dim(2);
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let (q, k) = self.rotate(q, k, cache.as_deref())?;

        let window = self.config.sliding_window.map(|w| w as i32);
        // A prompt on the CPU: lamina's kernel attends by positions, without [L, S] scores
        // or a mask array ([`fast::prompt_attention`] decides where it applies).
        let dtype = q.dtype();
        let (padded, needs_grad) = (padding_mask.is_some(), self.training);
        let prompt = |keys: &Array, values: &Array, key_start: i32| -> Result<Option<Array>> {
            let how = lamina_kernels::PromptAttention {
                query_start: offset,
                key_start,
                scale: self.scale(),
                window,
                softcap: self.config.softcap,
            };
            fast::prompt_attention(&q, keys, values, how, padded, needs_grad)
        };
        // A quantized cache (a sequence's, or a batch's): on the CPU, its keys and values
        // dequantized (a pass over the cache, cheaper there than MLX's quantized products
        // over it) for the usual attention; elsewhere, attended through quantized products.
        let quantized = match cache.as_deref_mut() {
            Some(LayerCache::Quantized(c)) => {
                if padding_mask.is_some() && c.window().is_some() {
                    return Err(Error::Unsupported("padding masks with a rotating cache"));
                }
                let rows = c.update_and_fetch_rows(&k, &v)?;
                let span = MaskSpan {
                    query_start: offset,
                    query_len: l,
                    key_start: rows.key_start.unwrap_or(0),
                    key_len: rows.keys.data.dim(2),
                };
                let mask = match rows.key_start {
                    Some(_) => attention_mask(span, window, padding_mask)?,
                    None => AttentionMask::None, // one query over a window's slots
                };
                Some((rows, c.quantization(), mask, span))
            }
            Some(LayerCache::Batch(c)) if c.quantization().is_some() && padding_mask.is_none() => {
                let span = MaskSpan { query_start: offset, query_len: l, key_start: 0, key_len: offset + l };
                let (out, how) = (c.update_and_fetch(&k, &v)?, c.quantization());
                let (KvRows::Quantized(keys), KvRows::Quantized(values), Some(how)) =
                    (out.keys, out.values, how)
                else {
                    return Err(Error::Internal("a quantized batch returned full-precision rows"));
                };
                Some((
                    QuantizedKv { keys, values, key_start: None },
                    how,
                    AttentionMask::Explicit(out.mask),
                    span,
                ))
            }
            _ => None,
        };
        let attendable = match (quantized, cache) {
            (Some((rows, how, mask, span)), _) => {
                if let Some(out) = self.over_quantized(&q, [&rows.keys, &rows.values], how, &mask, span)? {
                    return merge_heads(&out.as_dtype(dtype)?, l);
                }
                let keys = rows.keys.dequantize(how)?.as_dtype(dtype)?;
                let values = rows.values.dequantize(how)?.as_dtype(dtype)?;
                Attendable { keys, values, mask, key_start: rows.key_start }
            }
            (None, None) => Attendable::uncached(k, v, window, padding_mask)?,
            (None, Some(cache)) => cache.update_and_fetch(&k, &v, window, padding_mask)?,
        };
        if let Some(start) = attendable.key_start {
            if let Some(out) = prompt(&attendable.keys, &attendable.values, start)? {
                return Ok(out);
            }
        }
        let Attendable { keys, values, mask, .. } = attendable;
        let scale = self.scale();
        let widen = fast::widen_attention(dtype, l, self.training);
        let (q, keys, values, mask) = if widen {
            let f32 = |a: &Array| a.as_dtype(mlx_rs::Dtype::Float32);
            let mask = match mask {
                AttentionMask::Explicit(m) if m.dtype() != mlx_rs::Dtype::Bool => {
                    AttentionMask::Explicit(f32(&m)?)
                }
                other => other,
            };
            (f32(&q)?, f32(&keys)?, f32(&values)?, mask)
        } else {
            (q, keys, values, mask)
        };
        let out = match self.config.softcap {
            None => scaled_dot_product_attention(&q, &keys, &values, scale, mask.as_sdpa(), None)?,
            Some(cap) => softcapped_attention(&q, &keys, &values, scale, cap, &mask)?,
        };
        let out = if widen { out.as_dtype(dtype)? } else { out };
        merge_heads(&out, l)
    }

    /// RoPE at the cache's positions, then QK-norm when it comes after RoPE.
    fn rotate(&mut self, q: Array, k: Array, cache: Option<&LayerCache>) -> Result<(Array, Array)> {
        let (mut q, mut k) = (q, k);
        if let Some(rope) = &self.rope {
            match cache.map(LayerCache::row_positions).transpose()?.flatten() {
                Some(positions) => {
                    q = rope.forward_positions(&q, &positions)?;
                    k = rope.forward_positions(&k, &positions)?;
                }
                None => {
                    let offset = cache.map_or(0, |c| c.offset());
                    q = rope.forward(&q, offset)?;
                    k = rope.forward(&k, offset)?;
                }
            }
        }
        self.qk_norm(q, k, QkNormPosition::AfterRope)
    }

    /// The score scale.
    pub(crate) fn scale(&self) -> f32 {
        self.config.scale.unwrap_or(1.0 / (self.config.head_dim() as f32).sqrt())
    }

    /// One decoded token on the CPU in f32 (not training), in few graph nodes: q/k/v in one
    /// node when all three are quantized, and the cache update and attention in one
    /// (lamina's kernels). The caller checks that the token qualifies ([`Self::forward`]).
    ///
    /// # Shapes
    /// `x [B, 1, hidden_size] -> [B, 1, hidden_size]`
    fn decode_fused(
        &mut self,
        x: &Array,
        b: i32,
        cache: &mut LayerCache,
        residual: Option<&Array>,
    ) -> Result<Array> {
        let (heads, kv_heads, d) =
            (self.config.num_heads as i32, self.config.num_kv_heads as i32, self.config.head_dim() as i32);
        // RoPE goes into the products' node too, unless a QK-norm comes between.
        let norm_first = self.config.qk_norm.is_some_and(|c| c.position == QkNormPosition::BeforeRope);
        let rotation = self.rope.as_ref().filter(|_| !norm_first).and_then(|r| r.rotation(cache.offset()));
        let shapes: [&[i32]; 3] = [&[b, heads, 1, d], &[b, kv_heads, 1, d], &[b, kv_heads, 1, d]];
        let weights = [self.q_proj.plain_weight(), self.k_proj.plain_weight(), self.v_proj.plain_weight()];
        let fused = fast::products(x, weights, &shapes, rotation, self.training)?;
        let rotated = rotation.is_some() && fused.is_some();
        let (q, k, v) = match fused {
            Some([q, k, v]) => (q, k, v),
            None => (
                self.q_proj.forward(x)?.reshape(&[b, heads, 1, d])?,
                self.k_proj.forward(x)?.reshape(&[b, kv_heads, 1, d])?,
                self.v_proj.forward(x)?.reshape(&[b, kv_heads, 1, d])?,
            ),
        };
        let (q, k) = if rotated {
            self.qk_norm(q, k, QkNormPosition::AfterRope)?
        } else {
            let (q, k) = self.qk_norm(q, k, QkNormPosition::BeforeRope)?;
            self.rotate(q, k, Some(cache))?
        };
        let how = DecodeScores {
            scale: self.scale(),
            window: self.config.sliding_window.map(|w| w as i32),
            softcap: self.config.softcap,
        };
        let out = cache.decode_attention(&q, &k, &v, how)?; // [B, 1, H * D]
        self.project(&out, residual)
    }

    /// The output projection, plus the residual when there is one.
    fn project(&mut self, out: &Array, residual: Option<&Array>) -> Result<Array> {
        match residual {
            Some(residual) => self.o_proj.forward_add(out, residual),
            None => self.o_proj.forward(out),
        }
    }

    /// `residual + self.forward(input)`, the output projection and the add in one graph
    /// node where lamina's kernels take them ([`Linear::forward_add`]).
    ///
    /// # Shapes
    /// `x [B, L, hidden_size]`, `residual [B, L, hidden_size]` -> `[B, L, hidden_size]`
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub(crate) fn forward_add(&mut self, input: LayerInput<'_>, residual: &Array) -> Result<Array> {
        self.forward_residual(input, Some(residual))
    }

    /// The attention, plus `residual` when given.
    fn forward_residual(&mut self, input: LayerInput<'_>, residual: Option<&Array>) -> Result<Array> {
        let LayerInput { x, cache, padding_mask } = input;
        let (b, l) = batch_and_len(x, self.config.hidden_size)?;
        let fused = fast::fused_decode(x, l, padding_mask.is_some(), self.training);
        match cache {
            Some(cache) if fused && cache.has_decode_attention() => self.decode_fused(x, b, cache, residual),
            cache => self.forward_unfused(x, b, l, cache, padding_mask, residual),
        }
    }

    fn qk_norm(&mut self, q: Array, k: Array, position: QkNormPosition) -> Result<(Array, Array)> {
        let applies = self.config.qk_norm.is_some_and(|c| c.position == position);
        match (&mut self.q_norm, &mut self.k_norm) {
            (Some(qn), Some(kn)) if applies => Ok((qn.forward(&q)?, kn.forward(&k)?)),
            _ => Ok((q, k)),
        }
    }
}

impl<'a> Module<LayerInput<'a>> for Attention {
    type Output = Array;
    type Error = Error;

    /// # Shapes
    /// `x [B, L, hidden_size] -> [B, L, hidden_size]`
    fn forward(&mut self, input: LayerInput<'a>) -> Result<Array> {
        self.forward_residual(input, None)
    }

    fn training_mode(&mut self, mode: bool) {
        self.training = mode;
        for projection in [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.o_proj] {
            projection.training_mode(mode);
        }
    }
}

impl Attention {
    /// The attention as plain MLX ops (prompts, training, batches, other devices).
    fn forward_unfused(
        &mut self,
        x: &Array,
        b: i32,
        l: i32,
        cache: Option<&mut LayerCache>,
        padding_mask: Option<&Array>,
        residual: Option<&Array>,
    ) -> Result<Array> {
        let (heads, kv_heads, d) =
            (self.config.num_heads as i32, self.config.num_kv_heads as i32, self.config.head_dim() as i32);
        // [B, L, H * D] -> [B, H, L, D]; for one token that is a plain reshape (one graph
        // node instead of two: decoding is bound by nodes, not arithmetic).
        let split = |t: Array, h: i32| {
            if l == 1 {
                t.reshape(&[b, h, 1, d])
            } else {
                t.reshape(&[b, l, h, d])?.transpose_axes(&[0, 2, 1, 3])
            }
        };
        let q = split(self.q_proj.forward(x)?, heads)?;
        let k = split(self.k_proj.forward(x)?, kv_heads)?;
        let v = split(self.v_proj.forward(x)?, kv_heads)?;

        let (q, k) = self.qk_norm(q, k, QkNormPosition::BeforeRope)?;
        let out = self.attend(q, k, v, cache, padding_mask)?; // [B, L, H * D]
        self.project(&out, residual)
    }
}

/// Attention whose scores are soft-capped before masking, as Gemma 2 computes it: the
/// queries scaled, `scores = cap * tanh(q k^T / cap)`, masked, softmax in f32.
///
/// # Shapes
/// `q [B, H, L, D]`, `k`/`v [B, H_kv, K, D]` -> `[B, H, L, D]`
fn softcapped_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    cap: f32,
    mask: &AttentionMask,
) -> Result<Array> {
    let (b, heads, l, d) = (q.dim(0), q.dim(1), q.dim(2), q.dim(3));
    let (kv_heads, len) = (k.dim(1), k.dim(2));
    let repeats = heads / kv_heads.max(1);
    let q =
        q.multiply(Array::from_f32(scale).as_dtype(q.dtype())?)?.reshape(&[b, kv_heads, repeats, l, d])?;
    let (k, v) = (k.expand_dims(2)?, v.expand_dims(2)?); // [B, H_kv, 1, K, D]
    let scores = q.matmul(&k.swap_axes(-1, -2)?)?; // [B, H_kv, R, L, K]
    let scores = softcap(&scores, cap)?;
    let keep = match mask {
        AttentionMask::None => None,
        AttentionMask::Causal => Some(causal_mask(
            MaskSpan { query_start: len - l, query_len: l, key_start: 0, key_len: len },
            None,
        )?),
        AttentionMask::Explicit(m) => Some(m.clone()),
    };
    let scores = match keep {
        // [L, K] or [B, 1, L, K] -> broadcast over the repeat axis.
        Some(m) => {
            let m = if m.ndim() == 4 { m.expand_dims(2)? } else { m };
            let floor = Array::from_f32(f32::MIN).as_dtype(scores.dtype())?;
            mlx_rs::ops::select(&m, &scores, &floor)?
        }
        None => scores,
    };
    let probs = mlx_rs::ops::softmax_axis(&scores.as_dtype(mlx_rs::Dtype::Float32)?, -1, None)?
        .as_dtype(v.dtype())?;
    Ok(probs.matmul(&v)?.reshape(&[b, heads, l, d])?)
}

/// `[B, H, L, D]` heads side by side: `[B, L, H * D]`.
fn merge_heads(out: &Array, l: i32) -> Result<Array> {
    let (b, heads, d) = (out.dim(0), out.dim(1), out.dim(3));
    Ok(if l == 1 {
        out.reshape(&[b, 1, heads * d])?
    } else {
        out.transpose_axes(&[0, 2, 1, 3])?.reshape(&[b, l, heads * d])?
    })
}

/// `cap * tanh(x / cap)`: Gemma 2's soft-capping of attention scores and final logits.
///
/// # Errors
/// When MLX fails.
pub fn softcap(x: &Array, cap: f32) -> Result<Array> {
    let cap = Array::from_f32(cap).as_dtype(x.dtype())?;
    Ok(mlx_rs::ops::tanh(&x.divide(&cap)?)?.multiply(&cap)?)
}

/// `(B, L)` of a `[B, L, width]` input, or a shape error.
pub fn batch_and_len(x: &Array, width: usize) -> Result<(i32, i32)> {
    match x.shape() {
        [b, l, w] if *w as usize == width => Ok((*b, *l)),
        other => Err(Error::Shape {
            name: "x".into(),
            expected: vec![-1, -1, width as i32],
            actual: other.to_vec(),
        }),
    }
}

crate::visit_fields!(Attention { q_proj, k_proj, v_proj, o_proj });

#[cfg(test)]
mod tests {
    use mlx_rs::module::ModuleParameters;
    use mlx_rs::ops;
    use mlx_rs::ops::indexing::{Ellipsis, TryIndexOp};

    use super::*;
    use crate::cache::{KvCache, RotatingKvCache};
    use crate::testing::{array, fill_params, max_diff};

    fn layer(config: AttentionConfig) -> Attention {
        let mut attn = Attention::new(config).unwrap();
        fill_params(&mut attn, 0.3);
        attn
    }

    fn gqa() -> AttentionConfig {
        AttentionConfig { head_dim: Some(6), ..AttentionConfig::new(16, 4, 2) }
    }

    fn decode_step_by_step(attn: &mut Attention, x: &Array, mut cache: LayerCache, chunks: &[i32]) -> Array {
        let mut outs = Vec::new();
        let mut start = 0;
        for &len in chunks {
            let part = x.try_index((.., start..start + len, ..)).unwrap();
            outs.push(
                attn.forward(LayerInput { x: &part, cache: Some(&mut cache), padding_mask: None }).unwrap(),
            );
            start += len;
        }
        ops::concatenate(&outs, 1).unwrap()
    }

    #[test]
    fn shapes_and_parameter_names_follow_the_checkpoints() {
        let attn = Attention::new(AttentionConfig {
            qk_norm: Some(QkNormConfig { norm: NormConfig::rms(1e-6), position: QkNormPosition::BeforeRope }),
            qkv_bias: true,
            ..gqa()
        })
        .unwrap();
        let params = attn.parameters().flatten();
        let shape = |k: &str| params.get(k).map(|a| a.shape().to_vec()).unwrap();
        assert_eq!(shape("q_proj.weight"), [24, 16]);
        assert_eq!(shape("k_proj.weight"), [12, 16]);
        assert_eq!(shape("k_proj.bias"), [12]);
        assert_eq!(shape("o_proj.weight"), [16, 24]);
        assert_eq!(shape("q_norm.weight"), [6]);
        assert!(!params.contains_key("o_proj.bias"));
        assert_eq!(params.len(), 9);
    }

    #[test]
    fn kv_cached_decoding_equals_the_full_forward() {
        let x = array(&[2, 9, 16], 0.1);
        let mut attn = layer(gqa());
        let full = attn.forward(LayerInput::new(&x)).unwrap();
        assert_eq!(full.shape(), &[2, 9, 16]);
        for chunks in [&[9][..], &[1; 9][..], &[4, 1, 1, 3][..]] {
            let stepped = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), chunks);
            assert!(max_diff(&full, &stepped) < 1e-5, "{chunks:?}: {}", max_diff(&full, &stepped));
        }
    }

    #[test]
    fn sliding_window_with_a_rotating_cache_equals_the_full_forward() {
        let x = array(&[1, 11, 16], 0.7);
        let mut attn = layer(AttentionConfig { sliding_window: Some(4), ..gqa() });
        let full = attn.forward(LayerInput::new(&x)).unwrap();
        // The window must matter: without it the output differs.
        let mut unwindowed = layer(gqa());
        assert!(max_diff(&full, &unwindowed.forward(LayerInput::new(&x)).unwrap()) > 1e-3);
        for chunks in [&[1; 11][..], &[3, 1, 1, 5, 1][..], &[6, 5][..]] {
            let cache = LayerCache::Rotating(RotatingKvCache::new(4).unwrap());
            let stepped = decode_step_by_step(&mut attn, &x, cache, chunks);
            assert!(max_diff(&full, &stepped) < 1e-5, "{chunks:?}");
            let stepped = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), chunks);
            assert!(max_diff(&full, &stepped) < 1e-5, "kv {chunks:?}");
        }
    }

    #[test]
    fn fused_decoding_of_quantized_projections_equals_the_plain_graph() {
        use crate::quant::{Activations, QuantConfig};
        let config = AttentionConfig { head_dim: Some(16), ..AttentionConfig::new(64, 4, 2) };
        for (window, softcap) in [(None, None), (Some(3), None), (None, Some(2.0))] {
            let mut attn = layer(AttentionConfig { sliding_window: window, softcap, ..config.clone() });
            for projection in [&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj, &mut attn.o_proj] {
                projection
                    .quantize(QuantConfig {
                        group_size: 32,
                        bits: 4,
                        activations: Activations::Exact,
                        blocks: None,
                    })
                    .unwrap();
            }
            let x = array(&[2, 7, 64], 0.3);
            let full = attn.forward(LayerInput::new(&x)).unwrap();
            let fused = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), &[3, 1, 1, 1, 1]);
            // Training mode takes the plain graph (same arithmetic: no dropout here).
            attn.training_mode(true);
            let plain = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), &[3, 1, 1, 1, 1]);
            attn.training_mode(false);
            assert!(max_diff(&fused, &plain) < 1e-5, "{window:?} {softcap:?}: {}", max_diff(&fused, &plain));
            assert!(max_diff(&full, &fused) < 1e-4, "{window:?} {softcap:?}: {}", max_diff(&full, &fused));
        }
    }

    #[test]
    fn fused_decoding_over_a_quantized_cache_equals_the_plain_graph() {
        use crate::quantized_cache::{KvQuantization, QuantizedKvCache};
        let config = AttentionConfig { head_dim: Some(32), ..AttentionConfig::new(64, 4, 2) };
        for (bits, window, softcap) in
            [(8, None, None), (4, Some(3), None), (4, None, Some(2.0)), (6, None, None)]
        {
            let mut attn = layer(AttentionConfig { sliding_window: window, softcap, ..config.clone() });
            let how = KvQuantization { bits, group_size: 32, start: 0 };
            let cache = || LayerCache::Quantized(QuantizedKvCache::new(how).unwrap());
            assert!(cache().has_decode_attention());
            let x = array(&[2, 7, 64], 0.3);
            let full = attn.forward(LayerInput::new(&x)).unwrap();
            // Decoded tokens on lamina's quantized decode attention (in place; then on a
            // clone, which must not touch the original).
            let fused = decode_step_by_step(&mut attn, &x, cache(), &[3, 1, 1, 1, 1]);
            attn.training_mode(true);
            let plain = decode_step_by_step(&mut attn, &x, cache(), &[3, 1, 1, 1, 1]);
            attn.training_mode(false);
            let diff = max_diff(&fused, &plain);
            assert!(diff < 1e-5, "{bits} bits {window:?} {softcap:?}: {diff}");
            // Keys and values quantized: near the full-precision output, not equal to it.
            let error = max_diff(&full, &fused);
            let top = full.abs().unwrap().max(None).unwrap().item_exact::<f32>();
            let bound = if bits == 8 { 0.05 } else { 0.6 } * top;
            assert!(error > 0.0 && error < bound, "{bits} bits: {error} (outputs up to {top})");
            let prompt = x.try_index((.., ..4, ..)).unwrap();
            let (token, other) = (x.try_index((.., 4..5, ..)).unwrap(), x.try_index((.., 5..6, ..)).unwrap());
            let mut step = |cache: &mut LayerCache, x: &Array| {
                attn.forward(LayerInput { x, cache: Some(cache), padding_mask: None }).unwrap()
            };
            let (mut original, mut fresh) = (cache(), cache());
            step(&mut original, &prompt);
            step(&mut fresh, &prompt);
            let mut copy = original.clone();
            step(&mut copy, &token);
            step(&mut original, &other); // must not write where the copy reads
            let copied = step(&mut copy, &other);
            step(&mut fresh, &token);
            assert_eq!(
                max_diff(&copied, &step(&mut fresh, &other)),
                0.0,
                "{bits} bits: a clone shared writes"
            );
        }
    }

    #[test]
    fn a_quantized_window_attends_as_the_quantized_full_cache_with_the_window_mask() {
        use crate::quantized_cache::{KvQuantization, QuantizedKvCache};
        let config =
            AttentionConfig { head_dim: Some(32), sliding_window: Some(4), ..AttentionConfig::new(64, 4, 2) };
        let mut attn = layer(config);
        let how = KvQuantization { bits: 8, group_size: 32, start: 0 };
        let x = array(&[1, 14, 64], 0.4);
        let window = || {
            let empty = RotatingKvCache::new(4).unwrap();
            LayerCache::Quantized(QuantizedKvCache::from_rotating(&empty, how).unwrap())
        };
        let full = || LayerCache::Quantized(QuantizedKvCache::new(how).unwrap());
        // Chunks longer than the window, single tokens across the wrap-around, in place and
        // through the plain graph.
        for chunks in [&[1; 14][..], &[3, 1, 1, 5, 1, 1, 2][..], &[6, 1, 7][..]] {
            for training in [false, true] {
                attn.training_mode(training);
                let windowed = decode_step_by_step(&mut attn, &x, window(), chunks);
                let reference = decode_step_by_step(&mut attn, &x, full(), chunks);
                let diff = max_diff(&windowed, &reference);
                assert!(diff < 1e-5, "{chunks:?} (training {training}): {diff}");
            }
        }
        attn.training_mode(false);
        let mut cache = window();
        let prompt = x.try_index((.., ..6, ..)).unwrap();
        attn.forward(LayerInput { x: &prompt, cache: Some(&mut cache), padding_mask: None }).unwrap();
        assert!(cache.has_decode_attention());
        assert_eq!(
            cache.nbytes(),
            window().nbytes() + {
                // 4 slots of keys and values: 32 bytes of 8-bit data and a scale and a bias per head.
                2 * 2 * 4 * (32 + 8)
            }
        );
        assert!(!cache.can_trim_to(5), "wrapped around");
    }

    #[test]
    fn fused_rotation_and_residual_equal_the_plain_graph() {
        use crate::quant::{Activations, QuantConfig};
        use crate::rope::RopeScaling;
        let base = AttentionConfig { head_dim: Some(16), ..AttentionConfig::new(64, 4, 2) };
        let longrope = RopeScaling::Longrope {
            long_factor: vec![1.0, 1.5, 2.0, 4.0, 6.0, 8.0, 9.0, 12.0],
            short_factor: vec![],
            original_max_position_embeddings: 16,
            max_position_embeddings: 64,
        };
        let ropes = [
            Some(RopeConfig { traditional: true, ..RopeConfig::new(16, 500.0) }),
            Some(RopeConfig::new(8, 10_000.0)), // partial rotation
            Some(RopeConfig { scaling: longrope, ..RopeConfig::new(16, 10_000.0) }), // magnitude first
            None,
        ];
        for rope in ropes {
            for position in [None, Some(QkNormPosition::BeforeRope), Some(QkNormPosition::AfterRope)] {
                let qk_norm = position.map(|position| QkNormConfig { norm: NormConfig::rms(1e-6), position });
                let mut attn = layer(AttentionConfig { rope: rope.clone(), qk_norm, ..base.clone() });
                for projection in [&mut attn.q_proj, &mut attn.k_proj, &mut attn.v_proj, &mut attn.o_proj] {
                    projection
                        .quantize(QuantConfig {
                            group_size: 32,
                            bits: 4,
                            activations: Activations::Exact,
                            blocks: None,
                        })
                        .unwrap();
                }
                let x = array(&[2, 6, 64], 0.3);
                let full = attn.forward(LayerInput::new(&x)).unwrap();
                let fused = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), &[3, 1, 1, 1]);
                let diff = max_diff(&full, &fused);
                assert!(diff < 1e-4, "{rope:?} {position:?}: {diff}");
                // The residual rides along: residual + attention, decoded or not.
                let residual = array(&[2, 1, 64], 0.8);
                let mut cache = LayerCache::Kv(KvCache::new());
                let prompt = x.try_index((.., ..5, ..)).unwrap();
                attn.forward(LayerInput { x: &prompt, cache: Some(&mut cache), padding_mask: None }).unwrap();
                let last = x.try_index((.., 5.., ..)).unwrap();
                let mut copy = cache.clone();
                let added = attn
                    .forward_add(
                        LayerInput { x: &last, cache: Some(&mut cache), padding_mask: None },
                        &residual,
                    )
                    .unwrap();
                let plain = attn
                    .forward(LayerInput { x: &last, cache: Some(&mut copy), padding_mask: None })
                    .unwrap();
                assert!(max_diff(&added, &residual.add(&plain).unwrap()) < 1e-6);
            }
        }
    }

    #[test]
    fn half_precision_prompts_attend_like_f32() {
        use mlx_rs::module::ModuleParameters;
        let mut attn = layer(AttentionConfig { sliding_window: Some(4), ..gqa() });
        let x = array(&[2, 9, 16], 0.3);
        let reference = attn.forward(LayerInput::new(&x)).unwrap();
        for dtype in [mlx_rs::Dtype::Bfloat16, mlx_rs::Dtype::Float16] {
            let mut half = attn.clone();
            for (_, p) in half.parameters_mut().flatten() {
                *p = p.as_dtype(dtype).unwrap();
            }
            let out = half.forward(LayerInput::new(&x.as_dtype(dtype).unwrap())).unwrap();
            assert_eq!(out.dtype(), dtype);
            let diff = max_diff(&out.as_dtype(mlx_rs::Dtype::Float32).unwrap(), &reference);
            assert!(diff < 0.05, "{dtype:?}: {diff}");
        }
    }

    #[test]
    fn qk_norm_and_nope_variants_decode_consistently() {
        for (position, rope) in [
            (QkNormPosition::BeforeRope, true),
            (QkNormPosition::AfterRope, true),
            (QkNormPosition::AfterRope, false),
        ] {
            let config = AttentionConfig {
                qk_norm: Some(QkNormConfig { norm: NormConfig::rms_weightless(1e-6), position }),
                rope: if rope { gqa().rope } else { None },
                ..gqa()
            };
            let mut attn = layer(config);
            let x = array(&[1, 5, 16], 0.2);
            let full = attn.forward(LayerInput::new(&x)).unwrap();
            let stepped = decode_step_by_step(&mut attn, &x, LayerCache::Kv(KvCache::new()), &[2, 1, 2]);
            assert!(max_diff(&full, &stepped) < 1e-5);
        }
    }

    #[test]
    fn padding_hides_padded_keys() {
        // Row 0 is a real prefix of 3 tokens followed by 2 pads: its first 3 outputs must
        // equal those of the 3 tokens alone.
        let x = array(&[1, 5, 16], 0.4);
        let mut attn = layer(gqa());
        let padding = Array::from_slice(&[1i32, 1, 1, 0, 0], &[1, 5]);
        let padded = attn.forward(LayerInput { x: &x, cache: None, padding_mask: Some(&padding) }).unwrap();
        let prefix = x.try_index((.., ..3, ..)).unwrap();
        let alone = attn.forward(LayerInput::new(&prefix)).unwrap();
        assert!(max_diff(&padded.try_index((.., ..3, ..)).unwrap(), &alone) < 1e-5);
        // Left padding: the real tokens at the end see only themselves.
        let left = Array::from_slice(&[0i32, 0, 1, 1, 1], &[1, 5]);
        let out = attn.forward(LayerInput { x: &x, cache: None, padding_mask: Some(&left) }).unwrap();
        let suffix = x.try_index((.., 2.., ..)).unwrap();
        let mut nope = layer(AttentionConfig { rope: None, ..gqa() });
        let out_nope = nope.forward(LayerInput { x: &x, cache: None, padding_mask: Some(&left) }).unwrap();
        let alone = nope.forward(LayerInput::new(&suffix)).unwrap();
        assert!(max_diff(&out_nope.try_index((Ellipsis, 2.., ..)).unwrap(), &alone) < 1e-5);
        assert_eq!(out.shape(), &[1, 5, 16]);
    }

    #[test]
    fn wrong_inputs_are_errors_not_panics() {
        let mut attn = layer(gqa());
        let bad = array(&[1, 3, 15], 0.0);
        assert!(matches!(attn.forward(LayerInput::new(&bad)), Err(Error::Shape { .. })));
        let x = array(&[1, 3, 16], 0.0);
        let mut ssm = LayerCache::Ssm(crate::cache::SsmState::new());
        let err = attn.forward(LayerInput { x: &x, cache: Some(&mut ssm), padding_mask: None }).unwrap_err();
        assert!(err.to_string().contains("SSM state"), "{err}");
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let field = |c: AttentionConfig| match Attention::new(c).unwrap_err() {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field(AttentionConfig::new(16, 4, 3)), "num_kv_heads");
        assert_eq!(field(AttentionConfig { rope: None, ..AttentionConfig::new(18, 4, 2) }), "num_heads");
        assert_eq!(field(AttentionConfig::new(16, 0, 1)), "num_heads");
        assert_eq!(field(AttentionConfig { sliding_window: Some(0), ..gqa() }), "sliding_window");
        assert_eq!(field(AttentionConfig { rope: Some(RopeConfig::new(8, 1e4)), ..gqa() }), "rope.dims");
    }
}
