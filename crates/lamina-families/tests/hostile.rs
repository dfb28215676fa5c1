//! Configs a careless or hostile checkpoint could carry: sizes past 32 bits in every size
//! field of every family, memory bombs refused before anything is built, and a few
//! thousand mutated configs that must end in a model or a typed error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lamina_core::{Budget, Error};
use lamina_families::Registry;
use proptest::prelude::*;
use serde_json::{Value, json};

/// A small valid config of every built-in `model_type`, and its size fields.
fn samples() -> Vec<(Value, &'static [&'static str])> {
    const DECODER: &[&str] = &[
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "sliding_window",
    ];
    let decoder = |model_type: &str| {
        json!({"model_type": model_type, "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "max_position_embeddings": 128, "sliding_window": 16})
    };
    let mut out: Vec<(Value, &'static [&'static str])> =
        ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "smollm3", "mobilellm"]
            .into_iter()
            .map(|t| (decoder(t), DECODER))
            .collect();
    out.push((
        json!({"model_type": "mamba", "vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, "state_size": 4,
            "conv_kernel": 4, "expand": 2, "intermediate_size": 32, "time_step_rank": 2,
            "pad_vocab_size_multiple": 8}),
        &[
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "state_size",
            "conv_kernel",
            "expand",
            "intermediate_size",
            "time_step_rank",
            "pad_vocab_size_multiple",
        ],
    ));
    out.push((
        json!({"model_type": "llama4_text", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
            "intermediate_size_mlp": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8, "max_position_embeddings": 128, "no_rope_layers": [1, 0]}),
        &[
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "intermediate_size_mlp",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ],
    ));
    out
}

fn small_budget() -> Budget {
    Budget { limit: Some(256 << 20), bits: 32 }
}

#[test]
fn every_sample_builds() {
    for (config, _) in samples() {
        Registry::with_builtins()
            .build_within(&config, small_budget())
            .unwrap_or_else(|e| panic!("{config}: {e}"));
    }
}

#[test]
fn sizes_past_32_bits_are_errors_naming_the_field_in_every_family() {
    let registry = Registry::with_builtins();
    for (sample, fields) in samples() {
        for field in fields {
            for value in [json!((1u64 << 32) + 256), json!(1u64 << 31), json!(u64::MAX), json!(1e30)] {
                let mut config = sample.clone();
                config[*field] = value.clone();
                let err = match registry.build_within(&config, Budget::unlimited()) {
                    Ok(_) => panic!("{} {field}={value}: built", sample["model_type"]),
                    Err(e) => e,
                };
                let text = err.to_string();
                assert!(text.contains(field), "{} {field}={value}: {text}", sample["model_type"]);
            }
        }
    }
}

#[test]
fn a_vocabulary_of_two_to_the_32_plus_256_is_not_a_vocabulary_of_256() {
    let config = json!({"model_type": "llama", "vocab_size": (1u64 << 32) + 256, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4});
    match Registry::with_builtins().build_within(&config, Budget::unlimited()) {
        Err(Error::Overflow { field, value, .. }) => {
            assert_eq!((field.as_str(), value), ("vocab_size", (1 << 32) + 256))
        }
        other => panic!("{other:?}"),
    }
}

/// Resident memory of this process in bytes (Linux).
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn memory_bombs_are_refused_before_anything_is_built() {
    let registry = Registry::with_builtins();
    for (sample, _) in samples() {
        // Far more layers than any machine holds, each small: refused by the count of
        // blocks; and a vocabulary and width whose embedding alone is petabytes.
        let bombs = [("num_hidden_layers", json!(1_000_000_000u64)), ("vocab_size", json!(2_000_000_000u64))];
        for (field, value) in bombs {
            let mut config = sample.clone();
            config[field] = value;
            if field == "vocab_size" {
                config["hidden_size"] = json!(1 << 20);
                config["intermediate_size"] = json!(1 << 20);
                config["head_dim"] = json!(1 << 18);
                config["intermediate_size_mlp"] = json!(1 << 20);
            }
            let before = resident();
            let started = Instant::now();
            let result = registry.build(&config);
            let elapsed = started.elapsed();
            let grown = resident().saturating_sub(before);
            match result {
                Err(Error::TooLarge { needed, limit, .. }) => assert!(needed > limit),
                Err(Error::InvalidConfig { field: named, reason, .. }) if field == "num_hidden_layers" => {
                    assert!(named == "num_hidden_layers" && reason.contains("blocks"), "{named}: {reason}");
                }
                Err(other) => panic!("{} {field}: {other}", sample["model_type"]),
                Ok(_) => panic!("{} {field}: built", sample["model_type"]),
            }
            assert!(
                elapsed < Duration::from_millis(250),
                "{} {field}: took {elapsed:?}",
                sample["model_type"]
            );
            assert!(
                grown < 64 << 20,
                "{} {field}: resident memory grew by {grown} bytes",
                sample["model_type"]
            );
        }
    }
}

/// Numbers a hostile config might carry.
fn hostile_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..70).prop_map(|v| json!(v)),
        Just(json!(0)),
        Just(json!(1u64 << 31)),
        Just(json!((1u64 << 32) + 256)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!(0.5)),
        Just(json!("12")),
        Just(json!(null)),
        Just(json!([1, 2])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Any config that is a sample with up to four fields replaced by hostile values ends
    /// in a built model within the budget or a typed error — never a panic, never a model
    /// above the budget.
    #[test]
    fn mutated_configs_build_or_fail_cleanly(
        which in 0usize..11,
        edits in proptest::collection::vec((0usize..16, hostile_number()), 1..5),
    ) {
        let all = samples();
        let (mut config, fields) = all[which % all.len()].clone();
        let extra = ["rope_theta", "rms_norm_eps", "rope_scaling", "tie_word_embeddings", "eos_token_id", "layer_types"];
        for (index, value) in edits {
            let field = fields.get(index).copied().unwrap_or(extra[index % extra.len()]);
            config[field] = value;
        }
        if let Ok(model) = Registry::with_builtins().build_within(&config, small_budget()) {
            let params = lamina_core::count_parameters(&model);
            prop_assert!((params as u64) * 4 <= 256 << 20, "{config}: {params} parameters");
        }
    }
}

#[test]
#[ignore = "a measurement: cargo test -p lamina-families --test hostile -- --ignored --nocapture"]
fn measure_the_host_memory_of_a_block() {
    let config = json!({"model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 4000, "num_attention_heads": 2});
    let before = resident();
    let model = Registry::with_builtins().build(&config).unwrap();
    let grown = resident().saturating_sub(before);
    eprintln!("4000 blocks: {} bytes resident, {} per block", grown, grown / 4000);
    drop(model);
}
