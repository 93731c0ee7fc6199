//! The mock provider (`mock_provider/mod.rs`) as a process, for the test
//! suites of the bindings (Node, Python), which cannot start it in-process
//! the way the Rust tests do.
//!
//! Prints one line `{"url": "http://127.0.0.1:PORT/v1", "root": "…"}` on
//! stdout once it listens, then reads commands, one JSON object per line on
//! stdin, and answers each with one JSON line on stdout:
//!
//! - `{"cmd": "script", "model": M, "behaviors": [B, …]}` queue behaviours
//! - `{"cmd": "default", "model": M, "behavior": B}` what M does afterwards
//! - `{"cmd": "received"}` → `{"ok": true, "received": [{path, model, stream,
//!   body, authorization, api_key}, …]}`
//! - `{"cmd": "count", "model": M}` → `{"ok": true, "count": N}`
//!
//! A behaviour `B` is `{"kind": "ok", "text", "delay_ms", "chunk_delay_ms"}`,
//! `{"kind": "status", "code", "retry_after", "message"}`, `{"kind":
//! "reset", "tokens"}`, `{"kind": "malformed", "tokens"}` or `{"kind":
//! "stall", "ms", "text"}` (missing numbers are 0). Errors answer `{"ok":
//! false, "error": "…"}`. The process exits when stdin closes, so it never
//! outlives the test run that started it.

use promptops_tests::mock_provider::{Behavior, MockProvider};
use serde_json::{Value, json};
use std::io::{BufRead, Write};

fn behavior(v: &Value) -> Result<Behavior, String> {
    let num = |k: &str| v[k].as_u64().unwrap_or(0);
    let text = |k: &str, d: &str| v[k].as_str().unwrap_or(d).to_string();
    Ok(match v["kind"].as_str().unwrap_or("") {
        "ok" => Behavior::Ok {
            text: text("text", "Hello"),
            delay_ms: num("delay_ms"),
            chunk_delay_ms: num("chunk_delay_ms"),
        },
        "status" => {
            let code = u16::try_from(num("code"))
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or("status: `code` must be an HTTP status")?;
            Behavior::Status {
                code,
                retry_after: v["retry_after"].as_str().map(String::from),
                message: text("message", &format!("mock error {code}")),
            }
        }
        "reset" => Behavior::Reset {
            tokens: num("tokens") as usize,
        },
        "malformed" => Behavior::Malformed {
            tokens: num("tokens") as usize,
        },
        "stall" => Behavior::Stall {
            ms: num("ms"),
            text: text("text", "Hello"),
        },
        other => return Err(format!("unknown behaviour kind `{other}`")),
    })
}

fn command(mock: &MockProvider, line: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let model = || {
        v["model"]
            .as_str()
            .map(String::from)
            .ok_or("`model` is required")
    };
    match v["cmd"].as_str().unwrap_or("") {
        "script" => {
            let list = v["behaviors"]
                .as_array()
                .ok_or("`behaviors` must be an array")?
                .iter()
                .map(behavior)
                .collect::<Result<Vec<_>, _>>()?;
            mock.script(&model()?, list);
            Ok(json!({"ok": true}))
        }
        "default" => {
            mock.set_default(&model()?, behavior(&v["behavior"])?);
            Ok(json!({"ok": true}))
        }
        "received" => {
            let list: Vec<Value> = mock
                .received()
                .into_iter()
                .map(|r| {
                    json!({"path": r.path, "model": r.model, "stream": r.stream, "body": r.body,
                           "authorization": r.authorization, "api_key": r.api_key})
                })
                .collect();
            Ok(json!({"ok": true, "received": list}))
        }
        "count" => Ok(json!({"ok": true, "count": mock.count(&model()?)})),
        other => Err(format!("unknown command `{other}`")),
    }
}

fn main() -> std::io::Result<()> {
    // The server runs on the runtime's worker threads; this thread reads
    // the commands (the mock's controls are synchronous).
    let rt = tokio::runtime::Runtime::new()?;
    let mock = rt.block_on(MockProvider::start());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"url": mock.url(), "root": mock.root()}))?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = command(&mock, &line).unwrap_or_else(|e| json!({"ok": false, "error": e}));
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    drop(mock);
    Ok(())
}
