//! `LlamaConfig`: the `config.json` of Llama 2/3.x, Mistral, TinyLlama, SmolLM2 and Code
//! Llama checkpoints, with transformers' defaults for omitted keys.

use lamina_backbones::TransformerBackboneConfig;
use lamina_blocks::TransformerBlockConfig;
use lamina_components::{AttentionConfig, FeedForwardConfig, NormConfig, RopeConfig, RopeScaling};
use lamina_core::{Activation, Config, DType, Error, FfnKind, Result, ensure_divides};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};
use validator::Validate;

use crate::hf::{HfRope, TokenIds, rope_settings};

/// The `model_type`s this config reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Display, EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum LlamaModelType {
    /// Llama 2/3.x, TinyLlama, SmolLM2, Code Llama.
    #[default]
    Llama,
    /// Mistral (explicit `head_dim`, optional `sliding_window`).
    Mistral,
}

/// A Llama-family config, as `config.json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct LlamaConfig {
    /// `llama` or `mistral`.
    #[serde(default)]
    pub model_type: LlamaModelType,
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
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    #[validate(range(min = 0.0))]
    pub rms_norm_eps: f32,
    /// RoPE base (older configs).
    #[serde(default)]
    pub rope_theta: Option<f32>,
    /// RoPE scaling (older configs).
    #[serde(default)]
    pub rope_scaling: Option<HfRope>,
    /// RoPE base and scaling (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<HfRope>,
    /// Interleaved RoPE (an mlx-lm key; Hugging Face Llama checkpoints rotate halves).
    #[serde(default)]
    pub rope_traditional: bool,
    /// Biases on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// The MLP's activation.
    #[serde(default)]
    pub hidden_act: Activation,
    /// Share the input embedding with the LM head.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Longest context the model was trained for.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Sliding-window attention span (Mistral).
    #[serde(default)]
    pub sliding_window: Option<usize>,
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

fn default_eps() -> f32 {
    1e-6
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Features per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size.checked_div(self.num_attention_heads).unwrap_or(0))
    }

    /// The RoPE base and scaling, from whichever form the config uses.
    ///
    /// # Errors
    /// For an unsupported `rope_type` or a scaling without its factor.
    pub fn rope(&self) -> Result<(f32, RopeScaling)> {
        rope_settings(
            Self::NAME,
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
            10_000.0,
        )
    }

    /// The sliding window in effect: Mistral applies `sliding_window`; Llama ignores it.
    pub fn window(&self) -> Option<usize> {
        match self.model_type {
            LlamaModelType::Mistral => self.sliding_window,
            LlamaModelType::Llama => None,
        }
    }

    /// Parameters of the model this config builds, counted from its shapes without
    /// allocating anything.
    ///
    /// # Errors
    /// For an invalid config.
    pub fn num_parameters(&self) -> Result<usize> {
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * self.hidden_size };
        Ok(self.backbone()?.num_parameters() + head)
    }

    /// The backbone this config describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an inconsistent config.
    pub fn backbone(&self) -> Result<TransformerBackboneConfig> {
        self.validated()?;
        let (base, scaling) = self.rope()?;
        let head_dim = self.head_dim();
        let block = TransformerBlockConfig {
            attention: AttentionConfig {
                head_dim: Some(head_dim),
                qkv_bias: self.attention_bias,
                o_bias: self.attention_bias,
                rope: Some(RopeConfig {
                    dims: head_dim as i32,
                    base,
                    traditional: self.rope_traditional,
                    scaling,
                }),
                sliding_window: self.window(),
                ..AttentionConfig::new(self.hidden_size, self.num_attention_heads, self.kv_heads())
            },
            ffn: FeedForwardConfig {
                hidden_size: self.hidden_size,
                intermediate_size: self.intermediate_size,
                kind: FfnKind::Gated,
                activation: self.hidden_act,
                bias: self.mlp_bias,
            },
            norm: NormConfig::rms(self.rms_norm_eps),
            dropout: 0.0,
        };
        Ok(TransformerBackboneConfig::uniform(
            self.vocab_size,
            block,
            self.num_hidden_layers,
            NormConfig::rms(self.rms_norm_eps),
        ))
    }
}

impl Config for LlamaConfig {
    const NAME: &'static str = "LlamaConfig";

    fn check(&self) -> Result<()> {
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
        self.rope()?;
        Ok(())
    }
}
