//! lamina's side of the generation benchmark: prefill a prompt of random tokens, then
//! decode greedily (no EOS), and print tokens per second. `--export DIR` writes the model (and its tokenizer)
//! (GGUF files are dequantized to f32) as a Hugging Face folder for mlx-lm to load.
//! `scripts/bench_generate.sh` runs this and mlx-lm side by side.
//!
//! ```text
//! cargo run --release --example bench_generate -- --prompt-len 256 --gen-len 128 --runs 3
//! ```

mod common;
#[path = "common/exact.rs"]
mod exact;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::generate::{GenerateParams, generate};
use lamina::loader::{LoadOptions, load_blocking, save_checkpoint};
use mlx_rs::random;

/// Time prefill and decode.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct GGUF, as stored: 4-bit).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Weights dtype (f32, f16, bf16); quantized GGUF tensors are dequantized to it. As
    /// stored when absent.
    #[arg(long)]
    dtype: Option<String>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 256)]
    prompt_len: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 128)]
    gen_len: usize,
    /// Timed runs (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed of the random prompt.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the model as config.json + model.safetensors here and exit.
    #[arg(long)]
    export: Option<PathBuf>,
    #[command(flatten)]
    exact: exact::ExactArgs,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = match args.model {
        Some(path) => path,
        None => PathBuf::from(option_env!("LAMINA_DEFAULT_MODEL").ok_or("no default model; pass --model")?),
    };
    let dtype = args.dtype.as_deref().map(lamina::core::DType::parse).transpose()?;
    let export = args.export.is_some();
    let mut loaded = load_blocking(
        &path,
        LoadOptions {
            tokenizer: export,
            dtype,
            activations: args.exact.activations(),
            ..LoadOptions::default()
        },
    )?;
    if let Some(dir) = args.export {
        save_checkpoint(&dir, &loaded.config, loaded.model.as_ref())?;
        if let Some(tokenizer) = &loaded.tokenizer {
            tokenizer.save(&dir)?;
        }
        println!("exported {} to {}", path.display(), dir.display());
        return Ok(());
    }
    let vocab = loaded.model.info().vocab_size as i32;
    let prompt = random::randint::<_, i32>(0, vocab, &[args.prompt_len as i32], &random::key(args.seed)?)?;
    let prompt: Vec<u32> = prompt.as_slice::<i32>().iter().map(|&t| t as u32).collect();
    let params = GenerateParams { max_new_tokens: args.gen_len, ..GenerateParams::default() };
    println!("lamina kernels isa={} threads={}", lamina::kernels::isa(), lamina::kernels::threads());
    for run in 0..=args.runs {
        let out = generate(loaded.model.as_mut(), None, &prompt, &params)?;
        if run > 0 {
            println!(
                "lamina prefill_tps={:.2} decode_tps={:.2} generated={} mlx_peak_mb={:.1}",
                out.stats.prompt_tokens_per_s,
                out.stats.generation_tokens_per_s,
                out.stats.generated_tokens,
                out.stats.peak_memory_bytes as f64 / 1e6
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
