//! Describes a checkpoint or a preset without loading weights: family, config,
//! parameter count, memory estimate, and every tensor's name, shape and dtype.
//!
//! ```text
//! cargo run --release --example inspect -- --model PATH
//! cargo run --release --example inspect -- --preset mobilellm:950m --dtype bf16
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::core::Budget;
use lamina::core::DType;
use lamina::families::{Registry, preset};
use lamina::loader::inspect;

/// Describe a checkpoint (`--model`) or a preset (`--preset family:name`).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint: a folder, a Hugging Face cache snapshot, or a .gguf file.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    model: Option<PathBuf>,
    /// A preset, `family:name`: llama:<tiny|llama2_7b|...|smollm2_1_7b>, mamba:<...>, mobilellm:<140m|...|671b>.
    #[arg(long)]
    preset: Option<String>,
    /// Dtype for the memory estimate (f32, f16, bf16); as stored by default.
    #[arg(long)]
    dtype: Option<String>,
    /// List at most this many tensors.
    #[arg(long, default_value_t = usize::MAX)]
    limit: usize,
}

fn gib(bytes: u64) -> String {
    format!("{:.3} GiB ({bytes} bytes)", bytes as f64 / (1u64 << 30) as f64)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = args.dtype.as_deref().map(DType::parse).transpose()?;
    if let Some(spec) = &args.preset {
        let preset = preset(spec)?;
        // The structure only (never evaluated), so any size may be described.
        let model = preset.build(Budget::unlimited())?;
        let params = preset.num_parameters()?;
        let bytes = params as u64 * dtype.unwrap_or(DType::F32).size_of() as u64;
        println!("preset: {spec}\nfamily: {}", preset.family());
        println!("config: {}", serde_json::to_string_pretty(&preset.to_json()?)?);
        println!("parameters: {params}\nmemory: {}", gib(bytes));
        let mut tensors: Vec<(String, Vec<i32>)> =
            model.parameters().flatten().iter().map(|(k, v)| (k.to_string(), v.shape().to_vec())).collect();
        tensors.sort();
        println!("tensors: {}", tensors.len());
        for (name, shape) in tensors.iter().take(args.limit) {
            println!("  {name} {shape:?} {}", dtype.unwrap_or(DType::F32));
        }
        return Ok(());
    }
    let path = args.model.ok_or("--model or --preset is required")?;
    let inspection = inspect(&path)?;
    let model = Registry::with_builtins().build_within(&inspection.config, Budget::unlimited())?;
    let info = model.info();
    let stored_bytes = inspection.bytes();
    let bytes = dtype.map_or(stored_bytes, |d| inspection.num_parameters() * d.size_of() as u64);
    println!("checkpoint: {}", inspection.checkpoint.path().display());
    println!("family: {} (model_type {})", info.family, inspection.config["model_type"]);
    println!("config: {}", serde_json::to_string_pretty(&inspection.config)?);
    println!("parameters: {}\nmemory: {}", inspection.num_parameters(), gib(bytes));
    println!("tensors: {}", inspection.tensors.len());
    for t in inspection.tensors.iter().take(args.limit) {
        println!("  {} {:?} {}", t.name, t.shape, t.dtype);
    }
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
