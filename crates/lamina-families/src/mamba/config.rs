//! `MambaConfig` as Hugging Face's `MambaForCausalLM` writes it, also reading the original
//! state-spaces configs (`d_model`, `n_layer`, `pad_vocab_size_multiple`, `ssm_cfg`).

use lamina_backbones::MambaBackboneConfig;
use lamina_blocks::MambaBlockConfig;
use lamina_components::{MambaConfig as MixerConfig, NormConfig};
use lamina_core::{Config, DType, Error, Result, SizeEstimate, count, ensure_dims};
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::hf::TokenIds;

/// `time_step_rank`: a number, or `"auto"` for `ceil(hidden_size / 16)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeStepRank {
    /// An explicit rank.
    Value(usize),
    /// `"auto"`.
    Auto(AutoRank),
}

/// The string `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoRank {
    /// `"auto"`.
    #[serde(rename = "auto")]
    Auto,
}

/// The original repository's nested mixer settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SsmCfg {
    /// State size.
    #[serde(default)]
    pub d_state: Option<usize>,
    /// Convolution width.
    #[serde(default)]
    pub d_conv: Option<usize>,
    /// Inner expansion.
    #[serde(default)]
    pub expand: Option<usize>,
}

/// A Mamba config, as `config.json` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
pub struct MambaConfig {
    /// Vocabulary size (before padding).
    #[validate(range(min = 1))]
    pub vocab_size: usize,
    /// Model width.
    #[serde(alias = "d_model")]
    #[validate(range(min = 1))]
    pub hidden_size: usize,
    /// Number of blocks.
    #[serde(alias = "n_layer")]
    #[validate(range(min = 1))]
    pub num_hidden_layers: usize,
    /// SSM state size.
    #[serde(default, alias = "d_state")]
    pub state_size: Option<usize>,
    /// Convolution width.
    #[serde(default, alias = "d_conv")]
    pub conv_kernel: Option<usize>,
    /// Inner expansion.
    #[serde(default)]
    pub expand: Option<usize>,
    /// Inner width; `expand * hidden_size` when absent.
    #[serde(default)]
    pub intermediate_size: Option<usize>,
    /// Time-step projection rank.
    #[serde(default)]
    pub time_step_rank: Option<TimeStepRank>,
    /// Biases on `in_proj`/`out_proj`.
    #[serde(default)]
    pub use_bias: bool,
    /// Bias on `conv1d`.
    #[serde(default = "yes")]
    pub use_conv_bias: bool,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    #[validate(range(min = 0.0))]
    pub layer_norm_epsilon: f32,
    /// Share the embedding with the LM head.
    #[serde(default = "yes", alias = "tie_embeddings")]
    pub tie_word_embeddings: bool,
    /// Round the vocabulary up to a multiple of this (original configs).
    #[serde(default)]
    pub pad_vocab_size_multiple: Option<usize>,
    /// The original repository's mixer settings.
    #[serde(default)]
    pub ssm_cfg: Option<SsmCfg>,
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

fn yes() -> bool {
    true
}
fn default_eps() -> f32 {
    1e-5
}

impl MambaConfig {
    /// A config with Mamba's defaults for the given shape (state 16, kernel 4, expand 2).
    pub fn new(vocab_size: usize, hidden_size: usize, num_hidden_layers: usize) -> Self {
        MambaConfig {
            vocab_size,
            hidden_size,
            num_hidden_layers,
            state_size: None,
            conv_kernel: None,
            expand: None,
            intermediate_size: None,
            time_step_rank: None,
            use_bias: false,
            use_conv_bias: true,
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
            pad_vocab_size_multiple: None,
            ssm_cfg: None,
            bos_token_id: Some(TokenIds::One(0)),
            eos_token_id: Some(TokenIds::One(0)),
            torch_dtype: None,
        }
    }

    fn ssm(&self) -> SsmCfg {
        self.ssm_cfg.unwrap_or_default()
    }

    /// The vocabulary after padding (saturating: a hostile size fails validation).
    pub fn padded_vocab_size(&self) -> usize {
        match self.pad_vocab_size_multiple {
            Some(m) if m > 1 => self.vocab_size.div_ceil(m).saturating_mul(m),
            _ => self.vocab_size,
        }
    }

    /// Parameters and blocks, counted from the config alone.
    pub fn estimate(&self) -> SizeEstimate {
        let embedding = count(&[&[self.padded_vocab_size(), self.hidden_size]]);
        let head = if self.tie_word_embeddings { 0 } else { embedding };
        let block = self.mixer().num_parameters().saturating_add(self.hidden_size);
        let parameters =
            count(&[&[embedding], &[head], &[self.num_hidden_layers, block], &[self.hidden_size]]);
        SizeEstimate { parameters: parameters as u64, blocks: self.num_hidden_layers as u64 }
    }

    /// The mixer config.
    pub fn mixer(&self) -> MixerConfig {
        let expand = self.expand.or(self.ssm().expand).unwrap_or(2);
        MixerConfig {
            hidden_size: self.hidden_size,
            state_size: self.state_size.or(self.ssm().d_state).unwrap_or(16),
            conv_kernel: self.conv_kernel.or(self.ssm().d_conv).unwrap_or(4),
            intermediate_size: self.intermediate_size.unwrap_or(expand.saturating_mul(self.hidden_size)),
            time_step_rank: match self.time_step_rank {
                Some(TimeStepRank::Value(rank)) => rank,
                _ => self.hidden_size.div_ceil(16),
            },
            use_bias: self.use_bias,
            use_conv_bias: self.use_conv_bias,
            ..MixerConfig::new(self.hidden_size, expand)
        }
    }

    /// Parameters of the model this config builds, counted from its shapes without
    /// allocating anything.
    ///
    /// # Errors
    /// For an invalid config.
    pub fn num_parameters(&self) -> Result<usize> {
        crate::family::AnyConfig::num_parameters(self)
    }

    /// The backbone this config describes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an inconsistent config.
    pub fn backbone(&self) -> Result<MambaBackboneConfig> {
        self.validated()?;
        let norm = NormConfig::rms(self.layer_norm_epsilon);
        Ok(MambaBackboneConfig {
            vocab_size: self.padded_vocab_size(),
            num_layers: self.num_hidden_layers,
            block: MambaBlockConfig { mixer: self.mixer(), norm },
            final_norm: norm,
            gradient_checkpointing: false,
        })
    }
}

impl Config for MambaConfig {
    const NAME: &'static str = "MambaConfig";

    fn check(&self) -> Result<()> {
        ensure_dims(
            Self::NAME,
            &[
                ("vocab_size", self.vocab_size),
                ("hidden_size", self.hidden_size),
                ("num_hidden_layers", self.num_hidden_layers),
                ("state_size", self.state_size.unwrap_or(0)),
                ("conv_kernel", self.conv_kernel.unwrap_or(0)),
                ("expand", self.expand.unwrap_or(0)),
                ("intermediate_size", self.intermediate_size.unwrap_or(0)),
                ("pad_vocab_size_multiple", self.pad_vocab_size_multiple.unwrap_or(0)),
                (
                    "time_step_rank",
                    match self.time_step_rank {
                        Some(TimeStepRank::Value(rank)) => rank,
                        _ => 0,
                    },
                ),
                ("vocab_size (padded)", self.padded_vocab_size()),
            ],
        )?;
        self.mixer().validated().map_err(|e| match e {
            Error::InvalidConfig { field, reason, .. } => Error::invalid(Self::NAME, field, reason),
            other => other,
        })
    }
}
