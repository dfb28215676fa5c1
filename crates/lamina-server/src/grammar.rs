//! Structured output of a request as a [`Grammar`]: `response_format` (`json_object`,
//! `json_schema`) and tool calls that `tool_choice` forces (`required` or a named function),
//! written in the model's own call format with each tool's `parameters` schema.

use lamina_generate::Grammar;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::openai::ResponseFormat;
use crate::tools::ToolFormat;

/// The grammar `response_format` asks for: `None` for `text` (or no format).
///
/// # Errors
/// 400 for an unknown type, a `json_schema` without a schema, or a schema that is not an
/// object or a boolean.
pub fn response_grammar(format: Option<&ResponseFormat>) -> Result<Option<Grammar>, ApiError> {
    let Some(format) = format else { return Ok(None) };
    let bad = |message: String| ApiError::invalid(message, Some("response_format"));
    let checked = |schema: &Value| match schema {
        Value::Object(_) | Value::Bool(_) => Ok(schema.clone()),
        _ => Err(bad("the schema must be a JSON object (or a boolean)".into())),
    };
    match format.kind.as_str() {
        "text" => Ok(None),
        // llama.cpp's server takes a schema here too.
        "json_object" => match &format.schema {
            Some(schema) => Ok(Some(Grammar::JsonSchema(checked(schema)?))),
            None => Ok(Some(Grammar::JsonObject)),
        },
        "json_schema" => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|s| s.schema.as_ref())
                .ok_or_else(|| bad("`json_schema` needs `json_schema.schema`".into()))?;
            Ok(Some(Grammar::JsonSchema(checked(schema)?)))
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            Err(bad(format!(
                "`response_format` of type `{shown}` is not supported (text, json_object, json_schema)"
            )))
        }
    }
}

/// One call of any of `tools` (the template's tool list: `{"function": {"name", "parameters"}}`)
/// in `format`, as the parser of tool calls reads it. `marker` is the id of Mistral's
/// `[TOOL_CALLS]` token when the tokenizer has one.
pub fn tool_grammar(format: ToolFormat, tools: &[Value], marker: Option<u32>) -> Grammar {
    let arguments_key = match format {
        ToolFormat::Llama3Json => "parameters",
        ToolFormat::Hermes | ToolFormat::Mistral => "arguments",
    };
    let calls: Vec<Value> = tools
        .iter()
        .map(|tool| {
            let function = &tool["function"];
            let parameters = match &function["parameters"] {
                Value::Null => json!({"type": "object"}),
                given => given.clone(),
            };
            json!({
                "type": "object",
                "properties": {"name": {"const": function["name"]}, arguments_key: parameters},
                "required": ["name", arguments_key],
                "additionalProperties": false,
            })
        })
        .collect();
    let call = json!({"anyOf": calls});
    match format {
        ToolFormat::Llama3Json => Grammar::JsonSchema(call),
        ToolFormat::Hermes => Grammar::Lark(format!(
            "start: call+\ncall: \"<tool_call>\" WS? %json {call} WS? \"</tool_call>\" WS?\nWS: /[ \\n]+/\n"
        )),
        ToolFormat::Mistral => {
            let open = marker.map_or_else(|| "\"[TOOL_CALLS]\"".to_owned(), |id| format!("<[{id}]>"));
            let array = json!({"type": "array", "items": call, "minItems": 1});
            Grammar::Lark(format!("start: {open} \" \"? %json {array}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::JsonSchemaFormat;

    fn format(kind: &str) -> ResponseFormat {
        ResponseFormat { kind: kind.into(), json_schema: None, schema: None }
    }

    #[test]
    fn response_formats_map_to_grammars_and_bad_ones_are_refused() {
        assert_eq!(response_grammar(None).unwrap(), None);
        assert_eq!(response_grammar(Some(&format("text"))).unwrap(), None);
        assert_eq!(response_grammar(Some(&format("json_object"))).unwrap(), Some(Grammar::JsonObject));
        let schema = json!({"type": "integer"});
        let named = ResponseFormat {
            json_schema: Some(JsonSchemaFormat { schema: Some(schema.clone()) }),
            ..format("json_schema")
        };
        assert_eq!(response_grammar(Some(&named)).unwrap(), Some(Grammar::JsonSchema(schema)));
        for bad in [
            format("json_schema"),
            format("xml"),
            ResponseFormat { schema: Some(json!(3)), ..format("json_object") },
        ] {
            let error = response_grammar(Some(&bad)).unwrap_err();
            assert_eq!(error.param.as_deref(), Some("response_format"), "{bad:?}");
        }
    }

    #[test]
    fn forced_calls_name_each_tool_in_the_models_format() {
        let tools = [
            json!({"function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}),
        ];
        let Grammar::Lark(hermes) = tool_grammar(ToolFormat::Hermes, &tools, None) else { panic!() };
        assert!(
            hermes.contains("\"<tool_call>\"") && hermes.contains(r#"{"const":"get_weather"}"#),
            "{hermes}"
        );
        let Grammar::JsonSchema(llama) = tool_grammar(ToolFormat::Llama3Json, &tools, None) else { panic!() };
        assert_eq!(llama["anyOf"][0]["required"], json!(["name", "parameters"]));
        let Grammar::Lark(mistral) = tool_grammar(ToolFormat::Mistral, &tools, Some(9)) else { panic!() };
        assert!(mistral.starts_with("start: <[9]>"), "{mistral}");
    }
}
