//! One client cannot hurt another: huge prompts are refused before they are tokenized and
//! never stall `/health`; every numeric field is range-checked against the model; unknown
//! fields are refused; `logit_bias` works (in a batch too); good requests beside bad ones
//! all succeed; a panic inside the engine fails the requests in flight with a plain 500,
//! the engine restarts, and after repeated failures `/health` says 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lamina_backbones::ModelCache;
use lamina_components::{Quantizable, VisitLayers};
use lamina_core::{ModelOutput, Result};
use lamina_families::{LanguageModel, ModelInfo, Weights};
use lamina_generate::ModelContext;
use lamina_heads::ModelInput;
use lamina_loader::{LoadOptions, LoadedModel, load};
use lamina_server::{ServerConfig, router};
use mlx_rs::module::{ModuleParamMut, ModuleParamRef, ModuleParameters};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoints/scripted_chat")
}

async fn loaded() -> LoadedModel {
    load(fixture(), LoadOptions::default()).await.unwrap()
}

/// Serves on a runtime of its own (two workers, as `serve` runs it), so that the test's
/// clients do not share the server's workers.
async fn serve(context: ModelContext) -> String {
    let app = router(context, ServerConfig::new("scripted")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            lamina_server::axum::serve(listener, app).await.unwrap()
        })
    });
    format!("http://{address}")
}

async fn start() -> String {
    serve(ModelContext::new(loaded().await).unwrap()).await
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(format!("{base}{path}")).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn health(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/health")).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// `GET /health` over a plain socket on a thread of its own: the status line and how long
/// the whole answer took.
fn raw_health(base: &str) -> (String, Duration) {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let started = Instant::now();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    write!(socket, "GET /health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    (answer.lines().next().unwrap_or_default().to_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_prompts_are_refused_at_once_and_health_stays_quick() {
    let base = start().await;
    let huge = "count ".repeat(4_000_000 / 6);
    let bodies: Vec<(&str, Vec<u8>)> = (0..3)
        .map(|i| match i % 2 {
            0 => ("/v1/chat/completions", serde_json::to_vec(&json!({"messages": user(&huge)})).unwrap()),
            _ => ("/v1/completions", serde_json::to_vec(&json!({"prompt": huge})).unwrap()),
        })
        .collect();
    let poller = {
        let base = base.clone();
        std::thread::spawn(move || {
            let polling = Instant::now();
            let mut answers = Vec::new();
            while polling.elapsed() < Duration::from_millis(800) {
                answers.push(raw_health(&base));
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    let mut tasks = Vec::new();
    for (path, body) in bodies {
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let client = reqwest::Client::new();
            let response =
                client.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            let status = response.status().as_u16();
            let error: Value = response.json().await.unwrap();
            (status, error, started.elapsed())
        }));
    }
    for task in tasks {
        let (status, error, took) = task.await.unwrap();
        assert_eq!((status, &error["error"]["code"]), (400, &json!("context_length_exceeded")), "{error}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
    let answers = poller.join().unwrap();
    assert!(answers.len() > 10, "{answers:?}");
    for (status, took) in &answers {
        assert!(status.contains(" 200 "), "{status}");
        assert!(*took < Duration::from_millis(100), "/health took {took:?}: {answers:?}");
    }
    let (status, body) = post(&base, "/v1/completions", &json!({"prompt": "count", "max_tokens": 3})).await;
    assert_eq!((status, &body["choices"][0]["text"]), (200, &json!(" 1 2 3")));
}

#[tokio::test]
async fn numeric_fields_are_range_checked_and_unknown_fields_refused() {
    let base = start().await;
    let chat = |extra: Value| {
        let mut body = json!({"messages": user("Hi")});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (json!({"top_k": 1u64 << 31}), "top_k"),
        (json!({"top_k": 1u64 << 32}), "top_k"),
        (json!({"top_k": 33}), "top_k"),
        (json!({"top_k": -1}), "top_k"),
        (json!({"presence_penalty": 2.5}), "presence_penalty"),
        (json!({"frequency_penalty": -3}), "frequency_penalty"),
        (json!({"logit_bias": {"32": 1}}), "logit_bias"),
        (json!({"logit_bias": {"x": 1}}), "logit_bias"),
        (json!({"logit_bias": {"-1": 1}}), "logit_bias"),
        (json!({"logit_bias": {"4294967296": 1}}), "logit_bias"),
        (json!({"logit_bias": {"3": 101}}), "logit_bias"),
        (json!({"logit_bias": {"3": 1e300}}), "logit_bias"),
        (json!({"temperature": 1e39}), "temperature"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"n": 4294967297u64}), "n"),
        // The fixture's word-level tokenizer cannot drive constrained decoding.
        (json!({"response_format": {"type": "json_object"}}), "response_format"),
        (json!({"response_format": {"type": "json_schema"}}), "response_format"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
            "response_format",
        ),
        (json!({"response_format": {"type": "xml"}}), "response_format"),
        (json!({"parallel_tool_calls": false}), "parallel_tool_calls"),
        (json!({"frobnicate": true}), "frobnicate"),
        (json!({"functions": []}), "functions"),
    ];
    for (extra, field) in cases {
        let (status, error) = post(&base, "/v1/chat/completions", &chat(extra.clone())).await;
        assert_eq!(status, 400, "{extra}: {error}");
        let param = error["error"]["param"].as_str().unwrap_or_default();
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(param == field || message.contains(field), "{extra}: {error}");
    }
    let (status, error) = post(&base, "/v1/completions", &json!({"prompt": "count", "suffix": "x"})).await;
    assert_eq!((status, &error["error"]["code"]), (400, &json!("unsupported_parameter")), "{error}");
    // Fields that change nothing, and defaults, are accepted.
    let accepted = chat(json!({"model": "x", "user": "u1", "n": 1, "response_format": {"type": "text"},
        "presence_penalty": 0, "frequency_penalty": 0, "parallel_tool_calls": true, "top_k": 32}));
    let (status, body) = post(&base, "/v1/chat/completions", &accepted).await;
    assert_eq!((status, &body["choices"][0]["message"]["content"]), (200, &json!("Hello world!")), "{body}");
}

#[tokio::test]
async fn logit_bias_moves_the_answer_in_a_batch_too() {
    let tokenizer = loaded().await.tokenizer.unwrap();
    // The id the script answers " 1" with (its text is not tokenized back to it).
    let count = tokenizer.encode("count", false).unwrap();
    let one: Vec<u32> =
        (0..32).filter(|&id| tokenizer.decode(&[count[0], id], false).unwrap() == "count 1").collect();
    assert_eq!(one.len(), 1, "{one:?}");
    let base = start().await;
    let plain = json!({"prompt": "count", "max_tokens": 3});
    let banned = json!({"prompt": "count", "max_tokens": 3, "logit_bias": {one[0].to_string(): -100}});
    let forced = json!({"prompt": "count", "max_tokens": 3, "logit_bias": {one[0].to_string(): 100}});
    let mut tasks = Vec::new();
    for body in [plain.clone(), banned.clone(), forced.clone(), plain, banned, forced] {
        let base = base.clone();
        tasks.push(tokio::spawn(async move { post(&base, "/v1/completions", &body).await }));
    }
    let mut texts = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        texts.push(body["choices"][0]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(texts[0], " 1 2 3");
    assert!(!texts[1].starts_with(" 1"), "{texts:?}");
    assert_eq!(texts[2], " 1 1 1");
    assert_eq!(texts[..3], texts[3..], "each row keeps its own bias");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_requests_beside_bad_ones_all_succeed() {
    let base = start().await;
    for round in 0..12 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let body = match i {
                    1 => json!({"prompt": "count", "top_k": 1u64 << 32}),
                    3 => json!({"prompt": [99999]}),
                    5 => json!({"prompt": "", "max_tokens": 2}),
                    _ => json!({"prompt": "count", "max_tokens": 3}),
                };
                (i, post(&base, "/v1/completions", &body).await)
            }));
        }
        for task in tasks {
            let (i, (status, body)) = task.await.unwrap();
            match i {
                0 | 2 | 4 => {
                    assert_eq!(
                        (status, &body["choices"][0]["text"]),
                        (200, &json!(" 1 2 3")),
                        "round {round}: {body}"
                    )
                }
                _ => assert_eq!(status, 400, "round {round}, request {i}: {body}"),
            }
        }
    }
    let (status, body) = health(&base).await;
    assert_eq!((status, &body["restarts"]), (200, &json!(0)));
}

/// The fixture model, but its forward pass panics on a prompt holding `trip` (the ids of
/// "count" are used: any prompt that says "count" trips it while armed).
#[derive(Debug)]
struct Tripwire {
    inner: Box<dyn LanguageModel>,
    trip: i32,
    /// Panics left to throw.
    armed: Arc<AtomicU32>,
}

impl ModuleParameters for Tripwire {
    fn num_parameters(&self) -> usize {
        self.inner.num_parameters()
    }
    fn parameters(&self) -> ModuleParamRef<'_> {
        self.inner.parameters()
    }
    fn parameters_mut(&mut self) -> ModuleParamMut<'_> {
        self.inner.parameters_mut()
    }
    fn trainable_parameters(&self) -> ModuleParamRef<'_> {
        self.inner.trainable_parameters()
    }
    fn freeze_parameters(&mut self, recursive: bool) {
        self.inner.freeze_parameters(recursive)
    }
    fn unfreeze_parameters(&mut self, recursive: bool) {
        self.inner.unfreeze_parameters(recursive)
    }
    fn all_frozen(&self) -> Option<bool> {
        self.inner.all_frozen()
    }
    fn any_frozen(&self) -> Option<bool> {
        self.inner.any_frozen()
    }
}

impl VisitLayers for Tripwire {
    fn visit_layers(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, Quantizable<'_>) -> Result<()>,
    ) -> Result<()> {
        self.inner.visit_layers(prefix, f)
    }
}

impl LanguageModel for Tripwire {
    fn forward(&mut self, input: ModelInput<'_>) -> Result<ModelOutput> {
        let ids = input.input_ids.as_dtype(mlx_rs::Dtype::Int32).unwrap();
        if ids.as_slice::<i32>().contains(&self.trip)
            && self.armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            panic!("tripwire");
        }
        self.inner.forward(input)
    }
    fn make_cache(&self) -> Result<ModelCache> {
        self.inner.make_cache()
    }
    fn info(&self) -> ModelInfo {
        self.inner.info()
    }
    fn training_mode(&mut self, training: bool) {
        self.inner.training_mode(training)
    }
    fn set_gradient_checkpointing(&mut self, on: bool) {
        self.inner.set_gradient_checkpointing(on)
    }
    fn sanitize(&self, weights: Weights) -> Result<Weights> {
        self.inner.sanitize(weights)
    }
}

async fn tripwired(panics: u32) -> (String, Arc<AtomicU32>) {
    let loaded = loaded().await;
    let trip = loaded.tokenizer.as_ref().unwrap().encode("count", false).unwrap()[0] as i32;
    let ModelContext { model, tokenizer, chat_template, configuration, pipeline_layers } =
        ModelContext::new(loaded).unwrap();
    let armed = Arc::new(AtomicU32::new(panics));
    let model = Box::new(Tripwire { inner: model, trip, armed: armed.clone() });
    let context = ModelContext { model, tokenizer, chat_template, configuration, pipeline_layers };
    (serve(context).await, armed)
}

#[tokio::test]
async fn a_panic_in_the_engine_is_a_plain_500_and_the_engine_restarts() {
    let (base, _armed) = tripwired(1).await;
    let (status, error) = post(&base, "/v1/completions", &json!({"prompt": "count", "max_tokens": 3})).await;
    assert_eq!(status, 500, "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("the model failed"), "{message}");
    assert!(!message.contains("tripwire") && !message.contains(".rs"), "internals leaked: {message}");
    // Restarted: the next requests are answered, and /health counts the restart.
    let (status, body) = post(&base, "/v1/completions", &json!({"prompt": "count", "max_tokens": 3})).await;
    assert_eq!((status, &body["choices"][0]["text"]), (200, &json!(" 1 2 3")), "{body}");
    let (status, body) = post(&base, "/v1/chat/completions", &json!({"messages": user("Hi")})).await;
    assert_eq!((status, &body["choices"][0]["message"]["content"]), (200, &json!("Hello world!")));
    let (status, body) = health(&base).await;
    assert_eq!((status, &body["status"], &body["restarts"]), (200, &json!("ok"), &json!(1)));
}

#[tokio::test]
async fn repeated_failures_stop_the_engine_and_health_says_503() {
    let (base, _armed) = tripwired(u32::MAX).await;
    for _ in 0..=lamina_server::MAX_RESTARTS {
        let (status, _) = post(&base, "/v1/completions", &json!({"prompt": "count", "max_tokens": 3})).await;
        assert_eq!(status, 500);
    }
    let (status, body) = health(&base).await;
    assert_eq!((status, &body["status"]), (503, &json!("unavailable")), "{body}");
    let (status, error) = post(&base, "/v1/chat/completions", &json!({"messages": user("Hi")})).await;
    assert_eq!(status, 503, "{error}");
}
