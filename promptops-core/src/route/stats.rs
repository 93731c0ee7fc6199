//! Per-target statistics: exponentially weighted moving averages of latency,
//! time to first token, error rate and cost, plus counts and caller quality
//! scores. Pure data: updated by `Router::record`, read by strategies.

use serde::Serialize;

/// The statistics of one (policy, target).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TargetStats {
    /// Completed calls recorded (successes + failures).
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    /// EWMA of successful calls' total latency, in ms.
    pub latency_ms: Option<f64>,
    /// EWMA of successful streamed calls' time to first token, in ms.
    pub ttft_ms: Option<f64>,
    /// EWMA of the failure indicator (0 = success, 1 = failure).
    pub error_rate: f64,
    /// EWMA of the cost of successful calls, in USD.
    pub cost_usd: Option<f64>,
    /// Sum of costs recorded, in USD.
    pub total_cost_usd: f64,
    /// Caller quality scores (in `[0, 1]`): count and sum.
    pub quality_n: u64,
    pub quality_sum: f64,
}

fn ewma(old: Option<f64>, x: f64, alpha: f64) -> f64 {
    match old {
        Some(o) => o + alpha * (x - o),
        None => x,
    }
}

impl TargetStats {
    pub(crate) fn record_call(
        &mut self,
        ok: bool,
        latency_ms: Option<f64>,
        ttft_ms: Option<f64>,
        cost_usd: Option<f64>,
        alpha: f64,
    ) {
        self.calls += 1;
        let fail = if ok { 0.0 } else { 1.0 };
        self.error_rate = if self.calls == 1 {
            fail
        } else {
            self.error_rate + alpha * (fail - self.error_rate)
        };
        if ok {
            self.successes += 1;
            if let Some(l) = latency_ms {
                self.latency_ms = Some(ewma(self.latency_ms, l, alpha));
            }
            if let Some(t) = ttft_ms {
                self.ttft_ms = Some(ewma(self.ttft_ms, t, alpha));
            }
        } else {
            self.failures += 1;
        }
        if let Some(c) = cost_usd {
            self.total_cost_usd += c;
            if ok {
                self.cost_usd = Some(ewma(self.cost_usd, c, alpha));
            }
        }
    }

    pub(crate) fn record_quality(&mut self, score: f64) {
        self.quality_n += 1;
        self.quality_sum += score.clamp(0.0, 1.0);
    }

    /// Mean caller quality score, if any were recorded.
    pub fn quality(&self) -> Option<f64> {
        (self.quality_n > 0).then(|| self.quality_sum / self.quality_n as f64)
    }

    /// Share of successful calls (lifetime), if any calls were recorded.
    pub fn success_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.successes as f64 / self.calls as f64)
    }
}

/// Stats of one target as reported by `Router::stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    pub policy: String,
    pub target: String,
    #[serde(flatten)]
    pub stats: TargetStats,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_math() {
        let mut s = TargetStats::default();
        s.record_call(true, Some(100.0), None, Some(0.01), 0.5);
        assert_eq!(s.latency_ms, Some(100.0));
        s.record_call(true, Some(200.0), None, Some(0.03), 0.5);
        assert_eq!(s.latency_ms, Some(150.0));
        assert!((s.cost_usd.unwrap() - 0.02).abs() < 1e-12);
        s.record_call(false, None, None, None, 0.5);
        assert_eq!(s.error_rate, 0.5);
        assert_eq!(s.calls, 3);
        assert_eq!(s.success_rate(), Some(2.0 / 3.0));
        s.record_quality(0.5);
        s.record_quality(1.5); // clamped to 1
        assert_eq!(s.quality(), Some(0.75));
    }
}
