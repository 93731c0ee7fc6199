//! One HTTP attempt against one endpoint: request building, response and
//! stream parsing, timeouts and error classification.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::{Instant, timeout_at};

use super::sse::{SseEvent, SseParser};
use super::{CallOptions, Endpoint, Protocol};
use crate::model::{Message, ModelConfig};
use crate::route::FailureClass;

/// The request of one attempt.
pub(crate) struct CallRequest<'a> {
    pub model: &'a str,
    pub messages: &'a [Message],
    pub config: &'a ModelConfig,
    pub stream: bool,
}

/// A successful attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallResult {
    pub text: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_input_tokens: Option<u64>,
    pub finish_reason: Option<String>,
    pub response_model: Option<String>,
    pub ttft: Option<Duration>,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub(crate) struct CallError {
    pub class: FailureClass,
    /// A finer name than the class (`ttft_timeout`, `auth`, `stream_error`).
    pub error_type: &'static str,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// Tokens had already reached the caller: never failed over.
    pub after_first_token: bool,
    /// Text received before the failure.
    pub partial: String,
}

impl CallError {
    fn new(class: FailureClass, error_type: &'static str, message: impl Into<String>) -> Self {
        CallError {
            class,
            error_type,
            status: None,
            message: message.into(),
            retry_after_ms: None,
            after_first_token: false,
            partial: String::new(),
        }
    }
}

fn classify_reqwest(e: &reqwest::Error, during: &str) -> CallError {
    // Never include the URL's secrets: reqwest errors carry the URL, which
    // has no key (keys go in headers), but strip it anyway.
    let msg = e.without_url_ref_message();
    if e.is_timeout() {
        CallError::new(FailureClass::Timeout, "timeout", format!("{during}: {msg}"))
    } else if e.is_connect() {
        CallError::new(FailureClass::Connect, "connect", format!("{during}: {msg}"))
    } else {
        CallError::new(
            FailureClass::Connect,
            "stream_error",
            format!("{during}: {msg}"),
        )
    }
}

trait WithoutUrl {
    fn without_url_ref_message(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref_message(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), "<url>");
        }
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

fn build_body(ep: &Endpoint, req: &CallRequest<'_>) -> Value {
    let cfg = req.config;
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    match ep.protocol {
        Protocol::OpenAi => {
            let msgs: Vec<Value> = req
                .messages
                .iter()
                .map(|m| {
                    let mut o = json!({"role": m.role, "content": m.content});
                    if let Some(n) = &m.name {
                        o["name"] = json!(n);
                    }
                    o
                })
                .collect();
            body.insert("messages".into(), Value::Array(msgs));
            if let Some(t) = cfg.max_tokens {
                body.insert("max_tokens".into(), json!(t));
            }
            if !cfg.stop.is_empty() {
                body.insert("stop".into(), json!(cfg.stop));
            }
            if req.stream {
                body.insert("stream".into(), json!(true));
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        Protocol::Anthropic => {
            let system: Vec<&str> = req
                .messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.as_str())
                .collect();
            if !system.is_empty() {
                body.insert("system".into(), json!(system.join("\n\n")));
            }
            let msgs: Vec<Value> = req
                .messages
                .iter()
                .filter(|m| m.role != "system")
                .map(|m| json!({"role": m.role, "content": m.content}))
                .collect();
            body.insert("messages".into(), Value::Array(msgs));
            // Anthropic requires max_tokens.
            body.insert("max_tokens".into(), json!(cfg.max_tokens.unwrap_or(1024)));
            if !cfg.stop.is_empty() {
                body.insert("stop_sequences".into(), json!(cfg.stop));
            }
            if req.stream {
                body.insert("stream".into(), json!(true));
            }
        }
    }
    if let Some(t) = cfg.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = cfg.top_p {
        body.insert("top_p".into(), json!(p));
    }
    // Unknown config keys pass through untouched (not ours to judge).
    for (k, v) in &cfg.extra {
        body.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(body)
}

fn retry_after_ms(h: &reqwest::header::HeaderMap) -> Option<u64> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(ms.max(0.0) as u64);
    }
    h.get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| (s.max(0.0) * 1000.0) as u64)
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The provider's error message from an error body, if it has one.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let msg = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(|m| m.as_str().map(String::from));
    truncate(msg.as_deref().unwrap_or(&text), 300)
}

fn status_error(status: u16, retry: Option<u64>, body: &[u8]) -> CallError {
    let (class, et) = match status {
        429 => (FailureClass::RateLimited, "rate_limited"),
        500..=599 => (FailureClass::ServerError, "server_error"),
        401 | 403 => (FailureClass::ClientError, "auth"),
        _ => (FailureClass::ClientError, "client_error"),
    };
    let mut e = CallError::new(class, et, error_message(body));
    e.status = Some(status);
    e.retry_after_ms = retry;
    e
}

fn malformed(message: impl Into<String>) -> CallError {
    CallError::new(
        FailureClass::MalformedResponse,
        "malformed_response",
        message,
    )
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

fn parse_full(protocol: Protocol, v: &Value) -> Result<CallResult, CallError> {
    let mut r = CallResult {
        response_model: v.get("model").and_then(Value::as_str).map(String::from),
        ..Default::default()
    };
    match protocol {
        Protocol::OpenAi => {
            let choice = v
                .get("choices")
                .and_then(|c| c.get(0))
                .ok_or_else(|| malformed("response has no choices"))?;
            r.text = choice
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            r.finish_reason = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(String::from);
            r.input_tokens = u(v, &["usage", "prompt_tokens"]);
            r.output_tokens = u(v, &["usage", "completion_tokens"]);
            r.cached_input_tokens = u(v, &["usage", "prompt_tokens_details", "cached_tokens"]);
        }
        Protocol::Anthropic => {
            let content = v
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("response has no content"))?;
            for block in content {
                if block.get("type").and_then(Value::as_str) == Some("text")
                    && let Some(t) = block.get("text").and_then(Value::as_str)
                {
                    r.text.push_str(t);
                }
            }
            r.finish_reason = v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(String::from);
            let cached = u(v, &["usage", "cache_read_input_tokens"]);
            let created = u(v, &["usage", "cache_creation_input_tokens"]).unwrap_or(0);
            // Anthropic's input_tokens exclude cache reads and writes.
            r.input_tokens =
                u(v, &["usage", "input_tokens"]).map(|i| i + cached.unwrap_or(0) + created);
            r.output_tokens = u(v, &["usage", "output_tokens"]);
            r.cached_input_tokens = cached;
        }
    }
    Ok(r)
}

/// What one stream event means.
enum StreamStep {
    Text(String),
    Nothing,
    Done,
}

fn stream_event(
    protocol: Protocol,
    ev: &SseEvent,
    r: &mut CallResult,
) -> Result<StreamStep, CallError> {
    let data = ev.data.trim();
    if protocol == Protocol::OpenAi && data == "[DONE]" {
        return Ok(StreamStep::Done);
    }
    if data.is_empty() {
        return Ok(StreamStep::Nothing);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| {
        malformed(format!(
            "stream chunk is not JSON ({e}): {}",
            truncate(data, 120)
        ))
    })?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error event in the stream");
        let kind = err.get("type").and_then(Value::as_str).unwrap_or("");
        let (class, et) =
            if kind.contains("overloaded") || kind.contains("server") || kind.contains("api_error")
            {
                (FailureClass::ServerError, "server_error")
            } else if kind.contains("rate_limit") {
                (FailureClass::RateLimited, "rate_limited")
            } else {
                (FailureClass::ServerError, "stream_error")
            };
        return Err(CallError::new(class, et, truncate(msg, 300)));
    }
    match protocol {
        Protocol::OpenAi => {
            if r.response_model.is_none() {
                r.response_model = v.get("model").and_then(Value::as_str).map(String::from);
            }
            if let Some(usage) = v.get("usage").filter(|u| !u.is_null()) {
                r.input_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
                r.output_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
                r.cached_input_tokens = u(usage, &["prompt_tokens_details", "cached_tokens"]);
            }
            let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
                return Ok(StreamStep::Nothing);
            };
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                r.finish_reason = Some(f.to_string());
            }
            match choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
            {
                Some(t) if !t.is_empty() => Ok(StreamStep::Text(t.to_string())),
                _ => Ok(StreamStep::Nothing),
            }
        }
        Protocol::Anthropic => {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
            match ty {
                "message_start" => {
                    let m = v.get("message").cloned().unwrap_or(Value::Null);
                    r.response_model = m.get("model").and_then(Value::as_str).map(String::from);
                    let cached = u(&m, &["usage", "cache_read_input_tokens"]);
                    let created = u(&m, &["usage", "cache_creation_input_tokens"]).unwrap_or(0);
                    r.input_tokens = u(&m, &["usage", "input_tokens"])
                        .map(|i| i + cached.unwrap_or(0) + created);
                    r.cached_input_tokens = cached;
                    Ok(StreamStep::Nothing)
                }
                "content_block_delta" => match v
                    .get("delta")
                    .filter(|d| d.get("type").and_then(Value::as_str) == Some("text_delta"))
                    .and_then(|d| d.get("text"))
                    .and_then(Value::as_str)
                {
                    Some(t) if !t.is_empty() => Ok(StreamStep::Text(t.to_string())),
                    _ => Ok(StreamStep::Nothing),
                },
                "message_delta" => {
                    if let Some(o) = u(&v, &["usage", "output_tokens"]) {
                        r.output_tokens = Some(o);
                    }
                    if let Some(s) = v
                        .get("delta")
                        .and_then(|d| d.get("stop_reason"))
                        .and_then(Value::as_str)
                    {
                        r.finish_reason = Some(s.to_string());
                    }
                    Ok(StreamStep::Nothing)
                }
                "message_stop" => Ok(StreamStep::Done),
                _ => Ok(StreamStep::Nothing),
            }
        }
    }
}

/// Make one attempt. `on_chunk` sees each streamed text delta.
pub(crate) async fn call(
    http: &reqwest::Client,
    ep: &Endpoint,
    req: &CallRequest<'_>,
    opts: &CallOptions,
    on_chunk: Option<&(dyn Fn(&str) + Send + Sync)>,
) -> Result<CallResult, CallError> {
    let start = Instant::now();
    let deadline = start + opts.total_timeout;
    let first_deadline = if req.stream {
        (start + opts.ttft_timeout).min(deadline)
    } else {
        deadline
    };
    let url = match ep.protocol {
        Protocol::OpenAi => format!("{}/chat/completions", ep.base_url.trim_end_matches('/')),
        Protocol::Anthropic => format!("{}/messages", ep.base_url.trim_end_matches('/')),
    };
    let body = build_body(ep, req);
    let mut rb = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    let key = ep.key();
    match ep.protocol {
        Protocol::OpenAi => {
            if let Some(k) = &key {
                rb = rb.bearer_auth(k.expose());
            }
        }
        Protocol::Anthropic => {
            if let Some(k) = &key {
                rb = rb.header("x-api-key", k.expose());
            }
            rb = rb.header("anthropic-version", "2023-06-01");
        }
    }
    for (k, v) in &ep.headers {
        rb = rb.header(k.as_str(), v.expose());
    }
    if req.stream {
        rb = rb.header(reqwest::header::ACCEPT, "text/event-stream");
    }
    let body_bytes = serde_json::to_vec(&body).unwrap_or_default();
    let ttft_err = |what: &str| {
        CallError::new(
            FailureClass::Timeout,
            if req.stream {
                "ttft_timeout"
            } else {
                "timeout"
            },
            format!(
                "no {what} within {} ms",
                (first_deadline - start).as_millis()
            ),
        )
    };
    let mut resp = match timeout_at(first_deadline, rb.body(body_bytes).send()).await {
        Err(_) => return Err(ttft_err("response")),
        Ok(Err(e)) => return Err(classify_reqwest(&e, "sending the request")),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let retry = retry_after_ms(resp.headers());
        let body = match timeout_at(deadline, resp.bytes()).await {
            Ok(Ok(b)) => b.to_vec(),
            _ => Vec::new(),
        };
        return Err(status_error(status, retry, &body));
    }
    if !req.stream {
        let bytes = match timeout_at(deadline, resp.bytes()).await {
            Err(_) => {
                return Err(CallError::new(
                    FailureClass::Timeout,
                    "timeout",
                    format!(
                        "response not complete within {} ms",
                        opts.total_timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(e)) => return Err(classify_reqwest(&e, "reading the response")),
            Ok(Ok(b)) => b,
        };
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            malformed(format!(
                "response is not JSON ({e}): {}",
                truncate(&String::from_utf8_lossy(&bytes), 120)
            ))
        })?;
        return parse_full(ep.protocol, &v);
    }
    // Streaming.
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut r = CallResult::default();
    let mut done = false;
    let fail = |mut e: CallError, r: &CallResult| {
        e.after_first_token = r.ttft.is_some();
        e.partial.clone_from(&r.text);
        if e.after_first_token {
            e.message = format!(
                "{} (after {} chars of streamed text)",
                e.message,
                r.text.chars().count()
            );
        }
        e
    };
    while !done {
        let until = if r.ttft.is_none() {
            first_deadline
        } else {
            deadline
        };
        let chunk = match timeout_at(until, resp.chunk()).await {
            Err(_) => {
                return Err(if r.ttft.is_none() {
                    ttft_err("first token")
                } else {
                    fail(
                        CallError::new(
                            FailureClass::Timeout,
                            "timeout",
                            format!(
                                "stream not complete within {} ms",
                                opts.total_timeout.as_millis()
                            ),
                        ),
                        &r,
                    )
                });
            }
            Ok(Err(e)) => return Err(fail(classify_reqwest(&e, "reading the stream"), &r)),
            Ok(Ok(c)) => c,
        };
        match chunk {
            Some(bytes) => parser.push(&bytes, &mut events),
            None => {
                parser.finish(&mut events);
                done = true;
            }
        }
        let mut finished = false;
        for ev in events.drain(..) {
            match stream_event(ep.protocol, &ev, &mut r) {
                Err(e) => return Err(fail(e, &r)),
                Ok(StreamStep::Text(t)) => {
                    if r.ttft.is_none() {
                        r.ttft = Some(start.elapsed());
                    }
                    if let Some(f) = on_chunk {
                        f(&t);
                    }
                    r.text.push_str(&t);
                }
                Ok(StreamStep::Nothing) => {}
                Ok(StreamStep::Done) => finished = true,
            }
        }
        if finished {
            return Ok(r);
        }
        if done {
            return Err(fail(
                CallError::new(
                    FailureClass::Connect,
                    "stream_error",
                    "the stream ended before its end marker",
                ),
                &r,
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let msgs = vec![
            Message {
                role: "system".into(),
                content: "Be brief.".into(),
                name: None,
            },
            Message {
                role: "user".into(),
                content: "Hi".into(),
                name: None,
            },
        ];
        let cfg = ModelConfig {
            temperature: Some(0.2),
            ..Default::default()
        };
        let req = CallRequest {
            model: "claude-haiku-4-5",
            messages: &msgs,
            config: &cfg,
            stream: true,
        };
        let b = build_body(&Endpoint::anthropic(), &req);
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 1);
        assert_eq!(b["max_tokens"], 1024);
        assert_eq!(b["stream"], true);
        let b = build_body(&Endpoint::openai(), &req);
        assert_eq!(b["messages"].as_array().unwrap().len(), 2);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["temperature"], 0.2);
    }

    #[test]
    fn errors_classified() {
        let e = status_error(429, Some(1500), br#"{"error":{"message":"slow down"}}"#);
        assert_eq!(e.class, FailureClass::RateLimited);
        assert_eq!(e.message, "slow down");
        assert_eq!(e.retry_after_ms, Some(1500));
        assert_eq!(
            status_error(503, None, b"").class,
            FailureClass::ServerError
        );
        assert_eq!(status_error(401, None, b"").error_type, "auth");
    }
}
