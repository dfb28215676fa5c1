//! Speculative decoding on the fixture checkpoints: greedy output equals decoding without a
//! draft token for token (Llama, Qwen3, Gemma 3's rotating caches wrapping around their
//! window, a quantized model, a Mamba model's recurrent state), with a draft model that
//! mostly agrees (the same checkpoint), one that mostly does not (another checkpoint), and
//! prompt lookup; seeded sampling is reproducible; bad drafts are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lamina_generate::{DraftParams, GenerateError, GenerateParams, SamplerConfig, SharedModel, generate};
use lamina_loader::{LoadOptions, load_blocking};

fn checkpoint(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints").join(case)
}

fn shared(case: &str) -> SharedModel {
    Arc::new(Mutex::new(load_blocking(checkpoint(case), LoadOptions::default()).unwrap().model))
}

#[test]
fn greedy_output_is_the_same_with_any_draft() {
    let prompt: Vec<u32> = vec![3, 14, 15, 92, 65, 35, 89, 79, 3, 14, 15, 92];
    for case in ["llama_tied_smollm", "qwen3_qk_norm", "gemma3_local_global", "llama_mlx_4bit", "mamba_hf"] {
        let mut model = load_blocking(checkpoint(case), LoadOptions::default()).unwrap().model;
        let plain = GenerateParams { max_new_tokens: 24, ..GenerateParams::default() };
        let expected = generate(model.as_mut(), None, &prompt, &plain).unwrap();
        for (name, draft) in [
            ("itself", DraftParams::model(shared(case), 3)),
            ("another model", DraftParams::model(shared("llama_gqa_llama3_sharded"), 4)),
            ("prompt lookup", DraftParams::prompt_lookup(3, 5)),
        ] {
            let params = GenerateParams { draft: Some(draft), ..plain.clone() };
            let out = generate(model.as_mut(), None, &prompt, &params).unwrap();
            assert_eq!(out.tokens, expected.tokens, "{case} drafted by {name}");
            let stats = out.stats;
            assert!(
                stats.draft_tokens > 0 && stats.accepted_draft_tokens <= stats.draft_tokens,
                "{case} {name}: {stats:?}"
            );
            if name == "itself" {
                assert!(stats.accepted_draft_tokens * 10 >= stats.draft_tokens * 8, "{case}: {stats:?}");
            }
        }
    }
}

#[test]
fn seeded_sampling_with_a_draft_is_reproducible_and_stays_in_budget() {
    let mut model = load_blocking(checkpoint("llama_tied_smollm"), LoadOptions::default()).unwrap().model;
    let draft = shared("qwen3_qk_norm");
    let params = GenerateParams {
        max_new_tokens: 17,
        sampler: SamplerConfig { temperature: 0.8, top_p: 0.95, seed: Some(3), ..SamplerConfig::default() },
        draft: Some(DraftParams::model(draft.clone(), 4)),
        ..GenerateParams::default()
    };
    let first = generate(model.as_mut(), None, &[1, 2, 3], &params).unwrap();
    let again = generate(model.as_mut(), None, &[1, 2, 3], &params).unwrap();
    assert_eq!(first.tokens, again.tokens);
    assert_eq!(first.tokens.len(), 17);
    // A repetition penalty reads each position's history.
    let penalized = GenerateParams {
        sampler: SamplerConfig { repetition_penalty: 1.5, ..SamplerConfig::default() },
        draft: Some(DraftParams::prompt_lookup(2, 3)),
        ..params.clone()
    };
    let plain = GenerateParams { draft: None, ..penalized.clone() };
    assert_eq!(
        generate(model.as_mut(), None, &[1, 2, 3, 1, 2], &penalized).unwrap().tokens,
        generate(model.as_mut(), None, &[1, 2, 3, 1, 2], &plain).unwrap().tokens
    );
}

#[test]
fn bad_drafts_are_refused() {
    let mut model = load_blocking(checkpoint("llama_tied_smollm"), LoadOptions::default()).unwrap().model;
    let with = |draft| GenerateParams { max_new_tokens: 4, draft: Some(draft), ..GenerateParams::default() };
    for draft in [DraftParams::prompt_lookup(0, 3), DraftParams::prompt_lookup(2, 0)] {
        let error = generate(model.as_mut(), None, &[1, 2], &with(draft)).unwrap_err();
        assert!(matches!(error, GenerateError::Draft(_)), "{error}");
    }
}
