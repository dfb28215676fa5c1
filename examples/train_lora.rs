//! Fine-tunes a model with LoRA on the text shipped in `examples/data/coast.txt` (a
//! gazetteer of an imaginary coast), printing the loss per step; saves the adapters,
//! reloads them into a fresh copy of the base model, and shows generation before and
//! after. By default it adapts the embedded SmolLM2-135M-Instruct.
//!
//! ```text
//! cargo run --release --example train_lora
//! cargo run --release --example train_lora -- --steps 40 --rank 16 --out target/lora
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::components::LoraConfig;
use lamina::generate::{GenerateParams, generate};
use lamina::loader::{LoadOptions, LoadedModel, load_blocking};
use lamina::train::{
    AdapterConfig, Batching, LoraTargets, LrSchedule, OptimizerConfig, TokenDataset, Trainer, TrainerConfig,
    apply_lora, load_adapters, save_adapters,
};

/// LoRA fine-tuning on the shipped dataset.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Base checkpoint (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training text, one example per line ('#' lines skipped).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/coast.txt"))]
    data: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Adapt only the last this many blocks.
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Rows per step and tokens per row (the text is packed).
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Hold out every n-th line and report its loss every `--eval-every` steps.
    #[arg(long, default_value_t = 10)]
    hold_out_every: usize,
    /// Steps between held-out evaluations.
    #[arg(long, default_value_t = 20)]
    eval_every: usize,
    /// Seed of the adapters' initialisation (the data order and dropout use the trainer's).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the adapters.
    #[arg(long, default_value = "target/lora-adapters")]
    out: PathBuf,
    /// The prompt shown before and after.
    #[arg(long, default_value = "Q: Which river flows through Kestrel? A:")]
    prompt: String,
}

fn load(path: &PathBuf) -> Result<LoadedModel, Box<dyn std::error::Error>> {
    Ok(load_blocking(path, LoadOptions::default())?)
}

fn complete(loaded: &mut LoadedModel, prompt: &str) -> Result<String, Box<dyn std::error::Error>> {
    let tokenizer = loaded.tokenizer.as_ref().ok_or("the model has no tokenizer")?;
    let ids = tokenizer.encode(prompt, true)?;
    let eos = loaded.eos_token_ids();
    let params = GenerateParams { max_new_tokens: 16, eos_token_ids: eos, ..GenerateParams::default() };
    let text = generate(loaded.model.as_mut(), Some(tokenizer), &ids, &params)?.text;
    // The answer's first line (a base model may start with a line break).
    Ok(text.trim().lines().next().unwrap_or_default().to_string())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = match args.model.clone() {
        Some(p) => p,
        None => PathBuf::from(option_env!("LAMINA_DEFAULT_MODEL").ok_or("no default model; pass --model")?),
    };
    let text = std::fs::read_to_string(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    let mut loaded = load(&path)?;
    let before = complete(&mut loaded, &args.prompt)?;
    let tokenizer = loaded.tokenizer.clone().ok_or("the model has no tokenizer")?;
    let eos = loaded.eos_token_ids().first().copied();
    let (dataset, held_out) =
        TokenDataset::from_texts(&tokenizer, &lines, eos)?.split_every(args.hold_out_every)?;
    println!(
        "{} lines: {} training tokens, {} held out; base model {}",
        lines.len(),
        dataset.tokens(),
        held_out.tokens(),
        path.display()
    );

    let lora = LoraConfig { rank: args.rank, alpha: args.alpha, dropout: 0.0, ..LoraConfig::default() };
    let targets = LoraTargets::all_linear().in_last_layers(args.layers);
    // The adapters' `lora_a` starts random, from MLX's global generator.
    mlx_rs::random::seed(args.seed)?;
    let adapted = apply_lora(loaded.model.as_mut(), &targets, lora)?;
    println!(
        "adapters on {} layers, {} trainable parameters",
        adapted.len(),
        lamina::core::count_trainable_parameters(&loaded.model)
    );
    let config = TrainerConfig {
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        batching: Batching::Pack,
        steps: args.steps,
        grad_clip: Some(1.0),
        schedule: LrSchedule {
            peak: args.lr,
            min: args.lr / 10.0,
            warmup_steps: args.steps / 10,
            total_steps: args.steps,
        },
        optimizer: OptimizerConfig::AdamW { weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        eval_every: args.eval_every,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(loaded.model, config);
    let held_out_batches = held_out.batches(args.batch_size, args.seq_len, Batching::Pack, 0, None)?;
    println!("held-out loss before training {:.4}", trainer.evaluate(&held_out_batches)?);
    let logs = trainer.fit(&dataset, Some(&held_out), |log| {
        let eval = log.eval_loss.map(|l| format!("  held-out loss {l:.4}")).unwrap_or_default();
        println!(
            "step {:>3}  loss {:.4}  lr {:.2e}  grad norm {:.3}  {:.0} tok/s{eval}",
            log.step, log.loss, log.lr, log.grad_norm, log.tokens_per_s
        );
    })?;
    let (first, last) = (logs.first().map_or(0.0, |l| l.loss), logs.last().map_or(0.0, |l| l.loss));
    println!("loss {first:.4} -> {last:.4} ({:.1}% of the start)", 100.0 * last / first);
    save_adapters(trainer.model.as_ref(), &AdapterConfig::adapters(lora, targets), &args.out)?;
    println!("adapters written to {}", args.out.display());

    let mut fresh = load(&path)?;
    load_adapters(fresh.model.as_mut(), &args.out)?;
    let after = complete(&mut fresh, &args.prompt)?;
    println!("prompt: {}\nbefore: {}\nafter:  {}", args.prompt, before, after);
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
