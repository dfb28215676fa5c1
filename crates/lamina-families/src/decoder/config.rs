//! `DecoderConfig`: the `config.json` of the decoder-only transformers lamina reads —
//! Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3, SmolLM3 — with transformers'
//! defaults for omitted keys. The family's [`DecoderSpec`] row says what each adds.

use lamina_backbones::TransformerBackboneConfig;
use lamina_blocks::{NormPlacement, TransformerBlockConfig};
use lamina_components::{
    AttentionConfig, FeedForwardConfig, NormConfig, QkNormConfig, QkNormPosition, RopeConfig, RopeScaling,
};
use lamina_core::{
    Activation, Config, DType, Error, FfnKind, Result, SizeEstimate, count, ensure_dims, ensure_divides,
    ensure_product_fits,
};
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::spec::{DecoderSpec, EmbedScale, FamilyKey, LLAMA, WindowLayers};
use crate::family::ModelType;
use crate::hf::{HfRope, RopeSource, TokenIds, rope_from};

/// What a layer of `layer_types` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Attends to every earlier position.
    FullAttention,
    /// Attends to the last `sliding_window` positions.
    SlidingAttention,
}

/// A decoder-only transformer config, as `config.json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct DecoderConfig {
    /// Which family's keys these are.
    #[serde(default)]
    pub model_type: ModelType,
    /// Vocabulary size.
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// Model width.
    #[validate(range(min = 1))]
    pub hidden_size: usize,
    /// Feed-forward width.
    #[validate(range(min = 1))]
    pub intermediate_size: usize,
    /// Number of blocks.
    #[validate(range(min = 1))]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[validate(range(min = 1))]
    pub num_attention_heads: usize,
    /// Key/value heads; `num_attention_heads` when absent.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Features per head; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon (the family's default when absent).
    #[serde(default)]
    pub rms_norm_eps: Option<f32>,
    /// RoPE base (older configs).
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// RoPE scaling (older configs).
    #[serde(default)]
    pub rope_scaling: Option<HfRope>,
    /// RoPE base and scaling (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<HfRope>,
    /// Interleaved RoPE (an mlx-lm key; Hugging Face checkpoints rotate halves).
    #[serde(default)]
    pub rope_traditional: bool,
    /// The fraction of each head's features that RoPE rotates (Phi-3).
    #[serde(default)]
    pub partial_rotary_factor: Option<f32>,
    /// The RoPE base of sliding-window layers (Gemma 3).
    #[serde(default)]
    pub rope_local_base_freq: Option<f32>,
    /// Biases on the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// The MLP's activation.
    #[serde(default)]
    pub hidden_act: Option<Activation>,
    /// The MLP's activation, Gemma's key (wins over `hidden_act`).
    #[serde(default)]
    pub hidden_activation: Option<Activation>,
    /// Share the input embedding with the LM head (the family's default when absent).
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Longest context the model was trained for.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Pretraining context before LongRoPE (Phi-3).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Sliding-window span.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Whether Qwen's sliding window is on.
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Qwen: layers below this attend fully.
    #[serde(default)]
    pub max_window_layers: Option<usize>,
    /// Gemma 3: every this-many-th layer is global.
    #[serde(default)]
    pub sliding_window_pattern: Option<usize>,
    /// Each layer's attention kind, when the config lists them (overrides the family's
    /// pattern).
    #[serde(default)]
    pub layer_types: Option<Vec<LayerType>>,
    /// Gemma: the score scale is `query_pre_attn_scalar^-0.5`.
    #[serde(default)]
    pub query_pre_attn_scalar: Option<f32>,
    /// Gemma 2: soft-capping of attention scores.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f32>,
    /// Gemma 2: soft-capping of the final logits.
    #[serde(default)]
    pub final_logit_softcapping: Option<f32>,
    /// SmolLM3: per layer, 1 when the layer uses RoPE.
    #[serde(default)]
    pub no_rope_layers: Option<Vec<u8>>,
    /// SmolLM3: every this-many-th layer has no RoPE (when `no_rope_layers` is absent).
    #[serde(default)]
    pub no_rope_layer_interval: Option<usize>,
    /// Beginning-of-sequence id(s).
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// The dtype the weights were saved in.
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<DType>,
}

impl DecoderConfig {
    /// The family row of this config's `model_type`.
    pub fn spec(&self) -> DecoderSpec {
        crate::registry::decoder_spec(self.model_type).unwrap_or(LLAMA)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Features per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size.checked_div(self.num_attention_heads).unwrap_or(0))
    }

    /// RMSNorm epsilon.
    pub fn eps(&self) -> f32 {
        self.rms_norm_eps.unwrap_or(self.spec().eps_default)
    }

    /// Whether the LM head is tied.
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings.unwrap_or(self.spec().tied_default)
    }

    /// The MLP's activation.
    pub fn activation(&self) -> Activation {
        self.hidden_activation.or(self.hidden_act).unwrap_or(self.spec().activation)
    }

    /// The RoPE base and scaling, from whichever form the config uses.
    ///
    /// # Errors
    /// For a scaling without its factor(s).
    pub fn rope(&self) -> Result<(f32, RopeScaling)> {
        rope_from(RopeSource {
            config: Self::NAME,
            rope_theta: self.rope_theta,
            rope_scaling: self.rope_scaling.as_ref(),
            rope_parameters: self.rope_parameters.as_ref(),
            default_theta: self.spec().theta_default,
            max_position_embeddings: self.max_position_embeddings,
            original_max_position_embeddings: self.original_max_position_embeddings,
        })
    }

    /// The sliding window of layer `i`, if it has one.
    pub fn window(&self, i: usize) -> Option<usize> {
        let window = self.sliding_window?;
        let sliding = match (&self.layer_types, self.spec().windows) {
            (_, WindowLayers::Never) => false,
            (Some(types), _) => types.get(i) == Some(&LayerType::SlidingAttention),
            (None, WindowLayers::All) => true,
            (None, WindowLayers::FromMaxWindowLayers) => {
                self.use_sliding_window && i >= self.max_window_layers.unwrap_or(0)
            }
            (None, WindowLayers::Alternating) => i % 2 == 0,
            (None, WindowLayers::Pattern) => {
                let pattern = self.sliding_window_pattern.unwrap_or(6).max(1);
                (i + 1) % pattern != 0
            }
        };
        sliding.then_some(window)
    }

    /// Whether layer `i` rotates positions (SmolLM3 leaves every fourth without).
    pub fn uses_rope(&self, i: usize) -> bool {
        if !self.spec().nope_layers {
            return true;
        }
        match &self.no_rope_layers {
            Some(flags) => flags.get(i).is_none_or(|&f| f != 0),
            None => (i + 1) % self.no_rope_layer_interval.unwrap_or(4).max(1) != 0,
        }
    }

    /// Attention and final-logit soft-capping caps.
    pub fn softcaps(&self) -> (Option<f32>, Option<f32>) {
        let spec = self.spec();
        if !spec.reads(FamilyKey::LogitSoftcapping) {
            return (None, None);
        }
        let defaults = spec.softcap_defaults;
        (
            self.attn_logit_softcapping.or(defaults.map(|d| d.0)),
            self.final_logit_softcapping.or(defaults.map(|d| d.1)),
        )
    }

    /// The block of layer `i`.
    ///
    /// # Errors
    /// For an inconsistent RoPE setting.
    pub fn block(&self, i: usize) -> Result<TransformerBlockConfig> {
        let spec = self.spec();
        let head_dim = self.head_dim();
        let window = self.window(i);
        let (theta, scaling) = self.rope()?;
        let rope_dims = match self.partial_rotary_factor {
            Some(f) => ((head_dim as f32 * f) as usize) & !1,
            None => head_dim,
        };
        let local_base = self.rope_local_base_freq.filter(|_| spec.reads(FamilyKey::LocalRopeBase));
        let rope = self.uses_rope(i).then(|| match (window, local_base) {
            // Gemma 3's local layers: their own base, never scaled.
            (Some(_), Some(local)) => RopeConfig::new(rope_dims as i32, local),
            _ => RopeConfig {
                dims: rope_dims as i32,
                base: theta,
                traditional: self.rope_traditional,
                scaling: scaling.clone(),
            },
        });
        let norm = if spec.gemma_norms {
            NormConfig::rms_unit_offset(self.eps())
        } else {
            NormConfig::rms(self.eps())
        };
        let attention = AttentionConfig {
            head_dim: Some(head_dim),
            qkv_bias: spec.qkv_bias || self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm: spec.qk_norm.then_some(QkNormConfig { norm, position: QkNormPosition::BeforeRope }),
            rope,
            sliding_window: window,
            scale: self
                .query_pre_attn_scalar
                .filter(|_| spec.reads(FamilyKey::QueryPreAttnScalar))
                .map(|s| s.powf(-0.5)),
            softcap: self.softcaps().0,
            ..AttentionConfig::new(self.hidden_size, self.num_attention_heads, self.kv_heads())
        };
        Ok(TransformerBlockConfig {
            attention,
            ffn: FeedForwardConfig {
                hidden_size: self.hidden_size,
                intermediate_size: self.intermediate_size,
                kind: FfnKind::Gated,
                activation: self.activation(),
                bias: self.mlp_bias,
            },
            norm,
            norm_placement: if spec.gemma_norms { NormPlacement::Sandwich } else { NormPlacement::Pre },
            dropout: 0.0,
        })
    }

    /// The factor on the token embeddings.
    pub fn embedding_scale(&self) -> Option<f32> {
        let root = (self.hidden_size as f32).sqrt();
        match self.spec().embed_scale {
            EmbedScale::None => None,
            EmbedScale::SqrtHidden => Some(root),
            EmbedScale::SqrtHiddenBf16 => Some(round_to_bf16(root)),
        }
    }

    /// The backbone this config describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an inconsistent config.
    pub fn backbone(&self) -> Result<TransformerBackboneConfig> {
        self.validated()?;
        let layers = (0..self.num_hidden_layers).map(|i| self.block(i)).collect::<Result<Vec<_>>>()?;
        let final_norm = layers.first().map_or(NormConfig::rms(self.eps()), |b| b.norm);
        Ok(TransformerBackboneConfig {
            vocab_size: self.vocab_size,
            layers,
            final_norm,
            layer_repeats: 1,
            gradient_checkpointing: false,
            embedding_scale: self.embedding_scale(),
        })
    }

    /// Parameters and blocks, counted from the config alone (every block of a decoder has
    /// the same parameters, so the first stands for all).
    pub fn estimate(&self) -> SizeEstimate {
        let block = self.block(0).map_or(0, |b| b.num_parameters());
        let embedding = count(&[&[self.vocab_size, self.hidden_size]]);
        let head = if self.tied() { 0 } else { embedding };
        let parameters =
            count(&[&[embedding], &[head], &[self.num_hidden_layers, block], &[self.hidden_size]]);
        SizeEstimate { parameters: parameters as u64, blocks: self.num_hidden_layers as u64 }
    }

    /// Parameters of the model this config builds, counted from its shapes without
    /// allocating anything.
    ///
    /// # Errors
    /// For an invalid config.
    pub fn num_parameters(&self) -> Result<usize> {
        crate::family::AnyConfig::num_parameters(self)
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32.
fn round_to_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) & 0xffff_0000;
    f32::from_bits(rounded)
}

impl Config for DecoderConfig {
    const NAME: &'static str = "DecoderConfig";

    fn check(&self) -> Result<()> {
        if crate::registry::decoder_spec(self.model_type).is_none() {
            return Err(Error::invalid(
                Self::NAME,
                "model_type",
                format!("`{}` is not a decoder family", self.model_type),
            ));
        }
        ensure_dims(
            Self::NAME,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("num_key_value_heads", self.kv_heads()),
                ("head_dim", self.head_dim()),
                ("sliding_window", self.sliding_window.unwrap_or(0)),
                ("max_position_embeddings", self.max_position_embeddings.unwrap_or(0)),
            ],
        )?;
        lamina_core::ensure_layers(Self::NAME, "num_hidden_layers", self.num_hidden_layers)?;
        ensure_product_fits(
            Self::NAME,
            "num_attention_heads * head_dim",
            &[self.num_attention_heads, self.head_dim()],
        )?;
        ensure_divides(
            Self::NAME,
            "num_key_value_heads",
            self.kv_heads(),
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        if self.head_dim.is_none() {
            ensure_divides(
                Self::NAME,
                "num_attention_heads",
                self.num_attention_heads,
                "hidden_size",
                self.hidden_size,
            )?;
        }
        if self.head_dim() % 2 != 0 {
            return Err(Error::invalid(
                Self::NAME,
                "head_dim",
                format!("must be even for RoPE, got {}", self.head_dim()),
            ));
        }
        if self.sliding_window == Some(0) {
            return Err(Error::invalid(Self::NAME, "sliding_window", "must be positive"));
        }
        if let Some(types) = &self.layer_types {
            if types.len() != self.num_hidden_layers {
                return Err(Error::invalid(
                    Self::NAME,
                    "layer_types",
                    format!("has {} entries for {} layers", types.len(), self.num_hidden_layers),
                ));
            }
        }
        if let Some(flags) = &self.no_rope_layers {
            if flags.len() != self.num_hidden_layers {
                return Err(Error::invalid(
                    Self::NAME,
                    "no_rope_layers",
                    format!("has {} entries for {} layers", flags.len(), self.num_hidden_layers),
                ));
            }
        }
        if self.partial_rotary_factor.is_some_and(|f| !(f > 0.0 && f <= 1.0)) {
            return Err(Error::invalid(Self::NAME, "partial_rotary_factor", "must be in (0, 1]"));
        }
        for (field, value) in [
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
            ("rope_local_base_freq", self.rope_local_base_freq),
        ] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                return Err(Error::invalid(Self::NAME, field, "must be a positive number"));
            }
        }
        // The first block stands for all in the estimate; check its RoPE and shapes now.
        self.block(0)?.validated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_the_reference() {
        // sqrt(640) = 25.2982..., bf16 keeps 8 significant bits: 25.25.
        assert_eq!(round_to_bf16(640f32.sqrt()), 25.25);
        assert_eq!(round_to_bf16(1.0), 1.0);
        assert_eq!(round_to_bf16(1152f32.sqrt()), 34.0);
    }
}
