//! Structured output with the embedded SmolLM2: every output of 24 JSON schemas parses
//! and validates against its schema (checked by an independent validator), regexes and
//! Lark grammars hold, and bad grammars are refused naming the problem.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lamina::generate::{FinishReason, GenerateParams, Grammar, Message, ModelContext, SamplerConfig};
use lamina::loader::{LoadOptions, load_blocking};
use serde_json::{Value, json};

fn context() -> ModelContext {
    let path = PathBuf::from(env!("LAMINA_DEFAULT_MODEL"));
    ModelContext::new(load_blocking(path, LoadOptions::default()).unwrap()).unwrap()
}

/// (what to ask, the schema).
fn schemas() -> Vec<(&'static str, Value)> {
    let object = |properties: Value, required: Value| json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false});
    vec![
        (
            "Describe a person.",
            object(json!({"name": {"type": "string"}, "age": {"type": "integer"}}), json!(["name", "age"])),
        ),
        (
            "Give a city and its population.",
            object(
                json!({"city": {"type": "string", "maxLength": 40}, "population": {"type": "integer", "minimum": 0}}),
                json!(["city", "population"]),
            ),
        ),
        (
            "Rate a movie from 1 to 5.",
            object(
                json!({"title": {"type": "string"}, "stars": {"type": "integer", "minimum": 1, "maximum": 5}}),
                json!(["title", "stars"]),
            ),
        ),
        ("Is the sky blue?", object(json!({"answer": {"type": "boolean"}}), json!(["answer"]))),
        ("Pick a color.", object(json!({"color": {"enum": ["red", "green", "blue"]}}), json!(["color"]))),
        (
            "A temperature in Celsius.",
            object(json!({"celsius": {"type": "number", "minimum": -50, "maximum": 60}}), json!(["celsius"])),
        ),
        (
            "List three fruits.",
            object(
                json!({"fruits": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}}),
                json!(["fruits"]),
            ),
        ),
        (
            "List some numbers.",
            object(
                json!({"numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 5}}),
                json!(["numbers"]),
            ),
        ),
        (
            "Describe a book.",
            object(
                json!({"title": {"type": "string"}, "author": object(json!({"first": {"type": "string"}, "last": {"type": "string"}}), json!(["first", "last"])), "year": {"type": "integer"}}),
                json!(["title", "author", "year"]),
            ),
        ),
        (
            "A user with an optional nickname.",
            object(json!({"name": {"type": "string"}, "nickname": {"type": "string"}}), json!(["name"])),
        ),
        (
            "A US zip code.",
            object(json!({"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}), json!(["zip"])),
        ),
        (
            "A date.",
            object(
                json!({"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}}),
                json!(["date"]),
            ),
        ),
        (
            "An id or a name.",
            object(
                json!({"key": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 20}]}}),
                json!(["key"]),
            ),
        ),
        (
            "A shape.",
            json!({"anyOf": [
            object(json!({"kind": {"const": "circle"}, "radius": {"type": "number", "minimum": 0}}), json!(["kind", "radius"])),
            object(json!({"kind": {"const": "square"}, "side": {"type": "number", "minimum": 0}}), json!(["kind", "side"]))]}),
        ),
        (
            "A list of people.",
            json!({"type": "array", "items": object(json!({"name": {"type": "string", "maxLength": 30}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}), json!(["name", "age"])), "minItems": 2, "maxItems": 3}),
        ),
        (
            "A matrix of 2x2 integers.",
            json!({"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}, "minItems": 2, "maxItems": 2}),
        ),
        (
            "A product.",
            object(
                json!({"name": {"type": "string"}, "price": {"type": "number", "exclusiveMinimum": 0}, "tags": {"type": "array", "items": {"enum": ["new", "sale", "popular"]}, "maxItems": 3}, "in_stock": {"type": "boolean"}}),
                json!(["name", "price", "in_stock"]),
            ),
        ),
        (
            "A point in 3D.",
            object(
                json!({"x": {"type": "number"}, "y": {"type": "number"}, "z": {"type": "number"}}),
                json!(["x", "y", "z"]),
            ),
        ),
        (
            "A percentage.",
            object(json!({"percent": {"type": "integer", "minimum": 0, "maximum": 100}}), json!(["percent"])),
        ),
        (
            "A nullable middle name.",
            object(
                json!({"first": {"type": "string"}, "middle": {"type": ["string", "null"]}}),
                json!(["first", "middle"]),
            ),
        ),
        (
            "An event.",
            object(
                json!({"name": {"type": "string"}, "when": object(json!({"day": {"type": "integer", "minimum": 1, "maximum": 31}, "month": {"enum": ["Jan", "Feb", "Mar"]}}), json!(["day", "month"])), "attendees": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}}),
                json!(["name", "when", "attendees"]),
            ),
        ),
        (
            "A username.",
            object(
                json!({"username": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,11}$"}}),
                json!(["username"]),
            ),
        ),
        ("A yes/no answer.", json!({"enum": ["yes", "no"]})),
        ("A count.", json!({"type": "integer", "minimum": 10, "maximum": 99})),
        ("A word.", json!({"type": "string", "minLength": 3, "maxLength": 12})),
    ]
}

#[test]
fn every_output_validates_against_its_schema() {
    let mut context = context();
    let compiler = context.grammar_compiler().unwrap();
    let params = |grammar| GenerateParams {
        max_new_tokens: 160,
        sampler: SamplerConfig { repetition_penalty: 1.1, ..SamplerConfig::default() },
        constraint: Some(compiler.compile(grammar).unwrap()),
        ..GenerateParams::default()
    };
    let cases = schemas();
    assert!(cases.len() >= 20);
    for (question, schema) in cases {
        let validator = jsonschema::validator_for(&schema).unwrap();
        let ask = format!("{question} Answer in JSON.");
        let prompt = context.apply_chat_template(&[Message::user(ask)], true).unwrap();
        let out = context.generate(&prompt, &params(Grammar::JsonSchema(schema.clone()))).unwrap();
        assert_eq!(out.finish_reason, FinishReason::Eos, "{question}: unfinished {:?}", out.text);
        let value: Value = serde_json::from_str(&out.text)
            .unwrap_or_else(|e| panic!("{question}: {:?} is not JSON: {e}", out.text));
        let errors: Vec<String> = validator.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{question}: {value} breaks {schema}: {errors:?}");
    }
}

#[test]
fn regexes_and_lark_grammars_hold_and_bad_ones_are_refused() {
    let mut context = context();
    let compiler = context.grammar_compiler().unwrap();
    let ask = |context: &mut ModelContext, question: &str, grammar: Grammar| {
        let prompt = context.apply_chat_template(&[Message::user(question)], true).unwrap();
        let constraint = Some(compiler.compile(grammar).unwrap());
        let params = GenerateParams { max_new_tokens: 60, constraint, ..GenerateParams::default() };
        context.generate(&prompt, &params).unwrap()
    };
    let phone = ask(&mut context, "Give a phone number.", Grammar::Regex(r"\(\d{3}\) \d{3}-\d{4}".into()));
    assert_eq!(phone.finish_reason, FinishReason::Eos);
    let digits: Vec<char> = phone.text.chars().filter(char::is_ascii_digit).collect();
    assert!(phone.text.len() == 14 && digits.len() == 10 && phone.text.starts_with('('), "{:?}", phone.text);
    let lark = "start: \"The capital of France is \" CITY \".\"\nCITY: /[A-Z][a-z]+/\n";
    let answer = ask(&mut context, "What is the capital of France?", Grammar::Lark(lark.into()));
    assert_eq!(answer.text, "The capital of France is Paris.");
    let nested = "start: \"Answer: \" %json {\"type\": \"object\", \"properties\": {\"ok\": {\"type\": \"boolean\"}}, \"required\": [\"ok\"], \"additionalProperties\": false}\n";
    let answer = ask(&mut context, "Is water wet?", Grammar::Lark(nested.into()));
    let json = answer.text.strip_prefix("Answer: ").unwrap();
    assert!(serde_json::from_str::<Value>(json).unwrap()["ok"].is_boolean(), "{:?}", answer.text);

    for (grammar, problem) in [
        (Grammar::Regex("(unclosed".into()), "unclosed"),
        (Grammar::Lark("start: foo\n".into()), "foo"),
        (Grammar::Lark("start: (\"a\"\n".into()), "expected"),
        (Grammar::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 3})), "nsatisfiable"),
        (Grammar::JsonSchema(json!({"allOf": [{"type": "string"}, {"type": "integer"}]})), "nsatisfiable"),
        (Grammar::JsonSchema(json!({"$ref": "https://example.com/schema.json"})), "example.com"),
        (Grammar::JsonSchema(json!({"type": "frobnicate"})), "frobnicate"),
    ] {
        let error = match compiler.compile(grammar.clone()) {
            Ok(_) => panic!("{grammar:?} compiled"),
            Err(e) => e.to_string(),
        };
        assert!(error.to_lowercase().contains(&problem.to_lowercase()), "{grammar:?}: {error}");
    }
}

#[test]
fn a_tokenizer_without_bytes_is_refused_clearly() {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/checkpoints/scripted_chat");
    let context = ModelContext::new(load_blocking(folder, LoadOptions::default()).unwrap()).unwrap();
    let error = context.grammar_compiler().unwrap_err().to_string();
    assert!(error.contains("cannot drive constrained decoding"), "{error}");
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The server over loopback: `response_format` on both endpoints, forced tool calls
/// valid under their tool's schema, concurrent requests with different schemas and none
/// (one batch, a mask per row), and 400s naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_holds_responses_to_their_format() {
    let path = PathBuf::from(env!("LAMINA_DEFAULT_MODEL"));
    let context =
        ModelContext::new(lamina::loader::load(path, LoadOptions::default()).await.unwrap()).unwrap();
    let app = lamina::server::router(context, lamina::server::ServerConfig::new("smollm2")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { lamina::server::axum::serve(listener, app).await.unwrap() });

    let person = json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"], "additionalProperties": false});
    let city = json!({"type": "object", "properties": {"city": {"enum": ["Paris", "Rome", "Berlin"]}},
        "required": ["city"], "additionalProperties": false});
    let chat = |question: &str, format: Value| json!({"messages": [{"role": "user", "content": question}], "max_tokens": 80, "response_format": format});
    let bodies = [
        chat(
            "Describe a person.",
            json!({"type": "json_schema", "json_schema": {"name": "person", "schema": person, "strict": true}}),
        ),
        chat(
            "Where is the Eiffel tower?",
            json!({"type": "json_schema", "json_schema": {"name": "city", "schema": city}}),
        ),
        chat(
            "Reply with a JSON object with one key, \"name\", holding a name for a cat.",
            json!({"type": "json_object"}),
        ),
        chat("Say hello.", json!({"type": "text"})),
    ];
    let mut tasks = Vec::new();
    for body in bodies {
        let base = base.clone();
        tasks.push(tokio::spawn(async move { post(&base, "/v1/chat/completions", body).await }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
        answers.push(body["choices"][0]["message"]["content"].as_str().unwrap().to_owned());
    }
    for (answer, schema) in answers.iter().zip([&person, &city, &json!({"type": "object"})]) {
        let value: Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert!(jsonschema::is_valid(schema, &value), "{value} breaks {schema}");
    }
    assert_eq!(serde_json::from_str::<Value>(&answers[1]).unwrap()["city"], "Paris");
    assert!(serde_json::from_str::<Value>(&answers[3]).is_err(), "plain text stays free: {:?}", answers[3]);

    let (status, body) = post(&base, "/v1/completions", json!({"prompt": "A JSON list of three colors:",
        "max_tokens": 60, "response_format": {"type": "json_object", "schema": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3}}})).await;
    assert_eq!(status, 200, "{body}");
    let colors: Vec<String> = serde_json::from_str(body["choices"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(colors.len(), 3);

    // A forced call: the arguments are valid under the tool's schema.
    let parameters = json!({"type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": false});
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": parameters}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]);
    for choice in [json!({"type": "function", "function": {"name": "get_weather"}}), json!("required")] {
        let request = json!({"messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "max_tokens": 80, "tools": tools, "tool_choice": choice});
        let (status, body) = post(&base, "/v1/chat/completions", request).await;
        assert_eq!(status, 200, "{body}");
        let message = &body["choices"][0]["message"];
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
        let call = &message["tool_calls"][0]["function"];
        let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        match call["name"].as_str().unwrap() {
            "get_weather" => assert!(jsonschema::is_valid(&parameters, &arguments), "{arguments}"),
            other => assert_eq!((choice.as_str(), other), (Some("required"), "get_time")),
        }
    }

    for (format, problem) in [
        (
            json!({"type": "json_schema", "json_schema": {"schema": {"type": "integer", "minimum": 5, "maximum": 3}}}),
            "nsatisfiable",
        ),
        (json!({"type": "json_schema", "json_schema": {"schema": {"type": "frobnicate"}}}), "frobnicate"),
        (json!({"type": "json_schema", "json_schema": {"name": "x"}}), "json_schema.schema"),
    ] {
        let (status, body) = post(&base, "/v1/chat/completions", chat("Hi", format.clone())).await;
        assert_eq!((status, &body["error"]["param"]), (400, &json!("response_format")), "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(problem), "{format}: {body}");
    }
}
