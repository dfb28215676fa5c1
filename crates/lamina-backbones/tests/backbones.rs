//! Backbones: shapes, names, hidden states, layer sharing, and cached decoding equal to
//! the full forward pass for every kind of block.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lamina_backbones::{
    Backbone, BackboneInput, HybridBackbone, HybridBackboneConfig, MambaBackbone, MambaBackboneConfig,
    TransformerBackbone, TransformerBackboneConfig,
};
use lamina_blocks::{HybridBlockConfig, HybridMixerConfig, MambaBlockConfig, TransformerBlockConfig};
use lamina_components::{AttentionConfig, FeedForwardConfig, LayerCache, MambaConfig, NormConfig};
use lamina_core::Error;
use mlx_rs::module::ModuleParameters;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::{Array, ops};

const VOCAB: i32 = 50;

fn block(window: Option<usize>) -> TransformerBlockConfig {
    TransformerBlockConfig {
        attention: AttentionConfig { sliding_window: window, ..AttentionConfig::new(16, 4, 2) },
        ffn: FeedForwardConfig::swiglu(16, 32),
        norm: NormConfig::rms(1e-5),
        dropout: 0.0,
        norm_placement: lamina_blocks::NormPlacement::Pre,
    }
}

fn transformer(repeats: usize) -> TransformerBackbone {
    let mut config =
        TransformerBackboneConfig::uniform(VOCAB as usize, block(None), 3, NormConfig::rms(1e-5));
    config.layers[1] = block(Some(3));
    config.layer_repeats = repeats;
    TransformerBackbone::new(&config).unwrap()
}

fn mamba() -> MambaBackbone {
    let mixer = MambaConfig { scan_chunk: 4, ..MambaConfig::new(16, 2) };
    let config = MambaBackboneConfig {
        vocab_size: VOCAB as usize,
        num_layers: 2,
        block: MambaBlockConfig { mixer, norm: NormConfig::rms(1e-5) },
        final_norm: NormConfig::rms(1e-5),
        gradient_checkpointing: false,
    };
    MambaBackbone::new(&config).unwrap()
}

fn hybrid() -> HybridBackbone {
    let layer = |mixer| HybridBlockConfig {
        mixer,
        ffn: FeedForwardConfig::swiglu(16, 24),
        norm: NormConfig::rms(1e-6),
    };
    let config = HybridBackboneConfig {
        vocab_size: VOCAB as usize,
        layers: vec![
            layer(HybridMixerConfig::Mamba(MambaConfig { scan_chunk: 3, ..MambaConfig::new(16, 2) })),
            layer(HybridMixerConfig::Attention(AttentionConfig::new(16, 4, 1))),
            layer(HybridMixerConfig::Mamba(MambaConfig::new(16, 2))),
        ],
        final_norm: NormConfig::rms(1e-6),
        gradient_checkpointing: false,
    };
    HybridBackbone::new(&config).unwrap()
}

fn ids(batch: i32, len: i32) -> Array {
    Array::from_iter((0..batch * len).map(|i| (i * 7 + 3) % VOCAB), &[batch, len])
}

fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.subtract(b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
}

/// Runs `ids` through the backbone in chunks with a cache; returns the concatenation.
fn chunked(backbone: &mut impl Backbone, ids: &Array, chunks: &[i32]) -> Array {
    let mut cache = backbone.make_cache().unwrap();
    let mut outs = Vec::new();
    let mut start = 0;
    for &len in chunks {
        let part = ids.try_index((.., start..start + len)).unwrap();
        let out = backbone.forward(BackboneInput::new(&part).with_cache(&mut cache)).unwrap();
        outs.push(out.last_hidden_state);
        start += len;
    }
    assert_eq!(cache.offset(), start);
    ops::concatenate(&outs, 1).unwrap()
}

fn assert_decoding_matches(backbone: &mut impl Backbone, tol: f32) {
    let x = ids(2, 10);
    let full = backbone.forward(BackboneInput::new(&x)).unwrap().last_hidden_state;
    assert_eq!(full.shape(), &[2, 10, 16]);
    for chunks in [&[1; 10][..], &[4, 1, 5][..]] {
        let stepped = chunked(backbone, &x, chunks);
        assert!(max_diff(&full, &stepped) < tol, "{chunks:?}: {}", max_diff(&full, &stepped));
    }
}

#[test]
fn cached_decoding_equals_the_full_forward_for_every_backbone() {
    assert_decoding_matches(&mut transformer(1), 1e-5);
    assert_decoding_matches(&mut transformer(2), 1e-5);
    assert_decoding_matches(&mut mamba(), 1e-4);
    assert_decoding_matches(&mut hybrid(), 1e-4);
}

#[test]
fn a_long_prompt_chunk_evaluated_layer_by_layer_equals_the_full_forward() {
    // From 32 positions a chunk evaluates each layer's cache as it goes.
    fn check(backbone: &mut impl Backbone, tol: f32) {
        let x = ids(2, 40);
        let full = backbone.forward(BackboneInput::new(&x)).unwrap().last_hidden_state;
        for chunks in [&[36, 4][..], &[3, 33, 1, 3][..]] {
            let stepped = chunked(backbone, &x, chunks);
            assert!(max_diff(&full, &stepped) < tol, "{chunks:?}: {}", max_diff(&full, &stepped));
        }
    }
    check(&mut transformer(1), 1e-5);
    check(&mut transformer(2), 1e-5);
    check(&mut mamba(), 1e-4);
    check(&mut hybrid(), 1e-4);
}

#[test]
fn parameter_names_follow_the_checkpoints() {
    let keys = |m: &dyn Fn() -> Vec<String>| m();
    let t = transformer(1);
    let t_keys: Vec<String> = t.parameters().flatten().keys().map(|k| k.to_string()).collect();
    for key in [
        "embed_tokens.weight",
        "layers.0.self_attn.q_proj.weight",
        "layers.2.mlp.down_proj.weight",
        "norm.weight",
    ] {
        assert!(t_keys.contains(&key.to_string()), "{key}");
    }
    let m_keys = keys(&|| mamba().parameters().flatten().keys().map(|k| k.to_string()).collect());
    for key in ["embeddings.weight", "layers.1.mixer.A_log", "layers.0.norm.weight", "norm_f.weight"] {
        assert!(m_keys.contains(&key.to_string()), "{key}");
    }
    let h_keys = keys(&|| hybrid().parameters().flatten().keys().map(|k| k.to_string()).collect());
    for key in ["layers.0.mamba.in_proj.weight", "layers.1.self_attn.o_proj.weight", "final_layernorm.weight"]
    {
        assert!(h_keys.contains(&key.to_string()), "{key}");
    }
}

#[test]
fn hidden_states_are_the_embeddings_then_every_block() {
    let mut t = transformer(2);
    let x = ids(1, 4);
    let out = t.forward(BackboneInput { output_hidden_states: true, ..BackboneInput::new(&x) }).unwrap();
    let states = out.hidden_states.unwrap();
    assert_eq!(states.len(), 1 + 3 * 2);
    assert!(states.iter().all(|s| s.shape() == [1, 4, 16]));
    let embedded = t.embedding().weight.take_axis(&x, 0).unwrap();
    assert_eq!(max_diff(&states[0], &embedded), 0.0);
    assert!(t.forward(BackboneInput::new(&x)).unwrap().hidden_states.is_none());
}

#[test]
fn layer_sharing_runs_each_block_twice_with_its_own_caches() {
    let mut shared = transformer(2);
    let cache = shared.make_cache().unwrap();
    assert_eq!(cache.layers.len(), 6);
    assert!(
        matches!(cache.layers[2], LayerCache::Rotating(_))
            && matches!(cache.layers[3], LayerCache::Rotating(_))
    );
    // The same weights with the blocks listed twice in a row compute the same function.
    let mut unrolled = transformer(1);
    unrolled.embed_tokens = shared.embed_tokens.clone();
    unrolled.norm = shared.norm.clone();
    unrolled.layers = shared.layers.iter().flat_map(|b| [b.clone(), b.clone()]).collect();
    let x = ids(2, 5);
    let a = shared.forward(BackboneInput::new(&x)).unwrap().last_hidden_state;
    let b = unrolled.forward(BackboneInput::new(&x)).unwrap().last_hidden_state;
    assert!(max_diff(&a, &b) < 1e-6);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut t = transformer(1);
    let out_of_range = Array::from_slice(&[1i32, VOCAB], &[1, 2]);
    assert!(matches!(t.forward(BackboneInput::new(&out_of_range)), Err(Error::TokenOutOfRange { .. })));
    let flat = Array::from_slice(&[1i32, 2], &[2]);
    assert!(matches!(t.forward(BackboneInput::new(&flat)), Err(Error::Shape { .. })));
    let mut wrong_cache = mamba().make_cache().unwrap();
    let x = ids(1, 2);
    let err = t.forward(BackboneInput::new(&x).with_cache(&mut wrong_cache)).unwrap_err();
    assert!(err.to_string().contains("cache has 2 layers"), "{err}");
}

#[test]
fn invalid_configs_are_rejected() {
    let mut config = TransformerBackboneConfig::uniform(10, block(None), 2, NormConfig::rms(1e-5));
    config.layers[1].attention.hidden_size = 32;
    config.layers[1].ffn.hidden_size = 32;
    assert!(matches!(TransformerBackbone::new(&config), Err(Error::InvalidConfig { .. })));
    let empty = TransformerBackboneConfig { layers: vec![], ..config };
    let err = TransformerBackbone::new(&empty).unwrap_err().to_string();
    assert!(err.contains("layers"), "{err}");
}
