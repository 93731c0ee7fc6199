//! A registry that speaks the delivery protocol (promptops-server/PROTOCOL.md)
//! and injects faults on demand: error statuses with Retry-After, garbage
//! JSON, truncated bodies, no stream endpoint, a stream that goes silent. It
//! lets the delivery tests break the registry in every way the real one can
//! break; tests against the real `promptops serve` live beside them.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::get;
use futures_util::StreamExt;
use promptops_core::{Delta, PromptData, SnapshotData};
use tokio::sync::broadcast;

/// What the registry does to requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// Every request answers this status (with `Retry-After` if given).
    Status(u16, Option<u64>),
    /// Snapshots are not JSON.
    Garbage,
    /// Snapshots are cut in half.
    Truncated,
    /// `/stream` is 404 (an old registry, or a proxy that blocks SSE).
    NoStream,
    /// Streams send their first event, then nothing, not even heartbeats.
    Silent,
}

pub struct Inner {
    pub snapshot: SnapshotData,
    pub events: Vec<(u64, Delta)>,
    pub fault: Fault,
    pub snapshot_requests: usize,
    pub stream_requests: usize,
    pub last_event_ids: Vec<Option<String>>,
    pub api_key: String,
    /// Delay before answering a snapshot request.
    pub snapshot_delay: Duration,
}

#[derive(Clone)]
pub struct FakeRegistry {
    pub inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<(u64, Delta)>,
    heartbeat: Duration,
}

impl FakeRegistry {
    pub fn new(project: &str, prompts: Vec<PromptData>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        FakeRegistry {
            inner: Arc::new(Mutex::new(Inner {
                snapshot: SnapshotData::new(project, 1, prompts),
                events: Vec::new(),
                fault: Fault::None,
                snapshot_requests: 0,
                stream_requests: 0,
                last_event_ids: Vec::new(),
                api_key: "po_test_key".into(),
                snapshot_delay: Duration::ZERO,
            })),
            tx,
            heartbeat: Duration::from_millis(200),
        }
    }

    pub fn set_fault(&self, f: Fault) {
        self.inner.lock().unwrap().fault = f;
    }

    pub fn revision(&self) -> u64 {
        self.inner.lock().unwrap().snapshot.revision
    }

    /// Replace prompts (a publish, a rollback, an archive): bump the
    /// revision, record the delta, push it to open streams.
    pub fn publish(&self, prompts: Vec<PromptData>) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let old = &g.snapshot;
        let old_map: BTreeMap<&str, &PromptData> = old
            .prompts
            .iter()
            .map(|p| (p.name.as_str(), &**p))
            .collect();
        let new_names: std::collections::BTreeSet<&str> =
            prompts.iter().map(|p| p.name.as_str()).collect();
        let upserts: Vec<PromptData> = prompts
            .iter()
            .filter(|p| old_map.get(p.name.as_str()) != Some(p))
            .cloned()
            .collect();
        let removed: Vec<String> = old_map
            .keys()
            .filter(|n| !new_names.contains(*n))
            .map(|n| n.to_string())
            .collect();
        let rev = old.revision + 1;
        let delta = Delta {
            project: old.project.clone(),
            base_revision: old.revision,
            revision: rev,
            upserts,
            removed,
            models: None,
        };
        g.snapshot = SnapshotData::new(old.project.clone(), rev, prompts);
        g.events.push((rev, delta.clone()));
        drop(g);
        let _ = self.tx.send((rev, delta));
        rev
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/projects/{project}/snapshot", get(snapshot))
            .route("/v1/projects/{project}/stream", get(stream))
            .with_state(self.clone())
    }

    fn check(&self, headers: &HeaderMap, project: &str) -> Result<(), Box<Response<Body>>> {
        let g = self.inner.lock().unwrap();
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {}", g.api_key)) {
            return Err(Box::new(status(StatusCode::UNAUTHORIZED, None)));
        }
        if project != g.snapshot.project {
            return Err(Box::new(status(StatusCode::FORBIDDEN, None)));
        }
        if let Fault::Status(code, retry) = g.fault {
            return Err(Box::new(status(StatusCode::from_u16(code).unwrap(), retry)));
        }
        Ok(())
    }
}

fn status(code: StatusCode, retry_after: Option<u64>) -> Response<Body> {
    let mut r = Response::builder().status(code);
    if let Some(s) = retry_after {
        r = r.header("retry-after", s.to_string());
    }
    r.body(Body::from(format!("{{\"code\":\"{}\"}}", code.as_u16())))
        .unwrap()
}

async fn snapshot(
    State(reg): State<FakeRegistry>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    let delay = {
        let mut g = reg.inner.lock().unwrap();
        g.snapshot_requests += 1;
        g.snapshot_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Err(r) = reg.check(&headers, &project) {
        return *r;
    }
    let g = reg.inner.lock().unwrap();
    let etag = format!("\"{}\"", g.snapshot.hash);
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header("etag", etag)
            .body(Body::empty())
            .unwrap();
    }
    let mut body = g.snapshot.to_json();
    match g.fault {
        Fault::Garbage => body = b"<html>502 Bad Gateway</html>".to_vec(),
        Fault::Truncated => body.truncate(body.len() / 2),
        _ => {}
    }
    Response::builder()
        .header("etag", etag)
        .header("content-type", "application/json")
        .header("x-promptops-revision", g.snapshot.revision.to_string())
        .body(Body::from(body))
        .unwrap()
}

fn sse(event: &str, id: u64, data: &str) -> String {
    format!("event: {event}\nid: {id}\ndata: {data}\n\n")
}

async fn stream(
    State(reg): State<FakeRegistry>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response<Body> {
    if let Err(r) = reg.check(&headers, &project) {
        return *r;
    }
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let (first, fault, rx) = {
        let mut g = reg.inner.lock().unwrap();
        g.stream_requests += 1;
        g.last_event_ids.push(last_id.clone());
        if g.fault == Fault::NoStream {
            return status(StatusCode::NOT_FOUND, None);
        }
        let rx = reg.tx.subscribe();
        let cur = g.snapshot.revision;
        let replay: Option<Vec<String>> = last_id
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|n| *n <= cur)
            .and_then(|n| {
                let evs: Vec<&(u64, Delta)> = g.events.iter().filter(|(r, _)| *r > n).collect();
                // Replayable only if the log covers every event after n.
                let covers = evs.first().is_none_or(|(_, d)| d.base_revision == n);
                covers.then(|| {
                    evs.iter()
                        .map(|(r, d)| sse("delta", *r, &serde_json::to_string(d).unwrap()))
                        .collect()
                })
            });
        let first = match replay {
            Some(evs) => evs.concat(),
            None => {
                let mut data = String::from_utf8(g.snapshot.to_json()).unwrap();
                if g.fault == Fault::Garbage {
                    data = "{not json".into();
                }
                sse("snapshot", cur, &data)
            }
        };
        (first, g.fault.clone(), rx)
    };
    let heartbeat = reg.heartbeat;
    let first_ev = futures_util::stream::once(async move { Ok::<_, Infallible>(first) });
    let silent = fault == Fault::Silent;
    let live = futures_util::stream::unfold((rx, silent), move |(mut rx, silent)| async move {
        if silent {
            // Hold the connection open and say nothing, forever.
            std::future::pending::<()>().await;
        }
        let item = tokio::select! {
            ev = rx.recv() => match ev {
                Ok((r, d)) => sse("delta", r, &serde_json::to_string(&d).unwrap()),
                Err(broadcast::error::RecvError::Lagged(_)) => return None,
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(heartbeat) => ": ping\n\n".to_string(),
        };
        Some((Ok::<_, Infallible>(item), (rx, silent)))
    });
    let body = Body::from_stream(first_ev.chain(live));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// A running fake registry.
pub struct Running {
    pub addr: SocketAddr,
    pub registry: FakeRegistry,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(registry: FakeRegistry) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let app = registry.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Running {
            addr,
            registry,
            task,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the network between the SDK and a server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Bytes flow.
    Up,
    /// The server is gone: open connections are closed, new ones dropped.
    Down,
    /// Packets vanish: connections stay open (no FIN, no RST) and nothing
    /// is delivered either way until the network comes back.
    Blackhole,
}

/// A TCP proxy in front of a server, to kill it or blackhole it without
/// the SDK's connections noticing anything but what a real network does.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The mode and a kill count: a connection open when the server was
    /// killed stays dead even if the server is back a moment later.
    mode: tokio::sync::watch::Sender<(Net, u64)>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel((Net::Up, 0u64));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let rx = rx.clone();
                tokio::spawn(async move {
                    let _ = connection(client, upstream, rx).await;
                });
            }
        });
        Proxy {
            addr,
            mode: tx,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, net: Net) {
        self.mode.send_modify(|(n, kills)| {
            *n = net;
            if net == Net::Down {
                *kills += 1;
            }
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Net::Down);
        self.task.abort();
    }
}

async fn connection(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mut rx: tokio::sync::watch::Receiver<(Net, u64)>,
) -> std::io::Result<()> {
    // Wait out a blackhole before even connecting upstream.
    let epoch = loop {
        let (net, kills) = *rx.borrow();
        match net {
            Net::Down => return Ok(()),
            Net::Up => break kills,
            Net::Blackhole => {
                if rx.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    };
    let server = tokio::net::TcpStream::connect(upstream).await?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        _ = pump(cr, sw, rx.clone(), epoch) => {},
        _ = pump(sr, cw, rx.clone(), epoch) => {},
    }
    Ok(())
}

/// Wait while blackholed; false when the connection must die.
async fn passable(rx: &mut tokio::sync::watch::Receiver<(Net, u64)>, epoch: u64) -> bool {
    loop {
        let (net, kills) = *rx.borrow();
        if kills != epoch || net == Net::Down {
            return false;
        }
        if net == Net::Up {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut rx: tokio::sync::watch::Receiver<(Net, u64)>,
    epoch: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !passable(&mut rx, epoch).await {
            return;
        }
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Held (not lost) while blackholed, like TCP retransmits.
                    if !passable(&mut rx, epoch).await {
                        return;
                    }
                    if w.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            _ = rx.changed() => {}
        }
    }
}
