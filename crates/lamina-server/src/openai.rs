//! The OpenAI request bodies lamina reads, checked field by field: a wrong type names its
//! field, a value out of range says what is allowed. Every field is honoured or refused:
//! a field lamina does not know is a 400 naming it, never silently dropped. `model` and
//! `user` are accepted and change nothing (one model is served; `user` is the client's
//! label for its own records).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// `stop`: one string or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling and length fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    /// The most new tokens.
    pub max_tokens: Option<i64>,
    /// 0 = greedy.
    pub temperature: Option<f32>,
    /// Nucleus threshold.
    pub top_p: Option<f32>,
    /// Keep the k most likely (0 = off).
    pub top_k: Option<i64>,
    /// Minimum relative probability.
    pub min_p: Option<f32>,
    /// Repetition penalty (1 = off).
    pub repetition_penalty: Option<f32>,
    /// OpenAI's presence penalty, -2..=2.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty, -2..=2.
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string) -> bias in -100..=100, added to the logits before sampling.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Choices per request (only 1).
    pub n: Option<i64>,
    /// Stream as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// `text` (the default), `json_object` or `json_schema`: output held to JSON.
    pub response_format: Option<ResponseFormat>,
}

/// `response_format`.
#[derive(Debug, Clone, Deserialize)]
pub struct ResponseFormat {
    /// `text`, `json_object` or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The schema of `json_schema`.
    pub json_schema: Option<JsonSchemaFormat>,
    /// A schema for `json_object` (as llama.cpp's server takes it).
    pub schema: Option<Value>,
}

/// `response_format.json_schema`. Its `name` and `description` label the schema, and
/// `strict` changes nothing (the output always follows the schema here).
#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    /// The JSON schema the output must be valid under.
    pub schema: Option<Value>,
}

/// The fields both endpoints share, as the client writes them.
const SHARED_FIELDS: [&str; 18] = [
    "model",
    "user",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "logprobs",
    "response_format",
];

/// A request body's own fields beside the shared ones.
pub trait Fields {
    /// The fields only this endpoint takes.
    const OWN: &'static [&'static str];
}

impl Fields for ChatRequest {
    const OWN: &'static [&'static str] =
        &["messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls"];
}

impl Fields for CompletionRequest {
    const OWN: &'static [&'static str] = &["prompt", "echo"];
}

/// Who speaks, as OpenAI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions.
    System,
    /// Instructions (OpenAI's newer name; rendered as `system`).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// Message content: a string or a list of parts (text parts are joined).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` (others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// A call the assistant made earlier in the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    /// Its id.
    pub id: Option<String>,
    /// The function and its arguments (a JSON string).
    pub function: FunctionCall,
}

/// A function call.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    /// Its name.
    pub name: String,
    /// Its arguments: a JSON string.
    #[serde(default)]
    pub arguments: String,
}

/// One message.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: ChatRole,
    /// What they say.
    pub content: Option<Content>,
    /// The assistant's calls.
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// A name.
    pub name: Option<String>,
}

/// A tool the model may call.
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A function's definition.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// A JSON schema of its arguments.
    pub parameters: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    /// One named function.
    Named {
        /// `function`.
        #[serde(rename = "type")]
        kind: String,
        /// Which.
        function: NamedFunction,
    },
}

/// The function `tool_choice` names.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling, length, streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// OpenAI's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// Return log-probabilities.
    #[serde(default)]
    pub logprobs: bool,
    /// How many alternatives per token (0..=20; needs `logprobs`).
    pub top_logprobs: Option<i64>,
    /// Tools the model may call.
    pub tools: Option<Vec<Tool>>,
    /// Whether and which tools to call.
    pub tool_choice: Option<ToolChoice>,
    /// Several calls in one answer (`true`, the default; `false` is refused).
    pub parallel_tool_calls: Option<bool>,
}

/// `prompt` of a completion: text, or token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// A list of one text.
    Texts(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling, length, streaming.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Log-probabilities of each token and this many alternatives (0..=5).
    pub logprobs: Option<i64>,
    /// Return the prompt before the completion.
    #[serde(default)]
    pub echo: bool,
}

/// Parses a JSON body into `T`, naming the field at fault; a field `T` does not take is
/// refused.
///
/// # Errors
/// 400 with the serde message and the field's path, or naming the unknown field.
pub fn parse<T: serde::de::DeserializeOwned + Fields>(body: &[u8]) -> Result<T, ApiError> {
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(unknown) =
            fields.keys().find(|k| !SHARED_FIELDS.contains(&k.as_str()) && !T::OWN.contains(&k.as_str()))
        {
            let shown: String = unknown.chars().take(64).collect();
            return Err(ApiError::invalid(
                format!("`{shown}` is not supported by this server (see its README for the fields it takes)"),
                Some(&shown),
            )
            .with_code("unsupported_parameter"));
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let param = (path != "." && !syntax).then_some(path.as_str());
        let message = if syntax {
            format!("the body is not valid JSON: {inner}")
        } else {
            match param {
                Some(p) => format!("invalid `{p}`: {inner}"),
                None => format!("invalid request: {inner}"),
            }
        };
        ApiError::invalid(message, param)
    })
}

impl Content {
    /// The text of the content.
    ///
    /// # Errors
    /// 400 for a non-text part.
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::Text(text) => Ok(text.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(text)) => Ok(text.as_str()),
                    (kind, _) => Err(ApiError::invalid(
                        format!("content parts of type `{kind}` are not supported (text only)"),
                        Some("messages"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|texts| texts.concat()),
        }
    }
}

impl ChatMessage {
    /// The message as chat templates read it: `role`, `content`, and where present
    /// `tool_calls` (arguments as objects when they parse), `tool_call_id`, `name`.
    ///
    /// # Errors
    /// 400 for unsupported content.
    pub fn to_template(&self) -> Result<Value, ApiError> {
        let role = match self.role {
            ChatRole::System | ChatRole::Developer => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
            ChatRole::Tool => "tool",
        };
        let content = self.content.as_ref().map(Content::text).transpose()?.unwrap_or_default();
        let mut message = json!({"role": role, "content": content});
        if let Some(calls) = &self.tool_calls {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let arguments = serde_json::from_str::<Value>(&c.function.arguments)
                        .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
                    json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": arguments}})
                })
                .collect();
            message["tool_calls"] = Value::Array(calls);
        }
        if let Some(id) = &self.tool_call_id {
            message["tool_call_id"] = json!(id);
        }
        if let Some(name) = &self.name {
            message["name"] = json!(name);
        }
        Ok(message)
    }
}
