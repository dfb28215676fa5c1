//! Every family against mlx-lm 0.32.2: tiny random checkpoints in Hugging Face layout
//! (made by `scripts/fixtures/families.py`) are loaded through lamina's loader; logits for
//! a batch of two must match mlx-lm's to 1e-4 and a 12-token greedy continuation decoded
//! with the cache must match token for token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina::families::LanguageModel;
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load};
use mlx_rs::Array;
use mlx_rs::ops::indexing::{IndexOp, TryIndexOp};

fn folder(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints").join(case)
}

fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
}

/// Greedy decoding with the model's cache: prefill the prompt, then one token at a time.
/// Returns the tokens and each step's last-position logits.
fn greedy(model: &mut dyn LanguageModel, prompt: &Array, steps: usize) -> (Vec<i32>, Vec<Array>) {
    let mut cache = model.make_cache().unwrap();
    let mut input = prompt.reshape(&[1, -1]).unwrap();
    let (mut out, mut step_logits) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for _ in 0..steps {
        let logits = model.forward(ModelInput::new(&input).with_cache(&mut cache)).unwrap().logits;
        let last = logits.index((.., -1, ..));
        let token = mlx_rs::ops::indexing::argmax_axis(&last, -1, None)
            .unwrap()
            .as_dtype(mlx_rs::Dtype::Int32)
            .unwrap();
        out.push(token.try_index(0).unwrap().item_exact::<i32>());
        step_logits.push(last);
        input = token.reshape(&[1, 1]).unwrap();
    }
    (out, step_logits)
}

/// The cached steps' logits equal one full forward over the prompt and the generated
/// tokens (so every cache kind — KV, rotating, SSM — agrees with no cache at all).
fn check_cache_equals_full_forward(
    model: &mut dyn LanguageModel,
    prompt: &Array,
    tokens: &[i32],
    steps: &[Array],
) {
    let mut all: Vec<i32> = prompt.as_slice::<i32>().to_vec();
    all.extend_from_slice(&tokens[..tokens.len() - 1]);
    let len = all.len() as i32;
    let ids = Array::from_slice(&all, &[1, len]);
    let full = model.forward(ModelInput::new(&ids)).unwrap().logits;
    let first = prompt.dim(0) - 1;
    for (i, step) in steps.iter().enumerate() {
        let position = full.index((.., first + i as i32, ..));
        let diff = max_diff(&position, step);
        assert!(diff < 1e-4, "step {i}: cached logits differ from the full forward by {diff}");
    }
}

async fn check(case: &str) {
    let loaded = load(folder(case), LoadOptions::default()).await.unwrap_or_else(|e| panic!("{case}: {e}"));
    assert!(loaded.report.is_clean(), "{case}: {}", loaded.report);
    let reference = Array::load_safetensors(folder(case).join("reference.safetensors")).unwrap();
    let mut model = loaded.model;
    let logits = model.forward(ModelInput::new(&reference["input_ids"])).unwrap().logits;
    let diff = max_diff(&logits, &reference["logits"]);
    eprintln!("{case}: max logit difference to mlx-lm {diff:e}");
    assert!(diff < 1e-4, "{case}: max logit difference {diff}");
    let expected = reference["greedy"].as_slice::<i32>().to_vec();
    let (tokens, steps) = greedy(model.as_mut(), &reference["prompt"], expected.len());
    assert_eq!(tokens, expected, "{case}: greedy continuation");
    check_cache_equals_full_forward(model.as_mut(), &reference["prompt"], &tokens, &steps);
}

#[tokio::test]
async fn llama_gqa_with_llama3_rope_from_two_shards() {
    check("llama_gqa_llama3_sharded").await;
}

#[tokio::test]
async fn smollm_style_llama_with_tied_embeddings() {
    check("llama_tied_smollm").await;
}

#[tokio::test]
async fn mistral_with_explicit_head_dim() {
    check("mistral_head_dim").await;
}

#[tokio::test]
async fn mlx_community_4_bit_checkpoint() {
    check("llama_mlx_4bit").await;
}

#[tokio::test]
async fn mamba_in_the_hugging_face_layout() {
    check("mamba_hf").await;
}

#[tokio::test]
async fn mobilellm_r1_llama4_text() {
    check("mobilellm_r1").await;
}

#[tokio::test]
async fn qwen2_with_qkv_biases_and_tied_embeddings() {
    check("qwen2_bias_tied").await;
}

#[tokio::test]
async fn qwen3_with_qk_norm_and_explicit_head_dim() {
    check("qwen3_qk_norm").await;
}

#[tokio::test]
async fn gemma2_with_soft_capping_and_sandwich_norms() {
    check("gemma2_softcap").await;
}

#[tokio::test]
async fn gemma3_with_local_and_global_layers() {
    check("gemma3_local_global").await;
}

#[tokio::test]
async fn phi3_with_fused_projections_and_longrope() {
    check("phi3_fused_longrope").await;
}

#[tokio::test]
async fn smollm3_with_nope_layers() {
    check("smollm3_nope").await;
}
