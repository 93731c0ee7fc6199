//! The HTTP source: `GET /v1/projects/{p}/snapshot` with `If-None-Match`,
//! then `GET /v1/projects/{p}/stream` (SSE: a snapshot event, then deltas;
//! `Last-Event-ID` resumes). Reconnects with exponential backoff and jitter;
//! stops on 401/403; backs off on 429/5xx honouring `Retry-After`; falls
//! back to conditional polling when the stream is unavailable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, RETRY_AFTER};

use super::runner::Ctx;
use super::sse;
use crate::snapshot::{Delta, SnapshotData};
use crate::store::Update;

const SOURCE: &str = "http";
/// The largest snapshot body accepted.
const MAX_BODY: usize = 64 << 20;

/// Why a request did not produce data.
#[derive(Debug, Clone)]
enum Failure {
    /// 401/403: stop this source.
    Fatal(String),
    /// Anything else: retry, after `retry_after` if the server said so.
    Retry {
        msg: String,
        retry_after: Option<Duration>,
    },
    /// The stream endpoint does not exist: poll instead.
    Unsupported,
}

fn retry(msg: impl Into<String>) -> Failure {
    Failure::Retry {
        msg: msg.into(),
        retry_after: None,
    }
}

fn classify(status: StatusCode, headers: &reqwest::header::HeaderMap, what: &str) -> Failure {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Failure::Fatal(format!(
            "{what}: the registry refused the API key ({status}); sync stopped"
        )),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
            if what == "stream" =>
        {
            Failure::Unsupported
        }
        _ => Failure::Retry {
            msg: format!("{what}: HTTP {status}"),
            retry_after,
        },
    }
}

pub(crate) async fn run(ctx: Arc<Ctx>, server: String) {
    let base = server.trim_end_matches('/').to_string();
    let client = match reqwest::Client::builder()
        .connect_timeout(ctx.opts.connect_timeout)
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            ctx.status
                .fatal(SOURCE, format!("cannot build the HTTP client: {e}"));
            return;
        }
    };
    let mut attempt: u32 = 0;
    let mut streaming = ctx.opts.stream;
    let mut need_snapshot = true;
    let mut stream_failures = 0u32;
    loop {
        if ctx.is_shutdown() {
            return;
        }
        if need_snapshot {
            match fetch_snapshot(&ctx, &client, &base).await {
                Ok(()) => {
                    need_snapshot = false;
                    attempt = 0;
                }
                Err(Failure::Fatal(msg)) => {
                    ctx.status.fatal(SOURCE, msg);
                    return;
                }
                Err(f) => {
                    let (msg, retry_after) = match f {
                        Failure::Retry { msg, retry_after } => (msg, retry_after),
                        _ => ("snapshot: endpoint not found".to_string(), None),
                    };
                    ctx.status.error(SOURCE, msg);
                    let d = retry_after.unwrap_or_else(|| ctx.opts.backoff.delay(attempt));
                    attempt = attempt.saturating_add(1);
                    if !ctx.sleep(d).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if !streaming {
            if !ctx.sleep(ctx.opts.poll_interval).await {
                return;
            }
            need_snapshot = true;
            continue;
        }
        let started = Instant::now();
        let result = stream(&ctx, &client, &base).await;
        if started.elapsed() >= ctx.opts.backoff.reset_after {
            stream_failures = 0;
        }
        match result {
            Ok(()) => return, // shutdown
            Err(Failure::Unsupported) => {
                tracing::info!(target: "promptops::sync", "no stream endpoint; polling every {:?}", ctx.opts.poll_interval);
                streaming = false;
            }
            Err(Failure::Fatal(msg)) => {
                ctx.status.fatal(SOURCE, msg);
                return;
            }
            Err(Failure::Retry { msg, retry_after }) => {
                if started.elapsed() >= ctx.opts.backoff.reset_after {
                    attempt = 0;
                }
                ctx.status.error(SOURCE, msg);
                let d = retry_after.unwrap_or_else(|| ctx.opts.backoff.delay(attempt));
                attempt = attempt.saturating_add(1);
                if !ctx.sleep(d).await {
                    return;
                }
                // Reconnect with Last-Event-ID: the registry replays what
                // was missed. After repeated failures, also try the
                // (conditional) snapshot request, which may work when the
                // stream does not.
                stream_failures += 1;
                need_snapshot = stream_failures >= 2;
            }
        }
    }
}

/// A snapshot response (body shared between coalesced requests, ETag), or
/// `None` for 304 Not Modified.
type FetchResult = Result<Option<(Arc<Vec<u8>>, Option<String>)>, Failure>;

type Inflight = Mutex<HashMap<(String, String), Shared<BoxFuture<'static, FetchResult>>>>;

/// In-flight unconditional snapshot requests, by (url, key): concurrent
/// first requests for the same project share one fetch.
fn inflight() -> &'static Inflight {
    static M: OnceLock<Inflight> = OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

async fn get_snapshot(
    client: reqwest::Client,
    url: String,
    api_key: Option<String>,
    etag: Option<String>,
    timeout: Duration,
) -> FetchResult {
    let mut req = client
        .get(&url)
        .timeout(timeout)
        .header(ACCEPT, "application/json");
    if let Some(k) = &api_key {
        req = req.header(AUTHORIZATION, format!("Bearer {k}"));
    }
    if let Some(e) = &etag {
        req = req.header(IF_NONE_MATCH, e.as_str());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| retry(format!("snapshot: {e}")))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(classify(status, resp.headers(), "snapshot"));
    }
    let etag = resp
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut body = Vec::new();
    let mut chunks = resp.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| retry(format!("snapshot body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(retry(format!("snapshot larger than {MAX_BODY} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some((Arc::new(body), etag)))
}

async fn fetch_snapshot(ctx: &Ctx, client: &reqwest::Client, base: &str) -> Result<(), Failure> {
    let url = format!("{base}/v1/projects/{}/snapshot", ctx.opts.project);
    let etag = if ctx.revision() > 0 {
        ctx.etag
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .or_else(|| ctx.store.current().map(|s| format!("\"{}\"", s.hash())))
    } else {
        None
    };
    let fut = get_snapshot(
        client.clone(),
        url.clone(),
        ctx.opts.api_key.clone(),
        etag.clone(),
        ctx.opts.request_timeout,
    );
    let result = if etag.is_none() {
        // Coalesce with any identical request already under way.
        let key = (url, ctx.opts.api_key.clone().unwrap_or_default());
        let shared = {
            let mut m = inflight().lock().unwrap_or_else(|p| p.into_inner());
            m.entry(key.clone())
                .or_insert_with(|| fut.boxed().shared())
                .clone()
        };
        let r = shared.await;
        if let Ok(mut m) = inflight().lock() {
            m.remove(&key);
        }
        r
    } else {
        fut.await
    };
    match result? {
        None => {
            ctx.status.ok(SOURCE);
            Ok(())
        }
        Some((body, etag)) => {
            let snap = SnapshotData::from_json(&body)
                .map_err(|e| retry(format!("snapshot rejected: {e}")))?;
            if let Ok(mut e) = ctx.etag.lock() {
                *e = etag;
            }
            ctx.apply(Update::Snapshot(snap), SOURCE)
                .map_err(|e| retry(format!("snapshot rejected: {e}")))?;
            Ok(())
        }
    }
}

/// Stream until shutdown (Ok) or a failure.
async fn stream(ctx: &Ctx, client: &reqwest::Client, base: &str) -> Result<(), Failure> {
    let url = format!("{base}/v1/projects/{}/stream", ctx.opts.project);
    let mut req = client.get(&url).header(ACCEPT, "text/event-stream");
    if let Some(k) = &ctx.opts.api_key {
        req = req.header(AUTHORIZATION, format!("Bearer {k}"));
    }
    let rev = ctx.revision();
    if rev > 0 {
        req = req.header("Last-Event-ID", rev.to_string());
    }
    let resp = tokio::select! {
        r = tokio::time::timeout(ctx.opts.request_timeout, req.send()) => match r {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return Err(retry(format!("stream: {e}"))),
            Err(_) => return Err(retry("stream: no response")),
        },
        _ = ctx.stopped() => return Ok(()),
    };
    if !resp.status().is_success() {
        return Err(classify(resp.status(), resp.headers(), "stream"));
    }
    ctx.status.ok(SOURCE);
    let mut parser = sse::Parser::default();
    let mut body = resp.bytes_stream();
    loop {
        let next = tokio::select! {
            n = tokio::time::timeout(ctx.opts.idle_timeout, body.next()) => n,
            _ = ctx.stopped() => return Ok(()),
        };
        let chunk = match next {
            Err(_) => {
                return Err(retry(format!(
                    "stream silent for {:?} (no heartbeat): reconnecting",
                    ctx.opts.idle_timeout
                )));
            }
            Ok(None) => return Err(retry("stream closed by the registry")),
            Ok(Some(Err(e))) => return Err(retry(format!("stream: {e}"))),
            Ok(Some(Ok(c))) => c,
        };
        let events = parser
            .feed(&chunk)
            .map_err(|e| retry(format!("stream: {e}")))?;
        for ev in events {
            handle_event(ctx, ev)?;
        }
    }
}

fn handle_event(ctx: &Ctx, ev: sse::Event) -> Result<(), Failure> {
    match ev.event.as_str() {
        "snapshot" => {
            let snap = SnapshotData::from_json(ev.data.as_bytes())
                .map_err(|e| retry(format!("stream snapshot rejected: {e}")))?;
            // The stream's snapshot carries no ETag; its hash is the one.
            if let Ok(mut e) = ctx.etag.lock() {
                *e = Some(format!("\"{}\"", snap.hash));
            }
            ctx.apply(Update::Snapshot(snap), SOURCE)
                .map_err(|e| retry(format!("stream snapshot rejected: {e}")))?;
        }
        "delta" => {
            let delta: Delta = serde_json::from_str(&ev.data)
                .map_err(|e| retry(format!("stream delta is not valid JSON: {e}")))?;
            match ctx.apply(Update::Delta(delta), SOURCE) {
                Ok(_) => {
                    // The ETag is now the hash of what the store holds;
                    // computed when a poll needs it, not on every delta.
                    if let Ok(mut e) = ctx.etag.lock() {
                        *e = None;
                    }
                }
                // A gap (missed events): reconnect at once; the registry
                // answers an unknown Last-Event-ID with a full snapshot.
                Err(e) => {
                    return Err(Failure::Retry {
                        msg: format!("delta not applicable ({e}); resyncing"),
                        retry_after: Some(Duration::ZERO),
                    });
                }
            }
        }
        _ => {}
    }
    Ok(())
}
