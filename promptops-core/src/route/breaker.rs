//! A circuit breaker per endpoint (`provider/model`).
//!
//! - **Closed**: calls flow; outcomes go into a sliding time window. When the
//!   window holds at least `min_requests` outcomes and the share of failures
//!   reaches `failure_ratio`, the breaker opens.
//! - **Open**: no calls until `cooldown_ms` has passed (or, after a 429, until
//!   the provider's `Retry-After`, whichever is later).
//! - **Half-open**: after the cooldown one probe call is let through; its
//!   success closes the breaker (and clears the window), its failure opens it
//!   again. A probe whose outcome never arrives (a caller that routed but
//!   never recorded) stops blocking after another cooldown.
//!
//! Time comes in as milliseconds from the router's [`super::Clock`].

use std::collections::VecDeque;

use serde::Serialize;

/// Breaker settings (defaults in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakerConfig {
    /// Length of the sliding window [30 000 ms].
    pub window_ms: u64,
    /// Fewest outcomes in the window before the breaker may open [5].
    pub min_requests: u32,
    /// Failure share that opens the breaker [0.5].
    pub failure_ratio: f64,
    /// How long an open breaker stays open [10 000 ms].
    pub cooldown_ms: u64,
    /// Longest `Retry-After` honoured [300 000 ms].
    pub max_retry_after_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 30_000,
            min_requests: 5,
            failure_ratio: 0.5,
            cooldown_ms: 10_000,
            max_retry_after_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { probe_started_ms: Option<u64> },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half_open",
        }
    }
}

/// Upper bound on outcomes kept in the window (memory bound under load).
const MAX_WINDOW: usize = 4096;

#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// (time, failed) of recent outcomes, oldest first.
    window: VecDeque<(u64, bool)>,
    failures_in_window: u32,
    /// Times the breaker opened (for stats and tests).
    pub opened: u64,
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            state: BreakerState::Closed,
            window: VecDeque::new(),
            failures_in_window: 0,
            opened: 0,
        }
    }

    /// The state at `now` (an open breaker past its time reads half-open).
    pub fn state(&self, now: u64) -> BreakerState {
        match self.state {
            BreakerState::Open { until_ms } if now >= until_ms => BreakerState::HalfOpen {
                probe_started_ms: None,
            },
            s => s,
        }
    }

    /// Whether a call may be made at `now`, without reserving anything.
    pub fn available(&self, now: u64) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { probe_started_ms } => match probe_started_ms {
                None => true,
                Some(t) => now.saturating_sub(t) >= self.cfg.cooldown_ms,
            },
        }
    }

    /// Reserve a call at `now`: `true` if it may go ahead (in half-open
    /// state this takes the one probe slot).
    pub fn try_acquire(&mut self, now: u64) -> bool {
        if !self.available(now) {
            return false;
        }
        if let BreakerState::HalfOpen { .. } = self.state(now) {
            self.state = BreakerState::HalfOpen {
                probe_started_ms: Some(now),
            };
        }
        true
    }

    fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.cfg.window_ms);
        while let Some(&(t, failed)) = self.window.front() {
            if t >= horizon && self.window.len() <= MAX_WINDOW {
                break;
            }
            self.window.pop_front();
            if failed {
                self.failures_in_window -= 1;
            }
        }
    }

    fn open(&mut self, now: u64, until_ms: u64) {
        let until_ms = match self.state(now) {
            BreakerState::Open { until_ms: u } => u.max(until_ms),
            _ => {
                self.opened += 1;
                until_ms
            }
        };
        self.state = BreakerState::Open { until_ms };
        self.window.clear();
        self.failures_in_window = 0;
    }

    pub fn on_success(&mut self, now: u64) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Closed;
                self.window.clear();
                self.failures_in_window = 0;
            }
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.window.push_back((now, false));
                self.prune(now);
            }
        }
    }

    pub fn on_failure(&mut self, now: u64) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => self.open(now, now + self.cfg.cooldown_ms),
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                self.window.push_back((now, true));
                self.failures_in_window += 1;
                self.prune(now);
                let n = self.window.len() as u32;
                if n >= self.cfg.min_requests
                    && self.failures_in_window as f64 >= self.cfg.failure_ratio * n as f64
                {
                    self.open(now, now + self.cfg.cooldown_ms);
                }
            }
        }
    }

    /// A 429: with a `Retry-After`, the endpoint is skipped until then
    /// (capped at `max_retry_after_ms`); without one it counts as a failure.
    pub fn on_rate_limited(&mut self, now: u64, retry_after_ms: Option<u64>) {
        match retry_after_ms {
            Some(ms) => self.open(now, now + ms.min(self.cfg.max_retry_after_ms)),
            None => self.on_failure(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window_ms: 1000,
            min_requests: 4,
            failure_ratio: 0.5,
            cooldown_ms: 500,
            max_retry_after_ms: 60_000,
        }
    }

    #[test]
    fn opens_on_ratio_with_minimum() {
        let mut b = Breaker::new(cfg());
        b.on_failure(0);
        b.on_success(1);
        b.on_failure(2);
        assert_eq!(b.state(3), BreakerState::Closed, "below min_requests");
        b.on_failure(3);
        assert_eq!(b.state(4), BreakerState::Open { until_ms: 503 });
        assert_eq!(b.opened, 1);
        assert!(!b.available(502));
        assert!(b.try_acquire(503), "half-open probe");
        assert!(!b.try_acquire(504), "one probe at a time");
        b.on_success(600);
        assert_eq!(b.state(600), BreakerState::Closed);
    }

    #[test]
    fn window_slides() {
        let mut b = Breaker::new(cfg());
        b.on_failure(0);
        b.on_failure(10);
        b.on_success(1500);
        b.on_success(1501);
        b.on_failure(1502);
        // The first two failures left the window: 1 of 3.
        assert_eq!(b.state(1503), BreakerState::Closed);
    }

    #[test]
    fn half_open_failure_reopens_and_stale_probe_expires() {
        let mut b = Breaker::new(cfg());
        for t in 0..4 {
            b.on_failure(t);
        }
        assert!(b.try_acquire(600));
        b.on_failure(610);
        assert_eq!(b.state(611), BreakerState::Open { until_ms: 1110 });
        assert!(b.try_acquire(1110));
        // The probe's outcome never arrives: another probe after a cooldown.
        assert!(!b.available(1500));
        assert!(b.available(1610));
    }

    #[test]
    fn retry_after() {
        let mut b = Breaker::new(cfg());
        b.on_rate_limited(100, Some(2000));
        assert!(!b.available(2099));
        assert!(b.available(2100));
        b.on_rate_limited(3000, Some(10_000_000));
        assert_eq!(b.state(3000), BreakerState::Open { until_ms: 63_000 });
    }
}
