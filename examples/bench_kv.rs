//! The quantized KV cache measured at a long context: a real text (this repository's own
//! documentation, ~4096 tokens of it) through the model with the cache at full precision,
//! 8 bits and 4 bits (groups of 64 and 32; quantized from the first position): the cache's bytes, decoding speed
//! after the context, greedy agreement of the continuation with full precision, and the
//! perplexity of the text's last tokens (teacher-forced, read through the cache).
//!
//! ```text
//! cargo run --release --example bench_kv -- [--model M] [--context 4096]
//! ```

mod common;
#[path = "common/default_model.rs"]
mod default_model;

use std::process::ExitCode;

use clap::Parser;
use lamina::components::KvQuantization;
use lamina::generate::{GenerateParams, Generation};
use lamina::heads::ModelInput;
use lamina::loader::{LoadOptions, load_blocking};
use mlx_rs::Array;
use mlx_rs::ops::indexing::TryIndexOp;

/// Measure a quantized KV cache against full precision.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// Context length in tokens.
    #[arg(long, default_value_t = 4096)]
    context: usize,
    /// Tokens at the text's end whose perplexity is measured.
    #[arg(long, default_value_t = 512)]
    scored: usize,
    /// Tokens decoded after the context.
    #[arg(long, default_value_t = 64)]
    decode: usize,
}

/// The repository's documentation as one text.
fn text() -> Result<String, Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> =
        std::fs::read_dir(root.join("docs"))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files.insert(0, root.join("README.md"));
    Ok(files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).collect::<Vec<_>>().join("\n\n"))
}

/// Mean negative log-likelihood of `ids[from..]` given what precedes, read through a cache
/// (quantized as `kv` says, from the first position).
fn nll(
    model: &mut dyn lamina::families::LanguageModel,
    ids: &[u32],
    from: usize,
    kv: Option<KvQuantization>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let mut cache = model.make_cache()?;
    let as_array =
        |s: &[u32]| Array::from_slice(&s.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[1, s.len() as i32]);
    let (mut total, mut count, mut start) = (0f64, 0usize, 0usize);
    while start < ids.len() - 1 {
        if let Some(how) = kv {
            cache.quantize_past_start(how)?;
        }
        let end = (start + 256).min(ids.len() - 1);
        let logits =
            model.forward(ModelInput::new(&as_array(&ids[start..end])).with_cache(&mut cache))?.logits;
        cache.eval()?;
        if end > from {
            let first = from.max(start);
            let rows =
                logits.try_index((0, (first - start) as i32.., ..))?.as_dtype(mlx_rs::Dtype::Float32)?;
            let logprobs = rows.subtract(mlx_rs::ops::logsumexp_axis(&rows, -1, true)?)?;
            let targets = Array::from_slice(
                &ids[first + 1..end + 1].iter().map(|&i| i as i32).collect::<Vec<_>>(),
                &[(end - first) as i32, 1],
            );
            let picked = logprobs.take_along_axis(&targets, -1)?.sum(None)?;
            total -= f64::from(picked.item_exact::<f32>());
            count += end - first;
        }
        start = end;
    }
    Ok(total / count.max(1) as f64)
}

fn run(args: Args) -> common::RunResult {
    let path = default_model::model_or_default(args.model)?;
    let mut loaded = load_blocking(&path, LoadOptions::default())?;
    let tokenizer = loaded.tokenizer.take().ok_or("the model has no tokenizer")?;
    let mut ids = tokenizer.encode(&text()?, true)?;
    if ids.len() < args.context + 1 {
        return Err(
            format!("the text has {} tokens, fewer than --context {}", ids.len(), args.context).into()
        );
    }
    ids.truncate(args.context + 1);
    let prompt = &ids[..args.context];
    let model = loaded.model.as_mut();
    let mut rows = Vec::new();
    let mut baseline: Option<(Vec<u32>, f64, usize)> = None;
    for setting in [None, Some((8, 64)), Some((4, 64)), Some((4, 32))] {
        let kv = setting.map(|(bits, group_size)| KvQuantization { bits, group_size, start: 0 });
        let params =
            GenerateParams { max_new_tokens: args.decode, kv_quantization: kv, ..GenerateParams::default() };
        let mut generation = Generation::start(model, None, prompt, &params)?;
        for event in generation.by_ref() {
            event?;
        }
        let (output, cache) = generation.into_cache()?;
        let name =
            setting.map_or_else(|| "full precision".to_owned(), |(b, g)| format!("{b}-bit, groups of {g}"));
        eprintln!(
            "[{name}: {:.1} s of prompt, decoding at {:.1} tok/s]",
            output.stats.prompt_tokens as f64 / output.stats.prompt_tokens_per_s.max(1e-9),
            output.stats.generation_tokens_per_s
        );
        let bytes = cache.cache.nbytes();
        drop(cache);
        let nll = nll(model, &ids, args.context - args.scored, kv)?;
        let (agree, ppl_full, bytes_full) = match &baseline {
            None => {
                baseline = Some((output.tokens.clone(), nll, bytes));
                (output.tokens.len(), nll, bytes)
            }
            Some((tokens, full, full_bytes)) => {
                (tokens.iter().zip(&output.tokens).take_while(|(a, b)| a == b).count(), *full, *full_bytes)
            }
        };
        rows.push(format!(
            "| {name} | {:.1} MiB ({:.2}x) | {:.1} | {}/{} | {:.3} ({:+.2}%) |",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / bytes_full as f64,
            output.stats.generation_tokens_per_s,
            agree,
            output.tokens.len(),
            nll.exp(),
            100.0 * (nll.exp() / ppl_full.exp() - 1.0),
        ));
    }
    println!("{} at a {}-token context ({} scored tokens):", path, args.context, args.scored);
    println!(
        "| KV cache | bytes | decode tok/s | greedy tokens equal to full precision's | perplexity (drift) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

fn main() -> ExitCode {
    common::exit_code(run(Args::parse()))
}
