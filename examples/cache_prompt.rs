//! Prefills a prompt once and saves its cache to a file (as `mlx_lm.cache_prompt` does):
//! `serve --prompt-cache-file FILE` then answers every request that begins with that
//! prompt (a long system prompt, a document) from the saved positions. Without `--model`
//! it uses the embedded default (SmolLM2-135M-Instruct).
//!
//! ```text
//! cargo run --release --example cache_prompt -- --system "You are a terse assistant." --out system.safetensors
//! cargo run --release --example serve -- --prompt-cache-file system.safetensors
//! ```

mod common;
#[path = "common/default_model.rs"]
mod default_model;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::generate::{Message, ModelContext, save_prompt_cache};
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking};

/// Save a prompt's cache for later requests to start from.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// A system message: the prompt is the chat template's rendering of it (without a
    /// generation prompt), so that conversations starting with it reuse the cache.
    #[arg(long, conflicts_with = "raw")]
    system: Option<String>,
    /// A raw prompt (tokenized with the tokenizer's special tokens).
    #[arg(long)]
    raw: Option<String>,
    /// Where to write the cache (safetensors).
    #[arg(long)]
    out: PathBuf,
}

fn run(args: Args) -> common::RunResult {
    let path = default_model::model_or_default(args.model)?;
    let mut context = ModelContext::new(load_blocking(&path, LoadOptions::default())?)?;
    let tokens = match (&args.system, &args.raw) {
        (Some(system), _) => context.apply_chat_template(&[Message::system(system.clone())], false)?,
        (None, Some(raw)) => context.encode(raw)?,
        (None, None) => return Err("give --system or --raw".into()),
    };
    let ids: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let ids = mlx_rs::Array::from_slice(&ids, &[1, ids.len() as i32]);
    let mut cache = context.model.make_cache()?;
    context
        .model
        .forward(ModelInput { last_position_only: true, ..ModelInput::new(&ids).with_cache(&mut cache) })?;
    cache.eval()?;
    save_prompt_cache(&args.out, &cache, &tokens)?;
    println!(
        "saved {} prompt tokens to {} ({} bytes of cache)",
        tokens.len(),
        args.out.display(),
        cache.nbytes()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
