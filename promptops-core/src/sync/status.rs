//! Sync status: what the live sources are doing, shared between them, the
//! client and its listeners. Plain std: no runtime needed to read it.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The state of live delivery (the names LaunchDarkly and Unleash SDKs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Started; no live source has answered yet (disk or bundle data may
    /// already be served).
    Initializing,
    /// A live source is connected and the data is current.
    Valid,
    /// Every live source is failing; the last-known-good data is served.
    Interrupted,
    /// Live delivery is stopped: not configured, closed, or refused (401/403).
    Off,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Initializing => "initializing",
            Status::Valid => "valid",
            Status::Interrupted => "interrupted",
            Status::Off => "off",
        }
    }
}

/// A status report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    pub status: Status,
    /// The most recent error of any source (kept after recovery, for
    /// diagnosis; `None` if there never was one).
    pub last_error: Option<String>,
    /// When a live source last confirmed the data was current.
    pub last_success: Option<SystemTime>,
    /// Per source (`http`, `redis`): its own state.
    pub sources: BTreeMap<String, Status>,
}

impl SyncStatus {
    /// How old the served data may be: the time since a live source last
    /// confirmed it (`None` if none ever did).
    pub fn data_age(&self) -> Option<Duration> {
        self.last_success
            .and_then(|t| SystemTime::now().duration_since(t).ok())
    }
}

type Listener = Arc<dyn Fn(&SyncStatus) + Send + Sync>;

/// Shared, thread-safe status with change notification.
pub struct StatusCell {
    inner: Mutex<Inner>,
    cond: Condvar,
    listeners: Mutex<Vec<Listener>>,
}

struct Inner {
    sources: BTreeMap<String, Status>,
    last_error: Option<String>,
    last_success: Option<SystemTime>,
    /// Bumped whenever a live source applies data (for start-up waits).
    live_updates: u64,
    closed: bool,
}

impl Default for StatusCell {
    fn default() -> Self {
        StatusCell {
            inner: Mutex::new(Inner {
                sources: BTreeMap::new(),
                last_error: None,
                last_success: None,
                live_updates: 0,
                closed: false,
            }),
            cond: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
        }
    }
}

impl StatusCell {
    pub fn snapshot(&self) -> SyncStatus {
        let g = self.lock();
        SyncStatus {
            status: overall(&g),
            last_error: g.last_error.clone(),
            last_success: g.last_success,
            sources: g.sources.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn on_change(&self, f: impl Fn(&SyncStatus) + Send + Sync + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Arc::new(f));
        }
    }

    /// Register a source as starting.
    pub fn register(&self, source: &str) {
        self.update(|g| {
            // Sync (re)starting: no longer closed.
            g.closed = false;
            g.sources.insert(source.to_string(), Status::Initializing);
        });
    }

    /// A source confirmed the data is current (connected, fetched, 304).
    pub fn ok(&self, source: &str) {
        self.update(|g| {
            g.sources.insert(source.to_string(), Status::Valid);
            g.last_success = Some(SystemTime::now());
        });
    }

    /// A source applied new data.
    pub fn applied(&self, source: &str) {
        self.update(|g| {
            g.sources.insert(source.to_string(), Status::Valid);
            g.last_success = Some(SystemTime::now());
            g.live_updates += 1;
        });
    }

    /// A source failed and will retry.
    pub fn error(&self, source: &str, err: impl Into<String>) {
        let err = err.into();
        tracing::warn!(target: "promptops::sync", source, "{err}");
        self.update(|g| {
            g.sources.insert(source.to_string(), Status::Interrupted);
            g.last_error = Some(err);
        });
    }

    /// A source stopped for good (401/403).
    pub fn fatal(&self, source: &str, err: impl Into<String>) {
        let err = err.into();
        tracing::error!(target: "promptops::sync", source, "{err}");
        self.update(|g| {
            g.sources.insert(source.to_string(), Status::Off);
            g.last_error = Some(err);
        });
    }

    /// The client is closing: every source is off.
    pub fn close(&self) {
        self.update(|g| {
            for s in g.sources.values_mut() {
                *s = Status::Off;
            }
            g.closed = true;
        });
    }

    /// Wait until a live source applied data, every source stopped, or
    /// `timeout` passed. Returns whether live data arrived.
    pub fn wait_for_live_data(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.live_updates > 0 {
                return true;
            }
            let all_off = !g.sources.is_empty() && g.sources.values().all(|s| *s == Status::Off);
            if g.closed || all_off {
                return false;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            g = match self.cond.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    fn update(&self, f: impl FnOnce(&mut Inner)) {
        let (before, after) = {
            let mut g = self.lock();
            let before = overall(&g);
            f(&mut g);
            (before, overall(&g))
        };
        self.cond.notify_all();
        if before != after {
            let snap = self.snapshot();
            let listeners: Vec<Listener> =
                self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
            for l in listeners {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l(&snap)));
            }
        }
    }
}

fn overall(g: &Inner) -> Status {
    if g.closed || g.sources.is_empty() {
        return Status::Off;
    }
    let any = |s: Status| g.sources.values().any(|x| *x == s);
    if any(Status::Valid) {
        Status::Valid
    } else if any(Status::Interrupted) {
        Status::Interrupted
    } else if any(Status::Initializing) {
        Status::Initializing
    } else {
        Status::Off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_status() {
        let c = StatusCell::default();
        assert_eq!(c.snapshot().status, Status::Off);
        c.register("http");
        c.register("redis");
        assert_eq!(c.snapshot().status, Status::Initializing);
        c.error("http", "connect refused");
        assert_eq!(c.snapshot().status, Status::Interrupted);
        c.ok("redis");
        assert_eq!(c.snapshot().status, Status::Valid);
        assert_eq!(c.snapshot().last_error.as_deref(), Some("connect refused"));
        c.fatal("redis", "401");
        c.fatal("http", "403");
        assert_eq!(c.snapshot().status, Status::Off);
        assert!(!c.wait_for_live_data(Duration::from_secs(5)));
    }

    #[test]
    fn listeners_see_transitions() {
        let c = StatusCell::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        c.on_change(move |s| s2.lock().unwrap().push(s.status));
        c.register("http");
        c.applied("http");
        c.applied("http");
        c.error("http", "x");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Status::Initializing, Status::Valid, Status::Interrupted]
        );
        assert!(c.wait_for_live_data(Duration::from_millis(1)));
    }
}
