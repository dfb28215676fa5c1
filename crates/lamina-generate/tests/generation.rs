//! Generation on the fixture checkpoints: greedy decoding equals mlx-lm's, EOS ids and
//! stop strings end it, streamed text never breaks a character, chat templates render as
//! transformers renders them, and the container answers 16 concurrent callers as it would
//! answer each alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina_generate::{
    ChatTemplate, FinishReason, GenerateError, GenerateParams, Generation, LengthPolicy, Message,
    ModelContainer, ModelContext, SamplerConfig, StreamingDetokenizer, generate,
};
use lamina_loader::{LoadOptions, Tokenizer, load};
use mlx_rs::Array;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn greedy_reference(case: &str) -> (Vec<u32>, Vec<u32>) {
    let r = Array::load_safetensors(fixtures().join("checkpoints").join(case).join("reference.safetensors"))
        .unwrap();
    let ids = |k: &str| r[k].as_slice::<i32>().iter().map(|&i| i as u32).collect::<Vec<_>>();
    (ids("prompt"), ids("greedy"))
}

#[tokio::test]
async fn greedy_generation_equals_mlx_lm_for_every_family() {
    for case in ["llama_gqa_llama3_sharded", "mistral_head_dim", "mamba_hf", "mobilellm_r1"] {
        let mut loaded =
            load(fixtures().join("checkpoints").join(case), LoadOptions::default()).await.unwrap();
        let (prompt, expected) = greedy_reference(case);
        for prefill_step in [1, 3, 512] {
            let params =
                GenerateParams { max_new_tokens: expected.len(), prefill_step, ..GenerateParams::default() };
            let out = generate(loaded.model.as_mut(), None, &prompt, &params).unwrap();
            assert_eq!(out.tokens, expected, "{case}, prefill step {prefill_step}");
            assert_eq!(out.finish_reason, FinishReason::MaxTokens);
            assert_eq!((out.stats.prompt_tokens, out.stats.generated_tokens), (prompt.len(), expected.len()));
        }
    }
}

#[tokio::test]
async fn eos_ids_end_generation_before_the_eos_token() {
    let mut loaded =
        load(fixtures().join("checkpoints/llama_tied_smollm"), LoadOptions::default()).await.unwrap();
    let (prompt, expected) = greedy_reference("llama_tied_smollm");
    let eos = expected[4];
    let first = expected.iter().position(|&t| t == eos).unwrap();
    let params = GenerateParams { max_new_tokens: 12, eos_token_ids: vec![eos], ..GenerateParams::default() };
    let out = generate(loaded.model.as_mut(), None, &prompt, &params).unwrap();
    assert_eq!(out.tokens, expected[..first]);
    assert_eq!(out.finish_reason, FinishReason::Eos);
}

#[tokio::test]
async fn the_maximum_length_is_an_error_or_a_truncation() {
    let mut loaded =
        load(fixtures().join("checkpoints/llama_tied_smollm"), LoadOptions::default()).await.unwrap();
    let prompt: Vec<u32> = (0..250).map(|i| i % 100).collect();
    let params = GenerateParams { max_new_tokens: 10, ..GenerateParams::default() };
    let err = generate(loaded.model.as_mut(), None, &prompt, &params).unwrap_err();
    assert!(matches!(err, GenerateError::TooLong { prompt: 250, requested: 10, max: 256 }), "{err}");
    let truncate = GenerateParams { length_policy: LengthPolicy::Truncate, ..params };
    let out = generate(loaded.model.as_mut(), None, &prompt, &truncate).unwrap();
    assert_eq!((out.tokens.len(), out.finish_reason), (6, FinishReason::MaxLength));
    assert!(matches!(generate(loaded.model.as_mut(), None, &[], &truncate), Err(GenerateError::EmptyPrompt)));
    let err = generate(loaded.model.as_mut(), None, &[1, 999], &truncate).unwrap_err();
    assert!(err.to_string().contains("token id 999"), "{err}");
}

fn tiny_tokenizer() -> Tokenizer {
    let dir = fixtures().join("tokenizer");
    Tokenizer::from_files(&dir.join("tokenizer.json"), Some(&dir.join("tokenizer_config.json"))).unwrap()
}

#[test]
fn streamed_text_never_breaks_a_multi_byte_character() {
    let tokenizer = tiny_tokenizer();
    let text = "Grüße aus München! 🙂🙂 Ünïcödé 42";
    let ids = tokenizer.encode(text, false).unwrap();
    assert!(ids.len() > text.chars().count() / 2, "the emoji must span several byte tokens");
    let mut detok = StreamingDetokenizer::new(&tokenizer);
    let mut streamed = String::new();
    for &id in &ids {
        let piece = detok.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "broken character in {piece:?}");
        streamed.push_str(&piece);
    }
    streamed.push_str(&detok.finish().unwrap());
    assert_eq!(streamed, text);
}

#[tokio::test]
async fn stop_strings_cut_the_text_and_end_generation() {
    let mut loaded = load(fixtures().join("gguf/tiny_f32.gguf"), LoadOptions::default()).await.unwrap();
    let tokenizer = loaded.tokenizer.take().unwrap();
    let prompt = tokenizer.encode("The capital of", false).unwrap();
    let params = GenerateParams { max_new_tokens: 24, ..GenerateParams::default() };
    let full = generate(loaded.model.as_mut(), Some(&tokenizer), &prompt, &params).unwrap();
    assert_eq!(full.text, tokenizer.decode(&full.tokens, false).unwrap());
    let chars: Vec<char> = full.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = full.text.find(&stop).unwrap();
    let stopped = GenerateParams { stop_strings: vec![stop.clone()], ..params };
    let mut generation =
        Generation::start(loaded.model.as_mut(), Some(&tokenizer), &prompt, &stopped).unwrap();
    let streamed: String = generation.by_ref().map(|e| e.unwrap().text).collect();
    let out = generation.output().unwrap();
    assert_eq!(out.finish_reason, FinishReason::StopString);
    assert_eq!(out.text, full.text[..cut]);
    assert_eq!(streamed, out.text, "streamed text equals the result");
}

#[test]
fn sampling_is_seeded() {
    let run = |seed| {
        let mut loaded =
            lamina_loader::load_blocking(fixtures().join("checkpoints/mamba_hf"), LoadOptions::default())
                .unwrap();
        let sampler =
            SamplerConfig { temperature: 1.0, top_p: 0.95, seed: Some(seed), ..SamplerConfig::default() };
        let params = GenerateParams { max_new_tokens: 16, sampler, ..GenerateParams::default() };
        generate(loaded.model.as_mut(), None, &[1, 2, 3], &params).unwrap().tokens
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn chat_templates_render_as_transformers_renders_them() {
    let cases: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat_templates.json")).unwrap())
            .unwrap();
    assert!(cases.len() >= 18);
    for case in cases {
        let template = ChatTemplate::new(case["template"].as_str().unwrap()).unwrap();
        let messages: Vec<Message> = serde_json::from_value(case["messages"].clone()).unwrap();
        let rendered = template.render(
            &messages,
            case["add_generation_prompt"].as_bool().unwrap(),
            case["bos_token"].as_str(),
            case["eos_token"].as_str(),
        );
        match (case["expected"].as_str(), rendered) {
            (Some(expected), Ok(text)) => assert_eq!(text, expected, "{}: {:?}", case["name"], messages),
            (None, Err(GenerateError::Template(msg))) => {
                assert!(msg.contains(case["error"].as_str().unwrap()), "{msg}");
            }
            (expected, got) => panic!("{}: expected {expected:?}, got {got:?}", case["name"]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_container_answers_concurrent_callers_as_it_answers_each_alone() {
    let container =
        ModelContainer::load(fixtures().join("gguf/tiny_quant.gguf"), LoadOptions::default()).await.unwrap();
    let request = |i: u32| {
        let sampler = SamplerConfig {
            temperature: 0.8,
            top_k: 20,
            seed: Some(u64::from(i)),
            ..SamplerConfig::default()
        };
        (vec![1 + i, 7, 40 + i], GenerateParams { max_new_tokens: 10, sampler, ..GenerateParams::default() })
    };
    let mut alone = Vec::new();
    for i in 0..16 {
        let (prompt, params) = request(i);
        alone.push(container.generate(prompt, params).await.collect_output().await.unwrap().tokens);
    }
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let container = container.clone();
            tokio::spawn(async move {
                let (prompt, params) = request(i);
                container.generate(prompt, params).await.collect_output().await.unwrap().tokens
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), alone[i], "caller {i}");
    }
    let ids = container.encode("Hi 42!").await.unwrap();
    assert_eq!(container.decode(ids).await.unwrap(), "Hi 42!");
    let chat = container.apply_chat_template(vec![Message::user("Hi")], true).await.unwrap();
    let text = container.decode(chat).await.unwrap();
    assert_eq!(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    let stops = container.perform(|ctx: &mut ModelContext| ctx.stop_ids(&[])).await.unwrap();
    assert!(!stops.is_empty());
}
