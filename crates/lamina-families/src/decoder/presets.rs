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

/// What differs between the sizes of one family.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    ffn: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
}

impl Shape {
    /// `config` with this shape.
    fn apply(self, config: DecoderConfig) -> DecoderConfig {
        DecoderConfig {
            hidden_size: self.hidden,
            intermediate_size: self.ffn,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: Some(self.kv_heads),
            ..config
        }
    }
}

/// Llama 2 / Code Llama / TinyLlama / Mistral: vocabulary 32000, ids 1 and 2, eps 1e-5.
fn llama(shape: Shape) -> DecoderConfig {
    shape.apply(DecoderConfig {
        vocab_size: 32_000,
        rms_norm_eps: Some(1e-5),
        rope_theta: Some(10_000.0),
        tie_word_embeddings: Some(false),
        max_position_embeddings: Some(4096),
        bos_token_id: Some(TokenIds::One(1)),
        eos_token_id: Some(TokenIds::One(2)),
        hidden_act: Some(Activation::Silu),
        ..base(ModelType::Llama)
    })
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

/// Llama 3.2: Llama 3 with its RoPE scaling, tied.
fn llama3_2(shape: Shape) -> DecoderConfig {
    DecoderConfig {
        head_dim: Some(shape.hidden / shape.heads),
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
        ..llama3(llama(shape))
    }
}

/// SmolLM2: Llama with vocabulary 49152, tied.
fn smollm2(shape: Shape, rope_theta: f32) -> DecoderConfig {
    DecoderConfig {
        vocab_size: 49_152,
        rope_theta: Some(rope_theta),
        tie_word_embeddings: Some(true),
        max_position_embeddings: Some(8192),
        ..llama(shape)
    }
}

/// Qwen2.5 and Qwen3: vocabulary 151936, RoPE base 1e6, eps 1e-6, tied.
fn qwen(model_type: ModelType, shape: Shape) -> DecoderConfig {
    shape.apply(DecoderConfig {
        vocab_size: 151_936,
        rms_norm_eps: Some(1e-6),
        rope_theta: Some(1_000_000.0),
        tie_word_embeddings: Some(true),
        max_position_embeddings: Some(32_768),
        bos_token_id: Some(TokenIds::One(151_643)),
        eos_token_id: Some(TokenIds::One(151_645)),
        ..base(model_type)
    })
}

/// Qwen3: heads of 128 features, context 40960.
fn qwen3(shape: Shape) -> DecoderConfig {
    DecoderConfig {
        head_dim: Some(128),
        max_position_embeddings: Some(40_960),
        ..qwen(ModelType::Qwen3, shape)
    }
}

/// Gemma 2: vocabulary 256000, head 256, window 4096, soft-capping 50 / 30.
fn gemma2(shape: Shape) -> DecoderConfig {
    shape.apply(DecoderConfig {
        vocab_size: 256_000,
        head_dim: Some(256),
        query_pre_attn_scalar: Some(256.0),
        sliding_window: Some(4096),
        attn_logit_softcapping: Some(50.0),
        final_logit_softcapping: Some(30.0),
        max_position_embeddings: Some(8192),
        bos_token_id: Some(TokenIds::One(2)),
        eos_token_id: Some(TokenIds::Many(vec![1, 107])),
        ..base(ModelType::Gemma2)
    })
}

/// Gemma 3 (text): vocabulary 262144, head 256, 5 local layers to 1 global.
fn gemma3(shape: Shape, window: usize) -> DecoderConfig {
    shape.apply(DecoderConfig {
        vocab_size: 262_144,
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
    })
}

/// Phi-3: vocabulary 32064, window 2047, untied.
fn phi3(shape: Shape) -> DecoderConfig {
    shape.apply(DecoderConfig {
        vocab_size: 32_064,
        rms_norm_eps: Some(1e-5),
        rope_theta: Some(10_000.0),
        sliding_window: Some(2047),
        max_position_embeddings: Some(4096),
        original_max_position_embeddings: Some(4096),
        tie_word_embeddings: Some(false),
        bos_token_id: Some(TokenIds::One(1)),
        eos_token_id: Some(TokenIds::Many(vec![32_000, 32_007])),
        ..base(ModelType::Phi3)
    })
}

impl DecoderConfig {
    /// A tiny Llama for tests: 2 layers, width 64, 4 heads (2 KV), vocab 256.
    pub fn tiny() -> Self {
        DecoderConfig {
            vocab_size: 256,
            max_position_embeddings: Some(512),
            ..llama(Shape { hidden: 64, ffn: 128, layers: 2, heads: 4, kv_heads: 2 })
        }
    }

    /// The preset `name` of `family`.
    pub fn preset(family: Family, name: &str) -> Option<Self> {
        Self::presets(family).into_iter().find(|(n, _)| *n == name).map(|(_, make)| make())
    }

    /// Every preset of `family` by name, as `inspect --preset <family>:<name>` takes them.
    pub fn presets(family: Family) -> Vec<Preset<DecoderConfig>> {
        let all: Vec<(Family, Preset<DecoderConfig>)> = vec![
            (Family::Llama, ("tiny", Self::tiny as fn() -> DecoderConfig)),
            (
                Family::Llama,
                ("llama2_7b", || {
                    llama(Shape { hidden: 4096, ffn: 11_008, layers: 32, heads: 32, kv_heads: 32 })
                }),
            ),
            (
                Family::Llama,
                ("llama2_13b", || {
                    llama(Shape { hidden: 5120, ffn: 13_824, layers: 40, heads: 40, kv_heads: 40 })
                }),
            ),
            (
                Family::Llama,
                ("llama2_70b", || {
                    llama(Shape { hidden: 8192, ffn: 28_672, layers: 80, heads: 64, kv_heads: 8 })
                }),
            ),
            (
                Family::Llama,
                ("llama3_8b", || {
                    llama3(llama(Shape { hidden: 4096, ffn: 14_336, layers: 32, heads: 32, kv_heads: 8 }))
                }),
            ),
            (
                Family::Llama,
                ("llama3_70b", || {
                    llama3(llama(Shape { hidden: 8192, ffn: 28_672, layers: 80, heads: 64, kv_heads: 8 }))
                }),
            ),
            (
                Family::Llama,
                ("llama3_2_1b", || {
                    llama3_2(Shape { hidden: 2048, ffn: 8192, layers: 16, heads: 32, kv_heads: 8 })
                }),
            ),
            (
                Family::Llama,
                ("llama3_2_3b", || {
                    llama3_2(Shape { hidden: 3072, ffn: 8192, layers: 28, heads: 24, kv_heads: 8 })
                }),
            ),
            (
                Family::Llama,
                ("mistral_7b", || DecoderConfig {
                    model_type: ModelType::Mistral,
                    head_dim: Some(128),
                    sliding_window: Some(4096),
                    max_position_embeddings: Some(32_768),
                    ..llama(Shape { hidden: 4096, ffn: 14_336, layers: 32, heads: 32, kv_heads: 8 })
                }),
            ),
            (
                Family::Llama,
                ("code_llama_7b", || DecoderConfig {
                    vocab_size: 32_016,
                    rope_theta: Some(1_000_000.0),
                    max_position_embeddings: Some(16_384),
                    ..llama(Shape { hidden: 4096, ffn: 11_008, layers: 32, heads: 32, kv_heads: 32 })
                }),
            ),
            (
                Family::Llama,
                ("tinyllama", || DecoderConfig {
                    max_position_embeddings: Some(2048),
                    ..llama(Shape { hidden: 2048, ffn: 5632, layers: 22, heads: 32, kv_heads: 4 })
                }),
            ),
            (
                Family::Llama,
                ("smollm2_135m", || {
                    smollm2(Shape { hidden: 576, ffn: 1536, layers: 30, heads: 9, kv_heads: 3 }, 100_000.0)
                }),
            ),
            (
                Family::Llama,
                ("smollm2_360m", || {
                    smollm2(Shape { hidden: 960, ffn: 2560, layers: 32, heads: 15, kv_heads: 5 }, 100_000.0)
                }),
            ),
            (
                Family::Llama,
                ("smollm2_1_7b", || {
                    smollm2(Shape { hidden: 2048, ffn: 8192, layers: 24, heads: 32, kv_heads: 32 }, 130_000.0)
                }),
            ),
            (
                Family::Qwen2,
                ("qwen2_5_0_5b", || {
                    qwen(
                        ModelType::Qwen2,
                        Shape { hidden: 896, ffn: 4864, layers: 24, heads: 14, kv_heads: 2 },
                    )
                }),
            ),
            (
                Family::Qwen2,
                ("qwen2_5_1_5b", || {
                    qwen(
                        ModelType::Qwen2,
                        Shape { hidden: 1536, ffn: 8960, layers: 28, heads: 12, kv_heads: 2 },
                    )
                }),
            ),
            (
                Family::Qwen2,
                ("qwen2_5_7b", || DecoderConfig {
                    vocab_size: 152_064,
                    tie_word_embeddings: Some(false),
                    ..qwen(
                        ModelType::Qwen2,
                        Shape { hidden: 3584, ffn: 18_944, layers: 28, heads: 28, kv_heads: 4 },
                    )
                }),
            ),
            (
                Family::Qwen3,
                ("0.6b", || DecoderConfig {
                    tie_word_embeddings: Some(true),
                    ..qwen3(Shape { hidden: 1024, ffn: 3072, layers: 28, heads: 16, kv_heads: 8 })
                }),
            ),
            (
                Family::Qwen3,
                ("1.7b", || DecoderConfig {
                    tie_word_embeddings: Some(true),
                    ..qwen3(Shape { hidden: 2048, ffn: 6144, layers: 28, heads: 16, kv_heads: 8 })
                }),
            ),
            (
                Family::Qwen3,
                ("4b", || DecoderConfig {
                    tie_word_embeddings: Some(true),
                    ..qwen3(Shape { hidden: 2560, ffn: 9728, layers: 36, heads: 32, kv_heads: 8 })
                }),
            ),
            (
                Family::Qwen3,
                ("8b", || DecoderConfig {
                    tie_word_embeddings: Some(false),
                    ..qwen3(Shape { hidden: 4096, ffn: 12_288, layers: 36, heads: 32, kv_heads: 8 })
                }),
            ),
            (
                Family::Gemma2,
                ("2b", || gemma2(Shape { hidden: 2304, ffn: 9216, layers: 26, heads: 8, kv_heads: 4 })),
            ),
            (
                Family::Gemma2,
                ("9b", || gemma2(Shape { hidden: 3584, ffn: 14_336, layers: 42, heads: 16, kv_heads: 8 })),
            ),
            (
                Family::Gemma3,
                ("270m", || gemma3(Shape { hidden: 640, ffn: 2048, layers: 18, heads: 4, kv_heads: 1 }, 512)),
            ),
            (
                Family::Gemma3,
                ("1b", || gemma3(Shape { hidden: 1152, ffn: 6912, layers: 26, heads: 4, kv_heads: 1 }, 512)),
            ),
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
                    ..gemma3(Shape { hidden: 2560, ffn: 10_240, layers: 34, heads: 8, kv_heads: 4 }, 1024)
                }),
            ),
            (
                Family::Phi3,
                ("mini", || phi3(Shape { hidden: 3072, ffn: 8192, layers: 32, heads: 32, kv_heads: 32 })),
            ),
            (
                Family::Phi3,
                ("medium", || phi3(Shape { hidden: 5120, ffn: 17_920, layers: 40, heads: 40, kv_heads: 10 })),
            ),
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
                    ..llama(Shape { hidden: 2048, ffn: 11_008, layers: 36, heads: 16, kv_heads: 4 })
                }),
            ),
        ];
        all.into_iter().filter(|(f, _)| *f == family).map(|(_, preset)| preset).collect()
    }
}
