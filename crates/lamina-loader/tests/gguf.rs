//! GGUF files as llama.cpp writes them (made by `scripts/fixtures/gguf_files.py` and
//! `gguf_families.py`): logits
//! match mlx-lm on the same (dequantized) weights, the tokenizer built from the metadata
//! matches Hugging Face `tokenizers`, and truncated or corrupt files are typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina_heads::ModelInput;
use lamina_loader::{LoadOptions, LoaderError, load};
use mlx_rs::{Array, Dtype};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf").join(name)
}

async fn logits_match(name: &str, options: LoadOptions) {
    let mut loaded = load(fixture(&format!("{name}.gguf")), options).await.unwrap();
    assert!(loaded.report.is_clean(), "{}", loaded.report);
    let reference = Array::load_safetensors(fixture(&format!("reference_{name}.safetensors"))).unwrap();
    let logits = loaded.model.forward(ModelInput::new(&reference["input_ids"])).unwrap().logits;
    let diff =
        logits.subtract(&reference["logits"]).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
    eprintln!("{name}: max logit difference to mlx-lm {diff:e}");
    assert!(diff < 1e-4, "{name}: max logit difference {diff}");
}

/// With the defaults (a GGUF file's 8-bit activations, its head's top recomputed exactly),
/// every position's top logit is mlx-lm's: the same token, its logit to float rounding.
async fn top_logits_match(name: &str) {
    let mut loaded = load(fixture(&format!("{name}.gguf")), LoadOptions::default()).await.unwrap();
    let reference = Array::load_safetensors(fixture(&format!("reference_{name}.safetensors"))).unwrap();
    let logits = loaded.model.forward(ModelInput::new(&reference["input_ids"])).unwrap().logits;
    let vocab = *logits.shape().last().unwrap();
    let (ours, theirs) = (logits.as_slice::<f32>(), reference["logits"].as_slice::<f32>());
    for (position, (a, b)) in ours.chunks(vocab as usize).zip(theirs.chunks(vocab as usize)).enumerate() {
        let top = |row: &[f32]| {
            row.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, v)| (i, *v)).unwrap()
        };
        let ((i, v), (j, w)) = (top(a), top(b));
        assert_eq!(i, j, "{name}: position {position} ranks another token first");
        assert!((v - w).abs() < 1e-4, "{name}: position {position}: top logit {v} vs {w}");
    }
}

#[tokio::test]
async fn f32_gguf_matches_mlx_lm() {
    logits_match("tiny_f32", LoadOptions::default()).await;
}

#[tokio::test]
async fn qwen2_qwen3_gemma2_and_phi3_ggufs_match_mlx_lm() {
    // Each architecture's metadata keys and tensor names as llama.cpp's converter writes
    // them (made by scripts/fixtures/gguf_families.py): Qwen2's q/k/v biases, Qwen3's
    // QK-norm and key_length, Gemma 2's `1 + w` norms and soft-capping keys, Phi-3's fused
    // attn_qkv and gate/up; a Q8_0 embedding, nothing permuted.
    // Exact activations: every logit as the reference computes it; by default the top ones.
    let exact = Some(lamina_components::Activations::Exact);
    for (name, model_type) in
        [("tiny_qwen2", "qwen2"), ("tiny_qwen3", "qwen3"), ("tiny_gemma2", "gemma2"), ("tiny_phi3", "phi3")]
    {
        logits_match(name, LoadOptions { activations: exact, ..LoadOptions::default() }).await;
        top_logits_match(name).await;
        let loaded = load(fixture(&format!("{name}.gguf")), LoadOptions::default()).await.unwrap();
        assert_eq!(loaded.model_type(), model_type);
    }
}

#[tokio::test]
async fn phi3_longrope_factors_stored_as_tensors_match_mlx_lm() {
    // A Phi-3 128k-style file (scripts/fixtures/gguf_families.py): the LongRoPE factors are
    // the tensors rope_factors_long/short.weight, the pretraining context is
    // rope.scaling.original_context_length, and half of each head is rotated.
    logits_match("tiny_phi3_longrope", LoadOptions::default()).await;
    let (header, _, config) = lamina_loader::gguf::read_config(&fixture("tiny_phi3_longrope.gguf")).unwrap();
    assert!(header.tensors.iter().any(|t| t.name == "rope_factors_long.weight"));
    let rope = config.rope_scaling.as_ref().unwrap();
    assert_eq!(rope.long_factor.as_deref(), Some(&[1.0, 1.7, 3.5, 9.0][..]));
    assert_eq!(rope.short_factor.as_deref(), Some(&[1.0, 1.1, 1.3, 2.0][..]));
    assert_eq!(
        (config.original_max_position_embeddings, config.max_position_embeddings),
        (Some(64), Some(512))
    );
    assert_eq!(config.partial_rotary_factor, Some(0.5));
    let loaded = load(fixture("tiny_phi3_longrope.gguf"), LoadOptions::default()).await.unwrap();
    assert!(loaded.report.is_clean(), "the factor tensors are config, not weights");
}

#[tokio::test]
async fn q8_0_q4_0_q4_1_gguf_matches_mlx_lm_on_the_dequantized_weights() {
    // Kept quantized (the default: lamina's kernel computes on the packed weights; exact
    // activations, as the reference computes) and dequantized to f32 on request: both match
    // the f32 reference.
    let exact = Some(lamina_components::Activations::Exact);
    logits_match("tiny_quant", LoadOptions { activations: exact, ..LoadOptions::default() }).await;
    logits_match(
        "tiny_quant",
        LoadOptions { dtype: Some(lamina_core::DType::F32), ..LoadOptions::default() },
    )
    .await;
}

#[tokio::test]
async fn quantized_tensors_stay_quantized_unless_a_dtype_is_asked_for() {
    use lamina_families::LanguageModel;
    let count_quantized = |model: &mut dyn LanguageModel| -> Vec<(String, i32, i32)> {
        quantized_layers(model).into_iter().map(|(path, q)| (path, q.bits, q.group_size)).collect()
    };
    let mut kept = load(fixture("tiny_quant.gguf"), LoadOptions::default()).await.unwrap();
    let layers = count_quantized(kept.model.as_mut());
    assert!(!layers.is_empty());
    assert!(layers.iter().all(|(_, bits, group)| [4, 8].contains(bits) && *group == 32), "{layers:?}");
    assert!(layers.iter().any(|(p, ..)| p.ends_with("q_proj")), "{layers:?}");
    assert_eq!(kept.config["quantization"]["group_size"], 32);
    let options = LoadOptions { dtype: Some(lamina_core::DType::F32), ..LoadOptions::default() };
    let mut dense = load(fixture("tiny_quant.gguf"), options).await.unwrap();
    assert!(count_quantized(dense.model.as_mut()).is_empty());
    assert!(dense.memory_bytes > kept.memory_bytes);
}

#[tokio::test]
async fn the_config_comes_from_the_metadata() {
    let loaded = load(fixture("tiny_quant.gguf"), LoadOptions::default()).await.unwrap();
    assert_eq!(loaded.config["model_type"], "llama");
    assert_eq!(loaded.config["num_key_value_heads"], 2);
    assert_eq!(loaded.config["tie_word_embeddings"], false);
    let info = loaded.model.info();
    assert_eq!((info.hidden_size, info.num_layers), (32, 2));
    assert_eq!(loaded.model_type(), "llama");
}

#[tokio::test]
async fn the_tokenizer_matches_hugging_face_tokenizers() {
    let loaded = load(fixture("tiny_f32.gguf"), LoadOptions::default()).await.unwrap();
    let tokenizer = loaded.tokenizer.unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size() as u64, reference["vocab_size"].as_u64().unwrap());
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(text, true).unwrap();
        assert_eq!(ids, expected, "encoding {text:?}");
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "decoding {text:?}");
    }
    assert_eq!(tokenizer.eos_token(), Some("<|im_end|>"));
    assert_eq!(tokenizer.bos_token(), Some("<|im_start|>"));
    assert!(tokenizer.chat_template().unwrap().contains("add_generation_prompt"));
}

#[tokio::test]
async fn truncated_and_corrupt_gguf_files_are_errors_naming_them() {
    let bytes = std::fs::read(fixture("tiny_quant.gguf")).unwrap();
    let dir = std::env::temp_dir().join(format!("lamina-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.gguf");
    for cut in [0, 3, 20, 200, 2000, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match load(&path, LoadOptions::default()).await {
            Err(LoaderError::Gguf { path: p, .. }) => assert_eq!(p, path),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(b"GGML");
    std::fs::write(&path, &bad).unwrap();
    let err = load(&path, LoadOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("broken.gguf") && err.to_string().contains("magic"), "{err}");
}

#[tokio::test]
async fn the_memory_limit_applies_to_gguf_too() {
    let options = LoadOptions { memory_limit: Some(10_000), ..LoadOptions::default() };
    assert!(matches!(load(fixture("tiny_f32.gguf"), options).await, Err(LoaderError::MemoryLimit { .. })));
}

#[test]
fn tokenizer_json_and_its_config_load_the_same_tokenizer() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer");
    let tokenizer = lamina_loader::Tokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tokenizer.encode(text, true).unwrap(), expected, "{text:?}");
    }
    assert_eq!((tokenizer.bos_token(), tokenizer.eos_token()), (Some("<|im_start|>"), Some("<|im_end|>")));
    assert_eq!(tokenizer.eos_token_id(), tokenizer.token_to_id("<|im_end|>"));
    assert!(
        tokenizer.chat_template().unwrap().contains("add_generation_prompt"),
        "the `default` template is picked"
    );
    let missing = lamina_loader::Tokenizer::from_files(&dir.join("nope.json"), None).unwrap_err();
    assert!(matches!(missing, LoaderError::Tokenizer { .. }), "{missing}");
}

#[test]
fn a_chat_template_jinja_file_wins_over_the_config_template() {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer");
    let dir = std::env::temp_dir().join(format!("lamina-template-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    let from_config = lamina_loader::Tokenizer::from_folder(&dir).unwrap();
    assert!(from_config.chat_template().unwrap().contains("add_generation_prompt"));
    let qwen = std::fs::read_to_string(source.join("../templates/qwen2_5.jinja")).unwrap();
    std::fs::write(dir.join("chat_template.jinja"), &qwen).unwrap();
    let from_file = lamina_loader::Tokenizer::from_folder(&dir).unwrap();
    assert_eq!(from_file.chat_template(), Some(qwen.as_str()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sentencepiece_gguf_tokenizers_give_llama_cpps_ids() {
    // A subset of Gemma 3's vocabulary (scores, byte and control tokens as the file has
    // them); the ids are llama.cpp's for the same file (scripts/fixtures/spm_gguf.py).
    let header = lamina_loader::gguf::read_header(&fixture("spm_tokenizer.gguf")).unwrap();
    let tokenizer = lamina_loader::gguf::tokenizer(&header).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("spm_reference.json")).unwrap()).unwrap();
    assert_eq!(tokenizer.vocab_size() as u64, reference["vocab_size"].as_u64().unwrap());
    for case in reference["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(text, false).unwrap();
        assert_eq!(ids, expected, "{text:?}");
        // Every byte survives the round trip (byte fallback included).
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "{text:?}");
    }
}

#[test]
fn every_ggml_type_decodes_as_gguf_py_does_and_is_kept_as_stored_or_repacked_exactly() {
    use lamina_loader::gguf::{Tensor, read_tensors};
    let reference = Array::load_safetensors(fixture("types_reference.safetensors")).unwrap();
    let dense = read_tensors(&fixture("types.gguf"), Some(lamina_core::DType::F32)).unwrap();
    assert_eq!(dense.len(), 13);
    for (name, tensor) in &dense {
        let Tensor::Dense(values) = tensor else { panic!("{name}: expected dense") };
        let expected = &reference[name.as_str()];
        let diff = values.subtract(expected).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(diff <= 1e-6, "{name}: {diff}");
    }
    let kept = read_tensors(&fixture("types.gguf"), None).unwrap();
    let mut blocks_seen = 0;
    for (name, tensor) in &kept {
        let expected = &reference[name.as_str()];
        let values = match tensor {
            Tensor::Dense(values) => {
                assert_eq!(name, "bf16.weight");
                values.clone()
            }
            Tensor::Blocks { format, blocks } => {
                // Held as the file stores them: its bytes, dequantized bit for bit as
                // gguf-py dequantizes them.
                assert_eq!(format!("{format}").to_lowercase() + ".weight", *name);
                assert_eq!(blocks.dtype(), Dtype::Uint8);
                let cols = *expected.shape().last().unwrap() as usize;
                assert_eq!(blocks.shape()[1] as usize, format.row_bytes(cols), "{name}");
                let values = lamina_kernels::dequantize_blocks(blocks, *format).unwrap();
                let same =
                    values.as_slice::<f32>().iter().zip(expected.as_slice::<f32>()).all(|(a, b)| a == b);
                assert!(same, "{name}: not gguf-py's values bit for bit");
                blocks_seen += 1;
                values
            }
            Tensor::Quantized { config, packed, scales, biases } => {
                let want = match name.as_str() {
                    "q4_0.weight" | "q4_1.weight" | "q4_k.weight" => 4,
                    "q5_0.weight" | "q5_1.weight" | "q5_k.weight" => 5,
                    _ => 8,
                };
                assert_eq!((config.bits, config.group_size), (want, 32), "{name}");
                // The legacy types' scales and offsets are f16 in the file and stay f16
                // (exactly); checked here in f32, as the kernel computes.
                if [
                    "q4_0.weight",
                    "q4_1.weight",
                    "q5_0.weight",
                    "q5_1.weight",
                    "q8_0.weight",
                    "iq4_nl.weight",
                ]
                .contains(&name.as_str())
                {
                    assert_eq!((scales.dtype(), biases.dtype()), (Dtype::Float16, Dtype::Float16), "{name}");
                }
                let f32 = |a: &Array| a.as_dtype(Dtype::Float32).unwrap();
                config.dequantize(packed, &f32(scales), &f32(biases)).unwrap()
            }
        };
        let diff = values.subtract(expected).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        let scale = expected.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        // Exact forms up to float rounding (IQ4_NL and IQ4_XS: their table's values in
        // 8 bits); Q6_K, Q3_K and Q2_K are re-quantized to 8 bits
        // (their 16-value groups have scales of their own): within one 8-bit step of the
        // tensor's range.
        let bound = 1e-6 * scale.max(1.0);
        eprintln!("{name}: max |kept - reference| {diff:e} (bound {bound:e})");
        assert!(diff <= bound, "{name}: {diff} > {bound}");
    }
    // Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS; Q5_0, Q5_1, Q8_0 and IQ4_NL where this CPU's
    // kernel tier multiplies them natively (else repacked into the affine layout, above).
    use lamina_kernels::BlockFormat;
    let small = [BlockFormat::Q5_0, BlockFormat::Q5_1, BlockFormat::Q8_0, BlockFormat::IQ4NL];
    assert_eq!(blocks_seen, 6 + small.iter().filter(|f| f.native()).count());
}

/// Each quantized layer's path and quantization.
fn quantized_layers(
    model: &mut dyn lamina_families::LanguageModel,
) -> Vec<(String, lamina_components::QuantConfig)> {
    let mut found = Vec::new();
    model
        .visit_layers("", &mut |path, layer| {
            let q = match layer {
                lamina_components::Quantizable::Linear(l) => l.quantization(),
                lamina_components::Quantizable::Embedding(e) => e.quantization(),
            };
            found.extend(q.map(|q| (path.to_owned(), q)));
            Ok(())
        })
        .unwrap();
    found
}

/// Each quantized layer's `(path, activations)`.
fn activations(
    model: &mut dyn lamina_families::LanguageModel,
) -> Vec<(String, lamina_components::Activations)> {
    quantized_layers(model).into_iter().map(|(path, q)| (path, q.activations)).collect()
}

#[tokio::test]
async fn a_gguf_file_decodes_with_8_bit_activations_and_an_exact_top_in_its_head() {
    use lamina_components::Activations;
    let mut loaded = load(fixture("tiny_quant.gguf"), LoadOptions::default()).await.unwrap();
    let layers = activations(loaded.model.as_mut());
    assert!(layers.iter().any(|(path, _)| path == "lm_head"), "{layers:?}");
    for (path, activations) in &layers {
        let head = path == "lm_head" || path == "model.embed_tokens";
        let expected = if head { Activations::Int8ExactTop } else { Activations::Int8 };
        assert_eq!(*activations, expected, "{path}");
    }
    // Asked for, one way or the other, every layer follows.
    for chosen in [Activations::Exact, Activations::Int8, Activations::Int8ExactTop] {
        let options = LoadOptions { activations: Some(chosen), ..LoadOptions::default() };
        let mut loaded = load(fixture("tiny_quant.gguf"), options).await.unwrap();
        assert!(activations(loaded.model.as_mut()).iter().all(|(_, a)| *a == chosen));
    }
    // An MLX checkpoint runs as mlx-lm does, exactly, unless asked.
    let mlx =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/llama_mlx_4bit");
    let mut loaded = load(&mlx, LoadOptions::default()).await.unwrap();
    let layers = activations(loaded.model.as_mut());
    assert!(!layers.is_empty() && layers.iter().all(|(_, a)| *a == Activations::Exact), "{layers:?}");
    let options = LoadOptions { activations: Some(Activations::Int8), ..LoadOptions::default() };
    let mut loaded = load(&mlx, options).await.unwrap();
    assert!(activations(loaded.model.as_mut()).iter().all(|(_, a)| *a == Activations::Int8));
}
