//! The decoder families as data: one row per `model_type`, saying what the family adds
//! over Llama. Every mechanism a row names lives in the layers (norm offsets, sandwich
//! norms, soft-capping, per-layer windows, QK-norm); a new Llama-like family is a row.

use lamina_core::Activation;

use crate::family::{Family, ModelType};

/// Which layers attend through a sliding window (when the config gives a window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowLayers {
    /// None (Llama: a `sliding_window` key is ignored).
    Never,
    /// Every layer (Mistral, Phi-3).
    All,
    /// Layers from `max_window_layers` on, when `use_sliding_window` (Qwen2/3).
    FromMaxWindowLayers,
    /// Even layers (Gemma 2: local, global, local, ...).
    Alternating,
    /// All but every `sliding_window_pattern`-th layer (Gemma 3: 5 local, 1 global).
    Pattern,
}

/// How the token embeddings are scaled before the first block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedScale {
    /// Not at all.
    None,
    /// By `sqrt(hidden_size)` in f32 (Gemma 2).
    SqrtHidden,
    /// By `sqrt(hidden_size)` rounded to bf16 first (Gemma 3, as the reference does).
    SqrtHiddenBf16,
}

/// What a decoder family adds over Llama.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderSpec {
    /// The family.
    pub family: Family,
    /// Biases on q/k/v whatever `attention_bias` says (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMS QK-norm before RoPE, with weights (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Gemma's norms: `(1 + w)` RMSNorm, sandwich placement.
    pub gemma_norms: bool,
    /// The embedding scale.
    pub embed_scale: EmbedScale,
    /// Which layers are windowed.
    pub windows: WindowLayers,
    /// Layers without RoPE from `no_rope_layers` / `no_rope_layer_interval` (SmolLM3).
    pub nope_layers: bool,
    /// Soft-capping defaults `(attention, final)` when the config omits them (Gemma 2).
    pub softcap_defaults: Option<(f32, f32)>,
    /// Fused `qkv_proj` / `gate_up_proj` in the checkpoint, split by `sanitize` (Phi-3).
    pub fused_projections: bool,
    /// The activation when the config names none.
    pub activation: Activation,
    /// `tie_word_embeddings` when the config omits it.
    pub tied_default: bool,
    /// `rms_norm_eps` when the config omits it.
    pub eps_default: f32,
    /// `rope_theta` when the config omits it.
    pub theta_default: f32,
}

const LLAMA: DecoderSpec = DecoderSpec {
    family: Family::Llama,
    qkv_bias: false,
    qk_norm: false,
    gemma_norms: false,
    embed_scale: EmbedScale::None,
    windows: WindowLayers::Never,
    nope_layers: false,
    softcap_defaults: None,
    fused_projections: false,
    activation: Activation::Silu,
    tied_default: false,
    eps_default: 1e-6,
    theta_default: 10_000.0,
};

/// Whether the decoder rows describe `model_type` (the others are other families').
pub fn is_decoder(model_type: ModelType) -> bool {
    !matches!(model_type, ModelType::Mamba | ModelType::Llama4Text)
}

/// The row of a decoder `model_type` (Llama's for the types other families read).
pub fn spec(model_type: ModelType) -> DecoderSpec {
    let gemma =
        DecoderSpec { gemma_norms: true, activation: Activation::GeluApprox, tied_default: true, ..LLAMA };
    match model_type {
        ModelType::Llama | ModelType::MobileLlm | ModelType::Mamba | ModelType::Llama4Text => LLAMA,
        ModelType::Mistral => DecoderSpec { windows: WindowLayers::All, ..LLAMA },
        ModelType::Qwen2 => DecoderSpec {
            family: Family::Qwen2,
            qkv_bias: true,
            windows: WindowLayers::FromMaxWindowLayers,
            ..LLAMA
        },
        ModelType::Qwen3 => DecoderSpec {
            family: Family::Qwen3,
            qk_norm: true,
            windows: WindowLayers::FromMaxWindowLayers,
            ..LLAMA
        },
        ModelType::Gemma2 => DecoderSpec {
            family: Family::Gemma2,
            embed_scale: EmbedScale::SqrtHidden,
            windows: WindowLayers::Alternating,
            softcap_defaults: Some((50.0, 30.0)),
            ..gemma
        },
        ModelType::Gemma3Text | ModelType::Gemma3 => DecoderSpec {
            family: Family::Gemma3,
            qk_norm: true,
            embed_scale: EmbedScale::SqrtHiddenBf16,
            windows: WindowLayers::Pattern,
            theta_default: 1_000_000.0,
            ..gemma
        },
        ModelType::Phi3 => DecoderSpec {
            family: Family::Phi3,
            windows: WindowLayers::All,
            fused_projections: true,
            eps_default: 1e-5,
            ..LLAMA
        },
        ModelType::SmolLm3 => DecoderSpec { family: Family::SmolLm3, nope_layers: true, ..LLAMA },
    }
}
