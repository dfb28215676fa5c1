//! A quantized KV cache on the embedded SmolLM2 (head dimension 64): next-token logits with
//! 8-bit keys and values stay within 1 of full precision and pick the same tokens along a
//! text, 4-bit within a few flips; the cache holds a fraction of the bytes; a quantized
//! cache saved to a prompt-cache file continues as the live one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina::components::{Activations, KvQuantization, LayerCache};
use lamina::families::LanguageModel;
use lamina::generate::{
    CachedTokens, GenerateParams, Generation, GenerationOutput, load_prompt_cache, save_prompt_cache,
};
use lamina::loader::{LoadOptions, LoadedModel, Tokenizer, load_blocking};

/// The embedded model, its products reading activations exactly: the cache's own error is
/// measured here, and a prompt's rows take the 8-bit path or not by how many a step holds.
fn exact_model() -> LoadedModel {
    let path = PathBuf::from(env!("LAMINA_DEFAULT_MODEL"));
    load_blocking(path, LoadOptions { activations: Some(Activations::Exact), ..LoadOptions::default() })
        .unwrap()
}

/// The embedded model, its tokenizer and a prompt.
fn model_and_prompt() -> (LoadedModel, Tokenizer, Vec<u32>) {
    let mut loaded = exact_model();
    let tokenizer = loaded.tokenizer.take().unwrap();
    let prompt = tokenizer
        .encode("The history of the Roman Empire begins with the founding of the city of Rome, which", true)
        .unwrap();
    (loaded, tokenizer, prompt)
}

/// A whole generation, and the cache it leaves.
fn run(
    model: &mut dyn LanguageModel,
    prompt: &[u32],
    params: &GenerateParams,
) -> (GenerationOutput, CachedTokens) {
    let mut generation = Generation::start(model, None, prompt, params).unwrap();
    for event in generation.by_ref() {
        event.unwrap();
    }
    generation.into_cache().unwrap()
}

/// The continuation of " and then" from a cache loaded from a file and from the live one
/// it was saved from.
fn resumed_and_live(
    model: &mut dyn LanguageModel,
    tokenizer: &Tokenizer,
    loaded: CachedTokens,
    live: CachedTokens,
    params: &GenerateParams,
) -> (GenerationOutput, GenerationOutput) {
    let more: Vec<u32> =
        loaded.tokens.iter().copied().chain(tokenizer.encode(" and then", false).unwrap()).collect();
    let mut continued =
        |cached| Generation::start_from(model, None, Some(cached), &more, params).unwrap().output().unwrap();
    (continued(loaded), continued(live))
}

#[test]
fn quantized_keys_and_values_follow_full_precision_in_less_memory() {
    let (mut loaded, tokenizer, prompt) = model_and_prompt();
    let mut run = |kv: Option<KvQuantization>| {
        let params = GenerateParams { max_new_tokens: 40, kv_quantization: kv, ..GenerateParams::default() };
        run(loaded.model.as_mut(), &prompt, &params)
    };
    let (full, full_cache) = run(None);
    // 8 bits from the first position; 4 bits once 16 positions are held (mid-prompt).
    let (eight, eight_cache) = run(Some(KvQuantization { bits: 8, group_size: 64, start: 0 }));
    let (four, four_cache) = run(Some(KvQuantization { bits: 4, group_size: 32, start: 16 }));
    // Greedy tokens: the first ones agree (later a near-tie may go either way).
    assert_eq!(eight.tokens[..6], full.tokens[..6]);
    assert_eq!(four.tokens.len(), 40);
    for (cache, expect_quantized) in [(&full_cache, false), (&eight_cache, true), (&four_cache, true)] {
        let quantized = cache.cache.layers.iter().filter(|l| matches!(l, LayerCache::Quantized(_))).count();
        assert_eq!(quantized == cache.cache.layers.len(), expect_quantized);
    }
    let bytes = |c: &CachedTokens| c.cache.nbytes() as f64;
    assert!(
        bytes(&eight_cache) < bytes(&full_cache) / 3.0,
        "{} vs {}",
        bytes(&eight_cache),
        bytes(&full_cache)
    );
    assert!(
        bytes(&four_cache) < bytes(&full_cache) / 5.0,
        "{} vs {}",
        bytes(&four_cache),
        bytes(&full_cache)
    );

    // Saved and loaded, the quantized cache continues as the live one.
    let file = std::env::temp_dir().join(format!("lamina-qkv-{}.safetensors", std::process::id()));
    save_prompt_cache(&file, &eight_cache.cache, &eight_cache.tokens).unwrap();
    let (loaded_cache, tokens) = load_prompt_cache(&file, &loaded.model.make_cache().unwrap()).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(tokens, eight_cache.tokens);
    let kv = Some(KvQuantization { bits: 8, group_size: 64, start: 0 });
    let params = GenerateParams { max_new_tokens: 12, kv_quantization: kv, ..GenerateParams::default() };
    let cached = CachedTokens { cache: loaded_cache, tokens };
    let (resumed, live) = resumed_and_live(loaded.model.as_mut(), &tokenizer, cached, eight_cache, &params);
    assert_eq!(resumed.tokens, live.tokens);
    assert!(resumed.stats.cached_prompt_tokens > 40);
    let bad = GenerateParams {
        kv_quantization: Some(KvQuantization { bits: 7, group_size: 64, start: 0 }),
        ..params
    };
    assert!(Generation::start(loaded.model.as_mut(), None, &prompt, &bad).is_err());
}

/// Teacher-forced along a text: each position's logits with the cache quantized (from the
/// fifth position on) against the whole text's forward pass at full precision.
#[test]
fn next_token_logits_stay_close_to_full_precision() {
    use lamina::heads::ModelInput;
    use mlx_rs::Array;
    use mlx_rs::ops::indexing::{IndexOp, argmax_axis};
    let mut loaded = exact_model();
    let tokenizer = loaded.tokenizer.take().unwrap();
    let text = "The history of the Roman Empire begins with the founding of the city of Rome, which is said to have happened in 753 BC";
    let ids: Vec<i32> = tokenizer.encode(text, true).unwrap().iter().map(|&i| i as i32).collect();
    let model = loaded.model.as_mut();
    let whole =
        model.forward(ModelInput::new(&Array::from_slice(&ids, &[1, ids.len() as i32]))).unwrap().logits;
    let best = |a: &Array| {
        argmax_axis(a, -1, None).unwrap().as_dtype(mlx_rs::Dtype::Int32).unwrap().item_exact::<i32>()
    };
    for (bits, most_diff, most_flips) in [(8, 1.0f32, 0), (4, 12.0, 4)] {
        let mut cache = model.make_cache().unwrap();
        let (mut worst, mut flips) = (0f32, 0);
        for (position, &id) in ids.iter().enumerate() {
            if position == 4 {
                cache.quantize_past_start(KvQuantization { bits, group_size: 64, start: 0 }).unwrap();
            }
            let token = Array::from_slice(&[id], &[1, 1]);
            let logits = model
                .forward(ModelInput::new(&token).with_cache(&mut cache))
                .unwrap()
                .logits
                .index((.., -1, ..));
            let reference = whole.index((.., position as i32, ..));
            worst = worst.max(
                logits.subtract(&reference).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>(),
            );
            flips += usize::from(best(&logits) != best(&reference));
        }
        assert!(matches!(cache.layers[0], LayerCache::Quantized(_)));
        assert!(
            worst > 0.0 && worst < most_diff && flips <= most_flips,
            "{bits} bits: worst {worst}, {flips} flips"
        );
    }
}

/// A batch holding its keys and values quantized (`serve --kv-bits`) decodes each sequence
/// as it decodes alone with a quantized cache, whether the prompts are prefilled together
/// (full-precision rows quantized as the batch converts) or one per step (quantized rows
/// joining a quantized batch) — and not as it decodes at full precision.
#[test]
fn a_quantized_batch_decodes_each_sequence_as_alone() {
    use lamina::generate::{BatchConfig, batch_generate, generate};
    let mut loaded = exact_model();
    let tokenizer = loaded.tokenizer.take().unwrap();
    let prompts: Vec<Vec<u32>> = [
        "The history of the Roman Empire begins with",
        "Water boils at",
        "A short list of prime numbers: 2, 3, 5,",
    ]
    .iter()
    .map(|p| tokenizer.encode(p, true).unwrap())
    .collect();
    let how = KvQuantization { bits: 4, group_size: 32, start: 0 };
    let params =
        GenerateParams { max_new_tokens: 16, kv_quantization: Some(how), ..GenerateParams::default() };
    let mut alone = |params: &GenerateParams| -> Vec<Vec<u32>> {
        prompts.iter().map(|p| generate(loaded.model.as_mut(), None, p, params).unwrap().tokens).collect()
    };
    let full = alone(&GenerateParams { kv_quantization: None, ..params.clone() });
    let alone = alone(&params);
    assert_ne!(full, alone, "4-bit keys and values change some greedy continuation");
    for per_step in [2048, 1] {
        let config = BatchConfig {
            prefill_tokens_per_step: per_step,
            prompt_cache_bytes: 0,
            kv_quantization: Some(how),
            ..BatchConfig::default()
        };
        let batch =
            batch_generate(loaded.model.as_mut(), None, &prompts, &params, config, |_, _| {}).unwrap();
        for (k, (out, expected)) in batch.into_iter().zip(&alone).enumerate() {
            assert_eq!(&out.unwrap().tokens, expected, "prompt {k}, {per_step} prefill tokens per step");
        }
    }
    let bad =
        BatchConfig { kv_quantization: Some(KvQuantization { bits: 7, ..how }), ..BatchConfig::default() };
    assert!(lamina::generate::BatchGenerator::new(loaded.model.as_mut(), None, bad).is_err());
}

/// A bounded cache (`--max-kv-size`, rotating windows) quantized: every layer keeps its
/// window's slots quantized, follows the full-precision window, takes a fraction of its
/// bytes, and a saved window continues as the live one.
#[test]
fn a_bounded_cache_quantizes_its_window_and_saves_it() {
    let (mut loaded, tokenizer, prompt) = model_and_prompt();
    let bounded = GenerateParams { max_new_tokens: 24, max_kv_size: Some(16), ..GenerateParams::default() };
    let how = KvQuantization { bits: 8, group_size: 64, start: 0 };
    let quantized = GenerateParams { kv_quantization: Some(how), ..bounded.clone() };
    let (dense, dense_cache) = run(loaded.model.as_mut(), &prompt, &bounded);
    let (eight, eight_cache) = run(loaded.model.as_mut(), &prompt, &quantized);
    assert_eq!(eight.tokens[..4], dense.tokens[..4]);
    for layer in &eight_cache.cache.layers {
        let LayerCache::Quantized(c) = layer else { panic!("{}", layer.kind()) };
        assert_eq!(c.window(), Some(16));
    }
    let bytes = |c: &CachedTokens| c.cache.nbytes() as f64;
    assert!(
        bytes(&eight_cache) < bytes(&dense_cache) / 3.0,
        "{} vs {}",
        bytes(&eight_cache),
        bytes(&dense_cache)
    );

    let file = std::env::temp_dir().join(format!("lamina-qkv-window-{}.safetensors", std::process::id()));
    save_prompt_cache(&file, &eight_cache.cache, &eight_cache.tokens).unwrap();
    let fresh = loaded.model.make_cache().unwrap().bounded(16).unwrap();
    let (loaded_cache, tokens) = load_prompt_cache(&file, &fresh).unwrap();
    let unbounded = load_prompt_cache(&file, &loaded.model.make_cache().unwrap());
    std::fs::remove_file(&file).unwrap();
    assert!(unbounded.is_err(), "a window's cache loads only into a model cache with that window");
    let params = GenerateParams { max_new_tokens: 8, ..quantized };
    let cached = CachedTokens { cache: loaded_cache, tokens };
    let (resumed, live) = resumed_and_live(loaded.model.as_mut(), &tokenizer, cached, eight_cache, &params);
    assert_eq!(resumed.tokens, live.tokens);
}
