//! Runs a checkpoint on token ids and writes the logits: a safetensors file holding
//! `logits` (f32, `[batch, seq, vocab]`). Bad input exits non-zero with a one-line error.
//!
//! ```text
//! cargo run --release --example forward -- --model PATH --tokens "1,2,3;4,5,6" --out logits.safetensors
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::core::DType;
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking};
use mlx_rs::{Array, Dtype};

/// Writes a checkpoint's logits for the given token ids.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint: a folder, a Hugging Face cache snapshot, or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// Token ids: commas between ids, semicolons between sequences of equal length.
    #[arg(long)]
    tokens: String,
    /// Where to write the logits (.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Cast the weights to this dtype (f32, f16, bf16); the checkpoint's by default.
    #[arg(long)]
    dtype: Option<String>,
}

/// `"1,2,3;4,5,6"` -> `[2, 3]` int32 ids.
fn parse_tokens(text: &str) -> Result<Array, String> {
    let rows: Vec<Vec<i32>> = text
        .split(';')
        .map(|row| {
            row.split(',')
                .map(|id| id.trim().parse::<u32>().map_err(|_| format!("`{}` is not a token id", id.trim())))
                .map(|id| {
                    id.and_then(|id| i32::try_from(id).map_err(|_| format!("token id {id} is too large")))
                })
                .collect::<Result<Vec<i32>, String>>()
        })
        .collect::<Result<_, _>>()?;
    let len = rows.first().map_or(0, Vec::len);
    if len == 0 || rows.iter().any(|r| r.len() != len) {
        return Err("--tokens needs sequences of equal, non-zero length".into());
    }
    let flat: Vec<i32> = rows.concat();
    Ok(Array::from_slice(&flat, &[rows.len() as i32, len as i32]))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let ids = parse_tokens(&args.tokens)?;
    let dtype = args.dtype.as_deref().map(DType::parse).transpose()?;
    let options = LoadOptions { dtype, tokenizer: false, ..LoadOptions::default() };
    let mut loaded = load_blocking(&args.model, options)?;
    let logits = loaded.model.forward(ModelInput::new(&ids))?.logits.as_dtype(Dtype::Float32)?;
    Array::save_safetensors([("logits", &logits)], None, &args.out)?;
    eprintln!("wrote logits {:?} to {}", logits.shape(), args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
