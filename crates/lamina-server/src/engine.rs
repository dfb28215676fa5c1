//! The engine: one thread owns the model and runs a [`BatchGenerator`]; requests from every
//! client join its batch, their tokens go back on per-request channels, and a request
//! whose receiver is gone (the client disconnected) leaves the batch at the next step.
//!
//! A failure inside the engine (an MLX error, or a panic) fails the requests in flight
//! with a 500 that says so in plain words (the details go to the server's log) and
//! restarts the batch; while it restarts `/health` says 503. After
//! [`MAX_RESTARTS`] failures in a row without a request finishing the engine stops, and
//! every request gets a 503.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use axum::http::StatusCode;
use lamina_backbones::ModelCache;
use lamina_generate::{
    BatchConfig, BatchEvent, BatchGenerator, BatchRequest, DraftParams, GenerateError, GenerateParams,
    GenerationOutput, KvQuantization, ModelContext, SequenceId, TokenEvent, TokenLogprobs,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::error::ApiError;

/// What a request hears from the engine.
#[derive(Debug)]
pub enum EngineEvent {
    /// A new token.
    Token {
        /// The token and the text it completes.
        token: TokenEvent,
        /// When asked for.
        logprobs: Option<TokenLogprobs>,
    },
    /// The end.
    Done {
        /// Text held back until the end (already in `output.text`).
        tail: String,
        /// The whole result.
        output: GenerationOutput,
        /// Prompt tokens reused from the prompt cache.
        cached_tokens: usize,
    },
    /// The request failed.
    Failed(ApiError),
}

/// How many sequences the engine holds.
#[derive(Debug, Default)]
pub struct Load {
    /// Decoding now.
    pub active: AtomicUsize,
    /// Accepted, not started.
    pub waiting: AtomicUsize,
    /// Requests whose client went away before the end, since the start.
    pub cancelled: AtomicUsize,
    /// Times the engine restarted after a failure, since the start.
    pub restarts: AtomicUsize,
    /// Accepted and not finished (the queue bound counts these).
    outstanding: AtomicUsize,
    /// Whether the engine is serving (false while it restarts, and once it stopped).
    serving: AtomicBool,
    /// Whether the engine stopped for good (repeated failures, or a model that cannot run).
    stopped: AtomicBool,
}

impl Load {
    /// Whether the engine is serving requests.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }
}

/// Failures in a row (no request finishing between them) after which the engine stops.
pub const MAX_RESTARTS: usize = 3;

struct Submission {
    request: BatchRequest,
    events: UnboundedSender<EngineEvent>,
}

/// A handle on the engine thread.
#[derive(Debug, Clone)]
pub struct Engine {
    commands: mpsc::Sender<Submission>,
    load: Arc<Load>,
    capacity: usize,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").field("prompt_tokens", &self.request.prompt.len()).finish()
    }
}

impl Engine {
    /// Starts the engine thread with the model; `max_queue` requests may wait beyond the
    /// `batch.max_batch` decoding; the prompt cache starts with `preload` (tokens and the
    /// cache holding them).
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        context: ModelContext,
        batch: BatchConfig,
        max_queue: usize,
        preload: Vec<(Vec<u32>, ModelCache)>,
        draft: Option<DraftParams>,
    ) -> std::io::Result<Self> {
        let (commands, inbox) = mpsc::channel();
        let load = Arc::new(Load::default());
        let capacity = batch.max_batch.max(1) + max_queue;
        let thread_load = load.clone();
        std::thread::Builder::new()
            .name("lamina-engine".into())
            .spawn(move || run(context, batch, preload, draft, inbox, &thread_load))?;
        Ok(Engine { commands, load, capacity })
    }

    /// Queues a request; its events arrive on the returned channel (drop it to cancel).
    ///
    /// # Errors
    /// 503 when the queue is full or the engine has stopped.
    pub fn submit(&self, request: BatchRequest) -> Result<UnboundedReceiver<EngineEvent>, ApiError> {
        let taken = self.load.outstanding.fetch_add(1, Ordering::SeqCst);
        if taken >= self.capacity {
            self.load.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("the server is busy: {} requests are running or queued; retry later", self.capacity),
            )
            .with_code("queue_full"));
        }
        let (events, receiver) = unbounded_channel();
        if self.load.stopped.load(Ordering::SeqCst) {
            self.load.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        if self.commands.send(Submission { request, events }).is_err() {
            self.load.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(stopped());
        }
        Ok(receiver)
    }

    /// How many sequences run and wait.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

/// 503: the engine no longer runs.
fn stopped() -> ApiError {
    ApiError::status(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the model engine has stopped after repeated failures; restart the server",
    )
}

/// 500 in plain words; what failed inside goes to the log.
fn engine_failure(detail: &str) -> ApiError {
    eprintln!("lamina-server: {detail}");
    ApiError::internal("the model failed while generating this request; the server's log has the details")
}

/// A generation error as the client sees it.
fn api_error(error: GenerateError) -> ApiError {
    match error {
        GenerateError::TooLong { .. } => {
            ApiError::invalid(error.to_string(), Some("messages")).with_code("context_length_exceeded")
        }
        GenerateError::EmptyPrompt => ApiError::invalid(error.to_string(), Some("prompt")),
        GenerateError::Grammar(_) => ApiError::invalid(error.to_string(), Some("response_format")),
        GenerateError::Model(lamina_core::Error::TokenOutOfRange { .. }) => {
            ApiError::invalid(error.to_string(), Some("prompt"))
        }
        GenerateError::Model(lamina_core::Error::InvalidConfig { .. }) => {
            ApiError::invalid(error.to_string(), None)
        }
        other => engine_failure(&format!("a request failed: {other}")),
    }
}

/// Why one run of the batch ended.
enum Ended {
    /// Every [`Engine`] handle is gone.
    Closed,
    /// An MLX error or a panic: the requests in flight were failed.
    Failed,
    /// The model cannot run at all.
    Unusable,
}

/// The engine thread: runs the batch, restarting it (the requests in flight failed) after
/// an MLX error or a panic; stops after [`MAX_RESTARTS`] failures in a row, or when every
/// [`Engine`] handle is gone.
fn run(
    mut context: ModelContext,
    batch: BatchConfig,
    preload: Vec<(Vec<u32>, ModelCache)>,
    draft: Option<DraftParams>,
    inbox: mpsc::Receiver<Submission>,
    load: &Load,
) {
    let mut preload = Some(preload);
    let mut clients: HashMap<SequenceId, UnboundedSender<EngineEvent>> = HashMap::new();
    let mut failures = 0;
    loop {
        let served = catch_unwind(AssertUnwindSafe(|| match &draft {
            Some(draft) => {
                let kv = batch.kv_quantization;
                serve_drafted(&mut context, draft, kv, &inbox, load, &mut clients, &mut failures)
            }
            None => serve(&mut context, &batch, &mut preload, &inbox, load, &mut clients, &mut failures),
        }));
        load.serving.store(false, Ordering::SeqCst);
        load.active.store(0, Ordering::SeqCst);
        load.waiting.store(0, Ordering::SeqCst);
        let detail = match served {
            Ok(Ended::Closed) => return,
            Ok(Ended::Failed) => "generation failed".to_owned(),
            Ok(Ended::Unusable) => break,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                format!("the engine panicked: {message}")
            }
        };
        for (_, events) in clients.drain() {
            let _ = events.send(EngineEvent::Failed(engine_failure(&detail)));
            load.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        failures += 1;
        load.restarts.fetch_add(1, Ordering::SeqCst);
        if failures > MAX_RESTARTS {
            eprintln!("lamina-server: {failures} failures in a row; the engine stops");
            break;
        }
    }
    // Nothing can run: refuse every request that comes.
    load.stopped.store(true, Ordering::SeqCst);
    while let Ok(submission) = inbox.recv() {
        let _ = submission.events.send(EngineEvent::Failed(stopped()));
        load.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Speculative decoding: requests one at a time, each drafted (those asking for
/// log-probabilities or held to a grammar run as a batch of one, undrafted), until a
/// generation fails or the handles are gone.
fn serve_drafted(
    context: &mut ModelContext,
    draft: &DraftParams,
    kv_quantization: Option<KvQuantization>,
    inbox: &mpsc::Receiver<Submission>,
    load: &Load,
    clients: &mut HashMap<SequenceId, UnboundedSender<EngineEvent>>,
    failures: &mut usize,
) -> Ended {
    load.serving.store(true, Ordering::SeqCst);
    loop {
        let Ok(Submission { request, events }) = inbox.recv() else { return Ended::Closed };
        load.active.store(1, Ordering::SeqCst);
        clients.insert(0, events.clone());
        let outcome = if request.top_logprobs.is_some() || request.params.constraint.is_some() {
            serve_alone(context, request, kv_quantization, &events)
        } else {
            let params = GenerateParams { draft: Some(draft.clone()), kv_quantization, ..request.params };
            stream_generation(context, &request.prompt, &params, &events)
        };
        clients.clear();
        load.active.store(0, Ordering::SeqCst);
        load.outstanding.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            Ok(finished) => {
                if finished {
                    *failures = 0;
                } else {
                    load.cancelled.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(GenerateError::Mlx(error)) => {
                eprintln!("lamina-server: a generation failed: {error}");
                let _ = events.send(EngineEvent::Failed(engine_failure("generation failed")));
                return Ended::Failed;
            }
            Err(error) => {
                let _ = events.send(EngineEvent::Failed(api_error(error)));
            }
        }
    }
}

/// One drafted generation streamed to `events`; `false` when the client left first.
fn stream_generation(
    context: &mut ModelContext,
    prompt: &[u32],
    params: &GenerateParams,
    events: &UnboundedSender<EngineEvent>,
) -> Result<bool, GenerateError> {
    let mut generation = context.start_generation(prompt, params)?;
    let mut sent = 0;
    for token in generation.by_ref() {
        let token = token?;
        sent += token.text.len();
        if events.send(EngineEvent::Token { token, logprobs: None }).is_err() {
            return Ok(false);
        }
    }
    let (output, _) = generation.into_cache()?;
    // Text held back until the end (a possible stop string that never completed).
    let tail = output.text.get(sent..).unwrap_or_default().to_owned();
    Ok(events.send(EngineEvent::Done { tail, output, cached_tokens: 0 }).is_ok())
}

/// One request through a batch of its own (log-probabilities, grammars); `false` when the
/// client left first.
fn serve_alone(
    context: &mut ModelContext,
    request: BatchRequest,
    kv_quantization: Option<KvQuantization>,
    events: &UnboundedSender<EngineEvent>,
) -> Result<bool, GenerateError> {
    let ModelContext { model, tokenizer, .. } = context;
    let config =
        BatchConfig { max_batch: 1, prompt_cache_bytes: 0, kv_quantization, ..BatchConfig::default() };
    let mut generator = BatchGenerator::new(model.as_mut(), tokenizer.as_ref(), config)?;
    let id = generator.insert(request);
    while !generator.is_idle() {
        if events.is_closed() {
            generator.cancel(id);
            return Ok(false);
        }
        for event in generator.step()? {
            let event = match event {
                BatchEvent::Token { token, logprobs, .. } => EngineEvent::Token { token, logprobs },
                BatchEvent::Done { tail, output, cached_tokens, .. } => {
                    EngineEvent::Done { tail, output, cached_tokens }
                }
                BatchEvent::Failed { error, .. } => return Err(error),
            };
            let _ = events.send(event);
        }
    }
    Ok(true)
}

/// One run of the batch generator, until it fails or the handles are gone. Requests that
/// finish reset `failures`.
fn serve(
    context: &mut ModelContext,
    batch: &BatchConfig,
    preload: &mut Option<Vec<(Vec<u32>, ModelCache)>>,
    inbox: &mpsc::Receiver<Submission>,
    load: &Load,
    clients: &mut HashMap<SequenceId, UnboundedSender<EngineEvent>>,
    failures: &mut usize,
) -> Ended {
    let ModelContext { model, tokenizer, .. } = context;
    let mut generator = match BatchGenerator::new(model.as_mut(), tokenizer.as_ref(), batch.clone()) {
        Ok(generator) => generator,
        Err(error) => {
            eprintln!("lamina-server: the model cannot run: {error}");
            return Ended::Unusable;
        }
    };
    for (tokens, cache) in preload.take().into_iter().flatten() {
        generator.prompt_cache().insert(tokens, cache);
    }
    load.serving.store(true, Ordering::SeqCst);
    loop {
        let mut accept = |submission: Submission, generator: &mut BatchGenerator<'_>| {
            let id = generator.insert(submission.request);
            clients.insert(id, submission.events);
        };
        if generator.is_idle() {
            match inbox.recv() {
                Ok(submission) => accept(submission, &mut generator),
                Err(_) => return Ended::Closed,
            }
        }
        while let Ok(submission) = inbox.try_recv() {
            accept(submission, &mut generator);
        }
        clients.retain(|id, events| {
            let gone = events.is_closed();
            if gone {
                generator.cancel(*id);
                load.cancelled.fetch_add(1, Ordering::SeqCst);
                load.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            !gone
        });
        let step = generator.step();
        load.active.store(generator.active(), Ordering::SeqCst);
        load.waiting.store(generator.waiting(), Ordering::SeqCst);
        let events = match step {
            Ok(events) => events,
            Err(error) => {
                eprintln!("lamina-server: a batch step failed: {error}");
                return Ended::Failed;
            }
        };
        for event in events {
            let (sequence, event, last) = match event {
                BatchEvent::Token { sequence, token, logprobs } => {
                    (sequence, EngineEvent::Token { token, logprobs }, false)
                }
                BatchEvent::Done { sequence, tail, output, cached_tokens } => {
                    *failures = 0;
                    (sequence, EngineEvent::Done { tail, output, cached_tokens }, true)
                }
                BatchEvent::Failed { sequence, error } => {
                    (sequence, EngineEvent::Failed(api_error(error)), true)
                }
            };
            if let Some(events) = clients.get(&sequence) {
                let _ = events.send(event);
            }
            if last && clients.remove(&sequence).is_some() {
                load.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}
