//! The typed family config of a Llama GGUF, built from its metadata, so that the model is
//! built exactly as it would be from a Hugging Face folder.

use lamina_families::hf::{HfRope, RopeType, TokenIds};
use lamina_families::{DecoderConfig, ModelType};

use super::header::{Header, Value};

fn u64_of(header: &Header, key: &str) -> Option<u64> {
    header.get(key).and_then(Value::as_u64)
}

fn f64_of(header: &Header, key: &str) -> Option<f64> {
    header.get(key).and_then(Value::as_f64)
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
    let size = |key: &str, value: u64| {
        usize::try_from(value).map_err(|_| format!("metadata `{key}` ({value}) is too large"))
    };
    let need = |key: &str| {
        u64_of(header, key).ok_or_else(|| format!("metadata `{key}` is missing")).and_then(|v| size(key, v))
    };
    let optional = |key: &str| u64_of(header, key).map(|v| size(key, v)).transpose();
    if u64_of(header, "llama.expert_count").unwrap_or(0) > 0 {
        return Err("mixture-of-experts GGUF files (llama.expert_count > 0) are not supported".into());
    }
    if header.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err("`rope_freqs.weight` (Llama 3.1 RoPE scaling in GGUF form) is not supported".into());
    }
    let heads = need("llama.attention.head_count")?;
    let vocab = match optional("llama.vocab_size")? {
        Some(v) => v,
        None => match header.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => header
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .and_then(|t| t.shape.first().copied())
                .ok_or_else(|| "the vocabulary size is not in the metadata".to_owned())
                .and_then(|v| size("token_embd.weight", v))?,
        },
    };
    let rope_scaling = match header.get("llama.rope.scaling.type").and_then(Value::as_str) {
        None | Some("none") => None,
        Some(kind) => {
            let rope_type: RopeType =
                kind.parse().map_err(|_| format!("llama.rope.scaling.type `{kind}` is not supported"))?;
            let factor =
                f64_of(header, "llama.rope.scaling.factor").ok_or("llama.rope.scaling.factor is missing")?;
            Some(HfRope { rope_type: Some(rope_type), factor: Some(factor as f32), ..HfRope::default() })
        }
    };
    let token = |key: &str| u64_of(header, key).and_then(|id| u32::try_from(id).ok()).map(TokenIds::One);
    Ok(DecoderConfig {
        vocab_size: vocab,
        hidden_size: need("llama.embedding_length")?,
        intermediate_size: need("llama.feed_forward_length")?,
        num_hidden_layers: need("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(optional("llama.attention.head_count_kv")?.unwrap_or(heads)),
        head_dim: optional("llama.attention.key_length")?,
        rms_norm_eps: Some(f64_of(header, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32),
        rope_theta: Some(f64_of(header, "llama.rope.freq_base").unwrap_or(10_000.0) as f32),
        rope_scaling,
        max_position_embeddings: optional("llama.context_length")?,
        tie_word_embeddings: Some(!header.tensors.iter().any(|t| t.name == "output.weight")),
        bos_token_id: token("tokenizer.ggml.bos_token_id"),
        eos_token_id: token("tokenizer.ggml.eos_token_id"),
        ..DecoderConfig::new(ModelType::Llama)
    })
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

    use super::*;

    fn header(entries: &[(&str, Value)]) -> Header {
        let metadata: BTreeMap<String, Value> =
            entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        Header { version: 3, metadata, tensors: vec![] }
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
