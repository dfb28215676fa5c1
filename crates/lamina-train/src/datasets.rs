//! Fine-tuning datasets as mlx-lm's `lora` reads them: a folder of `train.jsonl`,
//! `valid.jsonl` and `test.jsonl`, each in one of three row formats (detected per file):
//!
//! | format | a row |
//! | --- | --- |
//! | text | `{"text": "..."}` |
//! | completions | `{"prompt": "...", "completion": "..."}` |
//! | chat | `{"messages": [{"role": "...", "content": "..."}, ...], "tools": [...]}` (`tools` optional) |
//!
//! Completions and chats are rendered through the model's chat template (a completion as a
//! user turn and an assistant turn). With `mask_prompt`, only the last turn's tokens (the
//! completion, the final assistant message) count in the loss: the prompt is the template
//! rendered up to the last turn with the generation prompt, as mlx-lm computes it.

use std::path::{Path, PathBuf};

use lamina_generate::{ChatInput, ChatTemplate};
use lamina_loader::Tokenizer;
use serde_json::Value;

use crate::data::TokenDataset;
use crate::error::{Result, TrainError};

/// A row format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum DataFormat {
    /// `{"text": ...}`.
    Text,
    /// `{"prompt": ..., "completion": ...}`.
    Completions,
    /// `{"messages": [...], "tools": [...]}`.
    Chat,
}

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Plain text, every token predicted.
    Text(String),
    /// A prompt and its completion.
    Completion {
        /// The user's turn.
        prompt: String,
        /// The answer.
        completion: String,
    },
    /// A conversation.
    Chat {
        /// The messages, as JSON objects with `role` and `content` (and what the template
        /// reads besides: `tool_calls`, `name`, ...).
        messages: Value,
        /// Tool definitions, when the row has them.
        tools: Option<Value>,
    },
}

/// The rows of one JSONL file.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlSet {
    /// The file.
    pub path: PathBuf,
    /// Its rows' format.
    pub format: DataFormat,
    /// The rows, in file order (with their line numbers).
    pub records: Vec<(usize, Record)>,
}

/// A dataset folder's splits.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetFolder {
    /// `train.jsonl`.
    pub train: JsonlSet,
    /// `valid.jsonl`, when present.
    pub valid: Option<JsonlSet>,
    /// `test.jsonl`, when present.
    pub test: Option<JsonlSet>,
}

impl DatasetFolder {
    /// Reads `train.jsonl` (required), `valid.jsonl` and `test.jsonl` of `dir`.
    ///
    /// # Errors
    /// [`TrainError::Io`] without `train.jsonl`; [`TrainError::Dataset`] naming the file
    /// and line of a malformed row.
    pub fn read(dir: &Path) -> Result<Self> {
        let optional = |name: &str| {
            let path = dir.join(name);
            if path.is_file() { JsonlSet::read(&path).map(Some) } else { Ok(None) }
        };
        Ok(DatasetFolder {
            train: JsonlSet::read(&dir.join("train.jsonl"))?,
            valid: optional("valid.jsonl")?,
            test: optional("test.jsonl")?,
        })
    }
}

impl JsonlSet {
    /// Reads a JSONL file; its format is the first row's, and every row must have it.
    ///
    /// # Errors
    /// [`TrainError::Io`]; [`TrainError::Dataset`] naming the line of a row that is not
    /// JSON, has none of the formats' keys, has values of the wrong type, or mixes
    /// formats; a file without rows.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let fail =
            |line: usize, reason: String| TrainError::Dataset { path: path.to_path_buf(), line, reason };
        let mut format = None;
        let mut records = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(raw).map_err(|e| fail(line, format!("not JSON: {e}")))?;
            let (row_format, record) = parse_row(&value).map_err(|reason| fail(line, reason))?;
            match format {
                None => format = Some(row_format),
                Some(first) if first != row_format => {
                    return Err(fail(
                        line,
                        format!("a {row_format} row in a file of {first} rows (from its first row)"),
                    ));
                }
                Some(_) => {}
            }
            records.push((line, record));
        }
        let format = format.ok_or_else(|| fail(0, "no rows".into()))?;
        Ok(JsonlSet { path: path.to_path_buf(), format, records })
    }
}

fn parse_row(value: &Value) -> std::result::Result<(DataFormat, Record), String> {
    let object = value.as_object().ok_or("a row must be a JSON object")?;
    let string = |key: &str| match object.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("`{key}` must be a string")),
        None => Err(format!("`{key}` is missing")),
    };
    if let Some(messages) = object.get("messages") {
        let list = messages.as_array().ok_or("`messages` must be an array")?;
        if list.is_empty() {
            return Err("`messages` is empty".into());
        }
        for (i, message) in list.iter().enumerate() {
            let role = message
                .get("role")
                .and_then(Value::as_str)
                .ok_or(format!("messages[{i}] has no string `role`"))?;
            if !matches!(role, "system" | "user" | "assistant" | "tool") {
                return Err(format!("messages[{i}] has role `{role}` (system, user, assistant or tool)"));
            }
            match message.get("content") {
                Some(Value::String(_)) | Some(Value::Null) | None if message.get("tool_calls").is_some() => {}
                Some(Value::String(_)) => {}
                _ => return Err(format!("messages[{i}] has no string `content`")),
            }
        }
        let tools = match object.get("tools") {
            None | Some(Value::Null) => None,
            Some(tools @ Value::Array(_)) => Some(tools.clone()),
            Some(_) => return Err("`tools` must be an array".into()),
        };
        return Ok((DataFormat::Chat, Record::Chat { messages: messages.clone(), tools }));
    }
    if object.contains_key("prompt") || object.contains_key("completion") {
        let record = Record::Completion { prompt: string("prompt")?, completion: string("completion")? };
        return Ok((DataFormat::Completions, record));
    }
    if object.contains_key("text") {
        return Ok((DataFormat::Text, Record::Text(string("text")?)));
    }
    Err("none of `text`, `prompt`/`completion`, `messages`".into())
}

/// Turns rows into token sequences with their prompt lengths.
#[derive(Debug)]
pub struct Encoder<'a> {
    tokenizer: &'a Tokenizer,
    template: Option<ChatTemplate>,
    mask_prompt: bool,
}

impl<'a> Encoder<'a> {
    /// An encoder with the tokenizer's chat template (when it has one).
    ///
    /// # Errors
    /// [`TrainError::Data`] when the template does not compile.
    pub fn new(tokenizer: &'a Tokenizer, mask_prompt: bool) -> Result<Self> {
        let template = tokenizer
            .chat_template()
            .map(ChatTemplate::new)
            .transpose()
            .map_err(|e| TrainError::Data(format!("the chat template: {e}")))?;
        Ok(Encoder { tokenizer, template, mask_prompt })
    }

    /// The token sequences of a set's rows.
    ///
    /// # Errors
    /// [`TrainError::Dataset`] naming the line of a row the template cannot render, a
    /// chat whose last message is not the assistant's when masking, completions or chats
    /// without a chat template; [`TrainError::Data`] when no row is left.
    pub fn encode(&self, set: &JsonlSet) -> Result<TokenDataset> {
        let mut sequences = Vec::with_capacity(set.records.len());
        for (line, record) in &set.records {
            let fail = |reason: String| TrainError::Dataset { path: set.path.clone(), line: *line, reason };
            sequences.push(self.encode_record(record).map_err(fail)?);
        }
        TokenDataset::with_prompts(sequences)
    }

    /// The ids of a conversation rendered with the generation prompt (what a model
    /// answers after), for chat and completion rows; a text row's own ids.
    ///
    /// # Errors
    /// As [`Encoder::encode`], as a message.
    pub fn prompt_ids(&self, record: &Record) -> std::result::Result<Vec<u32>, String> {
        let (messages, tools) = match record {
            Record::Text(text) => return self.tokenizer.encode(text, true).map_err(|e| e.to_string()),
            Record::Completion { prompt, .. } => {
                (serde_json::json!([{ "role": "user", "content": prompt }]), None)
            }
            Record::Chat { messages, tools } => (messages.clone(), tools.as_ref()),
        };
        self.render(&messages, tools, true)
    }

    /// A conversation's ids through the chat template.
    fn render(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        add_generation_prompt: bool,
    ) -> std::result::Result<Vec<u32>, String> {
        let template =
            self.template.as_ref().ok_or("the tokenizer has no chat template for this row format")?;
        let input = ChatInput {
            messages,
            tools,
            add_generation_prompt,
            bos_token: self.tokenizer.bos_token(),
            eos_token: self.tokenizer.eos_token(),
        };
        let text = template.render_json(&input).map_err(|e| e.to_string())?;
        self.tokenizer.encode(&text, false).map_err(|e| e.to_string())
    }

    /// One row's ids and prompt length.
    pub fn encode_record(&self, record: &Record) -> std::result::Result<(Vec<u32>, usize), String> {
        let (messages, tools) = match record {
            Record::Text(text) => {
                let mut ids = self.tokenizer.encode(text, true).map_err(|e| e.to_string())?;
                ids.extend(self.tokenizer.eos_token_id());
                return Ok((ids, 0));
            }
            Record::Completion { prompt, completion } => (
                serde_json::json!([
                    { "role": "user", "content": prompt },
                    { "role": "assistant", "content": completion },
                ]),
                None,
            ),
            Record::Chat { messages, tools } => (messages.clone(), tools.as_ref()),
        };
        let list = messages.as_array().ok_or("`messages` must be an array")?;
        let ids = self.render(&messages, tools, false)?;
        if !self.mask_prompt {
            return Ok((ids, 0));
        }
        if list.last().and_then(|m| m.get("role")).and_then(Value::as_str) != Some("assistant") {
            return Err("with the prompt masked, the last message must be the assistant's".into());
        }
        let prompt = self.render(&Value::Array(list[..list.len() - 1].to_vec()), tools, true)?;
        if !ids.starts_with(&prompt) {
            return Err("the chat template renders the conversation without its prompt as a prefix".into());
        }
        Ok((ids, prompt.len()))
    }
}
