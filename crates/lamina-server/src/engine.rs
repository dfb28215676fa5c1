//! The engine: one thread owns the model and runs a [`BatchGenerator`]; requests from every
//! client join its batch, their tokens go back on per-request channels, and a request
//! whose receiver is gone (the client disconnected) leaves the batch at the next step.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use axum::http::StatusCode;
use lamina_backbones::ModelCache;
use lamina_generate::{
    BatchConfig, BatchEvent, BatchGenerator, BatchRequest, GenerateError, GenerationOutput, ModelContext,
    SequenceId, TokenEvent, TokenLogprobs,
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
    /// Accepted and not finished (the queue bound counts these).
    outstanding: AtomicUsize,
}

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
    ) -> std::io::Result<Self> {
        let (commands, inbox) = mpsc::channel();
        let load = Arc::new(Load::default());
        let capacity = batch.max_batch.max(1) + max_queue;
        let thread_load = load.clone();
        std::thread::Builder::new()
            .name("lamina-engine".into())
            .spawn(move || run(context, batch, preload, inbox, &thread_load))?;
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
        if self.commands.send(Submission { request, events }).is_err() {
            self.load.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the engine has stopped",
            ));
        }
        Ok(receiver)
    }

    /// How many sequences run and wait.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

/// A generation error as the client sees it.
fn api_error(error: GenerateError) -> ApiError {
    match error {
        GenerateError::TooLong { .. } => {
            ApiError::invalid(error.to_string(), Some("messages")).with_code("context_length_exceeded")
        }
        GenerateError::EmptyPrompt => ApiError::invalid(error.to_string(), Some("prompt")),
        GenerateError::Model(lamina_core::Error::TokenOutOfRange { .. }) => {
            ApiError::invalid(error.to_string(), Some("prompt"))
        }
        GenerateError::Model(lamina_core::Error::InvalidConfig { .. }) => {
            ApiError::invalid(error.to_string(), None)
        }
        other => ApiError::internal(other.to_string()),
    }
}

/// The engine thread: a batch generator, restarted (its sequences failed) after an MLX
/// error; ends when every [`Engine`] handle is gone.
fn run(
    mut context: ModelContext,
    batch: BatchConfig,
    preload: Vec<(Vec<u32>, ModelCache)>,
    inbox: mpsc::Receiver<Submission>,
    load: &Load,
) {
    let mut preload = Some(preload);
    loop {
        let ModelContext { model, tokenizer, .. } = &mut context;
        let mut generator = match BatchGenerator::new(model.as_mut(), tokenizer.as_ref(), batch.clone()) {
            Ok(generator) => generator,
            Err(error) => {
                // Nothing can run: fail every request that comes.
                let message = format!("the model cannot run: {error}");
                while let Ok(submission) = inbox.recv() {
                    let _ = submission.events.send(EngineEvent::Failed(ApiError::internal(message.clone())));
                    load.outstanding.fetch_sub(1, Ordering::SeqCst);
                }
                return;
            }
        };
        for (tokens, cache) in preload.take().into_iter().flatten() {
            generator.prompt_cache().insert(tokens, cache);
        }
        let mut clients: HashMap<SequenceId, UnboundedSender<EngineEvent>> = HashMap::new();
        loop {
            let mut accept = |submission: Submission, generator: &mut BatchGenerator<'_>| {
                let id = generator.insert(submission.request);
                clients.insert(id, submission.events);
            };
            if generator.is_idle() {
                match inbox.recv() {
                    Ok(submission) => accept(submission, &mut generator),
                    Err(_) => return,
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
                    let message = format!("generation failed: {error}");
                    for (_, events) in clients.drain() {
                        let _ = events.send(EngineEvent::Failed(ApiError::internal(message.clone())));
                        load.outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                    break;
                }
            };
            for event in events {
                let (sequence, event, last) = match event {
                    BatchEvent::Token { sequence, token, logprobs } => {
                        (sequence, EngineEvent::Token { token, logprobs }, false)
                    }
                    BatchEvent::Done { sequence, tail, output, cached_tokens } => {
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
        load.active.store(0, Ordering::SeqCst);
        load.waiting.store(0, Ordering::SeqCst);
    }
}
