//! Quantizes a checkpoint to 4 or 8 bits (MLX affine quantization, the format
//! mlx-community models use) and writes it as a folder lamina and mlx-lm load; then
//! reports what it cost: size on disk and in memory, logit drift (max |difference| and
//! mean KL divergence against the original) on a fixed text, and decode speed.
//!
//! ```text
//! cargo run --release --example quantize -- --bits 4 --group-size 64 --out target/smollm2-4bit
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use lamina::components::{Activations, QuantConfig};
use lamina::core::DType;
use lamina::families::LanguageModel;
use lamina::generate::{GenerateParams, generate};
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking, save_checkpoint};
use lamina::train::{CheckpointQuantization, estimate_model_size, quantize_model};
use mlx_rs::{Array, ops};

/// Quantize a checkpoint and measure the cost.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct, dequantized to f32).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Bits per weight: 4 or 8 (MLX also takes 2, 3, 5, 6).
    #[arg(long, default_value_t = 4)]
    bits: i32,
    /// Weights sharing one scale and bias: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    group_size: i32,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Text the drift is measured on.
    #[arg(
        long,
        default_value = "The capital of France is Paris. Rivers run to the sea, and the sea gives back the rain."
    )]
    text: String,
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// Log-probabilities of the model's next-token distributions over `ids`.
fn logprobs(model: &mut dyn LanguageModel, ids: &Array) -> Result<Array, Box<dyn std::error::Error>> {
    let logits = model.forward(ModelInput::new(ids))?.logits;
    Ok(logits.subtract(ops::logsumexp_axis(&logits, -1, true)?)?)
}

fn decode_speed(model: &mut dyn LanguageModel, prompt: &[u32]) -> Result<f64, Box<dyn std::error::Error>> {
    let params = GenerateParams { max_new_tokens: 48, ..GenerateParams::default() };
    Ok(generate(model, None, prompt, &params)?.stats.generation_tokens_per_s)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = match args.model {
        Some(p) => p,
        None => PathBuf::from(option_env!("LAMINA_DEFAULT_MODEL").ok_or("no default model; pass --model")?),
    };
    let config = QuantConfig {
        group_size: args.group_size,
        bits: args.bits,
        activations: Activations::Exact,
        blocks: None,
    };
    let options = || LoadOptions { dtype: Some(DType::F32), ..LoadOptions::default() };
    let mut original = load_blocking(&path, options())?;
    let mut quantized = load_blocking(&path, options())?;
    let report = quantize_model(quantized.model.as_mut(), config)?;
    let mut out_config = quantized.config.clone();
    out_config["quantization"] = CheckpointQuantization::config_entry(config);
    save_checkpoint(&args.out, &out_config, quantized.model.as_ref())?;
    if let Some(tokenizer) = &quantized.tokenizer {
        tokenizer.save(&args.out)?;
    }
    let f32_dir = args.out.with_extension("f32-reference");
    save_checkpoint(&f32_dir, &original.config, original.model.as_ref())?;

    // Without a tokenizer (a bare checkpoint), the drift is measured on the first ids.
    let ids: Vec<u32> = match &original.tokenizer {
        Some(tokenizer) => tokenizer.encode(&args.text, true)?,
        None => (0..original.model.info().vocab_size.min(16) as u32).collect(),
    };
    let ids_array =
        Array::from_slice(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, ids.len() as i32]);
    let p = logprobs(original.model.as_mut(), &ids_array)?;
    let q = logprobs(quantized.model.as_mut(), &ids_array)?;
    let max_drift = p.subtract(&q)?.abs()?.max(None)?.item_exact::<f32>();
    let kl = p.exp()?.multiply(p.subtract(&q)?)?.sum_axis(-1, None)?.mean(None)?.item_exact::<f32>();
    let (f32_speed, q_speed) =
        (decode_speed(original.model.as_mut(), &ids)?, decode_speed(quantized.model.as_mut(), &ids)?);

    println!(
        "quantized {} layers to {} bits (group {}), {} left dense",
        report.quantized.len(),
        args.bits,
        args.group_size,
        report.skipped.len()
    );
    println!(
        "disk:    f32 {:>11} bytes   {}-bit {:>11} bytes ({:.1}%)",
        dir_bytes(&f32_dir),
        args.bits,
        dir_bytes(&args.out),
        100.0 * dir_bytes(&args.out) as f64 / dir_bytes(&f32_dir) as f64
    );
    let (m32, mq) =
        (estimate_model_size(original.model.as_ref()), estimate_model_size(quantized.model.as_ref()));
    println!(
        "memory:  f32 {m32:>11} bytes   {}-bit {mq:>11} bytes ({:.1}%)",
        args.bits,
        100.0 * mq as f64 / m32 as f64
    );
    println!("drift on {} tokens: max |logprob difference| {max_drift:.4}, mean KL {kl:.5} nats", ids.len());
    println!("decode:  f32 {f32_speed:.1} tok/s   {}-bit {q_speed:.1} tok/s", args.bits);
    std::fs::remove_dir_all(&f32_dir).map_err(|e| format!("{}: {e}", f32_dir.display()))?;
    println!("written to {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
