//! The repository's mock LLM provider (`tests/mock_provider`) as a process,
//! for the Python tests (`promptops-py/tests/mock_provider.py` starts it).
//!
//! It listens on 127.0.0.1:0 and prints one JSON line with its base URL:
//! `{"url": "http://127.0.0.1:PORT/v1", "root": "http://127.0.0.1:PORT"}`.
//! Then it reads one JSON command per line on stdin and answers each with
//! one JSON line on stdout (`{"ok": true, ...}` or `{"error": "..."}`):
//!
//! - `{"op": "script", "model": M, "behaviors": [B, ...]}`: queue behaviours
//!   for model M, consumed one per request;
//! - `{"op": "default", "model": M, "behavior": B}`: what M does after that;
//! - `{"op": "received"}`: the requests received so far (`path`, `model`,
//!   `stream`, `authorization`, `api_key`, `body`);
//! - `{"op": "count", "model": M}`: how many requests M got.
//!
//! A behaviour B is one of `{"ok": TEXT, "delay_ms": N, "chunk_delay_ms": N}`,
//! `{"status": CODE, "retry_after": "1", "message": "..."}`,
//! `{"reset": TOKENS}`, `{"malformed": TOKENS}`, `{"stall": MS, "text": TEXT}`
//! (see `Behavior`). End of input stops the server.
//!
//! Run: `cargo run --release --workspace --example mock_provider` (the
//! Python tests take the built binary from `PROMPTOPS_MOCK_PROVIDER`).

use std::io::{BufRead, Write};

use promptops_tests::mock_provider::{Behavior, MockProvider};
use serde_json::{Value, json};

fn behavior(v: &Value) -> Result<Behavior, String> {
    let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    if let Some(text) = v.get("ok") {
        return Ok(Behavior::Ok {
            text: text.as_str().ok_or("`ok` must be a string")?.to_string(),
            delay_ms: u("delay_ms"),
            chunk_delay_ms: u("chunk_delay_ms"),
        });
    }
    if let Some(code) = v.get("status").and_then(Value::as_u64) {
        let code = u16::try_from(code).map_err(|_| "`status` out of range")?;
        return Ok(Behavior::Status {
            code,
            retry_after: s("retry_after"),
            message: s("message").unwrap_or_else(|| format!("mock error {code}")),
        });
    }
    if v.get("reset").is_some() {
        return Ok(Behavior::Reset {
            tokens: u("reset") as usize,
        });
    }
    if v.get("malformed").is_some() {
        return Ok(Behavior::Malformed {
            tokens: u("malformed") as usize,
        });
    }
    if v.get("stall").is_some() {
        return Ok(Behavior::Stall {
            ms: u("stall"),
            text: s("text").unwrap_or_else(|| "late answer".into()),
        });
    }
    Err(format!("unknown behavior {v}"))
}

fn command(mock: &MockProvider, line: &str) -> Result<Value, String> {
    let cmd: Value = serde_json::from_str(line).map_err(|e| format!("bad JSON: {e}"))?;
    let model = || {
        cmd.get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| "`model` is required".to_string())
    };
    match cmd.get("op").and_then(Value::as_str).unwrap_or("") {
        "script" => {
            let list = cmd
                .get("behaviors")
                .and_then(Value::as_array)
                .ok_or("`behaviors` must be a list")?;
            let bs = list.iter().map(behavior).collect::<Result<Vec<_>, _>>()?;
            mock.script(model()?, bs);
            Ok(json!({"ok": true}))
        }
        "default" => {
            let b = behavior(cmd.get("behavior").ok_or("`behavior` is required")?)?;
            mock.set_default(model()?, b);
            Ok(json!({"ok": true}))
        }
        "received" => {
            let rs: Vec<Value> = mock
                .received()
                .into_iter()
                .map(|r| {
                    json!({"path": r.path, "model": r.model, "stream": r.stream,
                           "authorization": r.authorization, "api_key": r.api_key,
                           "body": r.body})
                })
                .collect();
            Ok(json!({"ok": true, "received": rs}))
        }
        "count" => Ok(json!({"ok": true, "count": mock.count(model()?)})),
        other => Err(format!("unknown op `{other}`")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mock = rt.block_on(MockProvider::start());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"url": mock.url(), "root": mock.root()}))?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = command(&mock, &line).unwrap_or_else(|e| json!({"error": e}));
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    drop(mock);
    Ok(())
}
