//! Tool calls in model output, as the common chat templates make models write them, turned
//! into OpenAI `tool_calls` while the text streams:
//!
//! - Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, any number;
//! - Llama 3: the whole answer is `{"name": ..., "parameters": {...}}` (optionally after
//!   `<|python_tag|>`);
//! - Mistral: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`.
//!
//! Text outside a call streams as content; text that looked like a call but does not parse
//! is given back as content.

use serde_json::Value;
use strum::Display;

/// How a model writes its tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display)]
#[strum(serialize_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>{json}</tool_call>` (Hermes, Qwen 2.5/3, SmolLM3).
    Hermes,
    /// A bare JSON object as the whole answer (Llama 3.1+).
    Llama3Json,
    /// `[TOOL_CALLS]` followed by a JSON array (Mistral).
    Mistral,
}

impl ToolFormat {
    /// The format a chat template asks for (Hermes when it does not say).
    pub fn detect(template: Option<&str>) -> Self {
        match template {
            Some(t) if t.contains("[TOOL_CALLS]") => ToolFormat::Mistral,
            Some(t) if t.contains("<tool_call>") => ToolFormat::Hermes,
            Some(t) if t.contains("<|python_tag|>") || t.contains("ipython") => ToolFormat::Llama3Json,
            _ => ToolFormat::Hermes,
        }
    }
}

/// One parsed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON string (as OpenAI sends them).
    pub arguments: String,
}

/// What the parser releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolEvent {
    /// Plain text.
    Content(String),
    /// A complete call.
    Call(ToolCall),
}

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

/// Splits streamed text into content and tool calls.
#[derive(Debug, Clone)]
pub struct ToolCallParser {
    format: ToolFormat,
    pending: String,
    in_call: bool,
    started: bool,
}

impl ToolCallParser {
    /// A parser for `format`.
    pub fn new(format: ToolFormat) -> Self {
        ToolCallParser { format, pending: String::new(), in_call: false, started: false }
    }

    /// Adds text; returns what can be released.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.pending.push_str(text);
        match self.format {
            ToolFormat::Hermes => self.push_hermes(),
            ToolFormat::Mistral => self.push_marker(MISTRAL_OPEN),
            ToolFormat::Llama3Json => self.push_llama(),
        }
    }

    /// The end of the text: releases what is held (an unfinished or unparsable call as
    /// content).
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let rest = std::mem::take(&mut self.pending);
        if !self.in_call {
            return content(rest);
        }
        self.in_call = false;
        let body = match self.format {
            ToolFormat::Hermes => rest.strip_prefix(HERMES_OPEN).unwrap_or(&rest),
            ToolFormat::Mistral => rest.strip_prefix(MISTRAL_OPEN).unwrap_or(&rest),
            ToolFormat::Llama3Json => rest.trim_start().strip_prefix(PYTHON_TAG).unwrap_or(&rest),
        };
        match parse_calls(body) {
            Some(calls) => calls.into_iter().map(ToolEvent::Call).collect(),
            None => content(rest),
        }
    }

    fn push_hermes(&mut self) -> Vec<ToolEvent> {
        let mut out = Vec::new();
        loop {
            if self.in_call {
                let Some(end) = self.pending.find(HERMES_CLOSE) else { return out };
                let call: String = self.pending.drain(..end + HERMES_CLOSE.len()).collect();
                let body = &call[HERMES_OPEN.len()..call.len() - HERMES_CLOSE.len()];
                self.in_call = false;
                match parse_calls(body) {
                    Some(calls) => out.extend(calls.into_iter().map(ToolEvent::Call)),
                    None => out.extend(content(call)),
                }
            } else {
                match self.pending.find(HERMES_OPEN) {
                    Some(start) => {
                        out.extend(content(self.pending.drain(..start).collect()));
                        self.in_call = true;
                    }
                    None => {
                        out.extend(self.release_before(HERMES_OPEN));
                        return out;
                    }
                }
            }
        }
    }

    /// Everything after `marker` is the calls, parsed at the end.
    fn push_marker(&mut self, marker: &str) -> Vec<ToolEvent> {
        if self.in_call {
            return Vec::new();
        }
        match self.pending.find(marker) {
            Some(start) => {
                let before: String = self.pending.drain(..start).collect();
                self.in_call = true;
                content(before)
            }
            None => self.release_before(marker),
        }
    }

    /// A call only when the answer starts with `{` or the Python tag.
    fn push_llama(&mut self) -> Vec<ToolEvent> {
        if self.in_call {
            return Vec::new();
        }
        if self.started {
            return content(std::mem::take(&mut self.pending));
        }
        let trimmed = self.pending.trim_start();
        if trimmed.is_empty() || PYTHON_TAG.starts_with(trimmed) {
            return Vec::new();
        }
        self.started = true;
        if trimmed.starts_with('{') || trimmed.starts_with(PYTHON_TAG) {
            self.in_call = true;
            return Vec::new();
        }
        content(std::mem::take(&mut self.pending))
    }

    /// Releases the pending text but a suffix that could begin `marker`.
    fn release_before(&mut self, marker: &str) -> Vec<ToolEvent> {
        let hold = (1..marker.len())
            .rev()
            .find(|&n| marker.is_char_boundary(n) && self.pending.ends_with(&marker[..n]))
            .unwrap_or(0);
        let release = self.pending.len() - hold;
        content(self.pending.drain(..release).collect())
    }
}

fn content(text: String) -> Vec<ToolEvent> {
    if text.is_empty() { Vec::new() } else { vec![ToolEvent::Content(text)] }
}

/// One call object or an array of them: `{"name", "arguments" | "parameters"}`.
fn parse_calls(body: &str) -> Option<Vec<ToolCall>> {
    let value: Value = serde_json::from_str(body.trim()).ok()?;
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .map(|item| {
            let name = item.get("name")?.as_str()?.to_owned();
            let arguments =
                item.get("arguments").or_else(|| item.get("parameters")).cloned().unwrap_or(Value::Null);
            let arguments = match arguments {
                Value::String(s) => s,
                Value::Null => "{}".to_owned(),
                other => other.to_string(),
            };
            Some(ToolCall { name, arguments })
        })
        .collect::<Option<Vec<_>>>()
        .filter(|calls| !calls.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: ToolFormat, pieces: &[&str]) -> Vec<ToolEvent> {
        let mut parser = ToolCallParser::new(format);
        let mut out: Vec<ToolEvent> = pieces.iter().flat_map(|p| parser.push(p)).collect();
        out.extend(parser.finish());
        // Merge adjacent content for comparison.
        let mut merged: Vec<ToolEvent> = Vec::new();
        for event in out {
            match (merged.last_mut(), event) {
                (Some(ToolEvent::Content(a)), ToolEvent::Content(b)) => a.push_str(&b),
                (_, e) => merged.push(e),
            }
        }
        merged
    }

    fn call(name: &str, arguments: &str) -> ToolEvent {
        ToolEvent::Call(ToolCall { name: name.into(), arguments: arguments.into() })
    }

    #[test]
    fn hermes_calls_split_across_pieces_come_out_whole() {
        let pieces = [
            "Let me check.<tool",
            "_call>\n{\"name\": \"f\", \"argu",
            "ments\": {\"x\": 1}}\n</tool_call>",
            "<tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call> done",
        ];
        assert_eq!(
            run(ToolFormat::Hermes, &pieces),
            [
                ToolEvent::Content("Let me check.".into()),
                call("f", r#"{"x":1}"#),
                call("g", "{}"),
                ToolEvent::Content(" done".into())
            ]
        );
    }

    #[test]
    fn unparsable_or_unfinished_calls_come_back_as_text() {
        assert_eq!(
            run(ToolFormat::Hermes, &["<tool_call>not json</tool_call>"]),
            [ToolEvent::Content("<tool_call>not json</tool_call>".into())]
        );
        assert_eq!(
            run(ToolFormat::Hermes, &["a <tool_call>{\"name\": \"f\"}"]),
            [ToolEvent::Content("a ".into()), call("f", "{}")]
        );
        assert_eq!(run(ToolFormat::Hermes, &["x <tool_c"]), [ToolEvent::Content("x <tool_c".into())]);
        assert_eq!(
            run(ToolFormat::Llama3Json, &["{ not a call"]),
            [ToolEvent::Content("{ not a call".into())]
        );
    }

    #[test]
    fn llama_and_mistral_formats() {
        assert_eq!(
            run(ToolFormat::Llama3Json, &["  {\"name\": \"f\", ", "\"parameters\": {\"a\": \"b\"}}"]),
            [call("f", r#"{"a":"b"}"#)]
        );
        assert_eq!(run(ToolFormat::Llama3Json, &["<|python", "_tag|>{\"name\": \"f\"}"]), [call("f", "{}")]);
        assert_eq!(run(ToolFormat::Llama3Json, &["Hello {x}"]), [ToolEvent::Content("Hello {x}".into())]);
        assert_eq!(
            run(
                ToolFormat::Mistral,
                &[
                    "ok [TOOL_",
                    "CALLS] [{\"name\": \"f\", \"arguments\": {}}, {\"name\": \"g\", \"arguments\": \"{}\"}]"
                ]
            ),
            [ToolEvent::Content("ok ".into()), call("f", "{}"), call("g", "{}")]
        );
        assert_eq!(ToolFormat::detect(Some("{{ '[TOOL_CALLS]' }}")), ToolFormat::Mistral);
        assert_eq!(ToolFormat::detect(Some("<tool_call>")), ToolFormat::Hermes);
        assert_eq!(ToolFormat::detect(Some("<|python_tag|>")), ToolFormat::Llama3Json);
        assert_eq!(ToolFormat::detect(None), ToolFormat::Hermes);
    }
}
