//! # lamina-server
//!
//! An OpenAI-compatible HTTP server over lamina's continuous batching: `POST
//! /v1/chat/completions` (chat templates, tools and tool calls, streaming), `POST
//! /v1/completions`, `GET /v1/models`, `GET /health`. Requests from every client share one
//! decoding batch ([`lamina_generate::BatchGenerator`]) on an engine thread that owns the
//! model; a client that disconnects leaves the batch at the next step. Bad requests get a
//! 4xx with OpenAI's error body; the server keeps serving.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use lamina_generate::ModelContext;
//! use lamina_server::{ServerConfig, router};
//!
//! let loaded = lamina_loader::load("model-folder", Default::default()).await?;
//! let app = router(ModelContext::new(loaded)?, ServerConfig::new("my-model"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod engine;
mod error;
mod grammar;
mod openai;
mod params;
mod routes;
mod stream;
mod tools;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use lamina_generate::{BatchConfig, ChatTemplate, ModelContext, load_prompt_cache};

/// The HTTP framework the server is built on (to serve the router).
pub use axum;
pub use engine::{Engine, EngineEvent, Load, MAX_RESTARTS};
pub use error::ApiError;
pub use tools::{ToolCall, ToolCallParser, ToolEvent, ToolFormat};

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The id `/v1/models` reports and responses carry.
    pub model_id: String,
    /// Decoding batch: sequences at once, prefill per step, prompt cache bytes.
    pub batch: BatchConfig,
    /// Requests that may wait beyond a full batch (more get 503).
    pub max_queue: usize,
    /// The largest request body (bigger ones get 413).
    pub max_body_bytes: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
    /// Saved prompt caches (`lamina_generate::save_prompt_cache`) to start the prompt cache
    /// with.
    pub prompt_cache_files: Vec<std::path::PathBuf>,
    /// Speculative decoding (a draft model or prompt lookup). Requests then run one at a
    /// time, as with mlx-lm's server and a draft model: drafting pays off when one sequence
    /// decodes, not in a batch.
    pub draft: Option<lamina_generate::DraftParams>,
}

impl ServerConfig {
    /// Defaults: 32 sequences at once, 256 more queued, 4 MiB bodies, 512 new tokens.
    pub fn new(model_id: impl Into<String>) -> Self {
        ServerConfig {
            model_id: model_id.into(),
            batch: BatchConfig::default(),
            max_queue: 256,
            max_body_bytes: 4 << 20,
            default_max_tokens: 512,
            prompt_cache_files: Vec::new(),
            draft: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The checkpoint's chat template does not compile.
    #[error(transparent)]
    Template(#[from] lamina_generate::GenerateError),
    /// The model cannot describe its cache.
    #[error(transparent)]
    Model(#[from] lamina_core::Error),
    /// The model's caches cannot be quantized as configured.
    #[error("--kv-bits: {0}")]
    KvQuantization(String),
    /// A saved prompt cache cannot be used with this model.
    #[error("{0}")]
    PromptCache(String),
    /// The engine thread could not be started.
    #[error("cannot start the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The server's routes over a model; serve them with [`axum::serve()`]. Starts the engine
/// thread.
///
/// # Errors
/// [`StartError`] when the engine thread cannot start, the chat template does not compile,
/// or the model's caches cannot be quantized as `config.batch.kv_quantization` says.
pub fn router(mut context: ModelContext, config: ServerConfig) -> Result<Router, StartError> {
    if let Some(how) = config.batch.kv_quantization {
        lamina_generate::check_kv_quantization(context.model.as_mut(), how)
            .map_err(|e| StartError::KvQuantization(e.to_string()))?;
    }
    let tokenizer = context.tokenizer.clone().map(Arc::new);
    let source = tokenizer.as_ref().and_then(|t| t.chat_template()).map(str::to_owned);
    let template = source.as_deref().map(ChatTemplate::new).transpose()?;
    let stop_ids = context.stop_ids(&[]);
    let info = context.model.info();
    let context_length = info.max_position_embeddings;
    let limits =
        params::Limits { vocab_size: info.vocab_size, default_max_tokens: config.default_max_tokens };
    let mut preload = Vec::with_capacity(config.prompt_cache_files.len());
    for file in &config.prompt_cache_files {
        let fresh = context.model.make_cache()?;
        let (cache, tokens) =
            load_prompt_cache(file, &fresh).map_err(|e| StartError::PromptCache(e.to_string()))?;
        preload.push((tokens, cache));
    }
    let engine =
        Engine::start(context, config.batch.clone(), config.max_queue, preload, config.draft.clone())?;
    let state = Arc::new(routes::AppState {
        engine,
        tokenizer,
        template,
        tool_format: ToolFormat::detect(source.as_deref()),
        stop_ids,
        model_id: config.model_id,
        context_length,
        limits,
        grammars: std::sync::OnceLock::new(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        preparing: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )),
        preparing_queue: (AtomicUsize::new(0), config.max_queue.max(1)),
    });
    Ok(Router::new()
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route("/health", get(routes::health))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state))
}
