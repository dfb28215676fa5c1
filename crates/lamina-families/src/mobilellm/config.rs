//! `MobileLlmConfig`, the config of this field's MobileLLM API, and the two checkpoint
//! formats that convert into it: MobileLLM-R1 (`model_type: "llama4_text"`) and classic
//! MobileLLM (`model_type: "mobilellm"`).

use lamina_backbones::TransformerBackboneConfig;
use lamina_blocks::{NormPlacement, TransformerBlockConfig};
use lamina_components::{
    AttentionConfig, FeedForwardConfig, NormConfig, QkNormConfig, QkNormPosition, RopeConfig, RopeScaling,
};
use lamina_core::{Config, Error, Result, SizeEstimate, count, ensure_dims, ensure_divides};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};
use validator::Validate;

use crate::decoder::LlamaConfig;
use crate::hf::{HfRope, TokenIds, ids, rope_settings};

/// Which MobileLLM generation a config describes: it fixes the RoPE layout and the
/// feed-forward's checkpoint name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum MobileLlmVariant {
    /// MobileLLM-R1 (Llama 4 text): interleaved RoPE, weightless QK-norm, `feed_forward.*`.
    #[default]
    R1,
    /// The original MobileLLM (Llama-shaped): split-halves RoPE, `mlp.*`, layer sharing.
    Classic,
}

/// The MobileLLM architecture, with the MobileLLM API's field names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct MobileLlmConfig {
    /// Vocabulary size.
    #[serde(default = "default_vocab")]
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// Transformer blocks.
    #[validate(range(min = 1))]
    pub num_layers: usize,
    /// Query heads.
    #[validate(range(min = 1))]
    pub num_heads: usize,
    /// Key/value heads (GQA).
    #[validate(range(min = 1))]
    pub num_kv_heads: usize,
    /// Model width.
    #[validate(range(min = 1))]
    pub embed_dim: usize,
    /// Feed-forward width.
    #[validate(range(min = 1))]
    pub hidden_dim: usize,
    /// Longest sequence.
    #[serde(default = "default_seq")]
    #[validate(range(min = 1))]
    pub max_seq_len: usize,
    /// RoPE base.
    #[serde(default = "default_rope_base")]
    #[validate(range(exclusive_min = 0.0))]
    pub rope_base: f32,
    /// Weightless RMS QK-norm.
    #[serde(default = "yes")]
    pub use_qk_norm: bool,
    /// Share the input embedding with the LM head.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Residual dropout while training.
    #[serde(default)]
    #[validate(range(min = 0.0, exclusive_max = 1.0))]
    pub dropout: f32,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    #[validate(range(min = 0.0))]
    pub norm_eps: f32,
    /// Features per head; `embed_dim / num_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Run each block twice in a row (classic MobileLLM's layer sharing).
    #[serde(default)]
    pub layer_sharing: bool,
    /// Per layer, whether it uses RoPE (all do when absent).
    #[serde(default)]
    pub rope_layers: Option<Vec<bool>>,
    /// RoPE frequency scaling.
    #[serde(default)]
    pub rope_scaling: RopeScaling,
    /// R1 or classic.
    #[serde(default)]
    pub variant: MobileLlmVariant,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids.
    #[serde(default)]
    pub eos_token_ids: Vec<u32>,
}

fn default_vocab() -> usize {
    128_256
}
fn default_seq() -> usize {
    32_768
}
fn default_rope_base() -> f32 {
    500_000.0
}
fn default_eps() -> f32 {
    1e-5
}
fn yes() -> bool {
    true
}

impl MobileLlmConfig {
    /// Features per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.embed_dim.checked_div(self.num_heads).unwrap_or(0))
    }

    /// The block of layer `i`.
    pub fn block(&self, i: usize) -> TransformerBlockConfig {
        let head_dim = self.head_dim();
        let rope = RopeConfig {
            dims: head_dim as i32,
            base: self.rope_base,
            traditional: self.variant == MobileLlmVariant::R1,
            scaling: self.rope_scaling.clone(),
        };
        let qk_norm = self.use_qk_norm.then_some(QkNormConfig {
            norm: NormConfig::rms_weightless(self.norm_eps),
            position: QkNormPosition::BeforeRope,
        });
        let uses_rope = self.rope_layers.as_ref().is_none_or(|flags| flags.get(i).copied().unwrap_or(true));
        TransformerBlockConfig {
            attention: AttentionConfig {
                head_dim: Some(head_dim),
                qk_norm,
                rope: uses_rope.then_some(rope),
                ..AttentionConfig::new(self.embed_dim, self.num_heads, self.num_kv_heads)
            },
            ffn: FeedForwardConfig::swiglu(self.embed_dim, self.hidden_dim),
            norm: NormConfig::rms(self.norm_eps),
            norm_placement: NormPlacement::Pre,
            dropout: self.dropout,
        }
    }

    /// The backbone this config describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an inconsistent config.
    pub fn backbone(&self) -> Result<TransformerBackboneConfig> {
        self.validated()?;
        Ok(TransformerBackboneConfig {
            vocab_size: self.vocab_size,
            layers: (0..self.num_layers).map(|i| self.block(i)).collect(),
            final_norm: NormConfig::rms(self.norm_eps),
            layer_repeats: if self.layer_sharing { 2 } else { 1 },
            gradient_checkpointing: false,
            embedding_scale: None,
        })
    }

    /// Parameters and blocks, counted from the config alone (tied head counted once;
    /// shared layers hold their weights once but run twice).
    pub fn estimate(&self) -> SizeEstimate {
        let embedding = count(&[&[self.vocab_size, self.embed_dim]]);
        let head = if self.tie_word_embeddings { 0 } else { embedding };
        let block = self.block(0).num_parameters();
        let parameters = count(&[&[embedding], &[head], &[self.num_layers, block], &[self.embed_dim]]);
        let runs = if self.layer_sharing { 2 } else { 1 };
        SizeEstimate { parameters: parameters as u64, blocks: (self.num_layers as u64).saturating_mul(runs) }
    }
}

impl Config for MobileLlmConfig {
    const NAME: &'static str = "MobileLlmConfig";

    fn check(&self) -> Result<()> {
        ensure_dims(
            Self::NAME,
            &[
                ("vocab_size", self.vocab_size),
                ("num_layers", self.num_layers),
                ("num_heads", self.num_heads),
                ("num_kv_heads", self.num_kv_heads),
                ("embed_dim", self.embed_dim),
                ("hidden_dim", self.hidden_dim),
                ("head_dim", self.head_dim()),
                ("max_seq_len", self.max_seq_len),
            ],
        )?;
        lamina_core::ensure_layers(Self::NAME, "num_layers", self.num_layers)?;
        ensure_divides(Self::NAME, "num_kv_heads", self.num_kv_heads, "num_heads", self.num_heads)?;
        if self.head_dim.is_none() {
            ensure_divides(Self::NAME, "num_heads", self.num_heads, "embed_dim", self.embed_dim)?;
        }
        if self.head_dim() % 2 != 0 {
            return Err(Error::invalid(
                Self::NAME,
                "head_dim",
                format!("must be even for RoPE, got {}", self.head_dim()),
            ));
        }
        if let Some(flags) = &self.rope_layers {
            if flags.len() != self.num_layers {
                return Err(Error::invalid(
                    Self::NAME,
                    "rope_layers",
                    format!("has {} entries for {} layers", flags.len(), self.num_layers),
                ));
            }
        }
        Ok(())
    }
}

/// A MobileLLM-R1 `config.json` (`model_type: "llama4_text"`). Llama 4's mixture-of-experts
/// and attention-temperature options are refused, not ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct Llama4TextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Dense feed-forward width.
    #[serde(default)]
    pub intermediate_size_mlp: Option<usize>,
    /// Expert width (also the dense width when `intermediate_size_mlp` is absent).
    pub intermediate_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Features per head.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// RoPE scaling.
    #[serde(default)]
    pub rope_scaling: Option<HfRope>,
    /// RoPE base and scaling (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<HfRope>,
    /// Per layer, 1 when the layer uses RoPE; transformers' default (every 4th layer without
    /// RoPE) when absent.
    #[serde(default)]
    pub no_rope_layers: Option<Vec<u8>>,
    /// Weightless QK-norm.
    #[serde(default = "yes")]
    pub use_qk_norm: bool,
    /// Tie the LM head to the embedding.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Longest sequence.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Llama 4 experts (must be 0).
    #[serde(default)]
    pub num_local_experts: usize,
    /// Llama 4 MoE layers (must be empty).
    #[serde(default)]
    pub moe_layers: Vec<usize>,
    /// Llama 4 attention temperature tuning on NoPE layers (must be off).
    #[serde(default)]
    pub attn_temperature_tuning: bool,
    /// Beginning-of-sequence id(s).
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
}

impl Llama4TextConfig {
    /// The MobileLLM config it describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for Llama 4 features lamina does not implement.
    pub fn to_mobilellm(&self) -> Result<MobileLlmConfig> {
        const NAME: &str = "Llama4TextConfig";
        ensure_dims(
            NAME,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("intermediate_size", self.intermediate_size),
                ("intermediate_size_mlp", self.intermediate_size_mlp.unwrap_or(0)),
                ("num_hidden_layers", self.num_hidden_layers),
                ("num_attention_heads", self.num_attention_heads),
                ("num_key_value_heads", self.num_key_value_heads.unwrap_or(0)),
                ("head_dim", self.head_dim.unwrap_or(0)),
                ("max_position_embeddings", self.max_position_embeddings.unwrap_or(0)),
            ],
        )?;
        lamina_core::ensure_layers(NAME, "num_hidden_layers", self.num_hidden_layers)?;
        if self.num_local_experts > 0 || !self.moe_layers.is_empty() {
            return Err(Error::invalid(
                NAME,
                "num_local_experts",
                "mixture-of-experts layers are not supported",
            ));
        }
        let rope_layers: Vec<bool> = match &self.no_rope_layers {
            Some(flags) => flags.iter().map(|&f| f != 0).collect(),
            None => (0..self.num_hidden_layers).map(|i| (i + 1) % 4 != 0).collect(),
        };
        if self.attn_temperature_tuning && rope_layers.iter().any(|uses| !uses) {
            return Err(Error::invalid(
                NAME,
                "attn_temperature_tuning",
                "is not supported on layers without RoPE",
            ));
        }
        let (rope_base, rope_scaling) = rope_settings(
            NAME,
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
            500_000.0,
        )?;
        let config = MobileLlmConfig {
            vocab_size: self.vocab_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            embed_dim: self.hidden_size,
            hidden_dim: self.intermediate_size_mlp.unwrap_or(self.intermediate_size),
            max_seq_len: self.max_position_embeddings.unwrap_or_else(default_seq),
            rope_base,
            use_qk_norm: self.use_qk_norm,
            tie_word_embeddings: self.tie_word_embeddings,
            dropout: 0.0,
            norm_eps: self.rms_norm_eps,
            head_dim: self.head_dim,
            layer_sharing: false,
            rope_layers: Some(rope_layers),
            rope_scaling,
            variant: MobileLlmVariant::R1,
            bos_token_id: ids(&self.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.eos_token_id),
        };
        config.validated()?;
        Ok(config)
    }
}

/// A classic MobileLLM `config.json` (`model_type: "mobilellm"`): Llama's keys plus
/// `share_embedding` and `layer_sharing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassicMobileLlmConfig {
    /// The Llama-shaped part.
    #[serde(flatten)]
    pub llama: LlamaConfig,
    /// Tie the LM head to the embedding.
    #[serde(default)]
    pub share_embedding: bool,
    /// Run each block twice in a row.
    #[serde(default)]
    pub layer_sharing: bool,
}

impl ClassicMobileLlmConfig {
    /// The MobileLLM config it describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an inconsistent config.
    pub fn to_mobilellm(&self) -> Result<MobileLlmConfig> {
        // Llama's keys, read as Llama reads them.
        let l = &LlamaConfig { model_type: crate::family::ModelType::Llama, ..self.llama.clone() };
        l.validated()?;
        let (rope_base, rope_scaling) = l.rope()?;
        let eps = l.eps();
        let config = MobileLlmConfig {
            vocab_size: l.vocab_size,
            num_layers: l.num_hidden_layers,
            num_heads: l.num_attention_heads,
            num_kv_heads: l.kv_heads(),
            embed_dim: l.hidden_size,
            hidden_dim: l.intermediate_size,
            max_seq_len: l.max_position_embeddings.unwrap_or(2048),
            rope_base,
            use_qk_norm: false,
            tie_word_embeddings: self.share_embedding || l.tied(),
            dropout: 0.0,
            norm_eps: eps,
            head_dim: l.head_dim,
            layer_sharing: self.layer_sharing,
            rope_layers: None,
            rope_scaling,
            variant: MobileLlmVariant::Classic,
            bos_token_id: ids(&l.bos_token_id).first().copied(),
            eos_token_ids: ids(&l.eos_token_id),
        };
        config.validated()?;
        Ok(config)
    }
}
