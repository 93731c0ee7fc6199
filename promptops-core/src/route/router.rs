//! The router: policy + stats + breakers (+ cost estimates) → a decision.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::breaker::{Breaker, BreakerConfig, BreakerState};
use super::policy::{AdaptiveAlgorithm, FailureClass, Policy, Reward, Strategy, Target};
use super::stats::{StatsSnapshot, TargetStats};
use super::{BUCKETS, Clock, SplitMix64, SystemClock, bucket};
use crate::compile::HashMap;
use crate::error::{Error, Result};

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Seed of the generator used for keyless weighted picks and
    /// epsilon-greedy exploration (default: from the wall clock).
    pub seed: u64,
    /// EWMA smoothing factor in `(0, 1]` (default 0.2: a sample's weight
    /// halves after ~3 newer samples).
    pub ewma_alpha: f64,
    pub breaker: BreakerConfig,
    pub clock: Arc<dyn Clock>,
}

impl Default for RouterConfig {
    fn default() -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        RouterConfig {
            seed,
            ewma_alpha: 0.2,
            breaker: BreakerConfig::default(),
            clock,
        }
    }
}

/// A cost and fit estimate of one target for the rendered prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// Input tokens of the prompt rendered for this target, counted for its
    /// model.
    pub input_tokens: u64,
    /// Whether the count is exact (OpenAI encodings) or an estimate.
    pub exact: bool,
    /// Output tokens assumed in the prediction.
    pub output_tokens: u64,
    pub predicted_cost_usd: f64,
    pub context_window: Option<u64>,
    /// `input_tokens + output_tokens` fits the context window (or the window
    /// is unknown).
    pub fits: bool,
}

/// What the router needs besides the policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteInput<'a> {
    /// The caller key sticky strategies hash (user id, session id, …).
    /// Without one, weighted picks are random (seeded generator).
    pub key: Option<&'a str>,
    /// Per target (same order as the policy's), its estimate; `None` for a
    /// target that could not be estimated. Needed by `cheapest` and
    /// `best_quality`.
    pub estimates: Option<&'a [Option<Estimate>]>,
    /// Per target (same order as the policy's), why it must not be used
    /// (the model catalogue disabled it, or its health check failed);
    /// `None` entries are usable.
    pub unavailable: Option<&'a [Option<String>]>,
}

/// A target left out of a decision, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub target: String,
    pub reason: String,
}

/// The router's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The policy decided under (serialised as its id, `policy_id`).
    #[serde(rename = "policy_id", serialize_with = "ser_policy_id")]
    pub policy: Arc<Policy>,
    pub strategy: Strategy,
    /// Index of the chosen target in `policy.targets`.
    pub target: usize,
    /// Attempt order for failover: the chosen target, then the fallbacks.
    pub order: Vec<usize>,
    /// The sticky bucket, for sticky strategies.
    pub bucket: Option<u32>,
    /// Why this target, in words.
    pub reason: String,
    /// The chosen target's estimate, when estimates were made.
    pub estimate: Option<Estimate>,
    pub skipped: Vec<Skipped>,
    /// When the decision was made (router clock, monotonic ms).
    pub at_ms: u64,
    /// Filled by the client: the prompt, version, label and variant served.
    pub prompt: Option<String>,
    pub version: Option<u32>,
    pub label: Option<String>,
    pub variant: Option<String>,
}

fn ser_policy_id<S: serde::Serializer>(
    p: &Arc<Policy>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.id)
}

/// `buckets` (hundredths of a percent) as a percentage without float
/// formatting: 1250 -> "12.5".
fn push_percent(out: &mut String, buckets: u32) {
    let _ = write!(out, "{}", buckets / 100);
    let frac = buckets % 100;
    if frac != 0 {
        if frac.is_multiple_of(10) {
            let _ = write!(out, ".{}", frac / 10);
        } else {
            let _ = write!(out, ".{frac:02}");
        }
    }
}

impl Decision {
    /// The policy id.
    pub fn policy_id(&self) -> &str {
        &self.policy.id
    }

    /// The chosen target.
    pub fn target(&self) -> &Target {
        &self.policy.targets[self.target]
    }

    /// The fallback targets, in attempt order.
    pub fn fallbacks(&self) -> impl Iterator<Item = &Target> {
        self.order.iter().skip(1).map(|&i| &self.policy.targets[i])
    }
}

/// The outcome of one call, fed back with `record`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// `None` for a success.
    pub error: Option<FailureClass>,
    pub status: Option<u16>,
    /// From a 429's `Retry-After`.
    pub retry_after_ms: Option<u64>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// A caller quality score in `[0, 1]`.
    pub quality: Option<f64>,
}

impl Outcome {
    pub fn success(latency_ms: f64) -> Self {
        Outcome {
            latency_ms: Some(latency_ms),
            ..Default::default()
        }
    }

    pub fn failure(class: FailureClass) -> Self {
        Outcome {
            error: Some(class),
            ..Default::default()
        }
    }

    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

struct State {
    stats: HashMap<Arc<str>, TargetStats>,
    breakers: HashMap<Arc<str>, Breaker>,
    rng: SplitMix64,
}

/// Routing state of one client: stats per (policy, target), breakers per
/// endpoint, and the seeded generator.
pub struct Router {
    cfg: RouterConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("ewma_alpha", &self.cfg.ewma_alpha)
            .field("breaker", &self.cfg.breaker)
            .finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new(RouterConfig::default())
    }
}

const NO_STATS: TargetStats = TargetStats {
    calls: 0,
    successes: 0,
    failures: 0,
    latency_ms: None,
    ttft_ms: None,
    error_rate: 0.0,
    cost_usd: None,
    total_cost_usd: 0.0,
    quality_n: 0,
    quality_sum: 0.0,
};

/// Default prior quality of a target without `quality` and scores.
pub const DEFAULT_QUALITY_PRIOR: f64 = 0.5;

impl Router {
    pub fn new(cfg: RouterConfig) -> Self {
        let rng = SplitMix64::new(cfg.seed);
        Router {
            cfg,
            state: Mutex::new(State {
                stats: HashMap::default(),
                breakers: HashMap::default(),
                rng,
            }),
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.cfg.clock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decide which target serves a call under `policy`.
    pub fn decide(&self, policy: &Arc<Policy>, input: &RouteInput<'_>) -> Result<Decision> {
        let now = self.cfg.clock.now_ms();
        let mut st = self.lock();
        let n = policy.targets.len();
        let mut skipped = Vec::new();
        // Availability (circuit breakers).
        let mut avail = [true; 16];
        let mut avail_vec;
        let avail: &mut [bool] = if n <= 16 {
            &mut avail[..n]
        } else {
            avail_vec = vec![true; n];
            &mut avail_vec
        };
        // Targets the model catalogue rules out come first: they are not
        // candidates at all, whatever their circuit says.
        let mut catalogue_skips = 0usize;
        if let Some(un) = input.unavailable {
            for (i, t) in policy.targets.iter().enumerate() {
                if let Some(Some(why)) = un.get(i) {
                    avail[i] = false;
                    catalogue_skips += 1;
                    skipped.push(Skipped {
                        target: t.id.clone(),
                        reason: why.clone(),
                    });
                }
            }
        }
        let all_open = if catalogue_skips == 0 {
            "every target's circuit is open"
        } else {
            "every target is unavailable (disabled or unhealthy in the model catalogue, or its circuit is open)"
        };
        for (i, t) in policy.targets.iter().enumerate() {
            if !avail[i] {
                continue;
            }
            if let Some(b) = st.breakers.get(&t.endpoint)
                && !b.available(now)
            {
                avail[i] = false;
                skipped.push(Skipped {
                    target: t.id.clone(),
                    reason: breaker_reason(&b.state(now), now),
                });
            }
        }
        let mut reason = String::new();
        let mut bucket_out = None;
        let mut estimate = None;
        let stats_of = |st: &State, t: &Target| -> TargetStats {
            st.stats.get(&t.stats_key).cloned().unwrap_or(NO_STATS)
        };
        // (chosen, order of the rest)
        let (chosen, mut rest): (usize, Vec<usize>) = match policy.strategy {
            Strategy::Weighted | Strategy::Canary | Strategy::Ab => {
                let b = match input.key {
                    Some(k) => bucket(&policy.id, &policy.experiment, k),
                    None => st.rng.below(BUCKETS as u64) as u32,
                };
                bucket_out = Some(b);
                let mut acc = 0u32;
                let mut pick = n - 1;
                for (i, t) in policy.targets.iter().enumerate() {
                    acc += t.buckets;
                    if b < acc {
                        pick = i;
                        break;
                    }
                }
                let t = &policy.targets[pick];
                reason.push_str(if input.key.is_some() {
                    "sticky bucket "
                } else {
                    "random (no caller key) bucket "
                });
                let _ = write!(reason, "{b} of {BUCKETS} -> `{}` (", t.id);
                push_percent(&mut reason, t.buckets);
                reason.push_str("% of traffic");
                if policy.strategy != Strategy::Weighted {
                    let _ = write!(
                        reason,
                        ", {} `{}`",
                        policy.strategy.as_str(),
                        policy.experiment
                    );
                }
                reason.push(')');
                let chosen = if avail[pick] {
                    pick
                } else {
                    let Some(alt) = (1..n).map(|d| (pick + d) % n).find(|&i| avail[i]) else {
                        return Err(no_route(policy, &skipped, all_open));
                    };
                    let why = if input
                        .unavailable
                        .and_then(|u| u.get(pick))
                        .is_some_and(Option::is_some)
                    {
                        "it is unavailable in the model catalogue"
                    } else {
                        "its circuit is open"
                    };
                    let _ = write!(reason, "; {why}, using `{}`", policy.targets[alt].id);
                    alt
                };
                (
                    chosen,
                    (0..n).filter(|&i| i != chosen && avail[i]).collect(),
                )
            }
            Strategy::Failover => {
                let Some(first) = (0..n).find(|&i| avail[i]) else {
                    return Err(no_route(policy, &skipped, all_open));
                };
                if first == 0 {
                    let _ = write!(
                        reason,
                        "first target in failover order: `{}`",
                        policy.targets[0].id
                    );
                } else {
                    let _ = write!(
                        reason,
                        "first healthy target in failover order: `{}` ({} ahead of it skipped)",
                        policy.targets[first].id, first
                    );
                }
                (first, (first + 1..n).filter(|&i| avail[i]).collect())
            }
            Strategy::Cheapest | Strategy::BestQuality => {
                let Some(est) = input.estimates else {
                    return Err(Error::Policy {
                        prompt: None,
                        field: "strategy".into(),
                        message: format!(
                            "{} needs cost estimates (route through the client, which renders per target)",
                            policy.strategy.as_str()
                        ),
                    });
                };
                let mut cands: Vec<(usize, Estimate)> = Vec::with_capacity(n);
                for (i, t) in policy.targets.iter().enumerate() {
                    if !avail[i] {
                        continue;
                    }
                    match est.get(i).copied().flatten() {
                        None => skipped.push(Skipped {
                            target: t.id.clone(),
                            reason: "no price for its model".into(),
                        }),
                        Some(e) if !e.fits => skipped.push(Skipped {
                            target: t.id.clone(),
                            reason: format!(
                                "prompt of {} tokens + {} output exceeds its {}-token context window",
                                e.input_tokens,
                                e.output_tokens,
                                e.context_window.unwrap_or(0)
                            ),
                        }),
                        Some(e) => cands.push((i, e)),
                    }
                }
                if policy.strategy == Strategy::Cheapest {
                    cands.sort_by(|a, b| {
                        a.1.predicted_cost_usd
                            .total_cmp(&b.1.predicted_cost_usd)
                            .then(a.0.cmp(&b.0))
                    });
                    let Some(&(c, e)) = cands.first() else {
                        return Err(no_route(policy, &skipped, "no target fits the prompt"));
                    };
                    estimate = Some(e);
                    let _ = write!(
                        reason,
                        "cheapest of {} fitting target(s): `{}` at ${:.6} predicted ({} input tokens{} + {} expected output)",
                        cands.len(),
                        policy.targets[c].id,
                        e.predicted_cost_usd,
                        e.input_tokens,
                        if e.exact { "" } else { " (estimated)" },
                        e.output_tokens
                    );
                    (c, cands.iter().skip(1).map(|x| x.0).collect())
                } else {
                    let b = policy.budget;
                    let mut within: Vec<(usize, Estimate, f64, bool)> = Vec::new();
                    for (i, e) in cands {
                        let t = &policy.targets[i];
                        let s = stats_of(&st, t);
                        if let Some(max) = b.max_cost_usd
                            && e.predicted_cost_usd > max
                        {
                            skipped.push(Skipped {
                                target: t.id.clone(),
                                reason: format!(
                                    "predicted ${:.6} is over the ${max} budget",
                                    e.predicted_cost_usd
                                ),
                            });
                            continue;
                        }
                        if let (Some(max), Some(l)) = (b.max_latency_ms, s.latency_ms)
                            && l > max
                        {
                            skipped.push(Skipped {
                                target: t.id.clone(),
                                reason: format!(
                                    "{l:.0} ms EWMA latency is over the {max} ms budget"
                                ),
                            });
                            continue;
                        }
                        let observed = s.quality_n >= policy.min_samples as u64;
                        let q = match (observed, s.quality()) {
                            (true, Some(q)) => q,
                            _ => t.quality.unwrap_or(DEFAULT_QUALITY_PRIOR),
                        };
                        within.push((i, e, q, observed));
                    }
                    within.sort_by(|a, b| {
                        b.2.total_cmp(&a.2)
                            .then(a.1.predicted_cost_usd.total_cmp(&b.1.predicted_cost_usd))
                            .then(a.0.cmp(&b.0))
                    });
                    let Some(&(c, e, q, observed)) = within.first() else {
                        return Err(no_route(policy, &skipped, "no target is within the budget"));
                    };
                    estimate = Some(e);
                    let _ = write!(
                        reason,
                        "best quality within budget: `{}` quality {q:.3} ({}) at ${:.6} predicted; {} of {} target(s) within budget",
                        policy.targets[c].id,
                        if observed { "observed" } else { "prior" },
                        e.predicted_cost_usd,
                        within.len(),
                        n
                    );
                    (c, within.iter().skip(1).map(|x| x.0).collect())
                }
            }
            Strategy::Fastest => {
                let cands: Vec<(usize, TargetStats)> = (0..n)
                    .filter(|&i| avail[i])
                    .map(|i| (i, stats_of(&st, &policy.targets[i])))
                    .collect();
                if cands.is_empty() {
                    return Err(no_route(policy, &skipped, all_open));
                }
                let min = policy.min_samples as u64;
                let explore = cands
                    .iter()
                    .filter(|(_, s)| s.successes < min)
                    .min_by(|a, b| a.1.successes.cmp(&b.1.successes).then(a.0.cmp(&b.0)));
                let mut by_latency = cands.clone();
                by_latency.sort_by(|a, b| {
                    let la = a.1.latency_ms.unwrap_or(f64::INFINITY);
                    let lb = b.1.latency_ms.unwrap_or(f64::INFINITY);
                    la.total_cmp(&lb).then(a.0.cmp(&b.0))
                });
                let chosen = match explore {
                    Some(&(i, ref s)) => {
                        let _ = write!(
                            reason,
                            "exploring `{}`: {} of {min} minimum latency samples",
                            policy.targets[i].id, s.successes
                        );
                        i
                    }
                    None => {
                        let (i, s) = &by_latency[0];
                        let _ = write!(
                            reason,
                            "fastest observed: `{}` at {:.0} ms EWMA latency",
                            policy.targets[*i].id,
                            s.latency_ms.unwrap_or(0.0)
                        );
                        if let Some((j, s2)) = by_latency.get(1) {
                            let _ = write!(
                                reason,
                                " (next: `{}` at {:.0} ms)",
                                policy.targets[*j].id,
                                s2.latency_ms.unwrap_or(0.0)
                            );
                        }
                        *i
                    }
                };
                (
                    chosen,
                    by_latency
                        .iter()
                        .map(|x| x.0)
                        .filter(|&i| i != chosen)
                        .collect(),
                )
            }
            Strategy::Adaptive => {
                let cands: Vec<(usize, TargetStats)> = (0..n)
                    .filter(|&i| avail[i])
                    .map(|i| (i, stats_of(&st, &policy.targets[i])))
                    .collect();
                if cands.is_empty() {
                    return Err(no_route(policy, &skipped, all_open));
                }
                let cfg = policy.adaptive;
                let samples = |s: &TargetStats| match cfg.reward {
                    Reward::Success => s.calls,
                    Reward::Quality => s.quality_n,
                };
                let mean = |t: &Target, s: &TargetStats| match cfg.reward {
                    Reward::Success => s.success_rate().unwrap_or(0.0),
                    Reward::Quality => s
                        .quality()
                        .unwrap_or(t.quality.unwrap_or(DEFAULT_QUALITY_PRIOR)),
                };
                let min = policy.min_samples as u64;
                let explore = cands
                    .iter()
                    .filter(|(_, s)| samples(s) < min)
                    .min_by(|a, b| samples(&a.1).cmp(&samples(&b.1)).then(a.0.cmp(&b.0)));
                let total: u64 = cands.iter().map(|(_, s)| samples(s)).sum();
                let mut scored: Vec<(usize, f64, f64)> = cands
                    .iter()
                    .map(|(i, s)| {
                        let m = mean(&policy.targets[*i], s);
                        let score = match cfg.algorithm {
                            AdaptiveAlgorithm::Ucb1 => {
                                let ni = samples(s).max(1) as f64;
                                m + cfg.exploration * (2.0 * (total.max(1) as f64).ln() / ni).sqrt()
                            }
                            AdaptiveAlgorithm::EpsilonGreedy => m,
                        };
                        (*i, m, score)
                    })
                    .collect();
                scored.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
                let what = match cfg.reward {
                    Reward::Success => "success rate",
                    Reward::Quality => "quality",
                };
                let chosen = if let Some(&(i, ref s)) = explore {
                    let _ = write!(
                        reason,
                        "exploring `{}`: {} of {min} minimum samples",
                        policy.targets[i].id,
                        samples(s)
                    );
                    i
                } else {
                    match cfg.algorithm {
                        AdaptiveAlgorithm::Ucb1 => {
                            let (i, m, score) = scored[0];
                            let _ = write!(
                                reason,
                                "UCB1: `{}` has the highest bound {score:.3} (mean {what} {m:.3} + exploration {:.3})",
                                policy.targets[i].id,
                                score - m
                            );
                            i
                        }
                        AdaptiveAlgorithm::EpsilonGreedy => {
                            if st.rng.next_f64() < cfg.epsilon {
                                let i = scored[st.rng.below(scored.len() as u64) as usize].0;
                                let _ = write!(
                                    reason,
                                    "epsilon-greedy: exploring `{}` at random (epsilon {})",
                                    policy.targets[i].id, cfg.epsilon
                                );
                                i
                            } else {
                                let (i, m, _) = scored[0];
                                let _ = write!(
                                    reason,
                                    "epsilon-greedy: best mean {what} `{}` ({m:.3})",
                                    policy.targets[i].id
                                );
                                i
                            }
                        }
                    }
                };
                (
                    chosen,
                    scored
                        .iter()
                        .map(|x| x.0)
                        .filter(|&i| i != chosen)
                        .collect(),
                )
            }
        };
        // A half-open endpoint lets one probe through: this decision takes it.
        if let Some(b) = st.breakers.get_mut(&policy.targets[chosen].endpoint) {
            b.try_acquire(now);
        }
        drop(st);
        if catalogue_skips > 0 {
            reason.push_str("; skipped by the model catalogue: ");
            let mut first = true;
            for (i, t) in policy.targets.iter().enumerate() {
                if let Some(Some(why)) = input.unavailable.and_then(|u| u.get(i)) {
                    if !first {
                        reason.push_str(", ");
                    }
                    first = false;
                    let _ = write!(reason, "`{}` ({why})", t.id);
                }
            }
        }
        if !policy.failover.enabled {
            rest.clear();
        }
        let mut order = Vec::with_capacity(rest.len() + 1);
        order.push(chosen);
        order.extend(rest);
        if estimate.is_none()
            && let Some(est) = input.estimates
        {
            estimate = est.get(chosen).copied().flatten();
        }
        Ok(Decision {
            strategy: policy.strategy,
            policy: policy.clone(),
            target: chosen,
            order,
            bucket: bucket_out,
            reason,
            estimate,
            skipped,
            at_ms: now,
            prompt: None,
            version: None,
            label: None,
            variant: None,
        })
    }

    /// Reserve a call to `target` (its breaker's half-open probe slot).
    /// `false` when its circuit is open.
    pub fn try_acquire(&self, target: &Target) -> bool {
        let now = self.cfg.clock.now_ms();
        let mut st = self.lock();
        match st.breakers.get_mut(&target.endpoint) {
            Some(b) => b.try_acquire(now),
            None => true,
        }
    }

    /// Feed a call's outcome into the target's stats and its endpoint's
    /// breaker. Client errors (4xx other than 429) count as failures in the
    /// stats but say nothing about the endpoint's health.
    pub fn record(&self, target: &Target, outcome: &Outcome) {
        let now = self.cfg.clock.now_ms();
        let alpha = self.cfg.ewma_alpha;
        let bcfg = self.cfg.breaker;
        let mut st = self.lock();
        let s = match st.stats.get_mut(&target.stats_key) {
            Some(s) => s,
            None => st.stats.entry(target.stats_key.clone()).or_default(),
        };
        s.record_call(
            outcome.is_success(),
            outcome.latency_ms,
            outcome.ttft_ms,
            outcome.cost_usd,
            alpha,
        );
        if let Some(q) = outcome.quality {
            s.record_quality(q);
        }
        let b = match st.breakers.get_mut(&target.endpoint) {
            Some(b) => b,
            None => st
                .breakers
                .entry(target.endpoint.clone())
                .or_insert_with(|| Breaker::new(bcfg)),
        };
        match outcome.error {
            None => b.on_success(now),
            Some(FailureClass::RateLimited) => b.on_rate_limited(now, outcome.retry_after_ms),
            Some(FailureClass::ClientError) => {}
            Some(_) => b.on_failure(now),
        }
    }

    /// Record a caller quality score (in `[0, 1]`) for a target, e.g. from
    /// an evaluation that finished after the call.
    pub fn record_quality(&self, target: &Target, score: f64) {
        let mut st = self.lock();
        st.stats
            .entry(target.stats_key.clone())
            .or_default()
            .record_quality(score);
    }

    /// The stats of one target (`None` before anything was recorded).
    pub fn target_stats(&self, target: &Target) -> Option<TargetStats> {
        self.lock().stats.get(&target.stats_key).cloned()
    }

    /// The breaker state of an endpoint (`provider/model`) now.
    pub fn breaker_state(&self, endpoint: &str) -> BreakerState {
        let now = self.cfg.clock.now_ms();
        self.lock()
            .breakers
            .get(endpoint)
            .map(|b| b.state(now))
            .unwrap_or(BreakerState::Closed)
    }

    /// Every target's stats.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        let st = self.lock();
        let mut out: Vec<StatsSnapshot> = st
            .stats
            .iter()
            .map(|(k, s)| {
                let (p, t) = k.split_once('|').unwrap_or((k, ""));
                StatsSnapshot {
                    policy: p.to_string(),
                    target: t.to_string(),
                    stats: s.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.policy, &a.target).cmp(&(&b.policy, &b.target)));
        out
    }
}

fn breaker_reason(s: &BreakerState, now: u64) -> String {
    match s {
        BreakerState::Open { until_ms } => format!(
            "circuit open for another {} ms",
            until_ms.saturating_sub(now)
        ),
        BreakerState::HalfOpen { .. } => "circuit half-open, probe in flight".into(),
        BreakerState::Closed => "circuit closed".into(),
    }
}

fn no_route(policy: &Policy, skipped: &[Skipped], what: &str) -> Error {
    let mut message = format!(
        "policy `{}` ({}): {what}",
        policy.id,
        policy.strategy.as_str()
    );
    if !skipped.is_empty() {
        message.push_str(" — ");
        let parts: Vec<String> = skipped
            .iter()
            .map(|s| format!("`{}`: {}", s.target, s.reason))
            .collect();
        message.push_str(&parts.join("; "));
    }
    Error::NoRoute {
        prompt: policy.id.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ManualClock, parse_policy};
    use super::*;
    use serde_json::json;

    fn router(clock: Arc<ManualClock>) -> Router {
        Router::new(RouterConfig {
            seed: 42,
            ewma_alpha: 0.5,
            breaker: BreakerConfig {
                window_ms: 10_000,
                min_requests: 2,
                failure_ratio: 0.5,
                cooldown_ms: 1000,
                max_retry_after_ms: 60_000,
            },
            clock,
        })
    }

    fn policy(v: serde_json::Value) -> Arc<Policy> {
        Arc::new(parse_policy(&v, Some("m/p")).unwrap())
    }

    #[test]
    fn failover_skips_open_circuits() {
        let clock = Arc::new(ManualClock::new(0));
        let r = router(clock.clone());
        let p = policy(json!({"strategy": "failover", "targets": [
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "anthropic", "model": "claude-haiku-4-5"}]}));
        let d = r.decide(&p, &RouteInput::default()).unwrap();
        assert_eq!((d.target, d.order.clone()), (0, vec![0, 1]));
        r.record(&p.targets[0], &Outcome::failure(FailureClass::ServerError));
        r.record(&p.targets[0], &Outcome::failure(FailureClass::Timeout));
        let d = r.decide(&p, &RouteInput::default()).unwrap();
        assert_eq!(d.target, 1, "{}", d.reason);
        assert_eq!(d.skipped.len(), 1);
        clock.advance(1000);
        let d = r.decide(&p, &RouteInput::default()).unwrap();
        assert_eq!(d.target, 0, "half-open after the cooldown");
    }

    #[test]
    fn fastest_explores_then_exploits() {
        let clock = Arc::new(ManualClock::new(0));
        let r = router(clock);
        let p = policy(json!({"strategy": "fastest", "min_samples": 2, "targets": [
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "openai", "model": "gpt-4o-mini"}]}));
        for (t, l) in [(0, 300.0), (1, 100.0), (0, 300.0), (1, 120.0)] {
            let d = r.decide(&p, &RouteInput::default()).unwrap();
            assert_eq!(d.target, t, "{}", d.reason);
            assert!(d.reason.starts_with("exploring"));
            r.record(&p.targets[t], &Outcome::success(l));
        }
        let d = r.decide(&p, &RouteInput::default()).unwrap();
        assert_eq!(d.target, 1);
        assert!(d.reason.contains("110 ms"), "{}", d.reason);
        assert_eq!(d.order, vec![1, 0]);
    }

    #[test]
    fn adaptive_ucb_prefers_the_better_arm() {
        let clock = Arc::new(ManualClock::new(0));
        let r = router(clock);
        let p = policy(
            json!({"strategy": "adaptive", "min_samples": 3, "targets": [
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "openai", "model": "gpt-4o-mini"}]}),
        );
        let mut picks = [0u32; 2];
        for _ in 0..200 {
            let d = r.decide(&p, &RouteInput::default()).unwrap();
            picks[d.target] += 1;
            // Target 0 fails 60 % of the time, target 1 never.
            let fail = d.target == 0 && picks[0] % 5 < 3;
            let o = if fail {
                Outcome::failure(FailureClass::ClientError)
            } else {
                Outcome::success(100.0)
            };
            r.record(&p.targets[d.target], &o);
        }
        assert!(picks[1] > 150, "{picks:?}");
        assert!(picks[0] >= 3, "minimum samples: {picks:?}");
    }
}
