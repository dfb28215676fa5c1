//! Family configs as real checkpoints write them, presets, parameter counts, the registry
//! and every kind of bad config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use lamina_components::RopeScaling;
use lamina_core::{Error, count_parameters};
use lamina_families::{
    Family, LanguageModel, LlamaConfig, LlamaForCausalLM, MambaConfig, MambaForCausalLM, MobileLlmConfig,
    MobileLlmForCausalLM, MobileLlmVariant, ModelType, Registry, get_mobilellm_config, parse_config,
};
use lamina_heads::ModelInput;
use mlx_rs::Array;
use serde_json::{Value, json};

fn llama(v: Value) -> LlamaConfig {
    parse_config(&v).unwrap()
}

fn llama_preset(name: &str) -> LlamaConfig {
    LlamaConfig::preset(Family::Llama, name).unwrap()
}

#[test]
fn tinyllama_config_json_parses() {
    let config = llama(json!({
        "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 2048,
        "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 22, "num_key_value_heads": 4,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
        "torch_dtype": "bfloat16", "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000
    }));
    assert_eq!(config.backbone().unwrap(), llama_preset("tinyllama").backbone().unwrap());
    assert_eq!(config.head_dim(), 64);
    assert_eq!(config.num_parameters().unwrap(), 1_100_048_384);
}

#[test]
fn llama3_2_with_rope_scaling_and_eos_list() {
    let config = llama(json!({
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64, "hidden_size": 2048,
        "intermediate_size": 8192, "max_position_embeddings": 131072, "model_type": "llama", "num_attention_heads": 32,
        "num_hidden_layers": 16, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": true, "vocab_size": 128256
    }));
    let (base, scaling) = config.rope().unwrap();
    assert_eq!(base, 500_000.0);
    assert!(matches!(
        scaling,
        RopeScaling::Llama3 { factor: 32.0, original_max_position_embeddings: 8192, .. }
    ));
    assert_eq!(config.num_parameters().unwrap(), 1_235_814_400);
    assert_eq!(config.num_parameters().unwrap(), llama_preset("llama3_2_1b").num_parameters().unwrap());
}

#[test]
fn transformers_5_rope_parameters_read_like_the_old_keys() {
    let old = llama(
        json!({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
        "vocab_size": 10, "rope_theta": 1e6, "rope_scaling": {"type": "linear", "factor": 4.0}}),
    );
    let new = llama(
        json!({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
        "vocab_size": 10, "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}}),
    );
    assert_eq!(old.rope().unwrap(), new.rope().unwrap());
    assert_eq!(new.backbone().unwrap(), old.backbone().unwrap());
}

#[test]
fn mistral_reads_head_dim_and_applies_its_window() {
    let config = llama(json!({"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 32000,
        "max_position_embeddings": 32768, "tie_word_embeddings": false}));
    assert_eq!(config.model_type, ModelType::Mistral);
    assert_eq!(config.backbone().unwrap().layers[0].attention.sliding_window, Some(4096));
    assert_eq!(config.num_parameters().unwrap(), 7_241_732_096);
    let as_llama = LlamaConfig { model_type: ModelType::Llama, ..config };
    assert_eq!(as_llama.backbone().unwrap().layers[0].attention.sliding_window, None);
}

#[test]
fn presets_have_their_public_parameter_counts() {
    assert_eq!(llama_preset("smollm2_135m").num_parameters().unwrap(), 134_515_008);
    assert_eq!(llama_preset("llama2_7b").num_parameters().unwrap(), 6_738_415_616);
    assert_eq!(llama_preset("llama3_8b").num_parameters().unwrap(), 8_030_261_248);
    assert_eq!(LlamaConfig::presets(Family::Llama).len(), 14);
    for (name, preset) in LlamaConfig::presets(Family::Llama) {
        assert!(preset().num_parameters().is_ok(), "{name}");
    }
    for (name, preset) in MambaConfig::presets() {
        assert!(preset().num_parameters().is_ok(), "{name}");
    }
    let mamba = MambaConfig::mamba_130m().num_parameters().unwrap();
    assert!((125_000_000..135_000_000).contains(&mamba), "{mamba}");
}

#[test]
fn built_models_have_the_counted_parameters() {
    let llama = LlamaForCausalLM::new(LlamaConfig::tiny()).unwrap();
    assert_eq!(count_parameters(&llama), LlamaConfig::tiny().num_parameters().unwrap());
    let mamba = MambaForCausalLM::new(MambaConfig::tiny()).unwrap();
    assert_eq!(count_parameters(&mamba), MambaConfig::tiny().num_parameters().unwrap());
    let mut small = get_mobilellm_config("140m").unwrap();
    small.num_layers = 1;
    small.vocab_size = 1000;
    let mobile = MobileLlmForCausalLM::new(small.clone()).unwrap();
    assert_eq!(mobile.num_parameters(), small.num_parameters().unwrap());
}

#[test]
fn mobilellm_presets_land_near_their_names() {
    let expected = [140e6, 360e6, 950e6, 7e9, 70e9, 671e9];
    let names: Vec<&str> = MobileLlmConfig::presets().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["140m", "360m", "950m", "7b", "70b", "671b"]);
    for (name, target) in names.into_iter().zip(expected) {
        let config = get_mobilellm_config(name).unwrap();
        let count = config.num_parameters().unwrap() as f64;
        assert!((count / target - 1.0).abs() < 0.1, "{name}: {count}");
    }
    let c = get_mobilellm_config("950m").unwrap();
    assert_eq!(
        (c.num_layers, c.num_heads, c.embed_dim, c.num_kv_heads, c.hidden_dim),
        (22, 24, 1536, 6, 6144)
    );
    let err = get_mobilellm_config("3b").unwrap_err().to_string();
    assert!(err.contains("unknown MobileLLM preset `3b`") && err.contains("950m"), "{err}");
}

fn r1_json() -> Value {
    json!({"model_type": "llama4_text", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "intermediate_size_mlp": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "no_rope_layers": [1, 1, 0, 1],
        "use_qk_norm": true, "tie_word_embeddings": true, "num_local_experts": 0, "moe_layers": [],
        "attn_temperature_tuning": false, "eos_token_id": [1, 2]})
}

#[test]
fn mobilellm_r1_config_maps_to_interleaved_rope_and_weightless_qk_norm() {
    let mut model = Registry::with_builtins().build(&r1_json()).unwrap();
    let info = model.info();
    assert_eq!((info.vocab_size, info.hidden_size, info.eos_token_ids.clone()), (300, 32, vec![1, 2]));
    let ids = Array::from_slice(&[1i32, 2, 3], &[1, 3]);
    assert_eq!(model.forward(ModelInput::new(&ids)).unwrap().logits.shape(), &[1, 3, 300]);
    let config =
        parse_config::<lamina_families::Llama4TextConfig>(&r1_json()).unwrap().to_mobilellm().unwrap();
    assert_eq!(config.variant, MobileLlmVariant::R1);
    let backbone = config.backbone().unwrap();
    assert!(backbone.layers[0].attention.rope.as_ref().unwrap().traditional);
    assert!(backbone.layers[2].attention.rope.is_none());
    assert!(!backbone.layers[0].attention.qk_norm.unwrap().norm.affine);
    assert_eq!(backbone.layers[0].ffn.intermediate_size, 96);
}

#[test]
fn llama4_features_lamina_lacks_are_refused() {
    let mut moe = r1_json();
    moe["num_local_experts"] = json!(16);
    let err = Registry::with_builtins().build(&moe).unwrap_err().to_string();
    assert!(err.contains("mixture-of-experts"), "{err}");
    let mut tuning = r1_json();
    tuning["attn_temperature_tuning"] = json!(true);
    assert!(Registry::with_builtins().build(&tuning).is_err());
}

#[test]
fn classic_mobilellm_shares_layers_and_embeddings() {
    let config = json!({"model_type": "mobilellm", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "share_embedding": true, "layer_sharing": true});
    let model = Registry::with_builtins().build(&config).unwrap();
    assert_eq!(model.make_cache().unwrap().layers.len(), 4);
    let keys: Vec<String> = model.parameters().flatten().keys().map(|k| k.to_string()).collect();
    assert!(!keys.iter().any(|k| k.starts_with("lm_head")));
}

#[test]
fn the_registry_names_known_types_and_takes_new_ones() {
    let mut registry = Registry::with_builtins();
    assert_eq!(
        registry.known(),
        [
            "gemma2",
            "gemma3",
            "gemma3_text",
            "llama",
            "llama4_text",
            "mamba",
            "mistral",
            "mobilellm",
            "phi3",
            "qwen2",
            "qwen3",
            "smollm3"
        ]
    );
    let err = registry.build(&json!({"model_type": "gpt2"})).unwrap_err();
    match &err {
        Error::UnknownVariant { kind, value, known } => {
            assert_eq!((*kind, value.as_str()), ("model_type", "gpt2"));
            assert!(known.contains("mamba"));
        }
        other => panic!("{other}"),
    }
    assert!(matches!(registry.build(&json!({"hidden_size": 3})), Err(Error::InvalidConfig { .. })));
    registry.register(
        "tiny_llama_alias",
        Arc::new(|_, _| Ok(Box::new(LlamaForCausalLM::new(LlamaConfig::tiny())?) as Box<dyn LanguageModel>)),
    );
    assert!(registry.build(&json!({"model_type": "tiny_llama_alias"})).is_ok());
}

#[test]
fn every_kind_of_bad_config_is_a_typed_error() {
    let base = json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 10});
    let registry = Registry::with_builtins();
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        registry.build(&v).unwrap_err()
    };
    let field = |e: Error| match e {
        Error::InvalidConfig { field, .. } => field,
        other => panic!("not InvalidConfig: {other}"),
    };
    assert_eq!(field(with("num_attention_heads", json!(5))), "num_attention_heads");
    assert_eq!(field(with("num_key_value_heads", json!(3))), "num_key_value_heads");
    assert_eq!(field(with("num_hidden_layers", json!(0))), "num_hidden_layers");
    assert!(matches!(with("hidden_size", json!("wide")), Error::Json { .. }));
    assert!(matches!(
        with("rope_scaling", json!({"rope_type": "dynamic", "factor": 2.0})),
        Error::Json { .. }
    ));
    assert!(matches!(with("hidden_act", json!("tanh")), Error::Json { .. }));
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("vocab_size");
    let err = registry.build(&missing).unwrap_err().to_string();
    assert!(err.contains("vocab_size"), "{err}");
    let mamba = json!({"model_type": "mamba", "vocab_size": 10, "hidden_size": 16, "num_hidden_layers": 1, "state_size": 0});
    assert_eq!(field(registry.build(&mamba).unwrap_err()), "state_size");
}

#[test]
fn original_state_spaces_mamba_config_parses() {
    let config: MambaConfig =
        parse_config(&json!({"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {},
        "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}))
        .unwrap();
    assert_eq!(config.padded_vocab_size(), 50_280);
    assert_eq!(config.mixer().time_step_rank, 48);
    assert_eq!(config.mixer().intermediate_size, 1536);
    let auto: MambaConfig =
        parse_config(&json!({"vocab_size": 10, "hidden_size": 40, "num_hidden_layers": 1,
        "time_step_rank": "auto", "expand": 3}))
        .unwrap();
    assert_eq!((auto.mixer().time_step_rank, auto.mixer().intermediate_size), (3, 120));
}

#[test]
fn new_family_presets_have_their_published_parameter_counts() {
    // Counts as the checkpoints' safetensors hold them (tied heads counted once).
    for (spec, published) in [
        ("qwen2:qwen2_5_0_5b", 494_032_768),
        ("qwen2:qwen2_5_1_5b", 1_543_714_304),
        ("qwen2:qwen2_5_7b", 7_615_616_512),
        ("qwen3:0.6b", 596_049_920),
        ("qwen3:1.7b", 1_720_574_976),
        ("qwen3:4b", 4_022_468_096),
        ("qwen3:8b", 8_190_735_360),
        ("gemma2:2b", 2_614_341_888),
        ("gemma2:9b", 9_241_705_984),
        ("gemma3:270m", 268_098_176),
        ("gemma3:1b", 999_885_952),
        ("phi3:mini", 3_821_079_552),
        ("phi3:medium", 13_960_238_080),
        ("smollm3:3b", 3_075_098_624),
    ] {
        let preset = lamina_families::preset(spec).unwrap();
        assert_eq!(preset.num_parameters().unwrap(), published, "{spec}");
    }
}

#[test]
fn gemma3_multimodal_configs_read_their_text_config_with_defaults() {
    let config = json!({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
        "eos_token_id": [1, 106],
        "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
            "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024},
        "vision_config": {"hidden_size": 1152}});
    let parsed = Registry::with_builtins().parse(&config).unwrap();
    assert_eq!(parsed.family(), Family::Gemma3);
    let expected = lamina_families::preset("gemma3:4b").unwrap();
    assert_eq!(parsed.num_parameters().unwrap(), expected.num_parameters().unwrap());
    let json = parsed.to_json().unwrap();
    assert_eq!(json["eos_token_id"], json!([1, 106]));
    assert_eq!(json["num_attention_heads"], json!(8));
}

#[test]
fn layer_patterns_follow_each_family() {
    let parse = |v: Value| -> LlamaConfig { parse_config(&v).unwrap() };
    let base = json!({"vocab_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 6,
        "num_attention_heads": 4, "head_dim": 8, "sliding_window": 4});
    let with = |extra: Value| {
        let mut v = base.clone();
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        parse(v)
    };
    let windows = |c: &LlamaConfig| (0..6).map(|i| c.window(i).is_some()).collect::<Vec<_>>();
    let gemma3 =
        with(json!({"model_type": "gemma3_text", "sliding_window_pattern": 3, "rope_local_base_freq": 10.0}));
    assert_eq!(windows(&gemma3), [true, true, false, true, true, false]);
    let b = gemma3.backbone().unwrap();
    assert_eq!(b.layers[0].attention.rope.as_ref().unwrap().base, 10.0);
    assert_eq!(b.layers[2].attention.rope.as_ref().unwrap().base, 1_000_000.0);
    assert!(b.layers[0].norm.unit_offset && b.embedding_scale.is_some());
    let gemma2 = with(json!({"model_type": "gemma2"}));
    assert_eq!(windows(&gemma2), [true, false, true, false, true, false]);
    assert_eq!(gemma2.softcaps(), (Some(50.0), Some(30.0)));
    let qwen = with(json!({"model_type": "qwen2", "use_sliding_window": true, "max_window_layers": 4}));
    assert_eq!(windows(&qwen), [false, false, false, false, true, true]);
    assert_eq!(windows(&with(json!({"model_type": "qwen2"}))), [false; 6]);
    let listed = with(json!({"model_type": "qwen3", "layer_types": ["full_attention", "sliding_attention",
        "full_attention", "full_attention", "full_attention", "sliding_attention"]}));
    assert_eq!(windows(&listed), [false, true, false, false, false, true]);
    let smol = with(json!({"model_type": "smollm3"}));
    assert_eq!((0..6).map(|i| smol.uses_rope(i)).collect::<Vec<_>>(), [true, true, true, false, true, true]);
    assert!(smol.backbone().unwrap().layers[3].attention.rope.is_none());
    let phi = with(json!({"model_type": "phi3", "partial_rotary_factor": 0.5}));
    assert_eq!(phi.backbone().unwrap().layers[0].attention.rope.as_ref().unwrap().dims, 4);
    assert!(with(json!({"model_type": "gemma2", "layer_types": ["full_attention"]})).backbone().is_err());
}

#[test]
fn phi3_fused_projections_are_split_by_sanitize() {
    let config = json!({"model_type": "phi3", "vocab_size": 16, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2});
    let model = Registry::with_builtins().build(&config).unwrap();
    let rows = |n: i32| Array::from_slice(&(0..n * 16).map(|v| v as f32).collect::<Vec<_>>(), &[n, 16]);
    let mut weights = lamina_families::Weights::new();
    weights.insert("model.layers.0.self_attn.qkv_proj.weight".into(), rows(16 + 8 + 8));
    weights.insert("model.layers.0.mlp.gate_up_proj.weight".into(), rows(48));
    let out = model.sanitize(weights).unwrap();
    let shape = |k: &str| out[k].shape().to_vec();
    assert_eq!(shape("model.layers.0.self_attn.q_proj.weight"), [16, 16]);
    assert_eq!(shape("model.layers.0.self_attn.k_proj.weight"), [8, 16]);
    assert_eq!(shape("model.layers.0.mlp.up_proj.weight"), [24, 16]);
    // The value rows come after the key rows.
    assert_eq!(out["model.layers.0.self_attn.v_proj.weight"].as_slice::<f32>()[0], (24 * 16) as f32);
    let mut bad = lamina_families::Weights::new();
    bad.insert("model.layers.0.self_attn.qkv_proj.weight".into(), rows(30));
    assert!(matches!(model.sanitize(bad), Err(Error::Shape { .. })));
}
