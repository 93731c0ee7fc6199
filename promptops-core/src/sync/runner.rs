//! Runs the live sources on a tokio runtime and feeds the store.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{DiskCache, StatusCell};
use crate::compile::Source;
use crate::error::{Error, Result};
use crate::store::{ApplyOutcome, Store, Update};

/// Reconnect backoff: exponential from `initial` to `max`, each delay
/// jittered by ±`jitter` (0.5 = ±50 %), reset after a connection stayed up
/// for `reset_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.5,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
        let base = base.min(self.max.as_secs_f64());
        let r = jitter_unit();
        let factor = 1.0 + self.jitter * (2.0 * r - 1.0);
        Duration::from_secs_f64((base * factor).clamp(0.0, self.max.as_secs_f64() * 1.5))
    }
}

/// A cheap random number in [0, 1) (jitter only; not for security).
fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Where and how to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub project: String,
    /// Registry base URL (`http://127.0.0.1:8700`).
    pub server: Option<String>,
    pub api_key: Option<String>,
    /// `redis://127.0.0.1:6379/0`
    pub redis_url: Option<String>,
    /// Key and channel prefix in Redis (the registry's `--redis-prefix`).
    pub redis_prefix: String,
    /// Directory of the last-known-good snapshot file.
    pub cache_dir: Option<PathBuf>,
    /// Use the SSE stream (else poll only).
    pub stream: bool,
    /// Conditional polling interval when the stream is unavailable (and as
    /// a backstop while reconnecting).
    pub poll_interval: Duration,
    pub backoff: Backoff,
    /// Timeout of a snapshot request.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A stream silent this long is dead (the server sends a heartbeat every
    /// 15 s), which catches a blackholed connection with no FIN.
    pub idle_timeout: Duration,
}

impl SyncOptions {
    pub fn new(project: impl Into<String>) -> Self {
        SyncOptions {
            project: project.into(),
            server: None,
            api_key: None,
            redis_url: None,
            redis_prefix: "promptops".into(),
            cache_dir: None,
            stream: true,
            poll_interval: Duration::from_secs(30),
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(45),
        }
    }

    pub fn is_live(&self) -> bool {
        self.server.is_some() || self.redis_url.is_some()
    }
}

/// What every source task shares: the store, the status, the disk cache,
/// the shutdown signal.
pub(crate) struct Ctx {
    pub store: Arc<Store>,
    pub status: Arc<StatusCell>,
    pub opts: SyncOptions,
    pub cache: Option<DiskCache>,
    pub shutdown: watch::Receiver<bool>,
    /// ETag of the snapshot last received over HTTP.
    pub etag: Mutex<Option<String>>,
    /// Held while an update is applied and persisted; `close` takes it, so
    /// an update the app has already seen is on disk before `close` returns.
    pub applying: Arc<Mutex<()>>,
}

impl Ctx {
    /// Push an update into the store; persist what the registry sent as the
    /// last-known-good copy.
    pub fn apply(&self, update: Update, source_name: &str) -> Result<ApplyOutcome> {
        let _applying = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        // A closed client writes nothing more; an update that started
        // before `close` is persisted before `close` returns.
        let closed = self.is_shutdown();
        let out = self.store.apply(update, Source::Memory)?;
        if out.applied {
            self.status.applied(source_name);
            if let (Some(cache), Some(snap), false) = (&self.cache, self.store.current(), closed) {
                let etag = self.etag.lock().ok().and_then(|e| e.clone());
                if let Err(e) = cache.save(snap.registry_data(), etag.as_deref()) {
                    tracing::warn!(target: "promptops::sync", "cannot write the disk cache: {e}");
                }
            }
        } else {
            self.status.ok(source_name);
        }
        Ok(out)
    }

    /// The registry revision the store holds (0: nothing from a registry).
    pub fn revision(&self) -> u64 {
        self.store
            .current()
            .map(|s| s.registry_data().revision)
            .unwrap_or(0)
    }

    pub fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once the client is closing.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.clone();
        loop {
            let stop = *rx.borrow();
            if stop || rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sleep, returning early (false) on shutdown.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_shutdown(),
            _ = self.stopped() => false,
        }
    }
}

enum Rt {
    Owned(tokio::runtime::Runtime),
    Borrowed(tokio::runtime::Handle),
}

/// The running sources of one client.
pub struct Syncer {
    rt: Option<Rt>,
    shutdown: watch::Sender<bool>,
    status: Arc<StatusCell>,
    applying: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("status", &self.status.snapshot())
            .finish()
    }
}

impl Syncer {
    /// Start the configured sources on `handle`, or on a runtime of the
    /// syncer's own (one worker thread) when `None`.
    pub fn start(
        store: Arc<Store>,
        status: Arc<StatusCell>,
        opts: SyncOptions,
        handle: Option<tokio::runtime::Handle>,
    ) -> Result<Syncer> {
        // reqwest is built without a default TLS crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rt = match handle {
            Some(h) => Rt::Borrowed(h),
            None => Rt::Owned(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("promptops-sync")
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Config(format!("cannot start the sync runtime: {e}")))?,
            ),
        };
        let (tx, rx) = watch::channel(false);
        let cache = opts
            .cache_dir
            .as_ref()
            .map(|d| DiskCache::new(d, &opts.project));
        let etag = cache.as_ref().and_then(|c| c.load()).and_then(|(_, e)| e);
        let applying = Arc::new(Mutex::new(()));
        let ctx = Arc::new(Ctx {
            store,
            status: status.clone(),
            opts,
            cache,
            shutdown: rx,
            etag: Mutex::new(etag),
            applying: applying.clone(),
        });
        let handle = match &rt {
            Rt::Owned(r) => r.handle().clone(),
            Rt::Borrowed(h) => h.clone(),
        };
        if let Some(server) = ctx.opts.server.clone() {
            status.register("http");
            handle.spawn(super::http::run(ctx.clone(), server));
        }
        #[cfg(feature = "redis")]
        if let Some(url) = ctx.opts.redis_url.clone() {
            status.register("redis");
            handle.spawn(super::redis_source::run(ctx.clone(), url));
        }
        #[cfg(not(feature = "redis"))]
        if ctx.opts.redis_url.is_some() {
            return Err(Error::Config(
                "a Redis URL was given but promptops-core was built without the `redis` feature"
                    .into(),
            ));
        }
        Ok(Syncer {
            rt: Some(rt),
            shutdown: tx,
            status,
            applying,
        })
    }

    /// Stop every source (idempotent).
    pub fn close(&mut self) {
        let _ = self.shutdown.send(true);
        // Wait (boundedly: `close` may be called from a change listener,
        // i.e. while this very update is being applied) for an update being
        // applied to be persisted.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while matches!(
            self.applying.try_lock(),
            Err(std::sync::TryLockError::WouldBlock)
        ) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.status.close();
        if let Some(Rt::Owned(rt)) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// After `fork()`: the parent's runtime threads do not exist in the
    /// child. Forget them without joining; the caller starts a new syncer.
    /// The status cell is left as it is: the caller's next `start` registers
    /// its sources in it again.
    pub fn abandon_after_fork(mut self) {
        if let Some(rt) = self.rt.take() {
            std::mem::forget(rt);
        }
        // Not `close()`: that would mark the shared status closed.
        std::mem::forget(self);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.close();
    }
}
