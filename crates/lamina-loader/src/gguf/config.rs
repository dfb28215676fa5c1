//! A Hugging Face style `config.json` derived from a Llama GGUF's metadata, so that the
//! registry builds the model exactly as it would from a Hugging Face folder.

use serde_json::{Map, Value as Json, json};

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
/// A message naming the key that is missing or the feature lamina does not read.
pub fn llama_config(header: &Header) -> Result<Json, String> {
    let arch = header.get("general.architecture").and_then(Value::as_str).unwrap_or("");
    if arch != "llama" {
        return Err(format!("general.architecture is `{arch}`; lamina reads Llama-architecture GGUF files"));
    }
    let need = |key: &str| u64_of(header, key).ok_or_else(|| format!("metadata `{key}` is missing"));
    if u64_of(header, "llama.expert_count").unwrap_or(0) > 0 {
        return Err("mixture-of-experts GGUF files (llama.expert_count > 0) are not supported".into());
    }
    if header.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err("`rope_freqs.weight` (Llama 3.1 RoPE scaling in GGUF form) is not supported".into());
    }
    let hidden = need("llama.embedding_length")?;
    let heads = need("llama.attention.head_count")?;
    let vocab = match u64_of(header, "llama.vocab_size") {
        Some(v) => v,
        None => match header.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len() as u64,
            _ => header
                .tensors
                .iter()
                .find(|t| t.name == "token_embd.weight")
                .and_then(|t| t.shape.first().copied())
                .ok_or("the vocabulary size is not in the metadata")?,
        },
    };
    let mut config = Map::new();
    config.insert("model_type".into(), json!("llama"));
    config.insert("vocab_size".into(), json!(vocab));
    config.insert("hidden_size".into(), json!(hidden));
    config.insert("intermediate_size".into(), json!(need("llama.feed_forward_length")?));
    config.insert("num_hidden_layers".into(), json!(need("llama.block_count")?));
    config.insert("num_attention_heads".into(), json!(heads));
    config.insert(
        "num_key_value_heads".into(),
        json!(u64_of(header, "llama.attention.head_count_kv").unwrap_or(heads)),
    );
    if let Some(head_dim) = u64_of(header, "llama.attention.key_length") {
        config.insert("head_dim".into(), json!(head_dim));
    }
    config.insert(
        "rms_norm_eps".into(),
        json!(f64_of(header, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5)),
    );
    config.insert("rope_theta".into(), json!(f64_of(header, "llama.rope.freq_base").unwrap_or(10_000.0)));
    if let Some(kind) = header.get("llama.rope.scaling.type").and_then(Value::as_str) {
        if kind != "none" {
            let factor =
                f64_of(header, "llama.rope.scaling.factor").ok_or("llama.rope.scaling.factor is missing")?;
            config.insert("rope_scaling".into(), json!({"rope_type": kind, "factor": factor}));
        }
    }
    if let Some(context) = u64_of(header, "llama.context_length") {
        config.insert("max_position_embeddings".into(), json!(context));
    }
    let tied = !header.tensors.iter().any(|t| t.name == "output.weight");
    config.insert("tie_word_embeddings".into(), json!(tied));
    for (key, ours) in
        [("tokenizer.ggml.bos_token_id", "bos_token_id"), ("tokenizer.ggml.eos_token_id", "eos_token_id")]
    {
        if let Some(id) = u64_of(header, key) {
            config.insert(ours.into(), json!(id));
        }
    }
    Ok(Json::Object(config))
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
        assert!(err.contains("llama.embedding_length"), "{err}");
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
