//! Delivery: per project, the cached serialized snapshot (for fast GETs
//! with ETags), the ordered stream of deltas (for SSE clients), and the
//! bridge to Redis and to other replicas.
//!
//! Deltas enter the hub in revision order: locally committed ones (under
//! the write lock), ones other replicas published on Redis, and ones read
//! back from the database event log when a gap shows up (a missed Redis
//! message, no Redis at all — the poller checks every project with clients
//! or a cache — or a replica that published out of order). A delta is
//! forwarded only when its `base_revision` is the last revision forwarded,
//! so the deltas every client receives chain.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use promptops_core::{Delta, SnapshotData};
use tokio::sync::{broadcast, mpsc};

use crate::db::Db;
use crate::error::ApiResult;
use crate::metrics::Metrics;
use crate::redis_bus::RedisBus;
use crate::registry;

/// A serialized snapshot, ready to send.
pub struct CachedSnapshot {
    pub revision: u64,
    pub hash: String,
    /// `"<hash>"`, quoted.
    pub etag: String,
    pub json: Bytes,
    /// The SSE frame `event: snapshot` carrying it.
    pub frame: Bytes,
    pub data: Arc<SnapshotData>,
}

impl CachedSnapshot {
    fn new(mut data: SnapshotData) -> CachedSnapshot {
        // A snapshot advanced by a delta carries no hash yet; the ETag needs it.
        if data.hash.is_empty() {
            data.hash = data.compute_hash();
        }
        let json = Bytes::from(data.to_json());
        let frame = sse_frame("snapshot", data.revision, &json);
        CachedSnapshot {
            revision: data.revision,
            etag: format!("\"{}\"", data.hash),
            hash: data.hash.clone(),
            json,
            frame,
            data: Arc::new(data),
        }
    }
}

pub fn sse_frame(event: &str, id: u64, json: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(json.len() + 40);
    b.extend_from_slice(format!("event: {event}\nid: {id}\ndata: ").as_bytes());
    b.extend_from_slice(json);
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

pub const PING_FRAME: &[u8] = b": ping\n\n";

#[derive(Debug)]
pub enum StreamEvent {
    Delta {
        revision: u64,
        base: u64,
        frame: Bytes,
    },
    /// The hub could not chain (the event log no longer holds the gap):
    /// clients behind `revision` resynchronise with a snapshot.
    Reset { revision: u64 },
}

pub struct ProjectHub {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
    tx: broadcast::Sender<Arc<StreamEvent>>,
    /// The last revision forwarded; the lock orders ingestion.
    last: tokio::sync::Mutex<u64>,
    cache: RwLock<Option<Arc<CachedSnapshot>>>,
    checked_at: Mutex<Option<Instant>>,
    build: tokio::sync::Mutex<()>,
}

impl ProjectHub {
    fn cache(&self) -> Option<Arc<CachedSnapshot>> {
        self.cache.read().ok().and_then(|c| c.clone())
    }

    fn set_cache(&self, c: Option<Arc<CachedSnapshot>>) {
        if let Ok(mut g) = self.cache.write() {
            *g = c;
        }
    }

    fn checked_recently(&self, window: Duration) -> bool {
        self.checked_at
            .lock()
            .ok()
            .and_then(|g| *g)
            .is_some_and(|t| t.elapsed() < window)
    }

    fn mark_checked(&self) {
        if let Ok(mut g) = self.checked_at.lock() {
            *g = Some(Instant::now());
        }
    }

    pub fn stream_clients(&self) -> usize {
        self.tx.receiver_count()
    }
}

pub struct HubOptions {
    /// How long a cached snapshot is served without asking the database
    /// whether the project moved on (matters with several replicas).
    pub revalidate_after: Duration,
    pub heartbeat: Duration,
    pub broadcast_capacity: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            revalidate_after: Duration::from_secs(1),
            heartbeat: Duration::from_secs(15),
            broadcast_capacity: 1024,
        }
    }
}

pub struct Hub {
    db: Arc<Db>,
    pub metrics: Arc<Metrics>,
    projects: Mutex<HashMap<String, Arc<ProjectHub>>>,
    redis: RwLock<Option<Arc<RedisBus>>>,
    opts: HubOptions,
}

struct ClientGuard(Arc<Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.stream_clients.dec();
    }
}

impl Hub {
    pub fn new(db: Arc<Db>, metrics: Arc<Metrics>, opts: HubOptions) -> Hub {
        Hub {
            db,
            metrics,
            projects: Mutex::new(HashMap::new()),
            redis: RwLock::new(None),
            opts,
        }
    }

    pub fn set_redis(&self, bus: Arc<RedisBus>) {
        if let Ok(mut g) = self.redis.write() {
            *g = Some(bus);
        }
    }

    fn redis(&self) -> Option<Arc<RedisBus>> {
        self.redis.read().ok().and_then(|g| g.clone())
    }

    fn existing(&self, name: &str) -> Option<Arc<ProjectHub>> {
        self.projects.lock().ok().and_then(|m| m.get(name).cloned())
    }

    fn insert(&self, id: i64, org_id: i64, name: &str, revision: u64) -> Arc<ProjectHub> {
        // A panic elsewhere while holding the lock leaves the map itself
        // intact (inserts are single calls), so a poisoned lock is used as is.
        let mut m = self
            .projects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.entry(name.to_string())
            .or_insert_with(|| {
                let (tx, _) = broadcast::channel(self.opts.broadcast_capacity);
                Arc::new(ProjectHub {
                    id,
                    org_id,
                    name: name.to_string(),
                    tx,
                    last: tokio::sync::Mutex::new(revision),
                    cache: RwLock::new(None),
                    checked_at: Mutex::new(None),
                    build: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The hub of a project (loaded from the database the first time);
    /// `None` when the project does not exist.
    pub async fn project(&self, name: &str) -> ApiResult<Option<Arc<ProjectHub>>> {
        if let Some(p) = self.existing(name) {
            return Ok(Some(p));
        }
        let mut conn = self.db.pool.acquire().await?;
        let Some(info) = registry::project_by_name(&mut conn, name).await? else {
            return Ok(None);
        };
        Ok(Some(self.insert(
            info.id,
            info.org_id,
            &info.name,
            info.revision as u64,
        )))
    }

    /// The cached snapshot data of a project, if any (used as the base for
    /// validating a change when it is at the right revision).
    pub fn cached_data(&self, name: &str) -> Option<Arc<SnapshotData>> {
        self.existing(name)?.cache().map(|c| c.data.clone())
    }

    /// The current snapshot, from the cache when it is known to be fresh.
    pub async fn snapshot(&self, ph: &Arc<ProjectHub>) -> ApiResult<Arc<CachedSnapshot>> {
        if let Some(c) = ph.cache()
            && ph.checked_recently(self.opts.revalidate_after)
        {
            return Ok(c);
        }
        self.fresh_snapshot(ph).await
    }

    /// The snapshot at the database's current revision.
    pub async fn fresh_snapshot(&self, ph: &Arc<ProjectHub>) -> ApiResult<Arc<CachedSnapshot>> {
        let rev = registry::current_revision(&self.db, ph.id).await? as u64;
        ph.mark_checked();
        {
            let last = *ph.last.lock().await;
            if rev > last {
                self.catch_up(ph).await;
            }
        }
        if let Some(c) = ph.cache()
            && c.revision >= rev
        {
            return Ok(c);
        }
        let _b = ph.build.lock().await;
        if let Some(c) = ph.cache()
            && c.revision >= rev
        {
            return Ok(c);
        }
        let started = Instant::now();
        let data = registry::build_snapshot(&self.db, ph.id).await?;
        self.metrics
            .snapshot_build
            .observe(started.elapsed().as_secs_f64());
        let built = Arc::new(CachedSnapshot::new(data));
        // Keep the newest of what is cached and what was built.
        let keep = match ph.cache() {
            Some(c) if c.revision > built.revision => c,
            _ => built.clone(),
        };
        ph.set_cache(Some(keep));
        Ok(built)
    }

    /// Forward `delta` (under the ordering lock); `None` from the caller
    /// means "serialize it yourself".
    fn forward(&self, ph: &ProjectHub, last: &mut u64, delta: &Delta, json: Option<Bytes>) {
        let json =
            json.unwrap_or_else(|| Bytes::from(serde_json::to_vec(delta).unwrap_or_default()));
        // Advance the cached snapshot along.
        match ph.cache() {
            Some(c) if c.revision >= delta.revision => {}
            Some(c) if c.revision == delta.base_revision => match c.data.apply_delta(delta) {
                Ok(mut next) => {
                    next.created_at = Some(crate::db::now());
                    ph.set_cache(Some(Arc::new(CachedSnapshot::new(next))));
                }
                Err(e) => {
                    tracing::warn!(project = %ph.name, error = %e, "delta does not apply to the cached snapshot; dropping the cache");
                    ph.set_cache(None);
                }
            },
            Some(_) => ph.set_cache(None),
            None => {}
        }
        *last = delta.revision;
        let frame = sse_frame("delta", delta.revision, &json);
        let _ = ph.tx.send(Arc::new(StreamEvent::Delta {
            revision: delta.revision,
            base: delta.base_revision,
            frame,
        }));
    }

    /// Read every event after the last forwarded one from the database and
    /// forward them; when the log has a gap, reset clients to a snapshot.
    async fn catch_up(&self, ph: &ProjectHub) {
        let mut last = ph.last.lock().await;
        self.catch_up_locked(ph, &mut last).await;
    }

    async fn catch_up_locked(&self, ph: &ProjectHub, last: &mut u64) {
        match registry::events_after(&self.db, ph.id, *last as i64).await {
            Ok(Some(deltas)) => {
                for d in deltas {
                    self.metrics.remote_events.inc();
                    self.forward(ph, last, &d, None);
                }
            }
            Ok(None) => match registry::current_revision(&self.db, ph.id).await {
                Ok(rev) if rev as u64 > *last => {
                    tracing::info!(project = %ph.name, from = *last, to = rev, "event log gap: clients resynchronise");
                    *last = rev as u64;
                    ph.set_cache(None);
                    let _ = ph.tx.send(Arc::new(StreamEvent::Reset {
                        revision: rev as u64,
                    }));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(project = %ph.name, error = %e.body.message, "catch-up failed")
                }
            },
            Err(e) => {
                tracing::warn!(project = %ph.name, error = %e.body.message, "catch-up failed")
            }
        }
    }

    async fn ingest(&self, ph: &ProjectHub, delta: &Delta, json: Option<Bytes>) {
        let mut last = ph.last.lock().await;
        if delta.revision <= *last {
            return;
        }
        if delta.base_revision == *last {
            self.forward(ph, &mut last, delta, json);
        } else {
            self.catch_up_locked(ph, &mut last).await;
        }
    }

    /// A change this replica committed: deliver it to local clients, then
    /// store the snapshot in Redis and publish the delta there.
    pub async fn ingest_local(&self, delta: Delta) {
        self.metrics.events.inc();
        let ph = match self.existing(&delta.project) {
            Some(p) => p,
            None => match self.project(&delta.project).await {
                Ok(Some(p)) => p,
                _ => return,
            },
        };
        let json = Bytes::from(serde_json::to_vec(&delta).unwrap_or_default());
        self.ingest(&ph, &delta, Some(json.clone())).await;
        if let Some(bus) = self.redis() {
            let snap = match ph.cache() {
                Some(c) if c.revision >= delta.revision => Some(c),
                _ => match self.fresh_snapshot(&ph).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(project = %delta.project, error = %e.body.message, "no snapshot for Redis");
                        None
                    }
                },
            };
            if let Some(snap) = snap {
                let started = Instant::now();
                if let Err(e) = bus
                    .publish(&delta.project, snap.revision, &snap.json, &json)
                    .await
                {
                    tracing::warn!(project = %delta.project, error = %e, "publishing to Redis failed; other replicas catch up from the database");
                }
                self.metrics
                    .redis_publish
                    .observe(started.elapsed().as_secs_f64());
            }
        }
    }

    /// A delta another replica published on Redis.
    pub async fn ingest_remote(&self, project: &str, payload: &[u8]) {
        let Some(ph) = self.existing(project) else {
            return; // nobody here is interested in this project yet
        };
        let delta: Delta = match serde_json::from_slice(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(project, error = %e, "ignoring a malformed delta from Redis");
                return;
            }
        };
        if delta.project != project {
            return;
        }
        {
            let last = *ph.last.lock().await;
            if delta.revision <= last {
                return;
            }
        }
        self.metrics.remote_events.inc();
        self.ingest(&ph, &delta, Some(Bytes::copy_from_slice(payload)))
            .await;
    }

    /// Check every project this replica serves against the database and
    /// catch up on changes it has not seen (missed Redis messages, or no
    /// Redis at all).
    pub async fn poll_once(&self) {
        let hubs: Vec<Arc<ProjectHub>> = match self.projects.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        for ph in hubs {
            if ph.stream_clients() == 0 && ph.cache().is_none() {
                continue;
            }
            let Ok(rev) = registry::current_revision(&self.db, ph.id).await else {
                continue;
            };
            let last = *ph.last.lock().await;
            if rev as u64 > last {
                self.catch_up(&ph).await;
            }
        }
    }

    pub fn spawn_poller(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { break };
                hub.poll_once().await;
            }
        })
    }

    /// Open an SSE stream: a snapshot (or, with `last_event_id`, a replay of
    /// the deltas after it when the log still holds them all), then deltas.
    pub fn open_stream(
        self: &Arc<Self>,
        ph: Arc<ProjectHub>,
        last_event_id: Option<u64>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Bytes>(32);
        let hub = self.clone();
        self.metrics.stream_clients.inc();
        let guard = ClientGuard(self.metrics.clone());
        tokio::spawn(async move {
            let _guard = guard;
            hub.run_stream(ph, last_event_id, tx).await;
        });
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
        )
    }

    async fn run_stream(
        &self,
        ph: Arc<ProjectHub>,
        last_event_id: Option<u64>,
        tx: mpsc::Sender<Bytes>,
    ) {
        // Subscribe first, so nothing between the start and the live feed is lost.
        let mut rx = ph.tx.subscribe();
        let mut last: u64;
        let replay = match last_event_id {
            Some(n) => registry::events_after(&self.db, ph.id, n as i64)
                .await
                .ok()
                .flatten()
                .map(|d| (n, d)),
            None => None,
        };
        match replay {
            Some((n, deltas)) => {
                last = n;
                for d in deltas {
                    let json = serde_json::to_vec(&d).unwrap_or_default();
                    if tx
                        .send(sse_frame("delta", d.revision, &json))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last = d.revision;
                }
            }
            None => match self.fresh_snapshot(&ph).await {
                Ok(s) => {
                    if tx.send(s.frame.clone()).await.is_err() {
                        return;
                    }
                    last = s.revision;
                }
                Err(e) => {
                    tracing::warn!(project = %ph.name, error = %e.body.message, "stream: no snapshot");
                    return;
                }
            },
        }
        let start = tokio::time::Instant::now() + self.opts.heartbeat;
        let mut ping = tokio::time::interval_at(start, self.opts.heartbeat);
        loop {
            let resync = tokio::select! {
                _ = tx.closed() => break,
                _ = ping.tick() => {
                    if tx.send(Bytes::from_static(PING_FRAME)).await.is_err() {
                        break;
                    }
                    false
                }
                r = rx.recv() => match r {
                    Ok(ev) => match &*ev {
                        StreamEvent::Delta { revision, base, frame } => {
                            if *revision <= last {
                                false
                            } else if *base == last {
                                if tx.send(frame.clone()).await.is_err() {
                                    break;
                                }
                                last = *revision;
                                false
                            } else {
                                true
                            }
                        }
                        StreamEvent::Reset { revision } => *revision > last,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            if resync {
                match self.fresh_snapshot(&ph).await {
                    Ok(s) if s.revision > last => {
                        if tx.send(s.frame.clone()).await.is_err() {
                            break;
                        }
                        last = s.revision;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(project = %ph.name, error = %e.body.message, "stream: resync failed");
                        break;
                    }
                }
            }
        }
    }
}
