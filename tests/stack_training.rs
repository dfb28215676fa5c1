//! The stack trains: gradients reach every trainable parameter of a composed model, LoRA
//! trains only its adapters, and an optimiser step lowers the loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lamina::backbones::{
    HybridBackbone, HybridBackboneConfig, TransformerBackbone, TransformerBackboneConfig,
};
use lamina::blocks::{HybridBlockConfig, HybridMixerConfig, TransformerBlockConfig};
use lamina::components::{AttentionConfig, FeedForwardConfig, LoraConfig, MambaConfig, NormConfig};
use lamina::core::Pooling;
use lamina::heads::{CausalLm, ModelInput, SequenceClassifier};
use mlx_rs::error::Exception;
use mlx_rs::module::{FlattenedModuleParam, Module, ModuleParameters};
use mlx_rs::optimizers::{AdamW, Optimizer};
use mlx_rs::{Array, nn};

/// Builds under a fixed seed, one test at a time (MLX's default key is global and the
/// tests of this file run on parallel threads), so that every run starts from the same
/// weights.
fn seeded<T>(seed: u64, build: impl FnOnce() -> T) -> T {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    mlx_rs::random::seed(seed).unwrap();
    build()
}

fn hybrid_classifier() -> SequenceClassifier<HybridBackbone> {
    seeded(11, hybrid_classifier_unseeded)
}

fn hybrid_classifier_unseeded() -> SequenceClassifier<HybridBackbone> {
    let layer = |mixer| HybridBlockConfig {
        mixer,
        ffn: FeedForwardConfig::swiglu(16, 32),
        norm: NormConfig::rms(1e-6),
    };
    let config = HybridBackboneConfig {
        vocab_size: 40,
        layers: vec![
            layer(HybridMixerConfig::Attention(AttentionConfig {
                qkv_bias: true,
                ..AttentionConfig::new(16, 4, 2)
            })),
            layer(HybridMixerConfig::Mamba(MambaConfig { scan_chunk: 4, ..MambaConfig::new(16, 2) })),
        ],
        final_norm: NormConfig::rms(1e-6),
        gradient_checkpointing: false,
    };
    SequenceClassifier::new(HybridBackbone::new(&config).unwrap(), 3, Pooling::LastToken).unwrap()
}

fn tiny_lm() -> CausalLm<TransformerBackbone> {
    seeded(12, tiny_lm_unseeded)
}

fn tiny_lm_unseeded() -> CausalLm<TransformerBackbone> {
    let block = TransformerBlockConfig {
        attention: AttentionConfig::new(16, 4, 2),
        ffn: FeedForwardConfig::swiglu(16, 32),
        norm: NormConfig::rms(1e-5),
        dropout: 0.0,
        norm_placement: lamina::blocks::NormPlacement::Pre,
    };
    let backbone =
        TransformerBackbone::new(&TransformerBackboneConfig::uniform(40, block, 2, NormConfig::rms(1e-5)))
            .unwrap();
    CausalLm::new(backbone, true).unwrap()
}

fn ids() -> Array {
    Array::from_iter((0..2 * 9).map(|i| (i * 11 + 5) % 40), &[2, 9])
}

fn grads_of<M>(model: &mut M, labels: &Array) -> (f32, FlattenedModuleParam)
where
    M: ModuleParameters
        + for<'a> Module<ModelInput<'a>, Output = lamina::core::ModelOutput, Error = lamina::core::Error>,
{
    let x = ids();
    let loss_fn = |model: &mut M, (x, y): (&Array, &Array)| -> Result<Array, Exception> {
        let out =
            model.forward(ModelInput::new(x).with_labels(y)).map_err(|e| Exception::custom(e.to_string()))?;
        out.loss.ok_or_else(|| Exception::custom("no loss"))
    };
    let mut value_and_grad = nn::value_and_grad(loss_fn);
    let (loss, grads) = value_and_grad(model, (&x, labels)).unwrap();
    (loss.item_exact::<f32>(), grads)
}

fn norm(a: &Array) -> f32 {
    a.square().unwrap().sum(None).unwrap().sqrt().unwrap().item_exact::<f32>()
}

#[test]
fn gradients_reach_every_trainable_parameter_of_a_hybrid_classifier() {
    let mut model = hybrid_classifier();
    let labels = Array::from_slice(&[2i32, 0], &[2]);
    let (loss, grads) = grads_of(&mut model, &labels);
    assert!(loss.is_finite() && loss > 0.0);
    let params = model.trainable_parameters().flatten();
    assert_eq!(grads.len(), params.len());
    for (key, value) in params.iter() {
        let grad = grads.get(key).unwrap_or_else(|| panic!("no gradient for {key}"));
        assert_eq!(grad.shape(), value.shape(), "{key}");
        assert!(norm(grad) > 0.0, "zero gradient for {key}");
    }
    assert!(params.contains_key("model.layers.1.mamba.A_log") && params.contains_key("score.weight"));
}

#[test]
fn lora_trains_only_the_adapters_and_lowers_the_loss() {
    let mut model = tiny_lm();
    model.freeze_parameters(true);
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, ..LoraConfig::default() };
    for layer in &mut model.model.layers {
        layer.self_attn.q_proj.attach_lora(lora).unwrap();
        layer.self_attn.v_proj.attach_lora(lora).unwrap();
    }
    let trainable = lamina::components::trainable_names(&model);
    assert_eq!(trainable.len(), 2 * 2 * 2);
    assert!(trainable.iter().all(|k| k.ends_with("lora_a") || k.ends_with("lora_b")), "{trainable:?}");

    let frozen_before = model.model.layers[0].self_attn.q_proj.weight.value.clone();
    let labels = ids();
    let mut optimizer = AdamW::new(0.05);
    let (first, _) = grads_of(&mut model, &labels);
    let mut last = first;
    for _ in 0..8 {
        let (loss, grads) = grads_of(&mut model, &labels);
        assert!(grads.keys().all(|k| k.ends_with("lora_a") || k.ends_with("lora_b")));
        optimizer.update(&mut model, grads).unwrap();
        last = loss;
    }
    assert!(last < first, "loss did not fall: {first} -> {last}");
    let frozen_after = &model.model.layers[0].self_attn.q_proj.weight.value;
    assert!(frozen_after.eq_values(&frozen_before).unwrap(), "the base weight moved");
}

/// Two batches of the toy task: the label is whether token 7 occurs in the row.
fn classification_batches() -> Vec<lamina::train::Batch> {
    (0..2)
        .map(|b| {
            let mut rows: Vec<i32> = (0..4 * 6).map(|i| (i * 13 + b * 5) % 30 + 8).collect();
            let labels: Vec<i32> = (0..4).map(|r| ((r + b as usize) % 2) as i32).collect();
            for (r, label) in labels.iter().enumerate() {
                if *label == 1 {
                    rows[r * 6 + 2] = 7;
                }
            }
            lamina::train::Batch {
                input_ids: Array::from_slice(&rows, &[4, 6]),
                labels: Array::from_slice(&labels, &[4]),
                padding_mask: Array::ones::<i32>(&[4, 6]).unwrap(),
                tokens: 24,
            }
        })
        .collect()
}

fn trainer_config(steps: usize) -> lamina::train::TrainerConfig {
    lamina::train::TrainerConfig {
        steps,
        schedule: lamina::train::LrSchedule { peak: 1e-2, min: 1e-3, warmup_steps: 1, total_steps: steps },
        ..lamina::train::TrainerConfig::default()
    }
}

#[test]
fn the_trainer_trains_a_sequence_classifier_and_a_regressor() {
    use lamina::train::Trainer;

    let batches = classification_batches();
    let mut trainer = Trainer::new(hybrid_classifier(), trainer_config(30));
    let start = trainer.evaluate(&batches).unwrap();
    for step in 0..30 {
        let log = trainer.train_step(&batches[step % 2..step % 2 + 1]).unwrap();
        assert!(log.loss.is_finite() && log.grad_norm > 0.0, "{log:?}");
    }
    let end = trainer.evaluate(&batches).unwrap();
    assert!(end < 0.5 * start, "classification loss {start} -> {end}");

    // A regressor fits two targets per row by mean squared error.
    let backbone = hybrid_classifier().model;
    let mut trainer =
        Trainer::new(lamina::heads::Regressor::new(backbone, 2, Pooling::Mean).unwrap(), trainer_config(30));
    let targets: Vec<lamina::train::Batch> = classification_batches()
        .into_iter()
        .map(|b| {
            let y = b.labels.as_dtype(mlx_rs::Dtype::Float32).unwrap();
            let labels = mlx_rs::ops::stack(&[&y, &y.multiply(Array::from_f32(-0.5)).unwrap()], 1).unwrap();
            lamina::train::Batch { labels, ..b }
        })
        .collect();
    let start = trainer.evaluate(&targets).unwrap();
    for _ in 0..30 {
        trainer.train_step(&targets).unwrap();
    }
    let end = trainer.evaluate(&targets).unwrap();
    assert!(end < 0.5 * start, "regression loss {start} -> {end}");
    // Wrong-shaped labels are an error, not a panic.
    let wrong = lamina::train::Batch { labels: Array::from_slice(&[0.0f32; 3], &[3]), ..targets[0].clone() };
    assert!(trainer.train_step(&[wrong]).is_err());
}
