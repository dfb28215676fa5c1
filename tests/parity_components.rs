//! Single layers against mlx-lm 0.32.2: the fixtures (made by
//! `scripts/fixtures/components.py`) hold mlx-lm's parameters, an input and mlx-lm's
//! output; the lamina layer built from the same config, given the same parameters, must
//! give the same output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::rc::Rc;

use lamina::blocks::{TransformerBlock, TransformerBlockConfig};
use lamina::components::{
    Attention, AttentionConfig, FeedForward, FeedForwardConfig, LayerInput, MambaConfig, MambaMixer,
    NormConfig, QkNormConfig, QkNormPosition, RopeConfig, RopeScaling,
};
use mlx_rs::Array;
use mlx_rs::module::{Module, ModuleParameters};

struct Fixture {
    params: HashMap<String, Array>,
    x: Array,
    output: Array,
}

fn fixture(name: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/components/{name}.safetensors", env!("CARGO_MANIFEST_DIR"));
    let mut arrays = Array::load_safetensors(&path).unwrap();
    let x = arrays.remove("x").unwrap();
    let output = arrays.remove("output").unwrap();
    let params =
        arrays.into_iter().map(|(k, v)| (k.strip_prefix("params.").unwrap().to_owned(), v)).collect();
    Fixture { params, x, output }
}

/// Loads the fixture's parameters, requiring the same set of names and shapes.
fn load(module: &mut impl ModuleParameters, params: &HashMap<String, Array>) {
    let ours: HashMap<String, Vec<i32>> =
        module.parameters().flatten().iter().map(|(k, v)| (k.to_string(), v.shape().to_vec())).collect();
    let theirs: HashMap<String, Vec<i32>> =
        params.iter().map(|(k, v)| (k.clone(), v.shape().to_vec())).collect();
    assert_eq!(ours, theirs, "parameter names or shapes differ from mlx-lm's");
    module.update_flattened(params.iter().map(|(k, v)| (Rc::from(k.as_str()), v.clone())).collect());
}

fn assert_matches(actual: &Array, expected: &Array, tol: f32) {
    assert_eq!(actual.shape(), expected.shape());
    let diff = actual.subtract(expected).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
    assert!(diff <= tol, "max |lamina - mlx-lm| = {diff} > {tol}");
}

fn attention(config: AttentionConfig, name: &str) {
    let f = fixture(name);
    let mut layer = Attention::new(config).unwrap();
    load(&mut layer, &f.params);
    assert_matches(&layer.forward(LayerInput::new(&f.x)).unwrap(), &f.output, 1e-5);
}

#[test]
fn gqa_attention_with_llama3_rope() {
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    let rope = RopeConfig { scaling, ..RopeConfig::new(8, 500_000.0) };
    attention(AttentionConfig { rope: Some(rope), ..AttentionConfig::new(32, 4, 2) }, "attention_gqa_llama3");
}

#[test]
fn biased_attention_with_interleaved_linear_rope() {
    let rope = RopeConfig {
        traditional: true,
        scaling: RopeScaling::Linear { factor: 2.0 },
        ..RopeConfig::new(8, 10_000.0)
    };
    let config =
        AttentionConfig { qkv_bias: true, o_bias: true, rope: Some(rope), ..AttentionConfig::new(32, 4, 4) };
    attention(config, "attention_mha_linear_traditional");
}

#[test]
fn qk_norm_attention_with_explicit_head_dim() {
    let config = AttentionConfig {
        head_dim: Some(12),
        qk_norm: Some(QkNormConfig { norm: NormConfig::rms(1e-6), position: QkNormPosition::BeforeRope }),
        rope: Some(RopeConfig::new(12, 1_000_000.0)),
        ..AttentionConfig::new(32, 4, 1)
    };
    attention(config, "attention_qk_norm");
}

#[test]
fn swiglu_feed_forward() {
    let f = fixture("swiglu");
    let mut layer = FeedForward::new(FeedForwardConfig::swiglu(32, 48)).unwrap();
    load(&mut layer, &f.params);
    assert_matches(&layer.forward(&f.x).unwrap(), &f.output, 1e-5);
}

#[test]
fn transformer_block() {
    let f = fixture("transformer_block");
    let config = TransformerBlockConfig {
        attention: AttentionConfig {
            rope: Some(RopeConfig::new(8, 500_000.0)),
            ..AttentionConfig::new(32, 4, 2)
        },
        ffn: FeedForwardConfig::swiglu(32, 48),
        norm: NormConfig::rms(1e-5),
        dropout: 0.0,
        norm_placement: lamina::blocks::NormPlacement::Pre,
    };
    let mut block = TransformerBlock::new(&config).unwrap();
    load(&mut block, &f.params);
    assert_matches(&block.forward(LayerInput::new(&f.x)).unwrap().hidden_states, &f.output, 1e-5);
}

#[test]
fn mamba_mixer_parallel_scan_matches_mlx_lm_token_loop() {
    let f = fixture("mamba_mixer");
    for chunk in [1, 4, 64] {
        let config = MambaConfig {
            hidden_size: 32,
            state_size: 8,
            conv_kernel: 4,
            intermediate_size: 64,
            time_step_rank: 2,
            use_bias: false,
            use_conv_bias: true,
            scan_chunk: chunk,
        };
        let mut mixer = MambaMixer::new(config).unwrap();
        load(&mut mixer, &f.params);
        assert_matches(&mixer.forward(LayerInput::new(&f.x)).unwrap(), &f.output, 1e-5);
    }
}

#[test]
fn yarn_and_longrope_rotate_as_mlx_lm_does() {
    use lamina::components::Rope;
    let fixture = Array::load_safetensors(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/components/rope_scaled.safetensors"),
    )
    .unwrap();
    let yarn = Rope::new(RopeConfig {
        scaling: RopeScaling::Yarn {
            factor: 4.0,
            original_max_position_embeddings: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: 1.0,
            mscale_all_dim: 0.0,
        },
        ..RopeConfig::new(16, 10_000.0)
    })
    .unwrap();
    let longrope = Rope::new(RopeConfig {
        scaling: RopeScaling::Longrope {
            long_factor: (0..8).map(|i| 1.0 + 0.25 * i as f32).collect(),
            short_factor: vec![1.0; 8],
            original_max_position_embeddings: 64,
            max_position_embeddings: 1024,
        },
        ..RopeConfig::new(16, 10_000.0)
    })
    .unwrap();
    let x = &fixture["x"];
    for offset in [0, 7] {
        for (name, rope) in [("yarn", &yarn), ("longrope", &longrope)] {
            let out = rope.forward(x, offset).unwrap();
            let expected = &fixture[format!("{name}_{offset}").as_str()];
            let diff = out.subtract(expected).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            assert!(diff < 1e-5, "{name} at offset {offset}: {diff}");
        }
    }
}
