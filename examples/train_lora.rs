//! Fine-tunes a model: LoRA, DoRA or full fine-tuning, on a text file (one example per
//! line, as `examples/data/coast.txt`) or a folder of JSONL files in mlx-lm's formats
//! (`train.jsonl`, `valid.jsonl`, `test.jsonl`: text, prompt/completion or chat rows, as
//! `examples/data/harbor/`), optionally with the prompt masked out of the loss and in
//! mixed precision. Prints the loss per step under a progress bar, the held-out loss at
//! each evaluation, the test loss and perplexity; saves resumable checkpoints and the
//! adapters, reloads the adapters into a fresh copy of the base model, and shows an
//! answer before and after. By default it adapts the embedded SmolLM2-135M-Instruct.
//!
//! ```text
//! cargo run --release --example train_lora
//! cargo run --release --example train_lora -- --data examples/data/harbor --mask-prompt --steps 120
//! cargo run --release --example train_lora -- --fine-tune-type dora --precision bf16
//! cargo run --release --example train_lora -- --resume target/lora-adapters/checkpoints/step-000040
//! cargo run --release --example launch -- -n 2 target/release/examples/train_lora --steps 30
//! ```
//!
//! Started as a rank (`MLX_RANK` and `MLX_HOSTFILE` set, as the `launch` example and
//! `mlx.launch` set them), it trains data-parallel: each rank takes its share of every
//! batch, and only rank 0 prints and writes.

mod common;
#[path = "common/default_model.rs"]
mod default_model;
#[path = "common/ranks.rs"]
mod ranks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use lamina::components::{AdapterKind, LoraConfig};
use lamina::generate::{GenerateParams, generate};
use lamina::loader::{LoadOptions, LoadedModel, Tokenizer, load_blocking};
use lamina::train::{
    AdapterConfig, Batching, DatasetFolder, Encoder, FineTuneType, LoraTargets, LrSchedule, OptimizerConfig,
    Precision, Record, TokenDataset, Trainer, TrainerConfig, apply_fine_tuning, load_adapters, save_adapters,
};
use serde_json::Value;

/// Whether this process prints: rank 0 of a data-parallel run, or the only process.
static MAIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// `println!` on the main rank only.
macro_rules! say {
    ($($arg:tt)*) => {
        if MAIN.load(std::sync::atomic::Ordering::Relaxed) {
            println!($($arg)*);
        }
    };
}

/// Fine-tuning on a text file or a JSONL dataset folder.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Base checkpoint: a path, a Hub repo id or a known model's name (default: the
    /// embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// A text file (one example per line, '#' lines skipped) or a folder with
    /// train.jsonl (and valid.jsonl, test.jsonl).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/coast.txt"))]
    data: PathBuf,
    /// Count only the completion (the last assistant turn) in the loss.
    #[arg(long)]
    mask_prompt: bool,
    /// f32, or bf16/f16 frozen weights and activations (adapters and optimizer in f32).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// lora, dora, or full (the chosen layers' own weights).
    #[arg(long, default_value = "lora")]
    fine_tune_type: FineTuneType,
    /// Load the base weights in this dtype (f32, f16, bf16; a quantized checkpoint is then
    /// dequantized); as stored when absent.
    #[arg(long)]
    dtype: Option<String>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 60)]
    steps: usize,
    /// Adapter rank.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Adapter alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Adapt only the last this many blocks.
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Rows per step.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Tokens per row (default: 64 for a text file, packed; 256 for a dataset folder,
    /// one row per example, longer ones cut).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Without valid.jsonl: hold out every n-th example.
    #[arg(long, default_value_t = 10)]
    hold_out_every: usize,
    /// Steps between held-out evaluations.
    #[arg(long, default_value_t = 20)]
    eval_every: usize,
    /// Seed of the adapters' initialisation (the data order and dropout use the trainer's).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the adapters (and the checkpoints, in `checkpoints/step-N/`).
    #[arg(long, default_value = "target/lora-adapters")]
    out: PathBuf,
    /// Write a resumable checkpoint every this many steps (0 = never).
    #[arg(long, default_value_t = 20)]
    save_every: usize,
    /// Continue from a checkpoint this example wrote (`<out>/checkpoints/step-N`): the
    /// same run as if it had not stopped.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// The prompt shown before and after (default: the first test row's, for a folder).
    #[arg(long)]
    prompt: Option<String>,
}

/// The data, tokenized: training, held-out, test; and the example prompt.
struct Data {
    train: TokenDataset,
    held_out: TokenDataset,
    test: Option<TokenDataset>,
    batching: Batching,
    seq_len: usize,
    /// The prompt to show, as token ids, and its text (and the reference answer).
    prompt: (Vec<u32>, String, Option<String>),
}

fn load(model: &str, dtype: Option<&str>) -> Result<LoadedModel, Box<dyn std::error::Error>> {
    let dtype = dtype.map(lamina::core::DType::parse).transpose()?;
    Ok(load_blocking(model, LoadOptions { dtype, ..LoadOptions::default() })?)
}

fn read_text(
    args: &Args,
    tokenizer: &Tokenizer,
    eos: Option<u32>,
) -> Result<Data, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
    let (train, held_out) =
        TokenDataset::from_texts(tokenizer, &lines, eos)?.split_every(args.hold_out_every)?;
    say!("{} lines from {}", lines.len(), args.data.display());
    let prompt = args.prompt.clone().unwrap_or_else(|| "Q: Which river flows through Kestrel? A:".into());
    let ids = tokenizer.encode(&prompt, true)?;
    Ok(Data {
        train,
        held_out,
        test: None,
        batching: Batching::Pack,
        seq_len: args.seq_len.unwrap_or(64),
        prompt: (ids, prompt, None),
    })
}

fn read_folder(args: &Args, tokenizer: &Tokenizer) -> Result<Data, Box<dyn std::error::Error>> {
    let folder = DatasetFolder::read(&args.data)?;
    let encoder = Encoder::new(tokenizer, args.mask_prompt)?;
    let train = encoder.encode(&folder.train)?;
    let (train, held_out) = match &folder.valid {
        Some(valid) => (train, encoder.encode(valid)?),
        None => train.split_every(args.hold_out_every)?,
    };
    let test = folder.test.as_ref().map(|t| encoder.encode(t)).transpose()?;
    say!(
        "{}: {} rows ({}), {} held out, {} test; prompt {}",
        args.data.display(),
        folder.train.records.len(),
        folder.train.format,
        held_out.sequences().len(),
        test.as_ref().map_or(0, |t| t.sequences().len()),
        if args.mask_prompt { "masked" } else { "trained on" }
    );
    // The example prompt: the first test (else training) row without its last turn.
    let sample = folder.test.as_ref().unwrap_or(&folder.train).records.first().map(|(_, r)| r.clone());
    let prompt = match (&args.prompt, sample) {
        (Some(text), _) => (chat_prompt(&encoder, text)?, text.clone(), None),
        (None, Some(Record::Chat { messages, tools })) => {
            let list = messages.as_array().cloned().unwrap_or_default();
            let answer =
                list.last().and_then(|m| m.get("content")).and_then(Value::as_str).map(str::to_owned);
            let question =
                list.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str());
            let head =
                Record::Chat { messages: Value::Array(list[..list.len().saturating_sub(1)].to_vec()), tools };
            (encoder.prompt_ids(&head)?, question.unwrap_or_default().to_owned(), answer)
        }
        (None, Some(Record::Completion { prompt, completion })) => {
            (chat_prompt(&encoder, &prompt)?, prompt, Some(completion))
        }
        (None, _) => {
            let text = "Hello".to_owned();
            (tokenizer.encode(&text, true)?, text, None)
        }
    };
    let seq_len = args.seq_len.unwrap_or(256);
    Ok(Data { train, held_out, test, batching: Batching::Pad, seq_len, prompt })
}

/// A user turn rendered with the generation prompt.
fn chat_prompt(encoder: &Encoder, text: &str) -> Result<Vec<u32>, Box<dyn std::error::Error>> {
    let messages = serde_json::json!([{ "role": "user", "content": text }]);
    Ok(encoder.prompt_ids(&Record::Chat { messages, tools: None })?)
}

fn answer(loaded: &mut LoadedModel, ids: &[u32]) -> Result<String, Box<dyn std::error::Error>> {
    let tokenizer = loaded.tokenizer.as_ref().ok_or("the model has no tokenizer")?;
    let eos = loaded.eos_token_ids();
    let params = GenerateParams { max_new_tokens: 40, eos_token_ids: eos, ..GenerateParams::default() };
    let text = generate(loaded.model.as_mut(), Some(tokenizer), ids, &params)?.text;
    // The answer's first line (a base model may start with a line break).
    Ok(text.trim().lines().next().unwrap_or_default().to_string())
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Started as a rank (by the `launch` example or `mlx.launch`): train data-parallel.
    let group = if let Some(group) = ranks::join()? {
        MAIN.store(group.rank() == 0, std::sync::atomic::Ordering::Relaxed);
        say!(
            "rank {} of {} ranks, training data-parallel (only rank 0 prints and writes)",
            group.rank(),
            group.size()
        );
        Some(group)
    } else {
        None
    };
    let main = MAIN.load(std::sync::atomic::Ordering::Relaxed);
    let model = default_model::model_or_default(args.model.clone())?;
    let mut loaded = load(&model, args.dtype.as_deref())?;
    let tokenizer = loaded.tokenizer.clone().ok_or("the model has no tokenizer")?;
    let eos = loaded.eos_token_ids().first().copied();
    let data =
        if args.data.is_dir() { read_folder(&args, &tokenizer)? } else { read_text(&args, &tokenizer, eos)? };
    let cut = data.train.longer_than(data.seq_len);
    say!(
        "{} training tokens, {} held out; {cut} training rows longer than {} tokens {}; base model {model}",
        data.train.tokens(),
        data.held_out.tokens(),
        data.seq_len,
        if data.batching == Batching::Pad { "cut" } else { "packed across rows" },
    );
    let before = if main { answer(&mut loaded, &data.prompt.0)? } else { String::new() };

    let kind = if args.fine_tune_type == FineTuneType::Dora { AdapterKind::Dora } else { AdapterKind::Lora };
    let lora = LoraConfig { rank: args.rank, alpha: args.alpha, dropout: 0.0, kind };
    let targets = LoraTargets::all_linear().in_last_layers(args.layers);
    let adapter_config = match args.fine_tune_type {
        FineTuneType::Full => AdapterConfig::full(targets),
        _ => AdapterConfig::adapters(lora, targets),
    };
    // The adapters' `lora_a` starts random, from MLX's global generator.
    mlx_rs::random::seed(args.seed)?;
    let adapted = apply_fine_tuning(loaded.model.as_mut(), &adapter_config)?;
    say!(
        "{} on {} layers, {} trainable parameters, {}",
        args.fine_tune_type,
        adapted.len(),
        lamina::core::count_trainable_parameters(&loaded.model),
        args.precision
    );
    let config = TrainerConfig {
        batch_size: args.batch_size,
        seq_len: data.seq_len,
        batching: data.batching,
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
        precision: args.precision,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(loaded.model, config);
    if let Some(group) = group {
        trainer = trainer.data_parallel(group);
    }
    if let Some(vocab) = lamina::train::TrainableModel::vocab_size(&trainer.model) {
        data.train.check_vocab(vocab)?;
    }
    if let Some(dir) = &args.resume {
        trainer.resume(dir)?;
        say!("resumed at step {} from {}", trainer.step(), dir.display());
    }
    let held_out_batches = data.held_out.batches(args.batch_size, data.seq_len, data.batching, 0, None)?;
    let start_loss = trainer.evaluate(&held_out_batches)?;
    say!("held-out loss {start_loss:.4} (before this run)");

    let bar = if main { ProgressBar::new(args.steps as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")?);
    bar.set_position(trainer.step() as u64);
    mlx_rs::memory::reset_peak_memory()?;
    let mut logs = Vec::new();
    while trainer.step() < args.steps {
        let mut log = trainer.fit_one(&data.train)?;
        if args.eval_every > 0 && log.step % args.eval_every == 0 {
            log.eval_loss = Some(trainer.evaluate(&held_out_batches)?);
        }
        let skipped = if log.skipped { "  (skipped: f16 overflow)" } else { "" };
        bar.suspend(|| {
            say!(
                "step {:>3}  loss {:.4}  lr {:.2e}  grad norm {:.3}  {:.0} tok/s{skipped}",
                log.step,
                log.loss,
                log.lr,
                log.grad_norm,
                log.tokens_per_s
            );
            if let Some(loss) = log.eval_loss {
                say!("held-out loss {loss:.4}");
            }
        });
        if args.save_every > 0 && log.step % args.save_every == 0 {
            trainer.save_checkpoint(&args.out.join(format!("checkpoints/step-{:06}", log.step)))?;
        }
        let peak = mlx_rs::memory::peak_memory().unwrap_or(0) as f64 / (1 << 20) as f64;
        bar.set_message(format!("loss {:.3}  {:.0} tok/s  peak {peak:.0} MiB", log.loss, log.tokens_per_s));
        bar.set_position(log.step as u64);
        logs.push(log);
    }
    bar.finish_and_clear();
    let peak = mlx_rs::memory::peak_memory()? as f64 / (1 << 20) as f64;
    if let (Some(first), Some(last)) = (logs.first(), logs.last()) {
        let mean_tps = logs.iter().map(|l| l.tokens_per_s).sum::<f64>() / logs.len() as f64;
        say!(
            "loss {:.4} -> {:.4} ({:.1}% of the start); {mean_tps:.0} tok/s; peak memory {peak:.0} MiB",
            first.loss,
            last.loss,
            100.0 * last.loss / first.loss
        );
    }
    let end_loss = trainer.evaluate(&held_out_batches)?;
    say!("held-out loss {end_loss:.4} (was {start_loss:.4})");
    if let Some(test) = &data.test {
        let batches = test.batches(args.batch_size, data.seq_len, data.batching, 0, None)?;
        let loss = trainer.evaluate(&batches)?;
        say!("test loss {loss:.4}  perplexity {:.2}", loss.exp());
    }
    if !main {
        return Ok(());
    }
    save_adapters(trainer.model.as_ref(), &adapter_config, &args.out)?;
    say!("adapters written to {}", args.out.display());

    let mut fresh = load(&model, args.dtype.as_deref())?;
    load_adapters(fresh.model.as_mut(), &args.out)?;
    let after = answer(&mut fresh, &data.prompt.0)?;
    say!("prompt: {}\nbefore: {before}\nafter:  {after}", data.prompt.1);
    if let Some(reference) = &data.prompt.2 {
        say!("target: {reference}");
    }
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
