//! The endpoints: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /health`; anything else is a JSON 404 or 405.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lamina_generate::{BatchRequest, ChatInput, ChatTemplate, Constraint, Grammar, GrammarCompiler};
use lamina_loader::Tokenizer;
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::error::ApiError;
use crate::grammar::{response_grammar, tool_grammar};
use crate::openai::{ChatRequest, CompletionRequest, Prompt, Sampling, ToolChoice, parse};
use crate::params::{Limits, check_context, check_prompt_bytes, choices, generate_params};
use crate::stream::{Endpoint, Reply, merge};
use crate::tools::{ToolCallParser, ToolFormat};

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// The tokenizer (requests are tokenized on the server's tasks; streams share it).
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// The chat template.
    pub template: Option<ChatTemplate>,
    /// How the model writes tool calls.
    pub tool_format: ToolFormat,
    /// Ids generation stops at.
    pub stop_ids: Vec<u32>,
    /// The served model's id.
    pub model_id: String,
    /// The model's context length.
    pub context_length: Option<usize>,
    /// Vocabulary and default length.
    pub limits: Limits,
    /// The compiler of structured-output grammars, made at the first request that needs it
    /// (or why this tokenizer cannot have one).
    pub grammars: OnceLock<Result<GrammarCompiler, String>>,
    /// Unix seconds at start.
    pub created: u64,
    /// Requests being templated and tokenized at once (off the async workers).
    pub preparing: Arc<tokio::sync::Semaphore>,
    /// Requests waiting for a [`AppState::preparing`] permit, and how many may.
    pub preparing_queue: (AtomicUsize, usize),
}

/// A request read, templated and tokenized, ready for the engine.
struct Prepared {
    reply: Reply,
    request: BatchRequest,
    /// Choices (`n`): one sequence each, seeded apart, sharing the prompt's prefill.
    choices: usize,
    stream: bool,
}

/// Top logprobs a chat request may ask for, and a completion request.
const MAX_TOP_LOGPROBS_CHAT: i64 = 20;
const MAX_TOP_LOGPROBS_COMPLETIONS: i64 = 5;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn request_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{:x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed), nanos)
}

/// A body that could not be read (too large, or cut off).
fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "invalid_request_error" } else { "server_error" };
    ApiError::status(status, kind, rejection.body_text())
}

fn answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

impl AppState {
    fn tokenizer(&self) -> Result<&Tokenizer, ApiError> {
        self.tokenizer.as_deref().ok_or_else(|| {
            ApiError::invalid("this model has no tokenizer: send token ids to /v1/completions", None)
        })
    }

    /// The grammar compiler, made on first use.
    fn grammar_compiler(&self) -> Result<&GrammarCompiler, String> {
        self.grammars
            .get_or_init(|| {
                let tokenizer = self.tokenizer.as_deref().ok_or("this model has no tokenizer")?;
                GrammarCompiler::new(tokenizer, self.limits.vocab_size).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `grammar` compiled for this model.
    ///
    /// # Errors
    /// 400 naming `param` when the grammar is invalid, unsupported or unsatisfiable, or
    /// this tokenizer cannot drive constrained decoding.
    fn constraint(&self, grammar: Grammar, param: &str) -> Result<Constraint, ApiError> {
        let invalid = |message: String| ApiError::invalid(message, Some(param)).with_code("invalid_grammar");
        self.grammar_compiler().map_err(invalid)?.compile(grammar).map_err(|e| invalid(e.to_string()))
    }

    /// What every response to a request repeats (no tool parsing, no echo).
    fn reply(
        &self,
        endpoint: Endpoint,
        prompt_tokens: usize,
        top_logprobs: Option<usize>,
        sampling: &Sampling,
    ) -> Reply {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completions => "cmpl",
        };
        Reply {
            id: request_id(prefix),
            created: now(),
            model: self.model_id.clone(),
            endpoint,
            prompt_tokens,
            top_logprobs,
            tools: None,
            include_usage: sampling.stream_options.as_ref().is_some_and(|o| o.include_usage),
            echo: None,
        }
    }

    /// Queues the request's choices and answers: a stream of server-sent events, or the
    /// whole body.
    async fn respond(&self, prepared: Prepared) -> Result<Response, ApiError> {
        let Prepared { reply, request, choices, stream } = prepared;
        let seeds = choice_seeds(request.params.sampler.seed, choices);
        let mut receivers = Vec::with_capacity(choices);
        for seed in seeds {
            let mut choice = request.clone();
            choice.params.sampler.seed = seed;
            receivers.push(self.engine.submit(choice)?);
        }
        let events = merge(receivers);
        if stream {
            Ok(reply.stream(events, choices, self.tokenizer.clone()))
        } else {
            Ok(Json(reply.whole(events, choices, self.tokenizer.as_deref()).await?).into_response())
        }
    }
}

/// Each choice's sampling seed: the request's (or, with several choices and none given, one
/// drawn from the clock) plus the choice's index, so that choices differ and a seeded
/// request repeats.
fn choice_seeds(seed: Option<u64>, choices: usize) -> Vec<Option<u64>> {
    if choices == 1 {
        return vec![seed];
    }
    let base = seed
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    (0..choices as u64).map(|i| Some(base.wrapping_add(i))).collect()
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    answer(serve(state, body, prepare_chat).await)
}

/// `POST /v1/completions`.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(serve(state, body, prepare_completion).await)
}

/// Reads, templates and tokenizes a request off the async workers, then queues it.
async fn serve(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    prepare: fn(&AppState, &[u8]) -> Result<Prepared, ApiError>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_error)?;
    let prepared = state.off_workers(move |state| prepare(state, &body)).await?;
    state.respond(prepared).await
}

impl AppState {
    /// Runs `work` on tokio's blocking pool, at most [`AppState::preparing`]'s permits at
    /// once; more waiting than the queue allows is a 503.
    async fn off_workers<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (waiting, most) = &self.preparing_queue;
        if waiting.fetch_add(1, Ordering::SeqCst) >= *most {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy());
        }
        let permit = self.preparing.clone().acquire_owned().await;
        waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| busy())?;
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&state)
        })
        .await
        .map_err(|error| {
            eprintln!("lamina-server: preparing a request failed: {error}");
            ApiError::internal("the server failed while reading the request (templating or tokenizing)")
        })?
    }
}

/// 503: too many requests waiting to be prepared.
fn busy() -> ApiError {
    ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "server_error", "the server is busy; retry later")
        .with_code("queue_full")
}

fn prepare_chat(state: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let request: ChatRequest = parse(body)?;
    let mut params =
        generate_params(&request.sampling, request.max_completion_tokens, state.limits, &state.stop_ids)?;
    if request.messages.is_empty() {
        return Err(ApiError::invalid("`messages` must hold at least one message", Some("messages")));
    }
    if request.parallel_tool_calls == Some(false) {
        return Err(ApiError::invalid(
            "`parallel_tool_calls: false` is not supported (every call the model writes is returned)",
            Some("parallel_tool_calls"),
        ));
    }
    let top_logprobs = match (request.logprobs, request.top_logprobs) {
        (_, Some(n)) if !(0..=MAX_TOP_LOGPROBS_CHAT).contains(&n) => {
            return Err(ApiError::invalid(
                format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS_CHAT}"),
                Some("top_logprobs"),
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid("`top_logprobs` needs `logprobs: true`", Some("top_logprobs")));
        }
        (true, n) => Some(usize::try_from(n.unwrap_or(0)).unwrap_or(0)),
        (false, None) => None,
    };
    let (tools, forced) = template_tools(&request)?;
    let format = response_grammar(request.sampling.response_format.as_ref())?;
    params.constraint = match (format, forced) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                "`response_format` cannot be combined with a `tool_choice` that forces a call",
                Some("response_format"),
            ));
        }
        (Some(grammar), false) => Some(state.constraint(grammar, "response_format")?),
        // A forced call is written in the model's format with each tool's schema; a
        // tokenizer that cannot drive constrained decoding leaves it to the template.
        (None, true) => match (&tools, state.grammar_compiler()) {
            (Some(Value::Array(tools)), Ok(_)) => {
                let marker = state.tokenizer.as_deref().and_then(|t| t.token_to_id("[TOOL_CALLS]"));
                Some(state.constraint(tool_grammar(state.tool_format, tools, marker), "tools")?)
            }
            _ => None,
        },
        (None, false) => None,
    };
    let template = state
        .template
        .as_ref()
        .ok_or_else(|| ApiError::invalid("this model has no chat template: use /v1/completions", None))?;
    let tokenizer = state.tokenizer()?;
    let messages = request.messages.iter().map(|m| m.to_template()).collect::<Result<Vec<_>, _>>()?;
    let text_bytes = messages.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum::<usize>()
        + tools.as_ref().map_or(0, |t| t.to_string().len());
    check_prompt_bytes(text_bytes, state.context_length, "messages")?;
    let messages = Value::Array(messages);
    let input = ChatInput {
        messages: &messages,
        tools: tools.as_ref(),
        add_generation_prompt: true,
        bos_token: tokenizer.bos_token(),
        eos_token: tokenizer.eos_token(),
    };
    let text =
        template.render_json(&input).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    let prompt =
        tokenizer.encode(&text, false).map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    check_context(prompt.len(), state.context_length, "messages")?;
    let reply = Reply {
        tools: tools.is_some().then(|| ToolCallParser::new(state.tool_format)),
        ..state.reply(Endpoint::Chat, prompt.len(), top_logprobs, &request.sampling)
    };
    Ok(Prepared {
        reply,
        request: BatchRequest { prompt, params, top_logprobs },
        choices: choices(&request.sampling)?,
        stream: request.sampling.stream,
    })
}

/// The tool definitions the template sees (none for `tool_choice: "none"`, only the named
/// one for a named choice), and whether the choice forces a call (`required`, a name).
fn template_tools(request: &ChatRequest) -> Result<(Option<Value>, bool), ApiError> {
    let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok((None, false));
    };
    if let Some(bad) = tools.iter().find(|t| t.kind != "function") {
        return Err(ApiError::invalid(
            format!("tools of type `{}` are not supported", bad.kind),
            Some("tools"),
        ));
    }
    let chosen: Vec<_> = match &request.tool_choice {
        None => tools.iter().collect(),
        Some(ToolChoice::Mode(mode)) => match mode.as_str() {
            "none" => return Ok((None, false)),
            "auto" | "required" => tools.iter().collect(),
            other => {
                return Err(ApiError::invalid(
                    format!("`tool_choice` must be none, auto, required or a function, got `{other}`"),
                    Some("tool_choice"),
                ));
            }
        },
        Some(ToolChoice::Named { kind, .. }) if kind != "function" => {
            return Err(ApiError::invalid(
                format!("`tool_choice` of type `{kind}` is not supported"),
                Some("tool_choice"),
            ));
        }
        Some(ToolChoice::Named { function, .. }) => {
            let named: Vec<_> = tools.iter().filter(|t| t.function.name == function.name).collect();
            if named.is_empty() {
                return Err(ApiError::invalid(
                    format!("`tool_choice` names `{}`, which is not among `tools`", function.name),
                    Some("tool_choice"),
                ));
            }
            named
        }
    };
    let tools = chosen
        .into_iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.function.name,
                "description": t.function.description,
                "parameters": t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            }})
        })
        .collect();
    let forced = match &request.tool_choice {
        Some(ToolChoice::Mode(mode)) => mode == "required",
        Some(ToolChoice::Named { .. }) => true,
        None => false,
    };
    Ok((Some(Value::Array(tools)), forced))
}

fn prepare_completion(state: &AppState, body: &[u8]) -> Result<Prepared, ApiError> {
    let request: CompletionRequest = parse(body)?;
    let mut params = generate_params(&request.sampling, None, state.limits, &state.stop_ids)?;
    if let Some(grammar) = response_grammar(request.sampling.response_format.as_ref())? {
        params.constraint = Some(state.constraint(grammar, "response_format")?);
    }
    let top_logprobs = match request.logprobs {
        Some(n) if !(0..=MAX_TOP_LOGPROBS_COMPLETIONS).contains(&n) => {
            return Err(ApiError::invalid(
                format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS_COMPLETIONS}"),
                Some("logprobs"),
            ));
        }
        n => n.map(|n| usize::try_from(n).unwrap_or(0)),
    };
    let text = match &request.prompt {
        Prompt::Text(text) => Some(text),
        Prompt::Texts(texts) if texts.len() == 1 => Some(&texts[0]),
        Prompt::Texts(_) => {
            return Err(ApiError::invalid("only one prompt per request is supported", Some("prompt")));
        }
        Prompt::Tokens(_) => None,
    };
    let (prompt, text) = match (text, &request.prompt) {
        (Some(text), _) => {
            check_prompt_bytes(text.len(), state.context_length, "prompt")?;
            (state.tokenizer()?.encode(text, true), text.clone())
        }
        (None, Prompt::Tokens(ids)) => {
            check_context(ids.len(), state.context_length, "prompt")?;
            let text = state.tokenizer.as_deref().and_then(|t| t.decode(ids, false).ok()).unwrap_or_default();
            (Ok(ids.clone()), text)
        }
        (None, _) => return Err(ApiError::invalid("`prompt` is missing", Some("prompt"))),
    };
    let prompt = prompt.map_err(|e| ApiError::invalid(e.to_string(), Some("prompt")))?;
    check_context(prompt.len(), state.context_length, "prompt")?;
    let reply = Reply {
        echo: request.echo.then_some(text),
        ..state.reply(Endpoint::Completions, prompt.len(), top_logprobs, &request.sampling)
    };
    Ok(Prepared {
        reply,
        request: BatchRequest { prompt, params, top_logprobs },
        choices: choices(&request.sampling)?,
        stream: request.sampling.stream,
    })
}

/// `GET /v1/models`.
pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": state.model_id, "object": "model", "created": state.created, "owned_by": "lamina"}],
    }))
}

/// `GET /health`: `ok`, with the sequences decoding and waiting, and how many requests
/// were cancelled by their clients going away; 503 `unavailable` while the engine is not
/// serving (restarting after a failure, or stopped).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    let load = state.engine.load();
    let serving = load.serving();
    let status = if serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if serving { "ok" } else { "unavailable" },
        "active": load.active.load(Ordering::SeqCst),
        "waiting": load.waiting.load(Ordering::SeqCst),
        "cancelled": load.cancelled.load(Ordering::SeqCst),
        "restarts": load.restarts.load(Ordering::SeqCst),
    });
    (status, Json(body)).into_response()
}

/// Unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::status(StatusCode::NOT_FOUND, "invalid_request_error", "no such endpoint")
}

/// Known paths, wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "this endpoint does not take that method",
    )
}
