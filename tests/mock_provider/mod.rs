//! A mock LLM provider for tests and benchmarks: an axum server on
//! 127.0.0.1:0 speaking OpenAI Chat Completions (`POST /v1/chat/completions`)
//! and Anthropic Messages (`POST /v1/messages`), streaming (SSE) and not,
//! plus `POST /v1/telemetry` (stores the batches it receives).
//!
//! Behaviour is scripted per model: a queue of [`Behavior`]s consumed one
//! per request, then the model's default (an `Ok` reply unless set).
//! Failures on demand: latency, HTTP errors (429 with `Retry-After`, 5xx,
//! 4xx), a connection reset (before or after the first token), malformed
//! chunks, a stall before the first token.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// What the mock does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// Answer `text` (split into word chunks when streaming) after
    /// `delay_ms` before the headers and `chunk_delay_ms` between chunks.
    Ok {
        text: String,
        delay_ms: u64,
        chunk_delay_ms: u64,
    },
    /// An HTTP error with an optional `Retry-After` value.
    Status {
        code: u16,
        retry_after: Option<String>,
        message: String,
    },
    /// Headers (200), then the connection is aborted after `tokens` chunks
    /// (0: before any token; non-streaming: a truncated body).
    Reset { tokens: usize },
    /// A chunk that is not JSON after `tokens` good chunks (non-streaming:
    /// a body that is not JSON).
    Malformed { tokens: usize },
    /// Headers (200), then nothing for `ms`, then a normal answer.
    Stall { ms: u64, text: String },
}

impl Behavior {
    pub fn ok(text: &str) -> Behavior {
        Behavior::Ok {
            text: text.into(),
            delay_ms: 0,
            chunk_delay_ms: 0,
        }
    }

    pub fn slow(text: &str, delay_ms: u64) -> Behavior {
        Behavior::Ok {
            text: text.into(),
            delay_ms,
            chunk_delay_ms: 0,
        }
    }

    pub fn status(code: u16) -> Behavior {
        Behavior::Status {
            code,
            retry_after: None,
            message: format!("mock error {code}"),
        }
    }

    pub fn rate_limited(retry_after: &str) -> Behavior {
        Behavior::Status {
            code: 429,
            retry_after: Some(retry_after.into()),
            message: "rate limited".into(),
        }
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub model: String,
    pub stream: bool,
    pub body: Value,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, VecDeque<Behavior>>,
    defaults: HashMap<String, Behavior>,
    received: Vec<Received>,
    telemetry: Vec<Value>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running mock provider.
pub struct MockProvider {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Start on 127.0.0.1:0 on the current tokio runtime.
    pub async fn start() -> MockProvider {
        let shared = Shared::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1/telemetry", post(telemetry))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockProvider { addr, shared, task }
    }

    /// The base URL (`http://127.0.0.1:PORT/v1`) for an `Endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The server root (for the telemetry uploader).
    pub fn root(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue behaviours for `model`, consumed one per request.
    pub fn script(&self, model: &str, behaviors: impl IntoIterator<Item = Behavior>) {
        self.shared
            .lock()
            .scripts
            .entry(model.to_string())
            .or_default()
            .extend(behaviors);
    }

    /// What `model` does once its script is used up.
    pub fn set_default(&self, model: &str, b: Behavior) {
        self.shared.lock().defaults.insert(model.to_string(), b);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    pub fn count(&self, model: &str) -> usize {
        self.shared
            .lock()
            .received
            .iter()
            .filter(|r| r.model == model)
            .count()
    }

    /// Telemetry batches received on `/v1/telemetry`.
    pub fn telemetry_batches(&self) -> Vec<Value> {
        self.shared.lock().telemetry.clone()
    }
}

/// A URL where nothing listens (connection refused).
pub fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}/v1")
}

fn next_behavior(
    shared: &Shared,
    body: &Value,
    path: &str,
    headers: &HeaderMap,
) -> (Behavior, String, bool) {
    let model = body["model"].as_str().unwrap_or("").to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let mut g = shared.lock();
    g.received.push(Received {
        path: path.to_string(),
        model: model.clone(),
        stream,
        body: body.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        api_key: headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    });
    let b = g
        .scripts
        .get_mut(&model)
        .and_then(VecDeque::pop_front)
        .or_else(|| g.defaults.get(&model).cloned())
        .unwrap_or_else(|| Behavior::ok(&format!("Hello from {model}")));
    (b, model, stream)
}

/// Input "tokens" the mock reports: words of every message.
fn input_tokens(body: &Value) -> u64 {
    let mut n = 0;
    if let Some(s) = body["system"].as_str() {
        n += s.split_whitespace().count();
    }
    if let Some(ms) = body["messages"].as_array() {
        for m in ms {
            n += m["content"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .count();
        }
    }
    n as u64
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    OpenAi,
    Anthropic,
}

async fn openai(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, headers, body, Proto::OpenAi).await
}

async fn anthropic(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, headers, body, Proto::Anthropic).await
}

async fn telemetry(State(s): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => {
            s.lock().telemetry.push(v);
            (StatusCode::ACCEPTED, "{}").into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad json").into_response(),
    }
}

fn full_body(proto: Proto, model: &str, text: &str, input: u64) -> Value {
    let out = words(text).len() as u64;
    match proto {
        Proto::OpenAi => json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": out, "total_tokens": input + out}
        }),
        Proto::Anthropic => json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input, "output_tokens": out}
        }),
    }
}

fn sse(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(e) => Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn stream_frames(
    proto: Proto,
    model: &str,
    tokens: &[String],
    input: u64,
) -> (Vec<Bytes>, Vec<Bytes>, Vec<Bytes>) {
    // (preamble, one frame per token, epilogue)
    let out = tokens.len() as u64;
    match proto {
        Proto::OpenAi => (
            vec![sse(
                None,
                &json!({"model": model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}).to_string(),
            )],
            tokens
                .iter()
                .map(|t| sse(None, &json!({"model": model, "choices": [{"index": 0, "delta": {"content": t}}]}).to_string()))
                .collect(),
            vec![
                sse(None, &json!({"model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}).to_string()),
                sse(None, &json!({"model": model, "choices": [], "usage": {"prompt_tokens": input, "completion_tokens": out, "total_tokens": input + out}}).to_string()),
                sse(None, "[DONE]"),
            ],
        ),
        Proto::Anthropic => (
            vec![
                sse(Some("message_start"), &json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [], "usage": {"input_tokens": input, "output_tokens": 1}}}).to_string()),
                sse(Some("content_block_start"), &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}).to_string()),
                sse(Some("ping"), &json!({"type": "ping"}).to_string()),
            ],
            tokens
                .iter()
                .map(|t| sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}).to_string()))
                .collect(),
            vec![
                sse(Some("content_block_stop"), &json!({"type": "content_block_stop", "index": 0}).to_string()),
                sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": out}}).to_string()),
                sse(Some("message_stop"), &json!({"type": "message_stop"}).to_string()),
            ],
        ),
    }
}

/// A streamed body fed by a task: frames with delays; `Err` aborts the
/// connection.
fn streamed(frames: Vec<(u64, Result<Bytes, ()>)>, content_type: &str) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for (delay, f) in frames {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let item = f.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset")
            });
            let abort = item.is_err();
            if tx.send(item).await.is_err() || abort {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn handle(s: Shared, headers: HeaderMap, raw: Bytes, proto: Proto) -> Response {
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(_) => return (StatusCode::BAD_REQUEST, "request body is not JSON").into_response(),
    };
    let path = match proto {
        Proto::OpenAi => "/v1/chat/completions",
        Proto::Anthropic => "/v1/messages",
    };
    let (behavior, model, stream) = next_behavior(&s, &body, path, &headers);
    let input = input_tokens(&body);
    let ct = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    match behavior {
        Behavior::Status {
            code,
            retry_after,
            message,
        } => {
            let err = match proto {
                Proto::OpenAi => json!({"error": {"message": message, "type": "mock_error"}}),
                Proto::Anthropic => {
                    json!({"type": "error", "error": {"type": "mock_error", "message": message}})
                }
            };
            let mut r = Response::builder()
                .status(code)
                .header("content-type", "application/json");
            if let Some(ra) = retry_after {
                r = r.header("retry-after", ra);
            }
            r.body(Body::from(err.to_string()))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Behavior::Ok {
            text,
            delay_ms,
            chunk_delay_ms,
        } => {
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            if !stream {
                return (
                    [("content-type", "application/json")],
                    full_body(proto, &model, &text, input).to_string(),
                )
                    .into_response();
            }
            let (pre, toks, post) = stream_frames(proto, &model, &words(&text), input);
            let mut frames: Vec<(u64, Result<Bytes, ()>)> =
                pre.into_iter().map(|f| (0, Ok(f))).collect();
            frames.extend(toks.into_iter().map(|f| (chunk_delay_ms, Ok(f))));
            frames.extend(post.into_iter().map(|f| (0, Ok(f))));
            streamed(frames, ct)
        }
        Behavior::Stall { ms, text } => {
            if !stream {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                return (
                    [("content-type", "application/json")],
                    full_body(proto, &model, &text, input).to_string(),
                )
                    .into_response();
            }
            let (pre, toks, post) = stream_frames(proto, &model, &words(&text), input);
            let mut frames: Vec<(u64, Result<Bytes, ()>)> =
                pre.into_iter().map(|f| (0, Ok(f))).collect();
            let mut first = true;
            for f in toks {
                frames.push((if first { ms } else { 0 }, Ok(f)));
                first = false;
            }
            frames.extend(post.into_iter().map(|f| (0, Ok(f))));
            streamed(frames, ct)
        }
        Behavior::Reset { tokens } => {
            if !stream {
                let full = full_body(proto, &model, "this answer is cut off", input).to_string();
                let half = Bytes::from(full[..full.len() / 2].to_string());
                return streamed(vec![(0, Ok(half)), (0, Err(()))], ct);
            }
            let text: Vec<String> = (0..tokens.max(1)).map(|i| format!(" tok{i}")).collect();
            let (pre, toks, _) = stream_frames(proto, &model, &text, input);
            let mut frames: Vec<(u64, Result<Bytes, ()>)> =
                pre.into_iter().map(|f| (0, Ok(f))).collect();
            frames.extend(toks.into_iter().take(tokens).map(|f| (0, Ok(f))));
            frames.push((5, Err(())));
            streamed(frames, ct)
        }
        Behavior::Malformed { tokens } => {
            if !stream {
                return (
                    [("content-type", "application/json")],
                    "{\"choices\": [oops",
                )
                    .into_response();
            }
            let text: Vec<String> = (0..tokens.max(1)).map(|i| format!(" tok{i}")).collect();
            let (pre, toks, _) = stream_frames(proto, &model, &text, input);
            let mut frames: Vec<(u64, Result<Bytes, ()>)> =
                pre.into_iter().map(|f| (0, Ok(f))).collect();
            frames.extend(toks.into_iter().take(tokens).map(|f| (0, Ok(f))));
            frames.push((
                0,
                Ok(Bytes::from("data: {\"choices\": [{\"delta\": oops\n\n")),
            ));
            streamed(frames, ct)
        }
    }
}
