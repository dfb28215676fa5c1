//! The server over loopback, with a scripted fixture model (a bigram Llama whose greedy
//! answers are known: "Hello world!" to a chat, a tool call when tools are offered, " 1 2 3
//! 1 ..." after "count"): chat, streaming, completions, tool calls, every kind of bad
//! request, a client leaving mid-stream, 32 concurrent streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lamina_generate::{BatchConfig, ModelContext};
use lamina_loader::{LoadOptions, load};
use lamina_server::{ServerConfig, router};
use serde_json::{Value, json};

async fn start(config: impl FnOnce(ServerConfig) -> ServerConfig) -> String {
    start_model("checkpoints/scripted_chat", config).await
}

/// A server of the fixture at `fixture` (under tests/fixtures).
async fn start_model(fixture: &str, config: impl FnOnce(ServerConfig) -> ServerConfig) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(fixture);
    let context = ModelContext::new(load(path, LoadOptions::default()).await.unwrap()).unwrap();
    let app = router(context, config(ServerConfig::new("scripted"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { lamina_server::axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The `data:` payloads of a server-sent event stream, `[DONE]` included.
async fn events(base: &str, path: &str, body: Value) -> Vec<String> {
    let response = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_owned())
        .collect()
}

fn chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[tokio::test]
async fn chat_answers_whole_and_streamed() {
    let base = start(|c| c).await;
    let (status, body) =
        post(&base, "/v1/chat/completions", json!({"model": "x", "messages": user("Hi")})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "scripted");
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": "Hello world!"}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(usage["completion_tokens"], 3);
    assert_eq!(usage["total_tokens"], usage["prompt_tokens"].as_u64().unwrap() + 3);

    let request = json!({"messages": user("Hi"), "stream": true, "stream_options": {"include_usage": true}});
    let chunks = chunks(&events(&base, "/v1/chat/completions", request).await);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello world!");
    let last_choice = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!((&last_choice["finish_reason"], &last_choice["delta"]), (&json!("stop"), &json!({})));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(
        (usage["choices"].as_array().unwrap().len(), &usage["usage"]["completion_tokens"]),
        (0, &json!(3))
    );

    // A second turn reuses the first's cached positions.
    let turn = json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello world!"}, {"role": "user", "content": "Tell me a story"}]);
    let (_, body) = post(&base, "/v1/chat/completions", json!({"messages": turn})).await;
    assert!(body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello world!");
}

#[tokio::test]
async fn completions_lengths_stops_logprobs_echo_and_streaming() {
    let base = start(|c| c).await;
    let (_, body) = post(&base, "/v1/completions", json!({"prompt": "count", "max_tokens": 5})).await;
    assert_eq!(body["object"], "text_completion");
    assert_eq!(
        (&body["choices"][0]["text"], &body["choices"][0]["finish_reason"]),
        (&json!(" 1 2 3 1 2"), &json!("length"))
    );
    let (_, body) =
        post(&base, "/v1/completions", json!({"prompt": "count", "max_tokens": 9, "stop": [" 3"]})).await;
    assert_eq!(
        (&body["choices"][0]["text"], &body["choices"][0]["finish_reason"]),
        (&json!(" 1 2"), &json!("stop"))
    );
    let (_, body) = post(
        &base,
        "/v1/completions",
        json!({"prompt": "count", "max_tokens": 3, "logprobs": 2, "echo": true}),
    )
    .await;
    let choice = &body["choices"][0];
    assert_eq!(choice["text"], "count 1 2 3");
    let lp = &choice["logprobs"];
    assert_eq!(lp["tokens"], json!([" 1", " 2", " 3"]));
    assert_eq!(lp["text_offset"], json!([5, 7, 9]));
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 2);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(chosen < 0.0 && chosen > -0.1, "the script is near certain: {chosen}");
        assert_eq!(top[lp["tokens"][i].as_str().unwrap()].as_f64().unwrap(), chosen);
    }
    // Token ids as the prompt; streamed.
    let count_id = 12; // "count" in the fixture's vocabulary
    let chunks = chunks(
        &events(&base, "/v1/completions", json!({"prompt": [count_id], "max_tokens": 4, "stream": true}))
            .await,
    );
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    assert_eq!(text, " 1 2 3 1");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length");
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

#[tokio::test]
async fn tool_calls_come_back_whole_and_streamed() {
    let base = start(|c| c).await;
    let request = json!({"messages": user("What is the weather in Paris?"), "tools": weather_tool()});
    let (status, body) = post(&base, "/v1/chat/completions", request.clone()).await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!((&call["type"], &call["function"]["name"]), (&json!("function"), &json!("get_weather")));
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(call["id"].as_str().unwrap().starts_with("call_"));

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let chunks = chunks(&events(&base, "/v1/chat/completions", streamed).await);
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0][0]["function"]["name"], "get_weather");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "", "the call's markup is not content");

    // The result goes back through the template; tool_choice none hides the tools.
    let history = json!([
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    ]);
    let (status, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"messages": history, "tools": weather_tool(), "tool_choice": "none"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello world!");
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let (_, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"messages": user("Hi"), "tools": weather_tool(), "tool_choice": named}),
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let base = start(|c| ServerConfig { max_body_bytes: 64 << 10, ..c }).await;
    let long_prompt = "count ".repeat(2100);
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("/v1/chat/completions", json!({"messages": "x"}), 400, Some("messages")),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            400,
            Some("messages[0].role"),
        ),
        ("/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": -1}), 400, Some("max_tokens")),
        (
            "/v1/chat/completions",
            json!({"messages": user("Hi"), "max_completion_tokens": 0}),
            400,
            Some("max_completion_tokens"),
        ),
        ("/v1/chat/completions", json!({"messages": user("Hi"), "max_tokens": "ten"}), 400, None),
        (
            "/v1/chat/completions",
            json!({"messages": user("Hi"), "temperature": 3.0}),
            400,
            Some("temperature"),
        ),
        ("/v1/chat/completions", json!({"messages": user("Hi"), "top_p": 0.0}), 400, Some("top_p")),
        ("/v1/chat/completions", json!({"messages": user("Hi"), "n": 17}), 400, Some("n")),
        ("/v1/chat/completions", json!({"messages": []}), 400, Some("messages")),
        (
            "/v1/chat/completions",
            json!({"messages": user("Hi"), "top_logprobs": 3}),
            400,
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user("Hi"), "logprobs": true, "top_logprobs": 50}),
            400,
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user("Hi"), "tools": weather_tool(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            400,
            Some("tool_choice"),
        ),
        ("/v1/chat/completions", json!({"messages": user(&long_prompt)}), 400, Some("messages")),
        ("/v1/completions", json!({"prompt": long_prompt}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": 5}), 400, None),
        ("/v1/completions", json!({"prompt": [99999]}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": ["a", "b"]}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": "count", "logprobs": 9}), 400, Some("logprobs")),
    ];
    for (path, body, status, param) in cases {
        let (got, error) = post(&base, path, body.clone()).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        if let Some(param) = param {
            assert_eq!(error["error"]["param"], param, "{body}: {error}");
        }
    }
    let (_, error) = post(&base, "/v1/completions", json!({"prompt": "count ".repeat(2100)})).await;
    assert_eq!(error["error"]["code"], "context_length_exceeded");
    let client = reqwest::Client::new();
    let raw = |path: &str, body: &'static str| client.post(format!("{base}{path}")).body(body).send();
    let response = raw("/v1/chat/completions", "{\"messages\": [").await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("not valid JSON"));
    let huge = "x".repeat(100 << 10);
    let response = client.post(format!("{base}/v1/completions")).body(huge).send().await.unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let response = client.get(format!("{base}/v1/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].is_object());
    let response = client.get(format!("{base}/v1/chat/completions")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    // Still serving.
    let (status, body) = post(&base, "/v1/chat/completions", json!({"messages": user("Hi")})).await;
    assert_eq!((status, &body["choices"][0]["message"]["content"]), (200, &json!("Hello world!")));
    let models: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "scripted");
}

async fn health(base: &str) -> Value {
    reqwest::get(format!("{base}/health")).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_client_leaving_mid_stream_frees_its_slot() {
    let base = start(|c| c).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(&json!({"prompt": "count", "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(body);
    let started = Instant::now();
    loop {
        let h = health(&base).await;
        if h["cancelled"] == 1 && h["active"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the slot was not freed: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = post(&base, "/v1/completions", json!({"prompt": "count", "max_tokens": 3})).await;
    assert_eq!((status, &body["choices"][0]["text"]), (200, &json!(" 1 2 3")));
}

#[tokio::test]
async fn thirty_two_concurrent_streams_each_get_their_answer() {
    let base =
        start(|c| ServerConfig { batch: BatchConfig { max_batch: 32, ..BatchConfig::default() }, ..c }).await;
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let chunks = chunks(
                        &events(
                            &base,
                            "/v1/chat/completions",
                            json!({"messages": user("Hi"), "stream": true}),
                        )
                        .await,
                    );
                    chunks
                        .iter()
                        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                        .collect::<String>()
                } else {
                    let n = 1 + i % 7;
                    let request = json!({"prompt": "count", "max_tokens": n, "stream": true});
                    let chunks = chunks(&events(&base, "/v1/completions", request).await);
                    chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect::<String>()
                }
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let text = task.await.unwrap();
        let expected = if i % 2 == 0 {
            "Hello world!".to_owned()
        } else {
            [" 1", " 2", " 3"].iter().cycle().take(1 + i % 7).copied().collect()
        };
        assert_eq!(text, expected, "stream {i}");
    }
    assert_eq!(health(&base).await["active"], 0);
}

#[tokio::test]
async fn a_greedy_answer_is_the_same_before_during_and_after_a_load() {
    // A quantized GGUF model (8-bit activations: any float difference moves a rounding step
    // and shows in the log-probabilities), its answer's tokens and log-probabilities alone,
    // then amid twelve other requests of other lengths (the prompt cache now holding its
    // prompt), then alone again.
    let base = start_model("gguf/tiny_quant.gguf", |c| c).await;
    let request = |prompt: Vec<u32>, n: usize| json!({"prompt": prompt, "max_tokens": n, "temperature": 0.0, "logprobs": 3});
    let probe = request(vec![5, 9, 2, 7, 11, 3, 8], 12);
    let answer = |body: &Value| body["choices"][0]["logprobs"].clone();
    let (status, before) = post(&base, "/v1/completions", probe.clone()).await;
    assert_eq!(status, 200, "{before}");
    let load: Vec<_> = (0..12u32)
        .map(|i| {
            let (base, prompt) = (base.clone(), (0..3 + 2 * i).map(|t| (t * 7 + i) % 40).collect());
            let body = request(prompt, 4 + i as usize % 5);
            tokio::spawn(async move { post(&base, "/v1/completions", body).await })
        })
        .collect();
    let (_, during) = post(&base, "/v1/completions", probe.clone()).await;
    for task in load {
        assert_eq!(task.await.unwrap().0, 200);
    }
    let (_, after) = post(&base, "/v1/completions", probe).await;
    assert_eq!(answer(&before)["tokens"].as_array().map(Vec::len), Some(12));
    assert_eq!(answer(&during), answer(&before), "during the load");
    assert_eq!(answer(&after), answer(&before), "after the load");
}

#[tokio::test]
async fn a_full_queue_is_a_503() {
    let base = start(|c| ServerConfig {
        batch: BatchConfig { max_batch: 1, ..BatchConfig::default() },
        max_queue: 0,
        ..c
    })
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/v1/completions"))
        .json(&json!({"prompt": "count", "max_tokens": 2000, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut running = response.bytes_stream();
    running.next().await.unwrap().unwrap();
    let (status, error) = post(&base, "/v1/completions", json!({"prompt": "count", "max_tokens": 2})).await;
    assert_eq!((status, &error["error"]["code"]), (503, &json!("queue_full")));
    drop(running);
}

#[tokio::test]
async fn a_saved_prompt_cache_serves_from_the_first_request_and_a_bad_one_is_refused() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat");
    let mut context = ModelContext::new(load(&path, LoadOptions::default()).await.unwrap()).unwrap();
    // The chat template's rendering of a system message, prefilled and saved.
    let system = json!([{"role": "system", "content": "You are helpful."}]);
    let tokens = context.encode("<|system|> You are helpful. <|end|> ").unwrap();
    let ids = mlx_rs::Array::from_slice(
        &tokens.iter().map(|&t| t as i32).collect::<Vec<_>>(),
        &[1, tokens.len() as i32],
    );
    let mut cache = context.model.make_cache().unwrap();
    context.model.forward(lamina_heads::ModelInput::new(&ids).with_cache(&mut cache)).unwrap();
    let file = std::env::temp_dir().join(format!("lamina-server-prompt-{}.safetensors", std::process::id()));
    lamina_generate::save_prompt_cache(&file, &cache, &tokens).unwrap();
    let app = router(
        context,
        ServerConfig { prompt_cache_files: vec![file.clone()], ..ServerConfig::new("scripted") },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { lamina_server::axum::serve(listener, app).await.unwrap() });
    let mut messages = system.as_array().unwrap().clone();
    messages.push(json!({"role": "user", "content": "Hi"}));
    let (status, body) = post(&base, "/v1/chat/completions", json!({"messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], tokens.len());
    assert_eq!(body["choices"][0]["message"]["content"], "Hello world!");
    // A file that is not a prompt cache stops the start with a reason.
    let context = ModelContext::new(load(&path, LoadOptions::default()).await.unwrap()).unwrap();
    let bad = path.join("config.json");
    let err = router(context, ServerConfig { prompt_cache_files: vec![bad], ..ServerConfig::new("x") })
        .unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn n_choices_sample_apart_stream_with_their_index_and_repeat_with_a_seed() {
    let base = start(|c| c).await;
    // The script's counting tokens pushed down to the others' level: sampling is then
    // near uniform, and choices seeded apart differ.
    let folder =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat");
    let tokenizer = lamina_loader::Tokenizer::from_folder(&folder).unwrap();
    let bias: serde_json::Map<String, Value> = [" 1", " 2", " 3"]
        .iter()
        .map(|t| (tokenizer.token_to_id(t).unwrap().to_string(), json!(-11.0)))
        .collect();
    let body = json!({"prompt": "count", "max_tokens": 6, "n": 3, "temperature": 1.0, "seed": 11, "logit_bias": bias});
    let (status, first) = post(&base, "/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let texts: Vec<&str> =
        first["choices"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    let indices: Vec<u64> =
        first["choices"].as_array().unwrap().iter().map(|c| c["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2]);
    assert!(texts[0] != texts[1] || texts[1] != texts[2], "{texts:?}");
    // Usage adds the choices' tokens (1 to 6 each), the prompt counted once.
    let completion = first["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((3..=18).contains(&completion) && first["usage"]["prompt_tokens"] == 1, "{first}");
    let (_, again) = post(&base, "/v1/completions", body.clone()).await;
    assert_eq!(again["choices"], first["choices"], "a seeded request repeats");
    // Streamed: chunks name their choice; each choice's text is the whole body's.
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let chunks = chunks(&events(&base, "/v1/completions", stream_body).await);
    let mut streamed = vec![String::new(); 3];
    let mut finished = [0; 3];
    for chunk in &chunks {
        let choice = &chunk["choices"][0];
        let index = choice["index"].as_u64().unwrap() as usize;
        streamed[index].push_str(choice["text"].as_str().unwrap());
        finished[index] += usize::from(!choice["finish_reason"].is_null());
    }
    assert_eq!(streamed, texts);
    assert_eq!(finished, [1, 1, 1]);
    // Chat: every choice is a message.
    let (status, chat) = post(&base, "/v1/chat/completions", json!({"messages": user("Hi"), "n": 2})).await;
    assert_eq!(status, 200, "{chat}");
    for choice in chat["choices"].as_array().unwrap() {
        assert_eq!(choice["message"]["content"], "Hello world!");
    }
    for n in [0, 17, -1] {
        let (status, error) = post(&base, "/v1/completions", json!({"prompt": "count", "n": n})).await;
        assert_eq!((status, &error["error"]["param"]), (400, &json!("n")), "{error}");
    }
}

#[tokio::test]
async fn a_drafting_server_answers_as_the_batch_does_and_reports_its_drafts() {
    let plain = start(|c| c).await;
    let drafted =
        start(|c| ServerConfig { draft: Some(lamina_generate::DraftParams::prompt_lookup(2, 3)), ..c }).await;
    let body = json!({"prompt": "count", "max_tokens": 12});
    let (_, expected) = post(&plain, "/v1/completions", body.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (base, body) = (drafted.clone(), body.clone());
        tasks.push(tokio::spawn(async move { post(&base, "/v1/completions", body).await }));
    }
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["text"], expected["choices"][0]["text"], "{answer}");
        let details = &answer["usage"]["completion_tokens_details"];
        assert!(details["accepted_prediction_tokens"].as_u64().unwrap() > 0, "{answer}");
    }
    assert!(expected["usage"].get("completion_tokens_details").is_none(), "{expected}");
    // Streamed, with log-probabilities (a batch of one), and a chat.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let text: String = chunks(&events(&drafted, "/v1/completions", streamed).await)
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, expected["choices"][0]["text"].as_str().unwrap());
    let (status, with_logprobs) =
        post(&drafted, "/v1/completions", json!({"prompt": "count", "max_tokens": 3, "logprobs": 2})).await;
    assert_eq!(status, 200, "{with_logprobs}");
    assert_eq!(with_logprobs["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len(), 3);
    let (status, chat) = post(&drafted, "/v1/chat/completions", json!({"messages": user("Hi")})).await;
    assert_eq!((status, &chat["choices"][0]["message"]["content"]), (200, &json!("Hello world!")), "{chat}");
}

#[tokio::test]
async fn a_kv_quantization_the_model_cannot_take_is_refused_at_start() {
    use lamina_generate::{BatchConfig, KvQuantization};
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat");
    for (bits, group_size, reason) in [(7, 32, "bits"), (8, 32, "head dimension 16")] {
        let context = ModelContext::new(load(&path, LoadOptions::default()).await.unwrap()).unwrap();
        let kv = Some(KvQuantization { bits, group_size, start: 0 });
        let config = ServerConfig {
            batch: BatchConfig { kv_quantization: kv, ..BatchConfig::default() },
            ..ServerConfig::new("scripted")
        };
        let Err(error) = router(context, config) else {
            panic!("{bits} bits in groups of {group_size} accepted")
        };
        assert!(matches!(error, lamina_server::StartError::KvQuantization(_)), "{error}");
        assert!(error.to_string().contains(reason), "{error}");
    }
}
