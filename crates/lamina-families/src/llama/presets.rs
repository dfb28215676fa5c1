//! Llama-family presets with the shapes of the public checkpoints' `config.json`.

use lamina_core::Activation;

use super::config::{LlamaConfig, LlamaModelType};
use crate::hf::{HfRope, TokenIds};

/// Width, FFN, layers, heads, kv heads, vocab, RoPE base, context, tied.
#[allow(clippy::too_many_arguments)]
fn shape(
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    theta: f32,
    context: usize,
    tied: bool,
) -> LlamaConfig {
    LlamaConfig {
        model_type: LlamaModelType::Llama,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: Some(theta),
        rope_scaling: None,
        rope_parameters: None,
        rope_traditional: false,
        attention_bias: false,
        mlp_bias: false,
        hidden_act: Activation::Silu,
        tie_word_embeddings: tied,
        max_position_embeddings: Some(context),
        sliding_window: None,
        bos_token_id: Some(TokenIds::One(1)),
        eos_token_id: Some(TokenIds::One(2)),
        torch_dtype: None,
    }
}

fn llama3(mut config: LlamaConfig) -> LlamaConfig {
    config.bos_token_id = Some(TokenIds::One(128_000));
    config.eos_token_id = Some(TokenIds::Many(vec![128_001, 128_008, 128_009]));
    config
}

fn llama3_2(hidden: usize, layers: usize, heads: usize) -> LlamaConfig {
    let mut config = llama3(shape(hidden, 8192, layers, heads, 8, 128_256, 500_000.0, 131_072, true));
    config.head_dim = Some(hidden / heads);
    config.rope_scaling = Some(HfRope {
        rope_type: Some("llama3".into()),
        factor: Some(32.0),
        low_freq_factor: Some(1.0),
        high_freq_factor: Some(4.0),
        original_max_position_embeddings: Some(8192),
        ..HfRope::default()
    });
    config
}

impl LlamaConfig {
    /// A tiny model for tests: 2 layers, width 64, 4 heads (2 KV), vocab 256.
    pub fn tiny() -> Self {
        shape(64, 128, 2, 4, 2, 256, 10_000.0, 512, false)
    }

    /// Llama 2 7B.
    pub fn llama2_7b() -> Self {
        shape(4096, 11_008, 32, 32, 32, 32_000, 10_000.0, 4096, false)
    }

    /// Llama 2 13B.
    pub fn llama2_13b() -> Self {
        shape(5120, 13_824, 40, 40, 40, 32_000, 10_000.0, 4096, false)
    }

    /// Llama 2 70B (GQA, 8 KV heads).
    pub fn llama2_70b() -> Self {
        shape(8192, 28_672, 80, 64, 8, 32_000, 10_000.0, 4096, false)
    }

    /// Llama 3 8B.
    pub fn llama3_8b() -> Self {
        llama3(shape(4096, 14_336, 32, 32, 8, 128_256, 500_000.0, 8192, false))
    }

    /// Llama 3 70B.
    pub fn llama3_70b() -> Self {
        llama3(shape(8192, 28_672, 80, 64, 8, 128_256, 500_000.0, 8192, false))
    }

    /// Llama 3.2 1B (Llama-3 RoPE scaling, tied).
    pub fn llama3_2_1b() -> Self {
        llama3_2(2048, 16, 32)
    }

    /// Llama 3.2 3B (Llama-3 RoPE scaling, tied).
    pub fn llama3_2_3b() -> Self {
        llama3_2(3072, 28, 24)
    }

    /// Mistral 7B v0.1 (GQA, 4096-token sliding window).
    pub fn mistral_7b() -> Self {
        let mut config = shape(4096, 14_336, 32, 32, 8, 32_000, 10_000.0, 32_768, false);
        config.model_type = LlamaModelType::Mistral;
        config.head_dim = Some(128);
        config.sliding_window = Some(4096);
        config
    }

    /// Code Llama 7B (RoPE base 1e6, vocab 32016).
    pub fn code_llama_7b() -> Self {
        shape(4096, 11_008, 32, 32, 32, 32_016, 1_000_000.0, 16_384, false)
    }

    /// TinyLlama 1.1B.
    pub fn tinyllama() -> Self {
        shape(2048, 5632, 22, 32, 4, 32_000, 10_000.0, 2048, false)
    }

    /// SmolLM2 135M (tied).
    pub fn smollm2_135m() -> Self {
        smollm2(shape(576, 1536, 30, 9, 3, 49_152, 100_000.0, 8192, true))
    }

    /// SmolLM2 360M (tied).
    pub fn smollm2_360m() -> Self {
        smollm2(shape(960, 2560, 32, 15, 5, 49_152, 100_000.0, 8192, true))
    }

    /// SmolLM2 1.7B (tied).
    pub fn smollm2_1_7b() -> Self {
        smollm2(shape(2048, 8192, 24, 32, 32, 49_152, 130_000.0, 8192, true))
    }

    /// Every preset by name, as `inspect --preset llama:<name>` takes them.
    pub fn presets() -> Vec<crate::hf::Preset<LlamaConfig>> {
        vec![
            ("tiny", Self::tiny as fn() -> LlamaConfig),
            ("llama2_7b", Self::llama2_7b),
            ("llama2_13b", Self::llama2_13b),
            ("llama2_70b", Self::llama2_70b),
            ("llama3_8b", Self::llama3_8b),
            ("llama3_70b", Self::llama3_70b),
            ("llama3_2_1b", Self::llama3_2_1b),
            ("llama3_2_3b", Self::llama3_2_3b),
            ("mistral_7b", Self::mistral_7b),
            ("code_llama_7b", Self::code_llama_7b),
            ("tinyllama", Self::tinyllama),
            ("smollm2_135m", Self::smollm2_135m),
            ("smollm2_360m", Self::smollm2_360m),
            ("smollm2_1_7b", Self::smollm2_1_7b),
        ]
    }
}

fn smollm2(mut config: LlamaConfig) -> LlamaConfig {
    config.bos_token_id = Some(TokenIds::One(1));
    config.eos_token_id = Some(TokenIds::One(2));
    config
}
