//! An OpenAI-compatible server: `POST /v1/chat/completions`, `POST /v1/completions`,
//! `GET /v1/models`, `GET /health`, streaming as server-sent events, tool calls, every
//! client's requests decoding in one batch. Without `--model` it serves the embedded
//! default (SmolLM2-135M-Instruct, Q4_1 GGUF), offline.
//!
//! ```text
//! cargo run --release --example serve -- --port 8080
//! curl http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"messages": [{"role": "user", "content": "What is the capital of France?"}]}'
//! ```

mod common;
#[path = "common/default_model.rs"]
mod default_model;
#[path = "common/draft.rs"]
mod draft;
#[path = "common/exact.rs"]
mod exact;
#[path = "common/kv.rs"]
mod kv;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lamina::generate::{BatchConfig, ModelContext};
use lamina::loader::{LoadOptions, load};
use lamina::server::{ServerConfig, axum, router};

/// Serve a model over the OpenAI API.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Checkpoint (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    model: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The model id responses carry (default: the checkpoint's file or folder name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Sequences decoding at once.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Requests that may wait beyond a full batch (more get 503).
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// The largest request body in bytes (bigger ones get 413).
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// `max_tokens` when a request gives none.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Bytes of finished conversations' caches kept for reuse (0 = off).
    #[arg(long, default_value_t = 512 << 20)]
    prompt_cache_bytes: usize,
    /// A prompt cache saved by the `cache_prompt` example to start with (repeatable).
    #[arg(long)]
    prompt_cache_file: Vec<PathBuf>,
    /// Speculative decoding (requests then run one at a time).
    #[command(flatten)]
    draft: draft::DraftArgs,
    /// A quantized KV cache (every request's, and the decoding batch's).
    #[command(flatten)]
    kv: kv::KvArgs,
    #[command(flatten)]
    exact: exact::ExactArgs,
}

async fn run(args: Args) -> common::RunResult {
    let path = default_model::model_or_default(args.model)?;
    let model_id = args.served_model_name.unwrap_or_else(|| {
        std::path::Path::new(&path)
            .file_stem()
            .map_or_else(|| "model".to_owned(), |s| s.to_string_lossy().into_owned())
    });
    let context = ModelContext::new(
        load(&path, LoadOptions { activations: args.exact.activations(), ..LoadOptions::default() }).await?,
    )?;
    let config = ServerConfig {
        batch: BatchConfig {
            max_batch: args.max_batch,
            prompt_cache_bytes: args.prompt_cache_bytes,
            kv_quantization: args.kv.quantization(),
            ..BatchConfig::default()
        },
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        default_max_tokens: args.max_tokens,
        prompt_cache_files: args.prompt_cache_file,
        draft: args.draft.params().await?,
        ..ServerConfig::new(model_id.clone())
    };
    let app = router(context, config)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    eprintln!("serving {model_id} on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
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
