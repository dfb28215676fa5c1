//! The decoder families as data: what each adds over Llama, the `spec` of its row in
//! [`crate::FAMILIES`]. Every mechanism a spec names lives in the layers (norm offsets,
//! sandwich norms, soft-capping, per-layer windows, QK-norm); a new Llama-like family is a
//! row there.

use lamina_core::Activation;

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

/// Keys of `config.json` that only some families read; in the others' configs they are
/// ignored, as transformers ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKey {
    /// `query_pre_attn_scalar`: the score scale is its inverse square root (Gemma 2/3).
    QueryPreAttnScalar,
    /// `attn_logit_softcapping` and `final_logit_softcapping` (Gemma 2/3).
    LogitSoftcapping,
    /// `rope_local_base_freq`: the RoPE base of the windowed layers (Gemma 3).
    LocalRopeBase,
}

/// What a decoder family adds over Llama: the data of its row in [`crate::FAMILIES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderSpec {
    /// Biases on q/k/v whatever `attention_bias` says (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMS QK-norm before RoPE, with weights (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Gemma's norms: `(1 + w)` RMSNorm, sandwich placement.
    pub gemma_norms: bool,
    /// The embedding scale.
    pub embed_scale: EmbedScale,
    /// Which layers are windowed (`layer_types`, when given, only where some are).
    pub windows: WindowLayers,
    /// Layers without RoPE from `no_rope_layers` / `no_rope_layer_interval` (SmolLM3).
    pub nope_layers: bool,
    /// The family's own keys it reads.
    pub keys: &'static [FamilyKey],
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

impl DecoderSpec {
    /// Whether the family reads `key`.
    pub fn reads(&self, key: FamilyKey) -> bool {
        self.keys.contains(&key)
    }
}

/// Llama: what every other row changes.
pub const LLAMA: DecoderSpec = DecoderSpec {
    qkv_bias: false,
    qk_norm: false,
    gemma_norms: false,
    embed_scale: EmbedScale::None,
    windows: WindowLayers::Never,
    nope_layers: false,
    keys: &[],
    softcap_defaults: None,
    fused_projections: false,
    activation: Activation::Silu,
    tied_default: false,
    eps_default: 1e-6,
    theta_default: 10_000.0,
};

/// Mistral: Llama with a window on every layer.
pub const MISTRAL: DecoderSpec = DecoderSpec { windows: WindowLayers::All, ..LLAMA };

/// Qwen2 / Qwen2.5: q/k/v biases, windows from `max_window_layers`.
pub const QWEN2: DecoderSpec =
    DecoderSpec { qkv_bias: true, windows: WindowLayers::FromMaxWindowLayers, ..LLAMA };

/// Qwen3: QK-norm instead of the biases.
pub const QWEN3: DecoderSpec =
    DecoderSpec { qk_norm: true, windows: WindowLayers::FromMaxWindowLayers, ..LLAMA };

const GEMMA: DecoderSpec =
    DecoderSpec { gemma_norms: true, activation: Activation::GeluApprox, tied_default: true, ..LLAMA };

/// Gemma 2: sandwich norms, scaled embeddings, alternating windows, soft-capping.
pub const GEMMA2: DecoderSpec = DecoderSpec {
    embed_scale: EmbedScale::SqrtHidden,
    windows: WindowLayers::Alternating,
    keys: &[FamilyKey::QueryPreAttnScalar, FamilyKey::LogitSoftcapping],
    softcap_defaults: Some((50.0, 30.0)),
    ..GEMMA
};

/// Gemma 3: Gemma 2 with QK-norm, 5 local layers to 1 global, a local RoPE base.
pub const GEMMA3: DecoderSpec = DecoderSpec {
    qk_norm: true,
    embed_scale: EmbedScale::SqrtHiddenBf16,
    windows: WindowLayers::Pattern,
    keys: &[FamilyKey::QueryPreAttnScalar, FamilyKey::LogitSoftcapping, FamilyKey::LocalRopeBase],
    theta_default: 1_000_000.0,
    ..GEMMA
};

/// Phi-3: fused projections in the checkpoint, windows on every layer.
pub const PHI3: DecoderSpec =
    DecoderSpec { windows: WindowLayers::All, fused_projections: true, eps_default: 1e-5, ..LLAMA };

/// SmolLM3: Llama with some layers' RoPE left out.
pub const SMOLLM3: DecoderSpec = DecoderSpec { nope_layers: true, ..LLAMA };
