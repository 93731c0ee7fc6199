//! Routing: which provider, model, variant and version serves a call.
//!
//! Everything here is pure: a [`Policy`] (parsed and validated from the JSON
//! stored with a prompt), per-target [`TargetStats`], per-endpoint circuit
//! [`Breaker`]s and a [`Router`] that turns them into a [`Decision`]. Time is
//! read through a [`Clock`] (tests inject a [`ManualClock`]); randomness
//! comes from a seeded generator. No network code and no runtime live here:
//! provider calls are in `crate::provider` (feature `providers`), and the
//! bring-your-own-client path is [`crate::Client::route`] +
//! [`crate::Client::record`].
//!
//! # Sticky assignment
//!
//! `weighted`, `canary` and `ab` policies assign a caller key to a bucket in
//! `[0, 10000)` and the bucket to a target. The bucket is
//!
//! ```text
//! digest = SHA-256( "promptops/route/v1" 0x00 policy_id 0x00 experiment 0x00 key )
//! bucket = u64::from_be_bytes(digest[0..8]) mod 10000
//! ```
//!
//! over the UTF-8 bytes of each string (see [`bucket`]). Targets own
//! consecutive bucket ranges in policy order, sized by their weight in
//! hundredths of a percent (weight 12.5 → 1250 buckets). The same key always
//! gets the same target while the policy is unchanged, in every language
//! binding (they all call this code).

mod breaker;
pub(crate) mod client;
mod policy;
mod router;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use client::{RouteChoice, RouteOptions, Routed};
pub use policy::{
    AdaptiveAlgorithm, AdaptiveConfig, Budget, FailoverConfig, FailureClass, Policy, Reward,
    Strategy, Target, compile_policies, parse_policy, validate_policy, validate_snapshot_policies,
};
pub use router::{Decision, Estimate, Outcome, RouteInput, Router, RouterConfig, Skipped};
pub use stats::{StatsSnapshot, TargetStats};

/// Number of sticky-assignment buckets (weights have 0.01 % resolution).
pub const BUCKETS: u32 = 10_000;

/// The domain-separation prefix of the sticky hash.
pub const HASH_PREFIX: &[u8] = b"promptops/route/v1";

/// The sticky bucket of `key` for `policy_id` and `experiment`, in
/// `[0, BUCKETS)`. See the module docs for the byte layout.
pub fn bucket(policy_id: &str, experiment: &str, key: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(HASH_PREFIX);
    h.update([0u8]);
    h.update(policy_id.as_bytes());
    h.update([0u8]);
    h.update(experiment.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) % BUCKETS as u64) as u32
}

/// Where routing, breakers and telemetry read the time. Monotonic
/// milliseconds for durations; wall-clock milliseconds for timestamps.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds on a monotonic clock (any origin).
    fn now_ms(&self) -> u64;
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
        }
    }

    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    /// The manual time doubles as the wall clock.
    fn unix_ms(&self) -> u64 {
        self.now_ms()
    }
}

/// SplitMix64: a small, fast, seedable generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift; the bias is < n / 2^64.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable_and_in_range() {
        let b = bucket("p", "e", "user-1");
        assert_eq!(b, bucket("p", "e", "user-1"));
        assert!(b < BUCKETS);
        // Separators matter: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(bucket("ab", "c", "k"), bucket("a", "bc", "k"));
    }

    #[test]
    fn rng_is_seeded() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let x = a.next_f64();
        assert!((0.0..1.0).contains(&x));
        assert!(a.below(10) < 10);
    }
}
