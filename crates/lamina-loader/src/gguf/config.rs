//! The typed family config of a Llama GGUF, built from its metadata, so that the model is
//! built exactly as it would be from a Hugging Face folder.

use lamina_families::hf::{HfRope, RopeType, TokenIds};
use lamina_families::{DecoderConfig, ModelType};

use super::header::{Header, TensorType, Value};

fn u64_of(header: &Header, key: &str) -> Option<u64> {
    header.get(key).and_then(Value::as_u64)
}

fn f64_of(header: &Header, key: &str) -> Option<f64> {
    header.get(key).and_then(Value::as_f64)
}

/// The model architectures lamina builds from GGUF metadata (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum Arch {
    /// `llama` (Llama, Mistral, SmolLM2, ...): q/k rows permuted by llama.cpp.
    Llama,
    /// `gemma3`: norms stored as `1 + w`, no permutation.
    Gemma3,
    /// `qwen2` (Qwen2, Qwen2.5): q/k/v biases, no permutation.
    Qwen2,
    /// `qwen3`: QK-norm, no permutation.
    Qwen3,
    /// `gemma2`: norms stored as `1 + w`, soft-capping, no permutation.
    Gemma2,
    /// `phi3`: fused `attn_qkv` and gate/up (`ffn_up`), no permutation.
    Phi3,
}

/// The architecture and typed config a GGUF's metadata describes. `file` is the whole
/// file: Phi-3's LongRoPE factors are tensors (`rope_factors_long/short.weight`), read
/// from it.
///
/// # Errors
/// A message naming the architecture, or the key or tensor that is missing, too large or
/// malformed.
pub fn config(header: &Header, file: &[u8]) -> Result<(Arch, DecoderConfig), String> {
    let name = header.get("general.architecture").and_then(Value::as_str).unwrap_or("");
    let arch: Arch = name.parse().map_err(|_| {
        format!(
            "general.architecture is `{name}`; lamina reads `llama`, `qwen2`, `qwen3`, `gemma2`, `gemma3` \
             and `phi3` GGUF files"
        )
    })?;
    Ok((
        arch,
        match arch {
            Arch::Llama => llama_config(header)?,
            Arch::Gemma3 => gemma3_config(header)?,
            Arch::Qwen2 => decoder_config(header, "qwen2", ModelType::Qwen2)?,
            Arch::Qwen3 => decoder_config(header, "qwen3", ModelType::Qwen3)?,
            Arch::Phi3 => phi3_config(header, file)?,
            Arch::Gemma2 => gemma2_config(header)?,
        },
    ))
}

/// The GGUF tensors that are config, not weights (Phi-3's LongRoPE factors).
pub fn is_config_tensor(name: &str) -> bool {
    matches!(name, ROPE_FACTORS_LONG | ROPE_FACTORS_SHORT)
}

const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// The config of a Phi-3 (or Phi-4) GGUF: `phi3.*` metadata; a rotated width below the
/// head's (`rope.dimension_count`, Phi-4-mini's partial rotary factor); a sliding window
/// unless it is 0 (the converter writes 0 for none); and LongRoPE when the file holds the
/// factor tensors (the 128k variants), with `rope.scaling.original_context_length` as the
/// pretraining context and `context_length` as the extended one.
fn phi3_config(header: &Header, file: &[u8]) -> Result<DecoderConfig, String> {
    let base = decoder_config(header, "phi3", ModelType::Phi3)?;
    let head_dim = base.head_dim();
    let rotated = optional(header, "phi3.rope.dimension_count")?;
    let partial_rotary_factor = match rotated {
        Some(0) => return Err("metadata `phi3.rope.dimension_count` is 0".into()),
        Some(d) if d > head_dim => {
            return Err(format!(
                "metadata `phi3.rope.dimension_count` ({d}) exceeds the head size ({head_dim})"
            ));
        }
        Some(d) if d % 2 == 1 => return Err(format!("metadata `phi3.rope.dimension_count` ({d}) is odd")),
        Some(d) if d < head_dim => Some(rotary_factor(d, head_dim)),
        _ => None,
    };
    let long_factor = factors(header, file, ROPE_FACTORS_LONG)?;
    let short_factor = factors(header, file, ROPE_FACTORS_SHORT)?;
    let (rope_scaling, original) = match (long_factor, short_factor) {
        (None, None) => (base.rope_scaling.clone(), None),
        (Some(long), short) => {
            let original = need(header, "phi3.rope.scaling.original_context_length")?;
            let rope = HfRope {
                rope_type: Some(RopeType::Longrope),
                long_factor: Some(long),
                short_factor: short,
                original_max_position_embeddings: u32::try_from(original).ok(),
                ..HfRope::default()
            };
            (Some(rope), Some(original))
        }
        (None, Some(_)) => return Err(format!("`{ROPE_FACTORS_SHORT}` without `{ROPE_FACTORS_LONG}`")),
    };
    Ok(DecoderConfig {
        sliding_window: optional(header, "phi3.attention.sliding_window")?.filter(|&w| w > 0),
        partial_rotary_factor,
        rope_scaling,
        original_max_position_embeddings: original,
        ..base
    })
}

/// The fraction of `head_dim` whose truncated product is `rotated` again (the family
/// rotates `(head_dim * factor) as usize` features, as mlx-lm does).
fn rotary_factor(rotated: usize, head_dim: usize) -> f32 {
    let factor = rotated as f32 / head_dim as f32;
    if (head_dim as f32 * factor) as usize >= rotated { factor } else { f32::from_bits(factor.to_bits() + 1) }
}

/// The values of a small f32 config tensor (`[n]`), when the file holds it.
fn factors(header: &Header, file: &[u8], name: &str) -> Result<Option<Vec<f32>>, String> {
    let Some(desc) = header.tensors.iter().find(|t| t.name == name) else {
        return Ok(None);
    };
    if desc.kind != TensorType::F32 || desc.shape.len() != 1 {
        return Err(format!("`{name}` must be a 1-D F32 tensor, not {} {:?}", desc.kind, desc.shape));
    }
    let bytes = usize::try_from(desc.offset)
        .ok()
        .zip(usize::try_from(desc.bytes).ok())
        .and_then(|(start, len)| file.get(start..start.checked_add(len)?))
        .filter(|bytes| bytes.len() as u64 == desc.numel().saturating_mul(4))
        .ok_or_else(|| format!("`{name}` lies outside the file"))?;
    let values: Vec<f32> =
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    if let Some(bad) = values.iter().find(|v| !v.is_finite() || **v <= 0.0) {
        return Err(format!("`{name}` holds {bad}; LongRoPE factors are positive"));
    }
    Ok(Some(values))
}

/// A metadata size as `usize`.
fn size(key: &str, value: u64) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("metadata `{key}` ({value}) is too large"))
}

/// A size the metadata must hold.
fn need(header: &Header, key: &str) -> Result<usize, String> {
    u64_of(header, key).ok_or_else(|| format!("metadata `{key}` is missing")).and_then(|v| size(key, v))
}

/// A size the metadata may hold.
fn optional(header: &Header, key: &str) -> Result<Option<usize>, String> {
    u64_of(header, key).map(|v| size(key, v)).transpose()
}

/// The vocabulary size: `<arch>.vocab_size`, else the token list, else the embedding.
fn vocab_size(header: &Header, arch: &str) -> Result<usize, String> {
    let key = format!("{arch}.vocab_size");
    if let Some(v) = u64_of(header, &key) {
        return size(&key, v);
    }
    match header.get("tokenizer.ggml.tokens") {
        Some(Value::Array(tokens)) => Ok(tokens.len()),
        _ => header
            .tensors
            .iter()
            .find(|t| t.name == "token_embd.weight")
            .and_then(|t| t.shape.first().copied())
            .ok_or_else(|| "the vocabulary size is not in the metadata".to_owned())
            .and_then(|v| size("token_embd.weight", v)),
    }
}

/// The config of a Gemma 2 GGUF (`gemma2.*` metadata, with its soft-capping values; the
/// alternating window pattern is Gemma 2's).
fn gemma2_config(header: &Header) -> Result<DecoderConfig, String> {
    let float = |key: &str| f64_of(header, key).map(|v| v as f32);
    let base = decoder_config(header, "gemma2", ModelType::Gemma2)?;
    let head_dim = need(header, "gemma2.attention.key_length")?;
    Ok(DecoderConfig {
        head_dim: Some(head_dim),
        query_pre_attn_scalar: Some(head_dim as f32),
        rms_norm_eps: Some(float("gemma2.attention.layer_norm_rms_epsilon").unwrap_or(1e-6)),
        sliding_window: optional(header, "gemma2.attention.sliding_window")?,
        attn_logit_softcapping: float("gemma2.attn_logit_softcapping"),
        final_logit_softcapping: float("gemma2.final_logit_softcapping"),
        ..base
    })
}

/// The config of a Gemma 3 GGUF (`gemma3.*` metadata; the local RoPE base and the 5:1
/// pattern are Gemma 3's, which llama.cpp does not store).
fn gemma3_config(header: &Header) -> Result<DecoderConfig, String> {
    let need = |key: &str| need(header, key);
    let optional = |key: &str| optional(header, key);
    let heads = need("gemma3.attention.head_count")?;
    let head_dim = need("gemma3.attention.key_length")?;
    let token = |key: &str| u64_of(header, key).and_then(|id| u32::try_from(id).ok()).map(TokenIds::One);
    Ok(DecoderConfig {
        vocab_size: vocab_size(header, "gemma3")?,
        hidden_size: need("gemma3.embedding_length")?,
        intermediate_size: need("gemma3.feed_forward_length")?,
        num_hidden_layers: need("gemma3.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(optional("gemma3.attention.head_count_kv")?.unwrap_or(heads)),
        head_dim: Some(head_dim),
        rms_norm_eps: Some(f64_of(header, "gemma3.attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f32),
        rope_theta: Some(f64_of(header, "gemma3.rope.freq_base").unwrap_or(1_000_000.0) as f32),
        rope_local_base_freq: Some(10_000.0),
        sliding_window: optional("gemma3.attention.sliding_window")?,
        sliding_window_pattern: Some(6),
        query_pre_attn_scalar: Some(head_dim as f32),
        max_position_embeddings: optional("gemma3.context_length")?,
        tie_word_embeddings: Some(!header.tensors.iter().any(|t| t.name == "output.weight")),
        bos_token_id: token("tokenizer.ggml.bos_token_id"),
        eos_token_id: token("tokenizer.ggml.eos_token_id"),
        ..DecoderConfig::new(ModelType::Gemma3Text)
    })
}

/// The config of a Llama-architecture GGUF.
///
/// # Errors
/// A message naming the key that is missing or too large, or the feature lamina does not
/// read.
pub fn llama_config(header: &Header) -> Result<DecoderConfig, String> {
    let arch = header.get("general.architecture").and_then(Value::as_str).unwrap_or("");
    if arch != "llama" {
        return Err(format!("general.architecture is `{arch}`; lamina reads Llama-architecture GGUF files"));
    }
    if u64_of(header, "llama.expert_count").unwrap_or(0) > 0 {
        return Err("mixture-of-experts GGUF files (llama.expert_count > 0) are not supported".into());
    }
    if header.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err("`rope_freqs.weight` (Llama 3.1 RoPE scaling in GGUF form) is not supported".into());
    }
    decoder_config(header, "llama", ModelType::Llama)
}

/// The config of a decoder whose metadata keys start with `arch` (`llama`, `qwen2`,
/// `qwen3`): the keys llama.cpp's converter writes for all of them.
fn decoder_config(header: &Header, arch: &str, model_type: ModelType) -> Result<DecoderConfig, String> {
    let key = |name: &str| format!("{arch}.{name}");
    let need = |name: &str| need(header, &key(name));
    let optional = |name: &str| optional(header, &key(name));
    let float = |name: &str| f64_of(header, &key(name));
    let heads = need("attention.head_count")?;
    let rope_scaling = match header.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => None,
        Some(kind) => {
            let rope_type: RopeType =
                kind.parse().map_err(|_| format!("{arch}.rope.scaling.type `{kind}` is not supported"))?;
            let factor = float("rope.scaling.factor")
                .ok_or_else(|| format!("{arch}.rope.scaling.factor is missing"))?;
            Some(HfRope { rope_type: Some(rope_type), factor: Some(factor as f32), ..HfRope::default() })
        }
    };
    let token = |key: &str| u64_of(header, key).and_then(|id| u32::try_from(id).ok()).map(TokenIds::One);
    Ok(DecoderConfig {
        vocab_size: vocab_size(header, arch)?,
        hidden_size: need("embedding_length")?,
        intermediate_size: need("feed_forward_length")?,
        num_hidden_layers: need("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(optional("attention.head_count_kv")?.unwrap_or(heads)),
        head_dim: optional("attention.key_length")?,
        rms_norm_eps: Some(float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32),
        rope_theta: Some(float("rope.freq_base").unwrap_or(10_000.0) as f32),
        rope_scaling,
        max_position_embeddings: optional("context_length")?,
        tie_word_embeddings: Some(!header.tensors.iter().any(|t| t.name == "output.weight")),
        bos_token_id: token("tokenizer.ggml.bos_token_id"),
        eos_token_id: token("tokenizer.ggml.eos_token_id"),
        ..DecoderConfig::new(model_type)
    })
}

/// How a GGUF tensor becomes a checkpoint tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The Hugging Face name.
    pub name: String,
    /// `Some(heads)` when llama.cpp permuted the rows for ggml's RoPE layout.
    pub permuted: Option<usize>,
    /// Whether llama.cpp stored the norm as `1 + w` (Gemma), so `1` must come off.
    pub unit_offset: bool,
}

/// llama.cpp's tensor name -> the Hugging Face name, per architecture.
pub fn map_name(arch: Arch, name: &str, heads: usize, kv_heads: usize) -> Mapped {
    match arch {
        Arch::Llama => {
            let (name, permuted) = hf_name(name, heads, kv_heads);
            Mapped { name, permuted, unit_offset: false }
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            Mapped { name: hf_name(name, heads, kv_heads).0, permuted: None, unit_offset: false }
        }
        Arch::Phi3 => {
            let fused = match name.strip_prefix("blk.").and_then(|rest| rest.split_once('.')) {
                Some((layer, "attn_qkv.weight")) => {
                    Some(format!("model.layers.{layer}.self_attn.qkv_proj.weight"))
                }
                Some((layer, "ffn_up.weight")) => {
                    Some(format!("model.layers.{layer}.mlp.gate_up_proj.weight"))
                }
                _ => None,
            };
            let name = fused.unwrap_or_else(|| hf_name(name, heads, kv_heads).0);
            Mapped { name, permuted: None, unit_offset: false }
        }
        Arch::Gemma2 | Arch::Gemma3 => {
            let unit_offset = name.ends_with("norm.weight");
            let gemma = match name.split_once('.').map(|(_, rest)| rest.split_once('.')) {
                Some(Some((layer, part))) if name.starts_with("blk.") => {
                    let hf = match part {
                        "attn_q_norm.weight" => Some("self_attn.q_norm.weight"),
                        "attn_k_norm.weight" => Some("self_attn.k_norm.weight"),
                        "post_attention_norm.weight" => Some("post_attention_layernorm.weight"),
                        "ffn_norm.weight" => Some("pre_feedforward_layernorm.weight"),
                        "post_ffw_norm.weight" => Some("post_feedforward_layernorm.weight"),
                        _ => None,
                    };
                    hf.map(|hf| format!("model.layers.{layer}.{hf}"))
                }
                _ => None,
            };
            let name = gemma.unwrap_or_else(|| hf_name(name, heads, kv_heads).0);
            Mapped { name, permuted: None, unit_offset }
        }
    }
}

/// llama.cpp's tensor name -> the Hugging Face name, and whether the rows of the tensor
/// were permuted for ggml's RoPE layout (`Some(heads)`).
pub fn hf_name(name: &str, heads: usize, kv_heads: usize) -> (String, Option<usize>) {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(fixed) = fixed {
        return (fixed.to_owned(), None);
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return (name.to_owned(), None);
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return (name.to_owned(), None);
    };
    let (hf, permuted) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "attn_q.bias" => ("self_attn.q_proj.bias", None),
        "attn_k.bias" => ("self_attn.k_proj.bias", None),
        "attn_v.bias" => ("self_attn.v_proj.bias", None),
        "attn_q_norm.weight" => ("self_attn.q_norm.weight", None),
        "attn_k_norm.weight" => ("self_attn.k_norm.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return (name.to_owned(), None),
    };
    (format!("model.layers.{layer}.{hf}"), permuted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use lamina_families::AnyConfig;

    use super::*;

    fn header(entries: &[(&str, Value)]) -> Header {
        let metadata: BTreeMap<String, Value> =
            entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Header { version: 3, metadata, tensors: vec![] }
    }

    /// A Phi-3 header (head size 8) whose file holds `factors` as `rope_factors_long`.
    fn phi3(extra: &[(&str, Value)], kind: TensorType, factors: &[f32]) -> (Header, Vec<u8>) {
        let mut entries = vec![
            ("general.architecture", Value::String("phi3".into())),
            ("phi3.embedding_length", Value::Uint(32)),
            ("phi3.feed_forward_length", Value::Uint(64)),
            ("phi3.block_count", Value::Uint(1)),
            ("phi3.attention.head_count", Value::Uint(4)),
            ("phi3.vocab_size", Value::Uint(16)),
            ("phi3.context_length", Value::Uint(512)),
            ("phi3.rope.scaling.original_context_length", Value::Uint(64)),
        ];
        entries.extend(extra.iter().cloned());
        let mut header = header(&entries);
        let file: Vec<u8> = factors.iter().flat_map(|f| f.to_le_bytes()).collect();
        header.tensors.push(super::super::header::TensorDesc {
            name: ROPE_FACTORS_LONG.into(),
            shape: vec![factors.len() as u64],
            kind,
            bytes: file.len() as u64,
            offset: 0,
        });
        (header, file)
    }

    #[test]
    fn phi3_longrope_factors_are_read_and_bad_ones_refused() {
        let (h, file) = phi3(&[], TensorType::F32, &[1.0, 2.0, 4.0, 8.0]);
        let (_, parsed) = config(&h, &file).unwrap();
        let rope = parsed.rope_scaling.clone().unwrap();
        assert_eq!(rope.long_factor, Some(vec![1.0, 2.0, 4.0, 8.0]));
        assert_eq!((rope.rope_type, rope.short_factor), (Some(RopeType::Longrope), None));
        assert_eq!(parsed.original_max_position_embeddings, Some(64));
        assert!(parsed.build(lamina_core::Budget::default()).is_ok());
        // One factor too few for the 4 rotated pairs: refused when the model is built.
        let (h, file) = phi3(&[], TensorType::F32, &[1.0, 2.0, 4.0]);
        assert!(config(&h, &file).unwrap().1.build(lamina_core::Budget::default()).is_err());
        let (h, file) = phi3(&[], TensorType::F32, &[1.0, -2.0, 4.0, 8.0]);
        assert!(config(&h, &file).unwrap_err().contains("positive"));
        let (h, file) = phi3(&[], TensorType::F16, &[1.0, 2.0]);
        assert!(config(&h, &file).unwrap_err().contains("1-D F32"));
        let (h, file) = phi3(&[], TensorType::F32, &[1.0, 2.0, 4.0, 8.0]);
        assert!(config(&h, &file[..8]).unwrap_err().contains("outside the file"));
        let (mut h, file) = phi3(&[], TensorType::F32, &[1.0, 2.0, 4.0, 8.0]);
        h.metadata.remove("phi3.rope.scaling.original_context_length");
        assert!(config(&h, &file).unwrap_err().contains("original_context_length"));
        // Rotated width and window.
        let rotated = |d: u64| ("phi3.rope.dimension_count", Value::Uint(d));
        let window = ("phi3.attention.sliding_window", Value::Uint(0));
        let (h, file) = phi3(&[rotated(4), window], TensorType::F32, &[1.0, 2.0]);
        let (_, parsed) = config(&h, &file).unwrap();
        assert_eq!((parsed.partial_rotary_factor, parsed.sliding_window), (Some(0.5), None));
        assert!(parsed.build(lamina_core::Budget::default()).is_ok());
        for bad in [0, 3, 10] {
            let (h, file) = phi3(&[rotated(bad)], TensorType::F32, &[1.0, 2.0]);
            assert!(config(&h, &file).unwrap_err().contains("dimension_count"), "{bad}");
        }
        for (rotated, head_dim) in [(96, 128), (24, 80), (2, 6), (40, 120), (22, 34)] {
            let f = rotary_factor(rotated, head_dim);
            assert_eq!(((head_dim as f32 * f) as usize) & !1, rotated);
        }
    }

    #[test]
    fn other_architectures_and_missing_keys_are_named() {
        let err =
            llama_config(&header(&[("general.architecture", Value::String("gpt2".into()))])).unwrap_err();
        assert!(err.contains("`gpt2`"), "{err}");
        let err =
            llama_config(&header(&[("general.architecture", Value::String("llama".into()))])).unwrap_err();
        assert!(err.contains("metadata `llama.") && err.contains("is missing"), "{err}");
        let moe = header(&[
            ("general.architecture", Value::String("llama".into())),
            ("llama.expert_count", Value::Uint(8)),
        ]);
        assert!(llama_config(&moe).unwrap_err().contains("mixture-of-experts"));
    }

    #[test]
    fn gemma3_metadata_builds_a_gemma3_config_and_its_names_map() {
        let gemma = header(&[
            ("general.architecture", Value::String("gemma3".into())),
            ("gemma3.embedding_length", Value::Uint(640)),
            ("gemma3.feed_forward_length", Value::Uint(2048)),
            ("gemma3.block_count", Value::Uint(18)),
            ("gemma3.attention.head_count", Value::Uint(4)),
            ("gemma3.attention.head_count_kv", Value::Uint(1)),
            ("gemma3.attention.key_length", Value::Uint(256)),
            ("gemma3.attention.sliding_window", Value::Uint(512)),
            ("gemma3.vocab_size", Value::Uint(262_144)),
        ]);
        let (arch, gemma_config) = config(&gemma, &[]).unwrap();
        assert_eq!(arch, Arch::Gemma3);
        assert_eq!(gemma_config.model_type, ModelType::Gemma3Text);
        assert_eq!(gemma_config.num_parameters().unwrap(), 268_098_176, "the published Gemma 3 270M count");
        assert_eq!((gemma_config.window(0), gemma_config.window(5)), (Some(512), None));
        let norm = map_name(Arch::Gemma3, "blk.3.ffn_norm.weight", 4, 1);
        assert_eq!(norm.name, "model.layers.3.pre_feedforward_layernorm.weight");
        assert!(norm.unit_offset && norm.permuted.is_none());
        let q = map_name(Arch::Gemma3, "blk.0.attn_q.weight", 4, 1);
        assert_eq!(
            (q.name.as_str(), q.permuted, q.unit_offset),
            ("model.layers.0.self_attn.q_proj.weight", None, false)
        );
        assert_eq!(map_name(Arch::Gemma3, "output_norm.weight", 4, 1).name, "model.norm.weight");
        assert_eq!(map_name(Arch::Llama, "blk.0.attn_q.weight", 4, 1).permuted, Some(4));
        let other = header(&[("general.architecture", Value::String("falcon".into()))]);
        assert!(config(&other, &[]).unwrap_err().contains("`falcon`"));
    }

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(hf_name("token_embd.weight", 9, 3), ("model.embed_tokens.weight".into(), None));
        assert_eq!(
            hf_name("blk.12.attn_q.weight", 9, 3),
            ("model.layers.12.self_attn.q_proj.weight".into(), Some(9))
        );
        assert_eq!(
            hf_name("blk.0.attn_k.weight", 9, 3),
            ("model.layers.0.self_attn.k_proj.weight".into(), Some(3))
        );
        assert_eq!(hf_name("blk.3.ffn_down.weight", 9, 3).0, "model.layers.3.mlp.down_proj.weight");
        assert_eq!(hf_name("blk.3.unknown.weight", 9, 3).0, "blk.3.unknown.weight");
    }
}
