//! `get_mobilellm_config(name)`: the MobileLLM API's named sizes.
//!
//! 140m, 360m and 950m are MobileLLM-R1's shapes (KV heads 3/4/6, FFN 2048/4096/6144).
//! The larger names have no MobileLLM checkpoint; their KV heads and FFN widths are
//! chosen so that the parameter count (tied 128256-token embedding included) lands near
//! the name: 7b and 70b take Llama 3's shapes (8 KV heads, FFN 14336 and 28672); 671b is a
//! dense stand-in for the scale of DeepSeek-V3 (8 KV heads, FFN 507904), for memory
//! planning rather than training.

use lamina_core::{Error, Result};

use super::config::{MobileLlmConfig, MobileLlmVariant};
use lamina_components::RopeScaling;

use crate::hf::Preset;

/// The named MobileLLM config.
///
/// # Errors
/// [`Error::UnknownVariant`] listing the known names.
pub fn get_mobilellm_config(name: &str) -> Result<MobileLlmConfig> {
    let presets = MobileLlmConfig::presets();
    match presets.iter().find(|(n, _)| *n == name) {
        Some((_, make)) => Ok(make()),
        None => Err(Error::UnknownVariant {
            kind: "MobileLLM preset",
            value: name.to_owned(),
            known: presets.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// A MobileLLM-R1-style config of the given shape.
fn shaped(
    num_layers: usize,
    num_heads: usize,
    embed_dim: usize,
    num_kv_heads: usize,
    hidden_dim: usize,
) -> MobileLlmConfig {
    MobileLlmConfig {
        vocab_size: 128_256,
        num_layers,
        num_heads,
        num_kv_heads,
        embed_dim,
        hidden_dim,
        max_seq_len: 32_768,
        rope_base: 500_000.0,
        use_qk_norm: true,
        tie_word_embeddings: true,
        dropout: 0.0,
        norm_eps: 1e-5,
        head_dim: None,
        layer_sharing: false,
        rope_layers: None,
        rope_scaling: RopeScaling::Default,
        variant: MobileLlmVariant::R1,
        bos_token_id: Some(128_000),
        eos_token_ids: vec![128_001, 128_008, 128_009],
    }
}

impl MobileLlmConfig {
    /// Every preset by name, as `get_mobilellm_config` and `inspect --preset mobilellm:<name>`
    /// take them.
    pub fn presets() -> Vec<Preset<MobileLlmConfig>> {
        vec![
            ("140m", || shaped(15, 9, 576, 3, 2048)),
            ("360m", || shaped(15, 16, 1024, 4, 4096)),
            ("950m", || shaped(22, 24, 1536, 6, 6144)),
            ("7b", || shaped(32, 32, 4096, 8, 14_336)),
            ("70b", || shaped(80, 64, 8192, 8, 28_672)),
            ("671b", || shaped(61, 128, 7168, 8, 507_904)),
        ]
    }

    /// Parameters of the model this config builds, counted from its shapes without
    /// allocating anything (tied head counted once).
    ///
    /// # Errors
    /// For an invalid config.
    pub fn num_parameters(&self) -> Result<usize> {
        crate::family::AnyConfig::num_parameters(self)
    }
}
