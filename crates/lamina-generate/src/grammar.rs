//! What constrained decoding holds the output to (see [`GrammarCompiler`](crate::GrammarCompiler)).

use serde_json::Value;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON document valid under this JSON schema.
    JsonSchema(Value),
    /// Text matching this regular expression (Rust `regex` syntax), as a whole.
    Regex(String),
    /// Text of this Lark grammar (llguidance's dialect: `start: ...`, `%json {schema}`).
    Lark(String),
}
