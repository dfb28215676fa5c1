//! The decoder-only transformer families — Llama (2/3.x, Mistral, TinyLlama, SmolLM2,
//! Code Llama), Qwen2/2.5, Qwen3, Gemma 2, Gemma 3, Phi-3, SmolLM3 — as one config
//! ([`DecoderConfig`]) and a spec per row of [`crate::FAMILIES`] ([`DecoderSpec`]).
//!
//! Checkpoint names: `model.embed_tokens`, `model.layers.N.{input_layernorm, self_attn.
//! {q,k,v,o}_proj, self_attn.{q,k}_norm, post_attention_layernorm,
//! pre_feedforward_layernorm, post_feedforward_layernorm, mlp.{gate,up,down}_proj}`,
//! `model.norm`, `lm_head` (absent when tied). Phi-3's fused `qkv_proj` and
//! `gate_up_proj` are split by `sanitize` (so a saved Phi-3 has Llama's names).

mod config;
mod presets;
mod spec;

pub use config::{DecoderConfig, LayerType};
pub use spec::{
    DecoderSpec, EmbedScale, FamilyKey, GEMMA2, GEMMA3, LLAMA, MISTRAL, PHI3, QWEN2, QWEN3, SMOLLM3,
    WindowLayers,
};

use lamina_backbones::TransformerBackbone;
use lamina_core::{Result, SizeEstimate};
use mlx_rs::Array;
use mlx_rs::ops::indexing::TryIndexOp;

use crate::family::{Family, FamilyConfig};
use crate::family_model::FamilyModel;
use crate::hf::ids;
use crate::model::{ModelInfo, Weights, drop_common};

/// The Llama family's config (the decoder config with `model_type` `llama` or `mistral`).
pub type LlamaConfig = DecoderConfig;

/// A decoder-family causal language model.
pub type DecoderForCausalLM = FamilyModel<DecoderConfig>;

/// A Llama-family causal language model.
pub type LlamaForCausalLM = FamilyModel<DecoderConfig>;

impl FamilyConfig for DecoderConfig {
    type Backbone = TransformerBackbone;

    fn family(&self) -> Family {
        crate::registry::family_of(self.model_type)
    }

    fn estimate(&self) -> SizeEstimate {
        DecoderConfig::estimate(self)
    }

    fn build_backbone(&self) -> Result<TransformerBackbone> {
        TransformerBackbone::new(&self.backbone()?)
    }

    fn tie_word_embeddings(&self) -> bool {
        self.tied()
    }

    fn info(&self) -> ModelInfo {
        ModelInfo {
            family: self.family(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_hidden_layers,
            max_position_embeddings: self.max_position_embeddings,
            bos_token_id: ids(&self.bos_token_id).first().copied(),
            eos_token_ids: ids(&self.eos_token_id),
        }
    }

    /// Drops recomputed tensors; splits Phi-3's fused projections.
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        let mut weights = drop_common(weights, self.tied());
        if self.spec().fused_projections {
            let (q, kv) = (self.num_attention_heads * self.head_dim(), self.kv_heads() * self.head_dim());
            weights =
                split_fused(weights, "self_attn.qkv_proj", &[("q_proj", q), ("k_proj", kv), ("v_proj", kv)])?;
            let i = self.intermediate_size;
            weights = split_fused(weights, "mlp.gate_up_proj", &[("gate_proj", i), ("up_proj", i)])?;
        }
        Ok(weights)
    }

    fn final_logit_softcapping(&self) -> Option<f32> {
        self.softcaps().1
    }
}

/// Splits every tensor under `<...>.<fused>.` (weight, bias, and a quantized layer's
/// scales and biases) along its rows into the named parts, placed beside it.
fn split_fused(weights: Weights, fused: &str, parts: &[(&str, usize)]) -> Result<Weights> {
    let (parent, _) = fused.rsplit_once('.').unwrap_or(("", fused));
    let marker = format!(".{fused}.");
    let mut out = Weights::with_capacity(weights.len() + parts.len());
    for (key, value) in weights {
        let Some(at) = key.find(&marker) else {
            out.insert(key, value);
            continue;
        };
        let (prefix, leaf) = (&key[..at], &key[at + marker.len()..]);
        let total: usize = parts.iter().map(|p| p.1).sum();
        if value.ndim() == 0 || value.dim(0) as usize != total {
            return Err(lamina_core::Error::Shape {
                name: key.clone(),
                expected: vec![total as i32, -1],
                actual: value.shape().to_vec(),
            });
        }
        let mut start = 0i32;
        for (name, rows) in parts {
            let end = start + *rows as i32;
            let part: Array = value.try_index(start..end)?;
            let parent = if parent.is_empty() { String::new() } else { format!("{parent}.") };
            out.insert(format!("{prefix}.{parent}{name}.{leaf}"), part);
            start = end;
        }
    }
    Ok(out)
}
