//! Builds a small hybrid model from lamina's components alone — attention and Mamba
//! blocks under a sequence-classifier head — then runs a forward pass and a few training
//! steps, printing shapes and the loss.
//!
//! ```text
//! cargo run --release --example custom_architecture -- --steps 5
//! ```

use clap::Parser;
use lamina::backbones::{HybridBackbone, HybridBackboneConfig};
use lamina::blocks::{HybridBlockConfig, HybridMixerConfig};
use lamina::components::{AttentionConfig, FeedForwardConfig, MambaConfig, NormConfig, RopeConfig};
use lamina::core::{Pooling, count_parameters};
use lamina::heads::{ModelInput, SequenceClassifier};
use mlx_rs::error::Exception;
use mlx_rs::module::Module;
use mlx_rs::ops::indexing::TryIndexOp;
use mlx_rs::optimizers::{AdamW, Optimizer};
use mlx_rs::{Array, nn, random};

/// Compose, run and train a hybrid attention/SSM classifier.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Training steps on the toy task.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Model width.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Seed for the weights and the data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

type Model = SequenceClassifier<HybridBackbone>;

fn build(hidden: usize) -> lamina::core::Result<Model> {
    let heads = 4;
    let attention = AttentionConfig {
        rope: Some(RopeConfig::new((hidden / heads) as i32, 10_000.0)),
        ..AttentionConfig::new(hidden, heads, 2)
    };
    let layer = |mixer| HybridBlockConfig {
        mixer,
        ffn: FeedForwardConfig::swiglu(hidden, 2 * hidden),
        norm: NormConfig::rms(1e-6),
    };
    let config = HybridBackboneConfig {
        vocab_size: 128,
        layers: vec![
            layer(HybridMixerConfig::Mamba(MambaConfig::new(hidden, 2))),
            layer(HybridMixerConfig::Attention(attention)),
            layer(HybridMixerConfig::Mamba(MambaConfig::new(hidden, 2))),
        ],
        final_norm: NormConfig::rms(1e-6),
        gradient_checkpointing: false,
    };
    SequenceClassifier::new(HybridBackbone::new(&config)?, 2, Pooling::Mean)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    random::seed(args.seed)?;
    let mut model = build(args.hidden)?;
    println!("hybrid classifier: mamba / attention / mamba, {} parameters", count_parameters(&model));

    // A toy task: is the sequence's first token in the upper half of the vocabulary?
    let ids = random::randint::<_, i32>(0, 128, &[8, 32], None)?;
    let labels = ids.try_index((.., 0))?.ge(Array::from_int(64))?.as_dtype(mlx_rs::Dtype::Int32)?;

    let out = model.forward(ModelInput::new(&ids))?;
    println!("input_ids {:?} -> logits {:?}", ids.shape(), out.logits.shape());

    let loss_fn = |model: &mut Model, (x, y): (&Array, &Array)| -> Result<Array, Exception> {
        let out =
            model.forward(ModelInput::new(x).with_labels(y)).map_err(|e| Exception::custom(e.to_string()))?;
        out.loss.ok_or_else(|| Exception::custom("the head computed no loss"))
    };
    let mut step = nn::value_and_grad(loss_fn);
    let mut optimizer = AdamW::new(args.lr);
    for i in 0..args.steps {
        let (loss, grads) = step(&mut model, (&ids, &labels))?;
        optimizer.update(&mut model, grads)?;
        println!("step {i}: loss {:.4}", loss.item_exact::<f32>());
    }
    Ok(())
}
