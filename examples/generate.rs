//! Answers a prompt with a real model, streamed, offline. Without `--model` it uses the
//! embedded default: SmolLM2-135M-Instruct (Q4_1 GGUF), installed by the build.
//!
//! ```text
//! cargo run --release --example generate
//! cargo run --release --example generate -- --prompt "Write a haiku about Rust" --temperature 0.7 --seed 1
//! cargo run --release --example generate -- --model PATH --prompt-tokens 1,2,3 --json
//! cargo run --release --example launch -- -n 2 target/release/examples/generate
//! ```
//!
//! Started as a rank (`MLX_RANK` and `MLX_HOSTFILE` set, as the `launch` example and
//! `mlx.launch` set them), it generates pipeline-parallel: the model's layers are split
//! over the ranks, each loading and running only its own, and only rank 0 prints the
//! answer (every rank reports its layers and peak memory on standard error).

mod common;
#[path = "common/default_model.rs"]
mod default_model;
#[path = "common/draft.rs"]
mod draft;
#[path = "common/exact.rs"]
mod exact;
#[path = "common/kv.rs"]
mod kv;
#[path = "common/ranks.rs"]
mod ranks;
#[path = "common/sampling.rs"]
mod sampling;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use lamina::core::DType;
use lamina::generate::{GenerateParams, Grammar, Message, ModelContainer, StreamEvent, StreamExt};
use lamina::loader::{LoadOptions, Progress, ProgressSink};

/// Generate text with a lamina model.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint: a folder, a Hugging Face cache snapshot, a .gguf file, a Hub repo id
    /// (`org/name`, `org/name@revision`, `org/name:Q4_K_M`) or a known model's name (see
    /// --list-models). Default: the embedded SmolLM2-135M-Instruct.
    #[arg(long)]
    model: Option<String>,
    /// The branch, tag or commit of a Hub repo.
    #[arg(long)]
    revision: Option<String>,
    /// Print the models --model knows by name, and exit.
    #[arg(long)]
    list_models: bool,
    /// The prompt; wrapped in the model's chat template unless --raw.
    #[arg(long, default_value = "What is the capital of France?")]
    prompt: String,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Use the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// Token ids instead of a prompt (no tokenizer needed): "1,2,3".
    #[arg(long)]
    prompt_tokens: Option<String>,
    /// The most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: sampling::SamplingArgs,
    /// Weights dtype (f32, f16, bf16); quantized GGUF tensors are dequantized to it. As
    /// stored when absent (a quantized file stays quantized).
    #[arg(long)]
    dtype: Option<String>,
    /// Print one JSON object (tokens, text, speeds, peak memory) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Hold the output to a JSON schema: a file, or the schema's JSON itself.
    #[arg(long, group = "constraint")]
    json_schema: Option<String>,
    /// Hold the output to any JSON object.
    #[arg(long, group = "constraint")]
    json_object: bool,
    /// Hold the output to a regular expression (Rust `regex` syntax), as a whole.
    #[arg(long, group = "constraint")]
    regex: Option<String>,
    /// Hold the output to a Lark grammar (llguidance's dialect) read from this file.
    #[arg(long, group = "constraint")]
    grammar: Option<std::path::PathBuf>,
    #[command(flatten)]
    draft: draft::DraftArgs,
    #[command(flatten)]
    kv: kv::KvArgs,
    #[command(flatten)]
    exact: exact::ExactArgs,
}

impl Args {
    /// The grammar the flags ask for, if any.
    fn grammar(&self) -> Result<Option<Grammar>, Box<dyn std::error::Error>> {
        if let Some(given) = &self.json_schema {
            let text = match given.trim_start().starts_with(['{', '[']) || given.trim() == "true" {
                true => given.clone(),
                false => std::fs::read_to_string(given).map_err(|e| format!("--json-schema {given}: {e}"))?,
            };
            let schema = serde_json::from_str(&text).map_err(|e| format!("--json-schema: not JSON: {e}"))?;
            return Ok(Some(Grammar::JsonSchema(schema)));
        }
        if let Some(path) = &self.grammar {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--grammar {}: {e}", path.display()))?;
            return Ok(Some(Grammar::Lark(text)));
        }
        Ok(match (&self.regex, self.json_object) {
            (Some(pattern), _) => Some(Grammar::Regex(pattern.clone())),
            (None, true) => Some(Grammar::JsonObject),
            (None, false) => None,
        })
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.list_models {
        print!("{}", default_model::known_models());
        return Ok(());
    }
    let group = ranks::join()?;
    let (rank, main) = group.as_ref().map_or((0, true), |g| (g.rank(), g.rank() == 0));
    let path = default_model::model_or_default(args.model.clone())?;
    let dtype = args.dtype.as_deref().map(DType::parse).transpose()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{prefix} {msg} {bar:30} {bytes}/{total_bytes}")?);
    bar.set_prefix("loading");
    bar.set_message(
        std::path::Path::new(&path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
    );
    if args.json || !main {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress = tokio::spawn({
        let bar = bar.clone();
        async move {
            let mut downloaded = std::collections::HashMap::new();
            while let Some(event) = rx.recv().await {
                match event {
                    Progress::Fetching { bytes, .. } => {
                        bar.set_prefix("downloading");
                        bar.set_position(0);
                        bar.set_length(bytes);
                        downloaded.clear();
                    }
                    Progress::Downloaded { file, bytes, .. } => {
                        let before = downloaded.insert(file, bytes).unwrap_or(0);
                        bar.inc(bytes.saturating_sub(before));
                    }
                    Progress::Started { bytes, .. } => {
                        bar.set_prefix("loading");
                        bar.set_position(0);
                        bar.set_length(bytes);
                    }
                    Progress::Tensor { bytes, .. } => bar.inc(bytes),
                    _ => {}
                }
            }
        }
    });
    let options = LoadOptions {
        dtype,
        activations: args.exact.activations(),
        revision: args.revision.clone(),
        progress: ProgressSink::new(tx),
        pipeline: group.clone(),
        ..LoadOptions::default()
    };
    // Rank 0 loads first (and downloads what a repo id needs), the others then read
    // the same cache.
    let wait = |turn: bool| group.as_ref().filter(|_| turn).map_or(Ok(()), |g| g.barrier());
    wait(!main)?;
    let container = ModelContainer::load(&path, options).await?;
    wait(main)?;
    let _ = progress.await;
    bar.finish_and_clear();
    let layers = container.perform(|ctx| ctx.pipeline_layers.clone()).await?;

    let prompt = match &args.prompt_tokens {
        Some(ids) => ids
            .split(',')
            .map(|id| id.trim().parse::<u32>().map_err(|_| format!("`{}` is not a token id", id.trim())))
            .collect::<Result<Vec<_>, _>>()?,
        None if args.raw => container.encode(args.prompt.clone()).await?,
        None => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(Message::system(system.clone()));
            }
            messages.push(Message::user(args.prompt.clone()));
            let has_template = container.perform(|ctx| ctx.chat_template.is_some()).await?;
            if has_template {
                container.apply_chat_template(messages, true).await?
            } else {
                container.encode(args.prompt.clone()).await?
            }
        }
    };
    let sampler = args.sampling.config();
    let constraint = match args.grammar()? {
        Some(grammar) => Some(container.perform(move |ctx| ctx.grammar_compiler()?.compile(grammar)).await??),
        None => None,
    };
    let draft = args.draft.params().await?;
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        sampler,
        constraint,
        draft,
        kv_quantization: args.kv.quantization(),
        ..GenerateParams::default()
    };
    let mut stream = container.generate(prompt, params).await;
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Done(output) if !main => {
                report_rank(rank, layers.as_ref(), output.stats.peak_memory_bytes)
            }
            StreamEvent::Token(_) if !main => {}
            StreamEvent::Token(token) if !args.json => {
                write!(stdout, "{}", token.text)?;
                stdout.flush()?;
            }
            StreamEvent::Token(_) => {}
            StreamEvent::Done(output) => {
                let s = output.stats;
                if group.is_some() {
                    report_rank(rank, layers.as_ref(), s.peak_memory_bytes);
                }
                if args.json {
                    let json = serde_json::json!({
                        "tokens": output.tokens,
                        "text": output.text,
                        "finish_reason": output.finish_reason.to_string(),
                        "prompt_tokens": s.prompt_tokens,
                        "prompt_tokens_per_s": s.prompt_tokens_per_s,
                        "generation_tokens_per_s": s.generation_tokens_per_s,
                        "peak_memory_bytes": s.peak_memory_bytes,
                        "draft_tokens": s.draft_tokens,
                        "accepted_draft_tokens": s.accepted_draft_tokens,
                    });
                    println!("{json}");
                } else {
                    println!();
                    eprintln!(
                        "[{} prompt tokens at {:.1} tok/s; {} generated at {:.1} tok/s; peak memory {:.1} MB; {}]",
                        s.prompt_tokens,
                        s.prompt_tokens_per_s,
                        s.generated_tokens,
                        s.generation_tokens_per_s,
                        s.peak_memory_bytes as f64 / 1e6,
                        output.finish_reason
                    );
                    if s.draft_tokens > 0 {
                        eprintln!(
                            "[drafts: {} of {} accepted ({:.0}%)]",
                            s.accepted_draft_tokens,
                            s.draft_tokens,
                            100.0 * s.accepted_draft_tokens as f64 / s.draft_tokens as f64
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// One line on standard error: a pipeline rank's layers and peak memory.
fn report_rank(rank: usize, layers: Option<&std::ops::Range<usize>>, peak: usize) {
    let layers =
        layers.map_or_else(|| "every layer".to_string(), |l| format!("layers {}..{}", l.start, l.end));
    eprintln!("[rank {rank}: {layers}; peak memory {:.1} MB]", peak as f64 / 1e6);
}

fn main() -> ExitCode {
    let args = Args::parse();
    common::exit_code(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|runtime| runtime.block_on(run(args))),
    )
}
