//! The routing policy: its JSON schema, parsing and validation.
//!
//! A policy is stored with a prompt (`PromptData.policy`, the `policy:` key
//! of a prompt file) or built in code with [`parse_policy`]. Schema (v1):
//!
//! ```json
//! {
//!   "id": "support-reply",            // optional; default: the prompt name
//!   "strategy": "weighted",           // weighted | canary | ab | cheapest | fastest
//!                                     // | best_quality | failover | adaptive
//!   "targets": [                      // required, at least one, in priority order
//!     { "id": "mini",                 // optional; default "provider/model[#variant][@version]"
//!       "provider": "openai",         // required: openai | anthropic | a configured name
//!       "model": "gpt-4o-mini",       // required: must be in the pricing table
//!       "variant": "short",           // optional: a variant of the version
//!       "version": 7,                 // optional: pin a version (default: the looked-up one)
//!       "weight": 95,                 // weighted / ab: percent, <= 2 decimals, sum = 100
//!       "quality": 0.8 }              // optional prior quality in [0, 1] (best_quality, adaptive)
//!   ],
//!   "labels": ["production"],         // optional: labels the policy applies to (default: all)
//!   "experiment": "tone-test",        // sticky-hash salt; required for ab (default "default")
//!   "canary_percent": 5,              // canary only: share of the second target, 0..=100
//!   "expected_output_tokens": 300,    // cost prediction (default: config max_tokens, else 0)
//!   "budget": { "max_cost_usd": 0.002, "max_latency_ms": 1500 },  // best_quality
//!   "min_samples": 10,                // fastest / adaptive / observed quality (default 10)
//!   "adaptive": { "algorithm": "ucb1", "reward": "success", "epsilon": 0.1, "exploration": 1.0 },
//!   "failover": { "enabled": true, "max_attempts": 3,
//!                 "on": ["connect", "timeout", "rate_limited", "server_error"] },
//!   "fallback_prompt": "support/reply-basic"  // when every target failed, route that prompt
//! }
//! ```
//!
//! Weights are **percentages that sum to exactly 100**, with at most two
//! decimals (one bucket is 0.01 %). Unknown keys are errors (typos must not
//! silently change routing). Every error is [`Error::Policy`] naming the
//! field (`targets[1].weight`, `canary_percent`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{LATEST_LABEL, PromptData, validate_label, validate_name};
use crate::pricing::PricingTable;
use crate::snapshot::SnapshotData;

use super::BUCKETS;

/// How a policy picks its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Sticky split by weight.
    Weighted,
    /// Sticky split: the second target gets `canary_percent`.
    Canary,
    /// Sticky experiment between versions or variants (equal split unless
    /// weighted).
    Ab,
    /// Lowest predicted cost among targets the prompt fits.
    Cheapest,
    /// Lowest observed (EWMA) latency.
    Fastest,
    /// Highest quality within a cost and/or latency budget.
    BestQuality,
    /// The first healthy target in order.
    Failover,
    /// Bandit over observed outcomes (UCB1 or epsilon-greedy).
    Adaptive,
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Weighted => "weighted",
            Strategy::Canary => "canary",
            Strategy::Ab => "ab",
            Strategy::Cheapest => "cheapest",
            Strategy::Fastest => "fastest",
            Strategy::BestQuality => "best_quality",
            Strategy::Failover => "failover",
            Strategy::Adaptive => "adaptive",
        }
    }

    fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "weighted" => Strategy::Weighted,
            "canary" => Strategy::Canary,
            "ab" => Strategy::Ab,
            "cheapest" => Strategy::Cheapest,
            "fastest" => Strategy::Fastest,
            "best_quality" => Strategy::BestQuality,
            "failover" => Strategy::Failover,
            "adaptive" => Strategy::Adaptive,
            _ => return None,
        })
    }

    /// Strategies that assign callers to buckets.
    pub fn is_sticky(&self) -> bool {
        matches!(self, Strategy::Weighted | Strategy::Canary | Strategy::Ab)
    }

    /// Strategies that need per-target cost estimates (a render per target).
    pub fn needs_estimates(&self) -> bool {
        matches!(self, Strategy::Cheapest | Strategy::BestQuality)
    }
}

/// Why a call failed, as far as failover is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Could not connect (refused, DNS, TLS) or the connection was reset
    /// before a response.
    Connect,
    /// The total timeout, or the time-to-first-token timeout of a stream.
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx.
    ServerError,
    /// A response or stream chunk that could not be parsed, or a stream
    /// that broke before its first token.
    MalformedResponse,
    /// Any other 4xx (bad request, auth): never retried by default.
    ClientError,
}

impl FailureClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureClass::Connect => "connect",
            FailureClass::Timeout => "timeout",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::ServerError => "server_error",
            FailureClass::MalformedResponse => "malformed_response",
            FailureClass::ClientError => "client_error",
        }
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        Some(match s {
            "connect" => FailureClass::Connect,
            "timeout" => FailureClass::Timeout,
            "rate_limited" => FailureClass::RateLimited,
            "server_error" => FailureClass::ServerError,
            "malformed_response" => FailureClass::MalformedResponse,
            "client_error" => FailureClass::ClientError,
            _ => return None,
        })
    }

    /// The classes failed over on unless a policy says otherwise.
    pub const DEFAULT_FAILOVER: [FailureClass; 5] = [
        FailureClass::Connect,
        FailureClass::Timeout,
        FailureClass::RateLimited,
        FailureClass::ServerError,
        FailureClass::MalformedResponse,
    ];
}

/// One candidate of a policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    pub id: String,
    pub provider: String,
    pub model: String,
    pub variant: Option<String>,
    pub version: Option<u32>,
    /// Weight in percent (as written).
    pub weight: Option<f64>,
    /// Prior quality in `[0, 1]`.
    pub quality: Option<f64>,
    /// Buckets owned (weights × 100); 0 for non-sticky strategies.
    #[serde(skip)]
    pub buckets: u32,
    /// `provider/model`: the circuit-breaker key (health is per endpoint).
    #[serde(skip)]
    pub endpoint: Arc<str>,
    /// `policy_id|target_id`: the stats key (latency and quality are per
    /// policy and target).
    #[serde(skip)]
    pub stats_key: Arc<str>,
}

/// Cost and latency limits of `best_quality`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Budget {
    pub max_cost_usd: Option<f64>,
    pub max_latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptiveAlgorithm {
    Ucb1,
    EpsilonGreedy,
}

/// What the bandit maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reward {
    /// Success rate (1 for a successful call, 0 for a failure).
    Success,
    /// Mean caller quality score (from `record` outcomes with a score).
    Quality,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AdaptiveConfig {
    pub algorithm: AdaptiveAlgorithm,
    pub reward: Reward,
    /// Exploration rate of epsilon-greedy, in `[0, 1]` (default 0.1).
    pub epsilon: f64,
    /// UCB1 exploration constant (default 1.0).
    pub exploration: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            algorithm: AdaptiveAlgorithm::Ucb1,
            reward: Reward::Success,
            epsilon: 0.1,
            exploration: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailoverConfig {
    pub enabled: bool,
    /// Most calls made for one `complete` (default: the number of targets).
    pub max_attempts: Option<u32>,
    pub on: BTreeSet<FailureClass>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            enabled: true,
            max_attempts: None,
            on: FailureClass::DEFAULT_FAILOVER.into_iter().collect(),
        }
    }
}

/// A parsed, validated routing policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub id: String,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub labels: Vec<String>,
    pub experiment: String,
    pub canary_percent: Option<f64>,
    pub expected_output_tokens: Option<u32>,
    pub budget: Budget,
    pub min_samples: u32,
    pub adaptive: AdaptiveConfig,
    pub failover: FailoverConfig,
    pub fallback_prompt: Option<String>,
}

impl Policy {
    /// Whether the policy applies to a lookup under `label` (`None`: a
    /// pinned version, to which a label-restricted policy does not apply).
    pub fn applies_to(&self, label: Option<&str>) -> bool {
        self.labels.is_empty() || label.is_some_and(|l| self.labels.iter().any(|x| x == l))
    }

    /// The index of the target with this id.
    pub fn target_index(&self, id: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.id == id)
    }

    /// A one-target failover policy (used when a prompt has no policy: the
    /// prompt's own provider and model).
    pub fn single(id: &str, provider: &str, model: &str) -> Policy {
        let mut p = Policy {
            id: id.to_string(),
            strategy: Strategy::Failover,
            targets: vec![Target {
                id: format!("{provider}/{model}"),
                provider: provider.to_string(),
                model: model.to_string(),
                variant: None,
                version: None,
                weight: None,
                quality: None,
                buckets: 0,
                endpoint: Arc::from(""),
                stats_key: Arc::from(""),
            }],
            labels: Vec::new(),
            experiment: "default".into(),
            canary_percent: None,
            expected_output_tokens: None,
            budget: Budget::default(),
            min_samples: DEFAULT_MIN_SAMPLES,
            adaptive: AdaptiveConfig::default(),
            failover: FailoverConfig::default(),
            fallback_prompt: None,
        };
        p.fill_keys();
        p
    }

    fn fill_keys(&mut self) {
        for t in &mut self.targets {
            t.endpoint = Arc::from(format!("{}/{}", t.provider, t.model));
            t.stats_key = Arc::from(format!("{}|{}", self.id, t.id));
        }
    }

    /// Check every target's model against a pricing table.
    pub fn check_models(&self, pricing: &PricingTable, prompt: Option<&str>) -> Result<()> {
        for (i, t) in self.targets.iter().enumerate() {
            if pricing.get(&t.model).is_none() {
                return Err(Error::Policy {
                    prompt: prompt.map(String::from),
                    field: format!("targets[{i}].model"),
                    message: format!(
                        "unknown model `{}`: not in the pricing table (add a price for it)",
                        t.model
                    ),
                });
            }
        }
        Ok(())
    }
}

pub(crate) const DEFAULT_MIN_SAMPLES: u32 = 10;

const TOP_KEYS: &[&str] = &[
    "id",
    "strategy",
    "targets",
    "labels",
    "experiment",
    "canary_percent",
    "expected_output_tokens",
    "budget",
    "min_samples",
    "adaptive",
    "failover",
    "fallback_prompt",
];
const TARGET_KEYS: &[&str] = &[
    "id", "provider", "model", "variant", "version", "weight", "quality",
];

struct Ctx<'a> {
    prompt: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Policy {
            prompt: self.prompt.map(String::from),
            field: field.into(),
            message: message.into(),
        }
    }

    fn check_keys(&self, obj: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<()> {
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(self.err(
                    format!("{prefix}{k}"),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn string(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(self.err(field, "must not be empty")),
            Some(other) => Err(self.err(field, format!("must be a string, got {other}"))),
        }
    }

    fn number(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<Option<f64>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(self.err(field, "must be a finite number")),
            },
            Some(other) => Err(self.err(field, format!("must be a number, got {other}"))),
        }
    }

    fn uint(&self, obj: &Map<String, Value>, key: &str, field: &str) -> Result<Option<u32>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(u) if u <= u32::MAX as u64 => Ok(Some(u as u32)),
                _ => Err(self.err(field, format!("must be a whole number >= 0, got {n}"))),
            },
            Some(other) => Err(self.err(field, format!("must be a whole number, got {other}"))),
        }
    }

    fn object<'v>(
        &self,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Result<Option<&'v Map<String, Value>>> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.err(key, format!("must be an object, got {other}"))),
        }
    }
}

/// Percent → buckets, requiring at most two decimals.
fn percent_to_buckets(ctx: &Ctx, field: &str, p: f64) -> Result<u32> {
    if !(0.0..=100.0).contains(&p) {
        return Err(ctx.err(
            field,
            format!("must be between 0 and 100 (percent), got {p}"),
        ));
    }
    let scaled = p * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(ctx.err(
            field,
            format!("{p} has more than two decimals (the resolution is 0.01 %)"),
        ));
    }
    Ok(rounded as u32)
}

/// Parse and validate a policy's structure. `prompt` (the prompt it is
/// stored with) names errors and is the default policy id. Models are not
/// checked here (see [`validate_policy`], which also takes the pricing
/// table), nor references to other prompts (see
/// [`validate_snapshot_policies`]).
pub fn parse_policy(value: &Value, prompt: Option<&str>) -> Result<Policy> {
    let ctx = Ctx { prompt };
    let Value::Object(obj) = value else {
        return Err(ctx.err("policy", format!("must be a JSON object, got {value}")));
    };
    ctx.check_keys(obj, TOP_KEYS, "")?;
    let id = match ctx.string(obj, "id", "id")? {
        Some(id) => id,
        None => prompt
            .map(String::from)
            .ok_or_else(|| ctx.err("id", "required for a policy not stored with a prompt"))?,
    };
    if id.contains('|') {
        return Err(ctx.err("id", "must not contain `|`"));
    }
    let strategy = match obj.get("strategy") {
        None | Some(Value::Null) => return Err(ctx.err("strategy", "required")),
        Some(Value::String(s)) => Strategy::parse(s).ok_or_else(|| {
            ctx.err(
                "strategy",
                format!(
                    "unknown strategy `{s}` (expected weighted, canary, ab, cheapest, fastest, best_quality, failover or adaptive)"
                ),
            )
        })?,
        Some(other) => return Err(ctx.err("strategy", format!("must be a string, got {other}"))),
    };

    // Targets.
    let raw_targets = match obj.get("targets") {
        None | Some(Value::Null) => {
            return Err(ctx.err("targets", "required: list at least one target"));
        }
        Some(Value::Array(a)) => a,
        Some(other) => return Err(ctx.err("targets", format!("must be a list, got {other}"))),
    };
    if raw_targets.is_empty() {
        return Err(ctx.err("targets", "no candidates: list at least one target"));
    }
    let mut targets = Vec::with_capacity(raw_targets.len());
    let mut ids = BTreeSet::new();
    for (i, t) in raw_targets.iter().enumerate() {
        let f = |k: &str| format!("targets[{i}].{k}");
        let Value::Object(t) = t else {
            return Err(ctx.err(format!("targets[{i}]"), "must be an object"));
        };
        ctx.check_keys(t, TARGET_KEYS, &format!("targets[{i}]."))?;
        let provider = ctx
            .string(t, "provider", &f("provider"))?
            .ok_or_else(|| ctx.err(f("provider"), "required"))?;
        let model = ctx
            .string(t, "model", &f("model"))?
            .ok_or_else(|| ctx.err(f("model"), "required"))?;
        let variant = ctx.string(t, "variant", &f("variant"))?;
        let version = ctx.uint(t, "version", &f("version"))?;
        if version == Some(0) {
            return Err(ctx.err(f("version"), "versions start at 1"));
        }
        let weight = ctx.number(t, "weight", &f("weight"))?;
        let quality = ctx.number(t, "quality", &f("quality"))?;
        if let Some(q) = quality
            && !(0.0..=1.0).contains(&q)
        {
            return Err(ctx.err(f("quality"), format!("must be in [0, 1], got {q}")));
        }
        let id = match ctx.string(t, "id", &f("id"))? {
            Some(id) => id,
            None => {
                let mut id = format!("{provider}/{model}");
                if let Some(v) = &variant {
                    id.push('#');
                    id.push_str(v);
                }
                if let Some(v) = version {
                    id.push_str(&format!("@{v}"));
                }
                id
            }
        };
        if id.contains('|') {
            return Err(ctx.err(f("id"), "must not contain `|`"));
        }
        if !ids.insert(id.clone()) {
            return Err(ctx.err(
                f("id"),
                format!("duplicate target `{id}` (give the targets distinct `id`s)"),
            ));
        }
        targets.push(Target {
            id,
            provider,
            model,
            variant,
            version,
            weight,
            quality,
            buckets: 0,
            endpoint: Arc::from(""),
            stats_key: Arc::from(""),
        });
    }

    // Weights.
    let canary_percent = ctx.number(obj, "canary_percent", "canary_percent")?;
    let any_weight = targets.iter().position(|t| t.weight.is_some());
    match strategy {
        Strategy::Weighted | Strategy::Ab => {
            let all = targets.iter().all(|t| t.weight.is_some());
            if strategy == Strategy::Weighted && !all {
                let i = targets.iter().position(|t| t.weight.is_none()).unwrap_or(0);
                return Err(ctx.err(
                    format!("targets[{i}].weight"),
                    "required by the weighted strategy",
                ));
            }
            if strategy == Strategy::Ab && targets.len() < 2 {
                return Err(ctx.err("targets", "an ab experiment needs at least two targets"));
            }
            if all {
                let mut sum = 0u32;
                for (i, t) in targets.iter_mut().enumerate() {
                    let w = t.weight.unwrap_or(0.0);
                    t.buckets = percent_to_buckets(&ctx, &format!("targets[{i}].weight"), w)?;
                    sum += t.buckets;
                }
                if sum != BUCKETS {
                    return Err(ctx.err(
                        "targets",
                        format!(
                            "weights sum to {} but must sum to 100 (percent)",
                            fmt_percent(sum)
                        ),
                    ));
                }
            } else if let Some(i) = any_weight {
                return Err(ctx.err(
                    format!("targets[{i}].weight"),
                    "give every target a weight, or none (equal split)",
                ));
            } else {
                let n = targets.len() as u32;
                for (i, t) in targets.iter_mut().enumerate() {
                    t.buckets = BUCKETS / n + u32::from((i as u32) < BUCKETS % n);
                }
            }
        }
        Strategy::Canary => {
            if targets.len() != 2 {
                return Err(ctx.err(
                    "targets",
                    format!(
                        "a canary has exactly two targets (stable, then canary), got {}",
                        targets.len()
                    ),
                ));
            }
            if let Some(i) = any_weight {
                return Err(ctx.err(
                    format!("targets[{i}].weight"),
                    "a canary's split is set by `canary_percent`, not weights",
                ));
            }
            let p = canary_percent
                .ok_or_else(|| ctx.err("canary_percent", "required by the canary strategy"))?;
            let c = percent_to_buckets(&ctx, "canary_percent", p)?;
            targets[0].buckets = BUCKETS - c;
            targets[1].buckets = c;
        }
        _ => {
            if let Some(i) = any_weight {
                return Err(ctx.err(
                    format!("targets[{i}].weight"),
                    format!(
                        "weights only apply to weighted and ab policies, not {}",
                        strategy.as_str()
                    ),
                ));
            }
        }
    }
    if canary_percent.is_some() && strategy != Strategy::Canary {
        return Err(ctx.err("canary_percent", "only applies to the canary strategy"));
    }

    // Labels.
    let mut labels = Vec::new();
    match obj.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (i, l) in a.iter().enumerate() {
                let Some(l) = l.as_str() else {
                    return Err(ctx.err(format!("labels[{i}]"), "must be a string"));
                };
                validate_label(l).map_err(|m| ctx.err(format!("labels[{i}]"), m))?;
                labels.push(l.to_string());
            }
        }
        Some(other) => return Err(ctx.err("labels", format!("must be a list, got {other}"))),
    }

    let experiment = ctx.string(obj, "experiment", "experiment")?;
    if strategy == Strategy::Ab && experiment.is_none() {
        return Err(ctx.err(
            "experiment",
            "an ab policy names its experiment (it salts the sticky assignment)",
        ));
    }
    let experiment = experiment.unwrap_or_else(|| "default".into());
    let expected_output_tokens =
        ctx.uint(obj, "expected_output_tokens", "expected_output_tokens")?;
    let min_samples = ctx
        .uint(obj, "min_samples", "min_samples")?
        .unwrap_or(DEFAULT_MIN_SAMPLES);

    // Budget.
    let mut budget = Budget::default();
    if let Some(b) = ctx.object(obj, "budget")? {
        ctx.check_keys(b, &["max_cost_usd", "max_latency_ms"], "budget.")?;
        budget.max_cost_usd = ctx.number(b, "max_cost_usd", "budget.max_cost_usd")?;
        budget.max_latency_ms = ctx.number(b, "max_latency_ms", "budget.max_latency_ms")?;
        for (f, v) in [
            ("budget.max_cost_usd", budget.max_cost_usd),
            ("budget.max_latency_ms", budget.max_latency_ms),
        ] {
            if let Some(v) = v
                && v <= 0.0
            {
                return Err(ctx.err(f, format!("must be > 0, got {v}")));
            }
        }
    }
    if strategy == Strategy::BestQuality
        && budget.max_cost_usd.is_none()
        && budget.max_latency_ms.is_none()
    {
        return Err(ctx.err(
            "budget",
            "best_quality needs a budget: max_cost_usd and/or max_latency_ms",
        ));
    }

    // Adaptive.
    let mut adaptive = AdaptiveConfig::default();
    if let Some(a) = ctx.object(obj, "adaptive")? {
        ctx.check_keys(
            a,
            &["algorithm", "reward", "epsilon", "exploration"],
            "adaptive.",
        )?;
        if let Some(alg) = ctx.string(a, "algorithm", "adaptive.algorithm")? {
            adaptive.algorithm = match alg.as_str() {
                "ucb1" => AdaptiveAlgorithm::Ucb1,
                "epsilon_greedy" => AdaptiveAlgorithm::EpsilonGreedy,
                other => {
                    return Err(ctx.err(
                        "adaptive.algorithm",
                        format!("unknown algorithm `{other}` (expected ucb1 or epsilon_greedy)"),
                    ));
                }
            };
        }
        if let Some(r) = ctx.string(a, "reward", "adaptive.reward")? {
            adaptive.reward = match r.as_str() {
                "success" => Reward::Success,
                "quality" => Reward::Quality,
                other => {
                    return Err(ctx.err(
                        "adaptive.reward",
                        format!("unknown reward `{other}` (expected success or quality)"),
                    ));
                }
            };
        }
        if let Some(e) = ctx.number(a, "epsilon", "adaptive.epsilon")? {
            if !(0.0..=1.0).contains(&e) {
                return Err(ctx.err("adaptive.epsilon", format!("must be in [0, 1], got {e}")));
            }
            adaptive.epsilon = e;
        }
        if let Some(c) = ctx.number(a, "exploration", "adaptive.exploration")? {
            if c < 0.0 {
                return Err(ctx.err("adaptive.exploration", format!("must be >= 0, got {c}")));
            }
            adaptive.exploration = c;
        }
        if strategy != Strategy::Adaptive {
            return Err(ctx.err("adaptive", "only applies to the adaptive strategy"));
        }
    }

    // Failover.
    let mut failover = FailoverConfig::default();
    if let Some(f) = ctx.object(obj, "failover")? {
        ctx.check_keys(f, &["enabled", "max_attempts", "on"], "failover.")?;
        match f.get("enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => failover.enabled = *b,
            Some(other) => {
                return Err(ctx.err(
                    "failover.enabled",
                    format!("must be true or false, got {other}"),
                ));
            }
        }
        failover.max_attempts = ctx.uint(f, "max_attempts", "failover.max_attempts")?;
        if failover.max_attempts == Some(0) {
            return Err(ctx.err("failover.max_attempts", "must be at least 1"));
        }
        match f.get("on") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                failover.on.clear();
                for (i, c) in a.iter().enumerate() {
                    let cls = c.as_str().and_then(FailureClass::parse).ok_or_else(|| {
                        ctx.err(
                            format!("failover.on[{i}]"),
                            format!(
                                "unknown failure class {c} (expected connect, timeout, rate_limited, server_error, malformed_response or client_error)"
                            ),
                        )
                    })?;
                    failover.on.insert(cls);
                }
            }
            Some(other) => {
                return Err(ctx.err("failover.on", format!("must be a list, got {other}")));
            }
        }
    }

    let fallback_prompt = ctx.string(obj, "fallback_prompt", "fallback_prompt")?;
    if let Some(fp) = &fallback_prompt {
        validate_name(fp).map_err(|m| ctx.err("fallback_prompt", m))?;
        if Some(fp.as_str()) == prompt {
            return Err(ctx.err(
                "fallback_prompt",
                format!("failover cycle: `{fp}` falls back to itself"),
            ));
        }
    }

    let mut policy = Policy {
        id,
        strategy,
        targets,
        labels,
        experiment,
        canary_percent,
        expected_output_tokens,
        budget,
        min_samples,
        adaptive,
        failover,
        fallback_prompt,
    };
    policy.fill_keys();
    Ok(policy)
}

fn fmt_percent(buckets: u32) -> String {
    if buckets.is_multiple_of(100) {
        format!("{}", buckets / 100)
    } else {
        format!("{}.{:02}", buckets / 100, buckets % 100)
    }
}

/// What the registry calls at publish: parse, check the structure and that
/// every model is in `pricing`. Cross-prompt checks (the fallback prompt
/// exists, no failover cycle) need the whole snapshot: see
/// [`validate_snapshot_policies`].
pub fn validate_policy(
    value: &Value,
    prompt: Option<&str>,
    pricing: &PricingTable,
) -> Result<Policy> {
    let p = parse_policy(value, prompt)?;
    p.check_models(pricing, prompt)?;
    Ok(p)
}

/// Check one prompt's policy against the rest of its snapshot: pinned
/// versions and variants exist, and the fallback prompt exists and has no
/// cycle through other prompts' fallbacks.
fn check_references(
    p: &PromptData,
    policy: &Policy,
    by_name: &BTreeMap<&str, &PromptData>,
    fallbacks: &BTreeMap<&str, String>,
) -> Result<()> {
    let ctx = Ctx {
        prompt: Some(&p.name),
    };
    for (i, t) in policy.targets.iter().enumerate() {
        let versions: Vec<u32> = match t.version {
            Some(v) => {
                if p.version(v).is_none() {
                    return Err(ctx.err(
                        format!("targets[{i}].version"),
                        format!("version {v} is not in the snapshot"),
                    ));
                }
                vec![v]
            }
            None => {
                let mut vs: Vec<u32> = if policy.labels.is_empty() {
                    p.labels.values().copied().collect()
                } else {
                    policy.labels.iter().filter_map(|l| p.resolve(l)).collect()
                };
                if vs.is_empty() {
                    vs.extend(p.resolve(LATEST_LABEL));
                }
                vs
            }
        };
        if let Some(var) = &t.variant {
            for v in versions {
                let has = p.version(v).is_some_and(|pv| pv.variants.contains_key(var));
                if !has {
                    return Err(ctx.err(
                        format!("targets[{i}].variant"),
                        format!("version {v} has no variant `{var}`"),
                    ));
                }
            }
        }
    }
    if let Some(fp) = &policy.fallback_prompt {
        if !by_name.contains_key(fp.as_str()) {
            return Err(ctx.err(
                "fallback_prompt",
                format!("prompt `{fp}` is not in the snapshot"),
            ));
        }
        // Follow the chain; coming back to this prompt is a cycle.
        let mut chain = vec![p.name.clone()];
        let mut cur = fp.clone();
        loop {
            chain.push(cur.clone());
            if cur == p.name {
                return Err(ctx.err(
                    "fallback_prompt",
                    format!("failover cycle: {}", chain.join(" -> ")),
                ));
            }
            match fallbacks.get(cur.as_str()) {
                Some(next) if chain.len() <= by_name.len() + 1 => cur = next.clone(),
                _ => break,
            }
        }
    }
    Ok(())
}

/// Parse every policy of a snapshot and check references between prompts.
/// Returns, per prompt with a policy, the policy or its error.
pub fn compile_policies(data: &SnapshotData) -> Vec<(String, Result<Arc<Policy>>)> {
    let by_name: BTreeMap<&str, &PromptData> = data
        .prompts
        .iter()
        .map(|p| (p.name.as_str(), &**p))
        .collect();
    let mut parsed: Vec<(&PromptData, Result<Policy>)> = Vec::new();
    for p in &data.prompts {
        if let Some(v) = &p.policy {
            parsed.push((p, parse_policy(v, Some(&p.name))));
        }
    }
    let fallbacks: BTreeMap<&str, String> = parsed
        .iter()
        .filter_map(|(p, r)| {
            r.as_ref()
                .ok()
                .and_then(|pol| pol.fallback_prompt.clone())
                .map(|f| (p.name.as_str(), f))
        })
        .collect();
    parsed
        .into_iter()
        .map(|(p, r)| {
            let r = r.and_then(|pol| {
                check_references(p, &pol, &by_name, &fallbacks)?;
                Ok(Arc::new(pol))
            });
            (p.name.clone(), r)
        })
        .collect()
}

/// Validate every policy in a snapshot (structure, references, cycles and,
/// with `pricing`, models). The registry calls this at publish with the
/// snapshot the publish would produce. Returns (prompt, error) pairs.
pub fn validate_snapshot_policies(
    data: &SnapshotData,
    pricing: Option<&PricingTable>,
) -> Vec<(String, Error)> {
    compile_policies(data)
        .into_iter()
        .filter_map(|(name, r)| {
            let r = r.and_then(|p| match pricing {
                Some(t) => p.check_models(t, Some(&name)),
                None => Ok(()),
            });
            r.err().map(|e| (name, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(v: Value) -> String {
        match parse_policy(&v, Some("m/p")) {
            Err(Error::Policy { field, .. }) => field,
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn weights() {
        let p = parse_policy(
            &json!({"strategy": "weighted", "targets": [
                {"provider": "openai", "model": "gpt-4o", "weight": 12.5},
                {"provider": "openai", "model": "gpt-4o-mini", "weight": 87.5}]}),
            Some("m/p"),
        )
        .unwrap();
        assert_eq!(p.targets[0].buckets, 1250);
        assert_eq!(p.targets[1].id, "openai/gpt-4o-mini");
        assert_eq!(&*p.targets[1].stats_key, "m/p|openai/gpt-4o-mini");
        assert_eq!(
            field(json!({"strategy": "weighted", "targets": [
                {"provider": "openai", "model": "gpt-4o", "weight": 50},
                {"provider": "openai", "model": "gpt-4o-mini", "weight": 40}]})),
            "targets"
        );
        assert_eq!(
            field(json!({"strategy": "weighted", "targets": [
                {"provider": "openai", "model": "gpt-4o", "weight": 50.001},
                {"provider": "openai", "model": "gpt-4o-mini", "weight": 49.999}]})),
            "targets[0].weight"
        );
    }

    #[test]
    fn ab_equal_split() {
        let p = parse_policy(
            &json!({"strategy": "ab", "experiment": "x", "targets": [
                {"provider": "openai", "model": "gpt-4o", "version": 1},
                {"provider": "openai", "model": "gpt-4o", "version": 2},
                {"provider": "openai", "model": "gpt-4o", "version": 3}]}),
            Some("m/p"),
        )
        .unwrap();
        let b: Vec<u32> = p.targets.iter().map(|t| t.buckets).collect();
        assert_eq!(b, vec![3334, 3333, 3333]);
        assert_eq!(p.targets[2].id, "openai/gpt-4o@3");
    }

    #[test]
    fn errors_name_fields() {
        assert_eq!(field(json!({"targets": []})), "strategy");
        assert_eq!(
            field(json!({"strategy": "failover", "targets": []})),
            "targets"
        );
        assert_eq!(
            field(json!({"strategy": "failover", "targets": [{"provider": "openai"}]})),
            "targets[0].model"
        );
        assert_eq!(
            field(json!({"strategy": "failover", "targetz": []})),
            "targetz"
        );
        assert_eq!(
            field(json!({"strategy": "failover", "fallback_prompt": "m/p",
                "targets": [{"provider": "openai", "model": "gpt-4o"}]})),
            "fallback_prompt"
        );
        let t = PricingTable::builtin();
        match validate_policy(
            &json!({"strategy": "failover", "targets": [{"provider": "openai", "model": "gpt-9"}]}),
            Some("m/p"),
            &t,
        ) {
            Err(Error::Policy { field, .. }) => assert_eq!(field, "targets[0].model"),
            other => panic!("{other:?}"),
        }
    }
}
