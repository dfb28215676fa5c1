//! Engine events into OpenAI responses: whole bodies, or server-sent event chunks
//! (`data: {...}` then `data: [DONE]`), for both endpoints.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use lamina_generate::{FinishReason, TokenLogprobs};
use lamina_loader::Tokenizer;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_stream::wrappers::ReceiverStream;

use crate::engine::EngineEvent;
use crate::error::ApiError;
use crate::tools::{ToolCallParser, ToolEvent};

/// Which endpoint is answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
}

/// What every response of one request repeats.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Report log-probabilities with this many alternatives.
    pub top_logprobs: Option<usize>,
    /// Parse tool calls from the output.
    pub tools: Option<ToolCallParser>,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
    /// Text before the output (a completion's `echo`).
    pub echo: Option<String>,
}

/// OpenAI's `finish_reason`.
pub fn finish_reason(reason: FinishReason, called_tools: bool) -> &'static str {
    match reason {
        _ if called_tools => "tool_calls",
        FinishReason::Eos | FinishReason::StopString => "stop",
        FinishReason::MaxTokens | FinishReason::MaxLength => "length",
    }
}

/// What a request used, its choices together.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    completion: usize,
    cached: usize,
    /// Draft tokens proposed and accepted (speculative decoding).
    drafted: usize,
    accepted: usize,
}

impl Usage {
    fn add(&mut self, output: &lamina_generate::GenerationOutput, cached: usize) {
        self.completion += output.tokens.len();
        self.cached = self.cached.max(cached);
        self.drafted += output.stats.draft_tokens;
        self.accepted += output.stats.accepted_draft_tokens;
    }

    /// OpenAI's `usage`; drafts as its predicted outputs' accepted and rejected tokens.
    fn json(&self, prompt: usize) -> Value {
        let mut usage = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.completion,
            "total_tokens": prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
        });
        if self.drafted > 0 {
            usage["completion_tokens_details"] = json!({
                "accepted_prediction_tokens": self.accepted,
                "rejected_prediction_tokens": self.drafted - self.accepted,
            });
        }
        usage
    }
}

fn token_text(tokenizer: Option<&Tokenizer>, id: u32) -> String {
    tokenizer.and_then(|t| t.decode(&[id], false).ok()).unwrap_or_default()
}

/// One token's log-probabilities in chat's form.
fn chat_logprob(tokenizer: Option<&Tokenizer>, id: u32, lp: &TokenLogprobs) -> Value {
    let entry = |id: u32, logprob: f32| {
        let token = token_text(tokenizer, id);
        json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()})
    };
    let mut value = entry(id, lp.logprob);
    value["top_logprobs"] = Value::Array(lp.top.iter().map(|&(t, l)| entry(t, l)).collect());
    value
}

/// Log-probabilities of completion tokens in the legacy form.
#[derive(Debug, Default)]
struct LegacyLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl LegacyLogprobs {
    fn push(&mut self, tokenizer: Option<&Tokenizer>, id: u32, lp: &TokenLogprobs, offset: usize) {
        self.tokens.push(token_text(tokenizer, id));
        self.token_logprobs.push(lp.logprob);
        let top: serde_json::Map<String, Value> =
            lp.top.iter().map(|&(t, l)| (token_text(tokenizer, t), json!(l))).collect();
        self.top_logprobs.push(Value::Object(top));
        self.text_offset.push(offset);
    }

    fn json(&self) -> Value {
        json!({
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        })
    }
}

fn tool_call_json(index: usize, call: &crate::tools::ToolCall, id: &str) -> Value {
    json!({
        "index": index,
        "id": format!("call_{id}_{index}"),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }

    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }

    /// Waits for every choice's end and answers with one JSON body.
    ///
    /// # Errors
    /// The engine's error for this request (any choice's).
    pub async fn whole(
        self,
        mut events: UnboundedReceiver<(usize, EngineEvent)>,
        choices: usize,
        tokenizer: Option<&Tokenizer>,
    ) -> Result<Value, ApiError> {
        let mut states: Vec<WholeChoice> = (0..choices)
            .map(|_| WholeChoice {
                text: self.echo.clone().unwrap_or_default(),
                tools: self.tools.clone(),
                ..Default::default()
            })
            .collect();
        let (mut finished, mut used) = (Vec::with_capacity(choices), Usage::default());
        while let Some((index, event)) = events.recv().await {
            let Some(state) = states.get_mut(index) else { continue };
            match event {
                EngineEvent::Token { token, logprobs } => {
                    if let Some(lp) = &logprobs {
                        match self.endpoint {
                            Endpoint::Chat => state.chat_logprobs.push(chat_logprob(tokenizer, token.id, lp)),
                            Endpoint::Completions => {
                                state.legacy.push(tokenizer, token.id, lp, state.text.len())
                            }
                        }
                    }
                    state.text.push_str(&token.text);
                }
                EngineEvent::Done { tail, output, cached_tokens } => {
                    state.text.push_str(&tail);
                    used.add(&output, cached_tokens);
                    finished.push((index, self.whole_choice(index, state, output.finish_reason)));
                    if finished.len() == choices {
                        finished.sort_by_key(|(i, _)| *i);
                        let choices: Vec<Value> = finished.into_iter().map(|(_, c)| c).collect();
                        let mut body = self.envelope(false, Value::Array(choices));
                        body["usage"] = used.json(self.prompt_tokens);
                        return Ok(body);
                    }
                }
                EngineEvent::Failed(error) => return Err(error),
            }
        }
        Err(ApiError::internal("the generation ended without a result"))
    }

    /// One finished choice of a whole body.
    fn whole_choice(&self, index: usize, state: &mut WholeChoice, reason: FinishReason) -> Value {
        let text = std::mem::take(&mut state.text);
        let logprobs_wanted = self.top_logprobs.is_some();
        match self.endpoint {
            Endpoint::Chat => {
                let (content, calls) = match state.tools.as_mut() {
                    Some(parser) => split_calls(parser, &text),
                    None => (Some(text), Vec::new()),
                };
                let mut message = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    let calls: Vec<Value> =
                        calls.iter().enumerate().map(|(i, c)| tool_call_json(i, c, &self.id)).collect();
                    message["tool_calls"] = Value::Array(calls);
                }
                let logprobs = std::mem::take(&mut state.chat_logprobs);
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": logprobs_wanted.then(|| json!({"content": logprobs})),
                    "finish_reason": finish_reason(reason, !calls.is_empty()),
                })
            }
            Endpoint::Completions => json!({
                "index": index,
                "text": text,
                "logprobs": logprobs_wanted.then(|| state.legacy.json()),
                "finish_reason": finish_reason(reason, false),
            }),
        }
    }

    /// Streams every choice's answer as server-sent events (each chunk names its choice).
    pub fn stream(
        self,
        events: UnboundedReceiver<(usize, EngineEvent)>,
        choices: usize,
        tokenizer: Option<Arc<Tokenizer>>,
    ) -> Response {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
        tokio::spawn(async move {
            let states = (0..choices)
                .map(|_| StreamChoice { tools: self.tools.clone(), calls: 0, offset: 0 })
                .collect();
            let mut writer = ChunkWriter { reply: self, tx, states, tokenizer };
            // A send fails only when the client has gone: stop, dropping `events`, which
            // takes the request out of the batch.
            let _ = writer.run(events).await;
        });
        Sse::new(ReceiverStream::new(rx)).into_response()
    }
}

/// One choice of a whole body, as it accumulates.
#[derive(Debug, Default)]
struct WholeChoice {
    text: String,
    chat_logprobs: Vec<Value>,
    legacy: LegacyLogprobs,
    tools: Option<ToolCallParser>,
}

/// The engine events of a request's choices on one channel, each with its choice's index.
pub fn merge(receivers: Vec<UnboundedReceiver<EngineEvent>>) -> UnboundedReceiver<(usize, EngineEvent)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (index, mut receiver) in receivers.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                // The merged receiver is gone (the client left): drop this choice's
                // receiver, which takes it out of the batch.
                if tx.send((index, event)).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// Content and calls of a whole chat answer.
fn split_calls(parser: &mut ToolCallParser, text: &str) -> (Option<String>, Vec<crate::tools::ToolCall>) {
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut content = String::new();
    let mut calls = Vec::new();
    for event in events {
        match event {
            ToolEvent::Content(c) => content.push_str(&c),
            ToolEvent::Call(call) => calls.push(call),
        }
    }
    let content = if content.is_empty() && !calls.is_empty() { None } else { Some(content) };
    (content, calls)
}

/// One choice of a stream.
struct StreamChoice {
    tools: Option<ToolCallParser>,
    calls: usize,
    offset: usize,
}

struct ChunkWriter {
    reply: Reply,
    tx: tokio::sync::mpsc::Sender<Result<Event, Infallible>>,
    states: Vec<StreamChoice>,
    tokenizer: Option<Arc<Tokenizer>>,
}

struct Gone;

impl ChunkWriter {
    async fn send(&self, value: &Value) -> Result<(), Gone> {
        self.tx.send(Ok(Event::default().data(value.to_string()))).await.map_err(|_| Gone)
    }

    async fn choice(&self, choice: Value) -> Result<(), Gone> {
        self.send(&self.reply.envelope(true, json!([choice]))).await
    }

    /// Sends choice `index`'s released text and calls (chat) or text (completions).
    async fn release(
        &mut self,
        index: usize,
        events: Vec<ToolEvent>,
        logprobs: Option<Value>,
    ) -> Result<(), Gone> {
        let mut logprobs = logprobs;
        if events.is_empty() && logprobs.is_some() {
            return self.choice(delta(index, json!({"content": ""}), logprobs.take())).await;
        }
        for event in events {
            let choice = match (self.reply.endpoint, event) {
                (Endpoint::Chat, ToolEvent::Content(text)) => {
                    delta(index, json!({"content": text}), logprobs.take())
                }
                (Endpoint::Chat, ToolEvent::Call(call)) => {
                    let state = &mut self.states[index];
                    let call = tool_call_json(state.calls, &call, &self.reply.id);
                    state.calls += 1;
                    delta(index, json!({"tool_calls": [call]}), logprobs.take())
                }
                (Endpoint::Completions, ToolEvent::Content(text)) => {
                    json!({"index": index, "text": text, "logprobs": logprobs.take(), "finish_reason": null})
                }
                (Endpoint::Completions, ToolEvent::Call(_)) => continue, // completions parse no calls
            };
            self.choice(choice).await?;
        }
        Ok(())
    }

    async fn run(&mut self, mut events: UnboundedReceiver<(usize, EngineEvent)>) -> Result<(), Gone> {
        let choices = self.states.len();
        let echo = self.reply.echo.take();
        for index in 0..choices {
            if self.reply.endpoint == Endpoint::Chat {
                self.choice(delta(index, json!({"role": "assistant", "content": ""}), None)).await?;
            }
            if let Some(echo) = &echo {
                self.release(index, vec![ToolEvent::Content(echo.clone())], None).await?;
            }
        }
        let (mut remaining, mut used) = (choices, Usage::default());
        while let Some((index, event)) = events.recv().await {
            if index >= choices {
                continue;
            }
            match event {
                EngineEvent::Token { token, logprobs } => {
                    let tokenizer = self.tokenizer.as_deref();
                    let offset = self.states[index].offset;
                    let logprobs = logprobs.map(|lp| match self.reply.endpoint {
                        Endpoint::Chat => json!({"content": [chat_logprob(tokenizer, token.id, &lp)]}),
                        Endpoint::Completions => {
                            let mut one = LegacyLogprobs::default();
                            one.push(tokenizer, token.id, &lp, offset);
                            one.json()
                        }
                    });
                    self.states[index].offset += token.text.len();
                    let released = self.text_events(index, &token.text);
                    self.release(index, released, logprobs).await?;
                }
                EngineEvent::Done { tail, output, cached_tokens } => {
                    let mut released = self.text_events(index, &tail);
                    if let Some(parser) = self.states[index].tools.as_mut() {
                        released.extend(parser.finish());
                    }
                    self.release(index, released, None).await?;
                    let reason = finish_reason(output.finish_reason, self.states[index].calls > 0);
                    let last = match self.reply.endpoint {
                        Endpoint::Chat => {
                            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
                        }
                        Endpoint::Completions => {
                            json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason})
                        }
                    };
                    self.choice(last).await?;
                    used.add(&output, cached_tokens);
                    remaining -= 1;
                    if remaining == 0 {
                        if self.reply.include_usage {
                            let mut chunk = self.reply.envelope(true, json!([]));
                            chunk["usage"] = used.json(self.reply.prompt_tokens);
                            self.send(&chunk).await?;
                        }
                        break;
                    }
                }
                EngineEvent::Failed(error) => {
                    self.send(&error.body()).await?;
                    break;
                }
            }
        }
        self.tx.send(Ok(Event::default().data("[DONE]"))).await.map_err(|_| Gone)
    }

    fn text_events(&mut self, index: usize, text: &str) -> Vec<ToolEvent> {
        match self.states[index].tools.as_mut() {
            Some(parser) => parser.push(text),
            None if text.is_empty() => Vec::new(),
            None => vec![ToolEvent::Content(text.to_owned())],
        }
    }
}

/// A chat chunk's choice.
fn delta(index: usize, delta: Value, logprobs: Option<Value>) -> Value {
    json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null})
}
