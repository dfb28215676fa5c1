//! Chat templates: the Jinja templates of `tokenizer_config.json` or GGUF metadata,
//! rendered with minijinja the way transformers renders them (trimmed blocks, `tojson`,
//! `raise_exception`, Python string methods).

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Error as JinjaError, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};
use strum::{Display, EnumString};

use crate::error::{GenerateError, Result};

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Display, EnumString)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

impl Message {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into() }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

fn raise_exception(message: String) -> std::result::Result<String, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as transformers defines it: Python's `json.dumps(x, ensure_ascii=False,
/// indent=indent)` (separators `", "` and `": "`, or newlines with `indent`).
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<String, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| JinjaError::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    Ok(out)
}

fn write_python_json(value: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value {
        serde_json::Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        serde_json::Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl ChatTemplate {
    /// Compiles a template.
    ///
    /// # Errors
    /// [`GenerateError::Template`] for a template that does not parse.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| GenerateError::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| GenerateError::Template(e.to_string()))?;
        Ok(ChatTemplate { env })
    }

    /// Renders a conversation.
    ///
    /// # Errors
    /// [`GenerateError::Template`] when rendering fails (including the template's own
    /// `raise_exception`).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let messages = serde_json::to_value(messages).map_err(|e| GenerateError::Template(e.to_string()))?;
        let input =
            ChatInput { messages: &messages, tools: None, add_generation_prompt, bos_token, eos_token };
        self.render_json(&input)
    }

    /// Renders a conversation given as JSON (OpenAI-style messages with `tool_calls`,
    /// `tool_call_id`, `name`), with tool definitions when given, as transformers'
    /// `apply_chat_template(messages, tools=...)` does.
    ///
    /// # Errors
    /// [`GenerateError::Template`] when rendering fails.
    pub fn render_json(&self, input: &ChatInput<'_>) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| GenerateError::Template(e.to_string()))?;
        template
            .render(context! {
                messages => Value::from(Serde(input.messages)),
                tools => input.tools.map(|t| Value::from(Serde(t))),
                add_generation_prompt => input.add_generation_prompt,
                bos_token => input.bos_token.unwrap_or(""),
                eos_token => input.eos_token.unwrap_or(""),
            })
            .map_err(|e| GenerateError::Template(e.to_string()))
    }
}

/// What a chat template renders.
#[derive(Debug, Clone, Copy)]
pub struct ChatInput<'a> {
    /// A JSON array of messages.
    pub messages: &'a serde_json::Value,
    /// A JSON array of tool definitions (`{"type": "function", "function": {...}}`).
    pub tools: Option<&'a serde_json::Value>,
    /// End with the assistant's turn opening.
    pub add_generation_prompt: bool,
    /// The tokenizer's BOS token.
    pub bos_token: Option<&'a str>,
    /// The tokenizer's EOS token.
    pub eos_token: Option<&'a str>,
}
