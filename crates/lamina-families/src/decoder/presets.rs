//! Decoder presets with the shapes of the public checkpoints' `config.json`, written as
//! named fields over one base.

use lamina_core::Activation;

use super::config::DecoderConfig;
use crate::family::{Family, ModelType};
use crate::hf::{HfRope, Preset, RopeType, TokenIds};

fn base(model_type: ModelType) -> DecoderConfig {
    DecoderConfig::new(model_type)
}

impl DecoderConfig {
    /// A config of `model_type` with every optional key absent (the family's defaults)
    /// and every size zero, to fill with struct update syntax:
    /// `DecoderConfig { vocab_size: 32_000, ..DecoderConfig::new(ModelType::Llama) }`.
    pub fn new(model_type: ModelType) -> Self {
        DecoderConfig {
            model_type,
            vocab_size: 0,
            hidden_size: 0,
            intermediate_size: 0,
            num_hidden_layers: 0,
            num_attention_heads: 0,
            num_key_value_heads: None,
            head_dim: None,
            rms_norm_eps: None,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            rope_traditional: false,
            partial_rotary_factor: None,
            rope_local_base_freq: None,
            attention_bias: false,
            mlp_bias: false,
            hidden_act: None,
            hidden_activation: None,
            tie_word_embeddings: None,
            max_position_embeddings: None,
            original_max_position_embeddings: None,
            sliding_window: None,
            use_sliding_window: false,
            max_window_layers: None,
            sliding_window_pattern: None,
            layer_types: None,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            no_rope_layers: None,
            no_rope_layer_interval: None,
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: None,
        }
    }
}

/// Llama 2 / Code Llama / TinyLlama / Mistral: ids 1 and 2, eps 1e-5.
fn llama(hidden: usize, ffn: usize, layers: usize, heads: usize, kv_heads: usize) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 32_000,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        rms_norm_eps: Some(1e-5),
        rope_theta: Some(10_000.0),
        tie_word_embeddings: Some(false),
        max_position_embeddings: Some(4096),
        bos_token_id: Some(TokenIds::One(1)),
        eos_token_id: Some(TokenIds::One(2)),
        hidden_act: Some(Activation::Silu),
        ..base(ModelType::Llama)
    }
}

/// Llama 3's vocabulary, RoPE base and special ids.
fn llama3(config: DecoderConfig) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 128_256,
        rope_theta: Some(500_000.0),
        max_position_embeddings: Some(8192),
        bos_token_id: Some(TokenIds::One(128_000)),
        eos_token_id: Some(TokenIds::Many(vec![128_001, 128_008, 128_009])),
        ..config
    }
}

fn llama3_2(hidden: usize, layers: usize, heads: usize) -> DecoderConfig {
    DecoderConfig {
        head_dim: Some(hidden / heads),
        tie_word_embeddings: Some(true),
        max_position_embeddings: Some(131_072),
        rope_scaling: Some(HfRope {
            rope_type: Some(RopeType::Llama3),
            factor: Some(32.0),
            low_freq_factor: Some(1.0),
            high_freq_factor: Some(4.0),
            original_max_position_embeddings: Some(8192),
            ..HfRope::default()
        }),
        ..llama3(llama(hidden, 8192, layers, heads, 8))
    }
}

fn smollm2(
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    theta: f32,
) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 49_152,
        rope_theta: Some(theta),
        tie_word_embeddings: Some(true),
        max_position_embeddings: Some(8192),
        ..llama(hidden, ffn, layers, heads, kv_heads)
    }
}

/// Qwen2.5 and Qwen3: vocabulary 151936, RoPE base 1e6, eps 1e-6.
fn qwen(
    model_type: ModelType,
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 151_936,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        rms_norm_eps: Some(1e-6),
        rope_theta: Some(1_000_000.0),
        tie_word_embeddings: Some(true),
        max_position_embeddings: Some(32_768),
        bos_token_id: Some(TokenIds::One(151_643)),
        eos_token_id: Some(TokenIds::One(151_645)),
        ..base(model_type)
    }
}

fn qwen3(hidden: usize, ffn: usize, layers: usize, heads: usize, tied: bool) -> DecoderConfig {
    DecoderConfig {
        head_dim: Some(128),
        tie_word_embeddings: Some(tied),
        max_position_embeddings: Some(40_960),
        ..qwen(ModelType::Qwen3, hidden, ffn, layers, heads, 8)
    }
}

/// Gemma 2: vocabulary 256000, head 256, window 4096, soft-capping 50 / 30.
fn gemma2(hidden: usize, ffn: usize, layers: usize, heads: usize, kv_heads: usize) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 256_000,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(256),
        query_pre_attn_scalar: Some(256.0),
        sliding_window: Some(4096),
        attn_logit_softcapping: Some(50.0),
        final_logit_softcapping: Some(30.0),
        max_position_embeddings: Some(8192),
        bos_token_id: Some(TokenIds::One(2)),
        eos_token_id: Some(TokenIds::Many(vec![1, 107])),
        ..base(ModelType::Gemma2)
    }
}

/// Gemma 3 (text): vocabulary 262144, head 256, 5 local layers to 1 global.
fn gemma3(
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    window: usize,
) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 262_144,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(256),
        query_pre_attn_scalar: Some(256.0),
        sliding_window: Some(window),
        sliding_window_pattern: Some(6),
        rope_theta: Some(1_000_000.0),
        rope_local_base_freq: Some(10_000.0),
        max_position_embeddings: Some(32_768),
        bos_token_id: Some(TokenIds::One(2)),
        eos_token_id: Some(TokenIds::Many(vec![1, 106])),
        ..base(ModelType::Gemma3Text)
    }
}

fn phi3(hidden: usize, ffn: usize, layers: usize, heads: usize, kv_heads: usize) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 32_064,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        rms_norm_eps: Some(1e-5),
        rope_theta: Some(10_000.0),
        sliding_window: Some(2047),
        max_position_embeddings: Some(4096),
        original_max_position_embeddings: Some(4096),
        tie_word_embeddings: Some(false),
        bos_token_id: Some(TokenIds::One(1)),
        eos_token_id: Some(TokenIds::Many(vec![32_000, 32_007])),
        ..base(ModelType::Phi3)
    }
}

impl DecoderConfig {
    /// A tiny Llama for tests: 2 layers, width 64, 4 heads (2 KV), vocab 256.
    pub fn tiny() -> Self {
        DecoderConfig { vocab_size: 256, max_position_embeddings: Some(512), ..llama(64, 128, 2, 4, 2) }
    }

    /// The preset `name` of `family`.
    pub fn preset(family: Family, name: &str) -> Option<Self> {
        Self::presets(family).into_iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    /// Every preset of `family` by name, as `inspect --preset <family>:<name>` takes them.
    pub fn presets(family: Family) -> Vec<Preset<DecoderConfig>> {
        let all: Vec<(Family, Preset<DecoderConfig>)> = vec![
            (Family::Llama, ("tiny", Self::tiny as fn() -> DecoderConfig)),
            (Family::Llama, ("llama2_7b", || llama(4096, 11_008, 32, 32, 32))),
            (Family::Llama, ("llama2_13b", || llama(5120, 13_824, 40, 40, 40))),
            (Family::Llama, ("llama2_70b", || llama(8192, 28_672, 80, 64, 8))),
            (Family::Llama, ("llama3_8b", || llama3(llama(4096, 14_336, 32, 32, 8)))),
            (Family::Llama, ("llama3_70b", || llama3(llama(8192, 28_672, 80, 64, 8)))),
            (Family::Llama, ("llama3_2_1b", || llama3_2(2048, 16, 32))),
            (Family::Llama, ("llama3_2_3b", || llama3_2(3072, 28, 24))),
            (
                Family::Llama,
                ("mistral_7b", || DecoderConfig {
                    model_type: ModelType::Mistral,
                    head_dim: Some(128),
                    sliding_window: Some(4096),
                    max_position_embeddings: Some(32_768),
                    ..llama(4096, 14_336, 32, 32, 8)
                }),
            ),
            (
                Family::Llama,
                ("code_llama_7b", || DecoderConfig {
                    vocab_size: 32_016,
                    rope_theta: Some(1_000_000.0),
                    max_position_embeddings: Some(16_384),
                    ..llama(4096, 11_008, 32, 32, 32)
                }),
            ),
            (
                Family::Llama,
                ("tinyllama", || DecoderConfig {
                    max_position_embeddings: Some(2048),
                    ..llama(2048, 5632, 22, 32, 4)
                }),
            ),
            (Family::Llama, ("smollm2_135m", || smollm2(576, 1536, 30, 9, 3, 100_000.0))),
            (Family::Llama, ("smollm2_360m", || smollm2(960, 2560, 32, 15, 5, 100_000.0))),
            (Family::Llama, ("smollm2_1_7b", || smollm2(2048, 8192, 24, 32, 32, 130_000.0))),
            (Family::Qwen2, ("qwen2_5_0_5b", || qwen(ModelType::Qwen2, 896, 4864, 24, 14, 2))),
            (Family::Qwen2, ("qwen2_5_1_5b", || qwen(ModelType::Qwen2, 1536, 8960, 28, 12, 2))),
            (
                Family::Qwen2,
                ("qwen2_5_7b", || DecoderConfig {
                    vocab_size: 152_064,
                    tie_word_embeddings: Some(false),
                    ..qwen(ModelType::Qwen2, 3584, 18_944, 28, 28, 4)
                }),
            ),
            (Family::Qwen3, ("0.6b", || qwen3(1024, 3072, 28, 16, true))),
            (Family::Qwen3, ("1.7b", || qwen3(2048, 6144, 28, 16, true))),
            (Family::Qwen3, ("4b", || qwen3(2560, 9728, 36, 32, true))),
            (Family::Qwen3, ("8b", || qwen3(4096, 12_288, 36, 32, false))),
            (Family::Gemma2, ("2b", || gemma2(2304, 9216, 26, 8, 4))),
            (Family::Gemma2, ("9b", || gemma2(3584, 14_336, 42, 16, 8))),
            (Family::Gemma3, ("270m", || gemma3(640, 2048, 18, 4, 1, 512))),
            (Family::Gemma3, ("1b", || gemma3(1152, 6912, 26, 4, 1, 512))),
            (
                Family::Gemma3,
                ("4b", || DecoderConfig {
                    vocab_size: 262_208,
                    rope_scaling: Some(HfRope {
                        rope_type: Some(RopeType::Linear),
                        factor: Some(8.0),
                        ..HfRope::default()
                    }),
                    max_position_embeddings: Some(131_072),
                    ..gemma3(2560, 10_240, 34, 8, 4, 1024)
                }),
            ),
            (Family::Phi3, ("mini", || phi3(3072, 8192, 32, 32, 32))),
            (Family::Phi3, ("medium", || phi3(5120, 17_920, 40, 40, 10))),
            (
                Family::SmolLm3,
                ("3b", || DecoderConfig {
                    vocab_size: 128_256,
                    rope_theta: Some(5_000_000.0),
                    max_position_embeddings: Some(65_536),
                    no_rope_layer_interval: Some(4),
                    tie_word_embeddings: Some(true),
                    rms_norm_eps: Some(1e-6),
                    bos_token_id: None,
                    eos_token_id: Some(TokenIds::One(128_012)),
                    model_type: ModelType::SmolLm3,
                    ..llama(2048, 11_008, 36, 16, 4)
                }),
            ),
        ];
        all.into_iter().filter(|(f, _)| *f == family).map(|(_, preset)| preset).collect()
    }
}
