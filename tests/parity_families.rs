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
fn greedy(model: &mut dyn LanguageModel, prompt: &Array, steps: usize) -> Vec<i32> {
    let mut cache = model.make_cache().unwrap();
    let mut input = prompt.reshape(&[1, -1]).unwrap();
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let logits = model.forward(ModelInput::new(&input).with_cache(&mut cache)).unwrap().logits;
        let last = logits.index((.., -1, ..));
        let token = mlx_rs::ops::indexing::argmax_axis(&last, -1, None)
            .unwrap()
            .as_dtype(mlx_rs::Dtype::Int32)
            .unwrap();
        out.push(token.try_index(0).unwrap().item_exact::<i32>());
        input = token.reshape(&[1, 1]).unwrap();
    }
    out
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
    assert_eq!(
        greedy(model.as_mut(), &reference["prompt"], expected.len()),
        expected,
        "{case}: greedy continuation"
    );
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
