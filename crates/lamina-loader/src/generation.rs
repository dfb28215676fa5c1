//! `generation_config.json`: the defaults a checkpoint suggests for generation.

use lamina_families::hf::TokenIds;
use serde::{Deserialize, Serialize};

/// The keys lamina reads from `generation_config.json` (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence id(s); these win over `config.json`'s.
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    /// Suggested sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Suggested nucleus threshold.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Suggested top-k.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Suggested repetition penalty.
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Whether the checkpoint samples by default (greedy otherwise).
    #[serde(default)]
    pub do_sample: Option<bool>,
    /// Suggested cap on new tokens.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}
