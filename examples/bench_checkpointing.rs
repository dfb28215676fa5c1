//! Gradient checkpointing's trade: peak memory and step time of a training step with and
//! without it, on a 12-layer, 512-wide transformer with a batch of 4 x 512 tokens.
//!
//! ```text
//! cargo run --release --example bench_checkpointing
//! ```

use std::time::Instant;

use clap::Parser;
use lamina::families::{LanguageModel, LlamaConfig, LlamaForCausalLM};
use lamina::train::{Batching, LrSchedule, TokenDataset, Trainer, TrainerConfig};
use mlx_rs::memory;

/// Peak memory and step time with and without gradient checkpointing.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Blocks.
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Model width.
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Timed steps per setting (after one warm-up step).
    #[arg(long, default_value_t = 2)]
    steps: usize,
}

fn measure(args: &Args, checkpointing: bool) -> Result<(usize, f64), Box<dyn std::error::Error>> {
    let config = LlamaConfig {
        hidden_size: args.hidden,
        intermediate_size: 4 * args.hidden,
        num_hidden_layers: args.layers,
        num_attention_heads: args.hidden / 64,
        num_key_value_heads: Some(args.hidden / 64),
        vocab_size: 1024,
        max_position_embeddings: Some(args.seq_len),
        ..LlamaConfig::tiny()
    };
    let mut model: Box<dyn LanguageModel> = Box::new(LlamaForCausalLM::new(config)?);
    model.set_gradient_checkpointing(checkpointing);
    let rows: Vec<Vec<u32>> = (0..args.batch)
        .map(|r| (0..args.seq_len).map(|i| ((i * 31 + r * 7) % 1000) as u32).collect())
        .collect();
    let data = TokenDataset::new(rows)?;
    let batch = data.batches(args.batch, args.seq_len, Batching::Pad, 0, None)?.remove(0);
    let train = TrainerConfig {
        steps: args.steps + 1,
        schedule: LrSchedule::constant(1e-4),
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(model, train);
    trainer.train_step(std::slice::from_ref(&batch))?; // warm-up: allocations, caches
    memory::clear_cache()?;
    memory::reset_peak_memory()?;
    let start = Instant::now();
    for _ in 0..args.steps {
        trainer.train_step(std::slice::from_ref(&batch))?;
    }
    Ok((memory::peak_memory()?, start.elapsed().as_secs_f64() / args.steps as f64))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (peak_off, time_off) = measure(&args, false)?;
    let (peak_on, time_on) = measure(&args, true)?;
    println!("{} layers x {} wide, batch {} x {} tokens", args.layers, args.hidden, args.batch, args.seq_len);
    println!("without checkpointing: peak {:.0} MB, {:.2} s/step", peak_off as f64 / 1e6, time_off);
    println!("with checkpointing:    peak {:.0} MB, {:.2} s/step", peak_on as f64 / 1e6, time_on);
    println!("peak memory x{:.2}, step time x{:.2}", peak_on as f64 / peak_off as f64, time_on / time_off);
    Ok(())
}
