//! Telemetry ingest: the SDK's batches (`POST /v1/telemetry`, schema
//! `promptops.telemetry.v1`, exactly what `promptops_core::telemetry::Batch`
//! serialises), aggregated per project + prompt + version + model (+
//! provider, label, variant):
//!
//! - in memory, per replica, as Prometheus series on `/metrics`
//!   (`promptops_llm_*`), with a bounded number of series: past the limit,
//!   new label sets fold into one overflow series per project (labels
//!   `__overflow__`) and the folded events are counted
//!   (`promptops_telemetry_series_overflow_total`);
//! - in the database as per-minute rollups (`telemetry_rollups`,
//!   `telemetry_errors`; migration `0003_telemetry.sql`), additive upserts so
//!   every replica can write, read back by `GET /v1/projects/{p}/telemetry`
//!   with sums and latency percentiles derived from fixed histogram buckets.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use axum::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::db::{Backend, Db};
use crate::error::{ApiError, ApiResult};

/// The batch schema this server accepts.
pub const SCHEMA: &str = promptops_core::telemetry::BATCH_SCHEMA;
/// Largest request body of `POST /v1/telemetry`.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS: usize = 10_000;
/// Default bound on distinct in-memory series (label sets) per replica.
pub const DEFAULT_MAX_SERIES: usize = 5_000;
/// Label value of the overflow series.
pub const OVERFLOW: &str = "__overflow__";
/// Rollup granularity (seconds).
pub const BUCKET_SECONDS: i64 = 60;

/// Latency/TTFT bucket upper bounds in seconds (the GenAI conventions'
/// recommended `gen_ai.client.operation.duration` boundaries); the rollups
/// keep one count per bucket plus one above the last bound.
pub const DURATION_BUCKETS_S: [f64; 14] = promptops_core::telemetry::DURATION_BUCKETS_S;
const NB: usize = DURATION_BUCKETS_S.len() + 1;

const MAX_NAME: usize = 256;
const MAX_MESSAGE: usize = 4096;
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_VALUE: usize = 1024;
/// Events stamped further ahead than this are refused (clock skew bound).
const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;

// ---------------------------------------------------------------------------
// Validation.

/// One event, validated. Only what the aggregates use is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEvent {
    pub ts_ms: i64,
    pub key: SeriesKey,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub error_type: Option<String>,
}

/// prompt, version (0: unknown), model, provider, label, variant ("" when
/// unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub prompt: String,
    pub version: u32,
    pub model: String,
    pub provider: String,
    pub label: String,
    pub variant: String,
}

/// A validated batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidBatch {
    pub project: Option<String>,
    pub events_by_kind: BTreeMap<&'static str, u64>,
    pub calls: Vec<CallEvent>,
    pub sdk: String,
}

fn invalid(field: &str, msg: impl Into<String>) -> ApiError {
    ApiError::invalid(field, msg)
}

fn opt_str(
    o: &Map<String, Value>,
    field: &str,
    path: &str,
    max: usize,
) -> ApiResult<Option<String>> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                Err(invalid(
                    path,
                    format!("`{path}` is longer than {max} characters"),
                ))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(invalid(path, format!("`{path}` must be a string or null"))),
    }
}

fn opt_u64(o: &Map<String, Value>, field: &str, path: &str) -> ApiResult<Option<u64>> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            invalid(
                path,
                format!("`{path}` must be a whole number >= 0 or null"),
            )
        }),
    }
}

fn opt_f64(o: &Map<String, Value>, field: &str, path: &str) -> ApiResult<Option<f64>> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            _ => Err(invalid(
                path,
                format!("`{path}` must be a number >= 0 or null"),
            )),
        },
    }
}

fn opt_bool(o: &Map<String, Value>, field: &str, path: &str) -> ApiResult<()> {
    match o.get(field) {
        None | Some(Value::Null) | Some(Value::Bool(_)) => Ok(()),
        Some(_) => Err(invalid(path, format!("`{path}` must be a boolean or null"))),
    }
}

fn unknown_fields(o: &Map<String, Value>, known: &[&str], prefix: &str) -> ApiResult<()> {
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            let path = format!("{prefix}{k}");
            return Err(invalid(
                &path,
                format!("unknown field `{path}` (schema {SCHEMA})"),
            ));
        }
    }
    Ok(())
}

const BATCH_FIELDS: &[&str] = &[
    "schema",
    "project",
    "sdk",
    "sent_at_ms",
    "dropped",
    "events",
];
const EVENT_FIELDS: &[&str] = &[
    "kind",
    "ts_ms",
    "prompt",
    "version",
    "label",
    "variant",
    "provider",
    "model",
    "response_model",
    "target",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "error_type",
    "error_message",
    "route_reason",
    "strategy",
    "attempt",
    "stream",
    "attributes",
];
const DROPPED_FIELDS: &[&str] = &[
    "recorded",
    "dropped_queue_full",
    "dropped_export_full",
    "dropped_upload_failed",
];

/// Validate a batch body. Errors are 422 `VALIDATION_ERROR` naming the
/// field (`events[3].latency_ms`), or 400 `MALFORMED_JSON`.
pub fn validate(body: &[u8], now_ms: i64) -> ApiResult<ValidBatch> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_JSON",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let Value::Object(o) = v else {
        return Err(invalid("", "the body must be a JSON object"));
    };
    match o.get("schema") {
        Some(Value::String(s)) if s == SCHEMA => {}
        Some(Value::String(s)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNSUPPORTED_SCHEMA",
                format!("unsupported telemetry schema `{s}`; this server accepts `{SCHEMA}`"),
            )
            .field("schema"));
        }
        _ => return Err(invalid("schema", format!("`schema` must be \"{SCHEMA}\""))),
    }
    unknown_fields(&o, BATCH_FIELDS, "")?;
    let project = opt_str(&o, "project", "project", MAX_NAME)?;
    let sdk = match o.get("sdk") {
        Some(Value::Object(s)) => {
            unknown_fields(s, &["name", "version"], "sdk.")?;
            let name = opt_str(s, "name", "sdk.name", 64)?
                .ok_or_else(|| invalid("sdk.name", "`sdk.name` is required"))?;
            let version = opt_str(s, "version", "sdk.version", 64)?
                .ok_or_else(|| invalid("sdk.version", "`sdk.version` is required"))?;
            format!("{name}/{version}")
        }
        _ => return Err(invalid("sdk", "`sdk` must be an object {name, version}")),
    };
    opt_u64(&o, "sent_at_ms", "sent_at_ms")?
        .ok_or_else(|| invalid("sent_at_ms", "`sent_at_ms` is required"))?;
    match o.get("dropped") {
        Some(Value::Object(d)) => {
            unknown_fields(d, DROPPED_FIELDS, "dropped.")?;
            for f in DROPPED_FIELDS {
                opt_u64(d, f, &format!("dropped.{f}"))?;
            }
        }
        _ => {
            return Err(invalid(
                "dropped",
                "`dropped` must be an object of counters",
            ));
        }
    }
    let events = match o.get("events") {
        Some(Value::Array(a)) => a,
        _ => return Err(invalid("events", "`events` must be an array")),
    };
    if events.len() > MAX_EVENTS {
        return Err(invalid(
            "events",
            format!(
                "at most {MAX_EVENTS} events per batch, got {}",
                events.len()
            ),
        ));
    }
    let mut out = ValidBatch {
        project,
        events_by_kind: BTreeMap::new(),
        calls: Vec::new(),
        sdk,
    };
    for (i, ev) in events.iter().enumerate() {
        let p = format!("events[{i}].");
        let Value::Object(e) = ev else {
            return Err(invalid(
                &format!("events[{i}]"),
                "an event must be an object",
            ));
        };
        unknown_fields(e, EVENT_FIELDS, &p)?;
        let kind: &'static str = match e.get("kind").and_then(Value::as_str) {
            Some("render") => "render",
            Some("decision") => "decision",
            Some("call") => "call",
            _ => {
                return Err(invalid(
                    &format!("{p}kind"),
                    format!("`{p}kind` must be render, decision or call"),
                ));
            }
        };
        let ts = opt_u64(e, "ts_ms", &format!("{p}ts_ms"))?
            .ok_or_else(|| invalid(&format!("{p}ts_ms"), format!("`{p}ts_ms` is required")))?;
        let ts = i64::try_from(ts).unwrap_or(i64::MAX);
        if ts > now_ms + MAX_FUTURE_MS {
            return Err(invalid(
                &format!("{p}ts_ms"),
                format!("`{p}ts_ms` is more than 10 minutes in the future"),
            ));
        }
        let prompt = opt_str(e, "prompt", &format!("{p}prompt"), MAX_NAME)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                invalid(
                    &format!("{p}prompt"),
                    format!("`{p}prompt` must be a non-empty string"),
                )
            })?;
        let version = match opt_u64(e, "version", &format!("{p}version"))? {
            None => 0,
            Some(v) => u32::try_from(v).map_err(|_| {
                invalid(
                    &format!("{p}version"),
                    format!("`{p}version` is out of range"),
                )
            })?,
        };
        let s = |f: &str, max: usize| opt_str(e, f, &format!("{p}{f}"), max);
        let label = s("label", MAX_NAME)?;
        let variant = s("variant", MAX_NAME)?;
        let provider = s("provider", MAX_NAME)?;
        let model = s("model", MAX_NAME)?;
        s("target", MAX_NAME)?;
        s("response_model", MAX_NAME)?;
        let error_type = s("error_type", 128)?;
        s("error_message", MAX_MESSAGE)?;
        s("route_reason", MAX_MESSAGE)?;
        s("strategy", MAX_NAME)?;
        let input_tokens = opt_u64(e, "input_tokens", &format!("{p}input_tokens"))?;
        let output_tokens = opt_u64(e, "output_tokens", &format!("{p}output_tokens"))?;
        let cost_usd = opt_f64(e, "cost_usd", &format!("{p}cost_usd"))?;
        let latency_ms = opt_f64(e, "latency_ms", &format!("{p}latency_ms"))?;
        let ttft_ms = opt_f64(e, "ttft_ms", &format!("{p}ttft_ms"))?;
        opt_u64(e, "attempt", &format!("{p}attempt"))?;
        opt_bool(e, "stream", &format!("{p}stream"))?;
        match e.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(a)) => {
                if a.len() > MAX_ATTRIBUTES {
                    return Err(invalid(
                        &format!("{p}attributes"),
                        format!("at most {MAX_ATTRIBUTES} attributes"),
                    ));
                }
                for k in a.keys() {
                    opt_str(a, k, &format!("{p}attributes.{k}"), MAX_ATTRIBUTE_VALUE)?;
                }
            }
            Some(_) => {
                return Err(invalid(
                    &format!("{p}attributes"),
                    format!("`{p}attributes` must be an object of strings"),
                ));
            }
        }
        *out.events_by_kind.entry(kind).or_insert(0) += 1;
        if kind == "call" {
            out.calls.push(CallEvent {
                ts_ms: ts,
                key: SeriesKey {
                    prompt,
                    version,
                    model: model.unwrap_or_default(),
                    provider: provider.unwrap_or_default(),
                    label: label.unwrap_or_default(),
                    variant: variant.unwrap_or_default(),
                },
                input_tokens,
                output_tokens,
                cost_usd,
                latency_ms,
                ttft_ms,
                error_type,
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// In-memory Prometheus series.

const LABELS: [&str; 7] = [
    "project", "prompt", "version", "model", "provider", "label", "variant",
];

/// The `/metrics` side of telemetry (per replica, cumulative).
pub struct TelemetryMetrics {
    requests: IntCounterVec,
    errors: IntCounterVec,
    tokens: IntCounterVec,
    cost: prometheus::CounterVec,
    duration: HistogramVec,
    ttft: HistogramVec,
    batches: IntCounterVec,
    events: IntCounterVec,
    overflow: prometheus::IntCounter,
    series_gauge: IntGauge,
    series: Mutex<HashSet<(String, SeriesKey)>>,
    error_series: Mutex<HashSet<(String, SeriesKey, String)>>,
    max_series: usize,
}

/// Prometheus metric names of the telemetry aggregates (the Grafana
/// dashboard queries these; a test keeps them in step).
pub const METRIC_NAMES: &[&str] = &[
    "promptops_llm_requests_total",
    "promptops_llm_errors_total",
    "promptops_llm_tokens_total",
    "promptops_llm_cost_usd_total",
    "promptops_llm_request_duration_seconds",
    "promptops_llm_time_to_first_token_seconds",
    "promptops_telemetry_batches_total",
    "promptops_telemetry_events_total",
    "promptops_telemetry_series_overflow_total",
    "promptops_telemetry_series",
];

impl TelemetryMetrics {
    pub fn new(registry: &Registry, max_series: usize) -> prometheus::Result<TelemetryMetrics> {
        let with = |extra: &'static str| {
            let mut l: Vec<&str> = LABELS.to_vec();
            l.push(extra);
            l
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "promptops_llm_requests_total",
                "LLM calls reported by SDKs (telemetry uploads), by project, prompt, version, model, provider, label and variant",
            ),
            &LABELS,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "promptops_llm_errors_total",
                "Failed LLM calls reported by SDKs, by error type",
            ),
            &with("error_type"),
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "promptops_llm_tokens_total",
                "Tokens of LLM calls reported by SDKs, by token type (input, output)",
            ),
            &with("token_type"),
        )?;
        let cost = prometheus::CounterVec::new(
            Opts::new(
                "promptops_llm_cost_usd_total",
                "Cost of LLM calls reported by SDKs, in USD",
            ),
            &LABELS,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "promptops_llm_request_duration_seconds",
                "Duration of LLM calls reported by SDKs (GenAI duration buckets)",
            )
            .buckets(DURATION_BUCKETS_S.to_vec()),
            &LABELS,
        )?;
        let ttft = HistogramVec::new(
            HistogramOpts::new(
                "promptops_llm_time_to_first_token_seconds",
                "Time to first token of streamed LLM calls reported by SDKs",
            )
            .buckets(DURATION_BUCKETS_S.to_vec()),
            &LABELS,
        )?;
        let batches = IntCounterVec::new(
            Opts::new(
                "promptops_telemetry_batches_total",
                "Telemetry batches received, by result (accepted, invalid, forbidden, failed)",
            ),
            &["result"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "promptops_telemetry_events_total",
                "Telemetry events accepted, by project and kind (render, decision, call)",
            ),
            &["project", "kind"],
        )?;
        let overflow = prometheus::IntCounter::new(
            "promptops_telemetry_series_overflow_total",
            "Call events folded into the overflow series because the series limit was reached",
        )?;
        let series_gauge = IntGauge::new(
            "promptops_telemetry_series",
            "Distinct telemetry label sets held in memory by this replica",
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(tokens.clone()),
            Box::new(cost.clone()),
            Box::new(duration.clone()),
            Box::new(ttft.clone()),
            Box::new(batches.clone()),
            Box::new(events.clone()),
            Box::new(overflow.clone()),
            Box::new(series_gauge.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(TelemetryMetrics {
            requests,
            errors,
            tokens,
            cost,
            duration,
            ttft,
            batches,
            events,
            overflow,
            series_gauge,
            series: Mutex::new(HashSet::new()),
            error_series: Mutex::new(HashSet::new()),
            max_series: max_series.max(1),
        })
    }

    pub fn batch(&self, result: &str) {
        self.batches.with_label_values(&[result]).inc();
    }

    /// The series key an event is counted under: its own while the limit
    /// allows, else the project's overflow series.
    fn admit(&self, project: &str, key: &SeriesKey) -> (SeriesKey, bool) {
        let mut set = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let k = (project.to_string(), key.clone());
        if set.contains(&k) {
            return (key.clone(), false);
        }
        if set.len() < self.max_series {
            set.insert(k);
            self.series_gauge.set(set.len() as i64);
            return (key.clone(), false);
        }
        let of = overflow_key();
        let ok = (project.to_string(), of.clone());
        if !set.contains(&ok) {
            // The overflow series itself always gets a slot.
            set.insert(ok);
            self.series_gauge.set(set.len() as i64);
        }
        (of, true)
    }

    fn admit_error(&self, project: &str, key: &SeriesKey, et: &str) -> String {
        let mut set = self.error_series.lock().unwrap_or_else(|e| e.into_inner());
        let k = (project.to_string(), key.clone(), et.to_string());
        if set.contains(&k) || set.len() < self.max_series {
            set.insert(k);
            et.to_string()
        } else {
            OVERFLOW.to_string()
        }
    }

    /// Fold a batch's events into the series.
    pub fn observe(&self, project: &str, b: &ValidBatch) {
        for (kind, n) in &b.events_by_kind {
            self.events.with_label_values(&[project, kind]).inc_by(*n);
        }
        for c in &b.calls {
            let (key, overflowed) = self.admit(project, &c.key);
            if overflowed {
                self.overflow.inc();
            }
            let version = if key.version == 0 {
                String::new()
            } else {
                key.version.to_string()
            };
            let l = [
                project,
                key.prompt.as_str(),
                version.as_str(),
                key.model.as_str(),
                key.provider.as_str(),
                key.label.as_str(),
                key.variant.as_str(),
            ];
            self.requests.with_label_values(&l).inc();
            if let Some(et) = &c.error_type {
                let et = self.admit_error(project, &key, et);
                let mut le: Vec<&str> = l.to_vec();
                le.push(&et);
                self.errors.with_label_values(&le).inc();
            }
            for (tt, n) in [("input", c.input_tokens), ("output", c.output_tokens)] {
                if let Some(n) = n {
                    let mut lt: Vec<&str> = l.to_vec();
                    lt.push(tt);
                    self.tokens.with_label_values(&lt).inc_by(n);
                }
            }
            if let Some(x) = c.cost_usd {
                self.cost.with_label_values(&l).inc_by(x);
            }
            if let Some(ms) = c.latency_ms {
                self.duration.with_label_values(&l).observe(ms / 1000.0);
            }
            if let Some(ms) = c.ttft_ms {
                self.ttft.with_label_values(&l).observe(ms / 1000.0);
            }
        }
    }
}

fn overflow_key() -> SeriesKey {
    SeriesKey {
        prompt: OVERFLOW.into(),
        version: 0,
        model: OVERFLOW.into(),
        provider: OVERFLOW.into(),
        label: OVERFLOW.into(),
        variant: OVERFLOW.into(),
    }
}

// ---------------------------------------------------------------------------
// Rollups.

/// One rollup row's sums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub latency: Dist,
    pub ttft: Dist,
}

/// A latency distribution: count, sum (ms) and counts per fixed bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dist {
    pub count: i64,
    pub sum_ms: f64,
    pub buckets: [i64; NB],
}

impl Dist {
    fn observe(&mut self, ms: f64) {
        let s = ms / 1000.0;
        let i = DURATION_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(NB - 1);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ms += ms;
    }

    /// The `q` quantile in milliseconds, by linear interpolation inside the
    /// bucket that holds rank `q × count` (the first bucket starts at 0; a
    /// rank in the bucket above the last bound reports that bound).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count <= 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut cum = 0.0;
        for (i, n) in self.buckets.iter().enumerate() {
            let n = *n as f64;
            if n > 0.0 && cum + n >= rank {
                if i == NB - 1 {
                    return Some(DURATION_BUCKETS_S[NB - 2] * 1000.0);
                }
                let lo = if i == 0 {
                    0.0
                } else {
                    DURATION_BUCKETS_S[i - 1]
                };
                let hi = DURATION_BUCKETS_S[i];
                let frac = ((rank - cum) / n).clamp(0.0, 1.0);
                return Some((lo + (hi - lo) * frac) * 1000.0);
            }
            cum += n;
        }
        Some(DURATION_BUCKETS_S[NB - 2] * 1000.0)
    }

    fn to_json(&self) -> Value {
        let r = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        json!({
            "count": self.count,
            "mean": (self.count > 0).then(|| self.sum_ms / self.count as f64),
            "p50": r(self.quantile_ms(0.50)),
            "p95": r(self.quantile_ms(0.95)),
            "p99": r(self.quantile_ms(0.99)),
        })
    }
}

/// Rollup rows of one batch: (minute, key) → sums, and error counts.
pub type Rollup = (
    BTreeMap<(i64, SeriesKey), Sums>,
    BTreeMap<(i64, SeriesKey, String), i64>,
);

pub fn rollup(calls: &[CallEvent]) -> Rollup {
    let mut rows: BTreeMap<(i64, SeriesKey), Sums> = BTreeMap::new();
    let mut errs: BTreeMap<(i64, SeriesKey, String), i64> = BTreeMap::new();
    for c in calls {
        let minute = (c.ts_ms / 1000).div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS;
        let s = rows.entry((minute, c.key.clone())).or_default();
        s.requests += 1;
        if let Some(et) = &c.error_type {
            s.errors += 1;
            *errs.entry((minute, c.key.clone(), et.clone())).or_insert(0) += 1;
        }
        s.input_tokens += c.input_tokens.unwrap_or(0).min(i64::MAX as u64) as i64;
        s.output_tokens += c.output_tokens.unwrap_or(0).min(i64::MAX as u64) as i64;
        s.cost_usd += c.cost_usd.unwrap_or(0.0);
        if let Some(ms) = c.latency_ms {
            s.latency.observe(ms);
        }
        if let Some(ms) = c.ttft_ms {
            s.ttft.observe(ms);
        }
    }
    (rows, errs)
}

const KEY_COLS: &str = "project_id, bucket_start, prompt, version, model, provider, label, variant";

fn bucket_cols(prefix: &str) -> Vec<String> {
    (0..NB).map(|i| format!("{prefix}_b{i:02}")).collect()
}

fn sum_cols() -> Vec<String> {
    let mut v: Vec<String> = [
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_count",
        "latency_sum_ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(bucket_cols("lat"));
    v.push("ttft_count".into());
    v.push("ttft_sum_ms".into());
    v.extend(bucket_cols("ttft"));
    v
}

/// Add a batch's rollups to the database (one transaction; additive
/// upserts in key order, so concurrent replicas neither lose counts nor
/// deadlock).
pub async fn persist(db: &Db, project_id: i64, r: &Rollup) -> Result<(), sqlx::Error> {
    let (rows, errs) = r;
    if rows.is_empty() {
        return Ok(());
    }
    let sums = sum_cols();
    let n_key = 8;
    let placeholders: Vec<String> = (1..=n_key + sums.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = sums
        .iter()
        .map(|c| format!("{c} = telemetry_rollups.{c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO telemetry_rollups ({KEY_COLS}, {}) VALUES ({}) ON CONFLICT ({KEY_COLS}) DO UPDATE SET {}",
        sums.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    );
    let err_sql = format!(
        "INSERT INTO telemetry_errors ({KEY_COLS}, error_type, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT ({KEY_COLS}, error_type) DO UPDATE SET count = telemetry_errors.count + excluded.count"
    );
    let mut tx = match db.backend {
        Backend::Sqlite => db.pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => db.pool.begin().await?,
    };
    for ((minute, k), s) in rows {
        // Column names come from constants; values are bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(project_id)
            .bind(*minute)
            .bind(k.prompt.as_str())
            .bind(i64::from(k.version))
            .bind(k.model.as_str())
            .bind(k.provider.as_str())
            .bind(k.label.as_str())
            .bind(k.variant.as_str())
            .bind(s.requests)
            .bind(s.errors)
            .bind(s.input_tokens)
            .bind(s.output_tokens)
            .bind(s.cost_usd)
            .bind(s.latency.count)
            .bind(s.latency.sum_ms);
        for b in s.latency.buckets {
            q = q.bind(b);
        }
        q = q.bind(s.ttft.count).bind(s.ttft.sum_ms);
        for b in s.ttft.buckets {
            q = q.bind(b);
        }
        q.execute(&mut *tx).await?;
    }
    for ((minute, k, et), n) in errs {
        sqlx::query(sqlx::AssertSqlSafe(err_sql.clone()))
            .bind(project_id)
            .bind(*minute)
            .bind(k.prompt.as_str())
            .bind(i64::from(k.version))
            .bind(k.model.as_str())
            .bind(k.provider.as_str())
            .bind(k.label.as_str())
            .bind(k.variant.as_str())
            .bind(et.as_str())
            .bind(*n)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

// ---------------------------------------------------------------------------
// Query.

/// Dimensions `group_by` may name (`minute` is the rollup bucket).
pub const GROUP_DIMS: &[&str] = &[
    "prompt", "version", "model", "provider", "label", "variant", "minute",
];

#[derive(Debug, Clone, Default)]
pub struct Query {
    pub prompt: Option<String>,
    pub version: Option<u32>,
    pub model: Option<String>,
    /// Unix seconds, inclusive.
    pub since: i64,
    /// Unix seconds, exclusive.
    pub until: i64,
    pub group_by: Vec<&'static str>,
}

fn dim_col(d: &str) -> &'static str {
    match d {
        "minute" => "bucket_start",
        "prompt" => "prompt",
        "version" => "version",
        "model" => "model",
        "provider" => "provider",
        "label" => "label",
        _ => "variant",
    }
}

/// Parse `group_by` (comma-separated dimensions; empty: one total).
pub fn parse_group_by(s: Option<&str>) -> ApiResult<Vec<&'static str>> {
    let s = s.unwrap_or("prompt,version,model");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some(d) = GROUP_DIMS.iter().find(|d| **d == part) else {
            return Err(invalid(
                "group_by",
                format!(
                    "unknown group_by dimension `{part}`; use {}",
                    GROUP_DIMS.join(", ")
                ),
            ));
        };
        if !out.contains(d) {
            out.push(*d);
        }
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Group {
    #[serde(flatten)]
    pub dims: Map<String, Value>,
    pub requests: i64,
    pub errors: i64,
    pub errors_by_type: BTreeMap<String, i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub latency_ms: Value,
    pub ttft_ms: Value,
}

fn dim_value(row: &sqlx::any::AnyRow, d: &str) -> Result<Value, sqlx::Error> {
    Ok(match d {
        "version" => {
            let v: i64 = row.try_get("version")?;
            if v == 0 { Value::Null } else { json!(v) }
        }
        "minute" => {
            let v: i64 = row.try_get("bucket_start")?;
            let t = time::OffsetDateTime::from_unix_timestamp(v)
                .map(crate::db::format_time)
                .unwrap_or_default();
            json!(t)
        }
        other => {
            let v: String = row.try_get(dim_col(other))?;
            if v.is_empty() { Value::Null } else { json!(v) }
        }
    })
}

/// Sums and percentiles per group.
pub async fn query(db: &Db, project_id: i64, q: &Query) -> Result<Vec<Group>, sqlx::Error> {
    let dims: Vec<&str> = q.group_by.iter().map(|d| dim_col(d)).collect();
    let mut filter = String::from("project_id = $1 AND bucket_start >= $2 AND bucket_start < $3");
    let mut n = 3;
    if q.prompt.is_some() {
        n += 1;
        filter.push_str(&format!(" AND prompt = ${n}"));
    }
    if q.version.is_some() {
        n += 1;
        filter.push_str(&format!(" AND version = ${n}"));
    }
    if q.model.is_some() {
        n += 1;
        filter.push_str(&format!(" AND model = ${n}"));
    }
    let (select_dims, group) = if dims.is_empty() {
        (String::new(), String::new())
    } else {
        (
            format!("{}, ", dims.join(", ")),
            format!(" GROUP BY {0} ORDER BY {0}", dims.join(", ")),
        )
    };
    let sums: Vec<String> = sum_cols()
        .iter()
        .map(|c| {
            let ty = if c == "cost_usd" || c.ends_with("_sum_ms") {
                "DOUBLE PRECISION"
            } else {
                "BIGINT"
            };
            format!("CAST(COALESCE(SUM({c}), 0) AS {ty}) AS {c}")
        })
        .collect();
    let sql = format!(
        "SELECT {select_dims}{} FROM telemetry_rollups WHERE {filter}{group}",
        sums.join(", ")
    );
    // Dimensions come from GROUP_DIMS (a whitelist); values are bound.
    let bind = |sql: &str| {
        let mut qq = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(project_id)
            .bind(q.since)
            .bind(q.until);
        if let Some(p) = &q.prompt {
            qq = qq.bind(p.clone());
        }
        if let Some(v) = q.version {
            qq = qq.bind(i64::from(v));
        }
        if let Some(m) = &q.model {
            qq = qq.bind(m.clone());
        }
        qq
    };
    let mut tx = db.read().await?;
    let rows = bind(&sql).fetch_all(&mut *tx).await?;
    let mut groups: Vec<Group> = Vec::with_capacity(rows.len());
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        let requests: i64 = row.try_get("requests")?;
        if requests == 0 {
            continue;
        }
        let mut dm = Map::new();
        for d in &q.group_by {
            dm.insert((*d).to_string(), dim_value(row, d)?);
        }
        let dist = |prefix: &str, count: &str, sum: &str| -> Result<Dist, sqlx::Error> {
            let mut d = Dist {
                count: row.try_get(count)?,
                sum_ms: row.try_get(sum)?,
                buckets: [0; NB],
            };
            for (i, c) in bucket_cols(prefix).iter().enumerate() {
                d.buckets[i] = row.try_get(c.as_str())?;
            }
            Ok(d)
        };
        let lat = dist("lat", "latency_count", "latency_sum_ms")?;
        let ttft = dist("ttft", "ttft_count", "ttft_sum_ms")?;
        index.insert(Value::Object(dm.clone()).to_string(), groups.len());
        groups.push(Group {
            dims: dm,
            requests,
            errors: row.try_get("errors")?,
            errors_by_type: BTreeMap::new(),
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cost_usd: row.try_get("cost_usd")?,
            latency_ms: lat.to_json(),
            ttft_ms: ttft.to_json(),
        });
    }
    let err_sql = format!(
        "SELECT {select_dims}error_type, CAST(COALESCE(SUM(count), 0) AS BIGINT) AS n FROM telemetry_errors WHERE {filter} GROUP BY {}error_type",
        if dims.is_empty() {
            String::new()
        } else {
            format!("{}, ", dims.join(", "))
        }
    );
    for row in bind(&err_sql).fetch_all(&mut *tx).await? {
        let mut dm = Map::new();
        for d in &q.group_by {
            dm.insert((*d).to_string(), dim_value(&row, d)?);
        }
        if let Some(i) = index.get(&Value::Object(dm).to_string()) {
            let et: String = row.try_get("error_type")?;
            let n: i64 = row.try_get("n")?;
            *groups[*i].errors_by_type.entry(et).or_insert(0) += n;
        }
    }
    tx.commit().await?;
    Ok(groups)
}

/// Unix seconds of an RFC 3339 time or a date (`2025-01-31`).
pub fn parse_unix(field: &str, s: &str) -> ApiResult<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .map_err(|_| {
            invalid(
                field,
                format!("`{field}` must be an RFC 3339 time or YYYY-MM-DD, got `{s}`"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: Value) -> Vec<u8> {
        json!({
            "schema": SCHEMA, "project": "shop",
            "sdk": {"name": "promptops-rust", "version": "0.1.0"},
            "sent_at_ms": 1, "dropped": {"recorded": 1, "dropped_queue_full": 0,
            "dropped_export_full": 0, "dropped_upload_failed": 0},
            "events": events,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn accepts_the_core_batch() {
        use promptops_core::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
        let t = Telemetry::new(TelemetryConfig {
            project: Some("shop".into()),
            ..Default::default()
        });
        let mut ev = Event::new(EventKind::Call, "support/reply");
        ev.version = Some(3);
        ev.model = Some("gpt-4o-mini".into());
        ev.provider = Some("openai".into());
        ev.input_tokens = Some(10);
        ev.output_tokens = Some(5);
        ev.cost_usd = Some(0.001);
        ev.latency_ms = Some(120.0);
        ev.error_type = Some("timeout".into());
        ev.attributes = promptops_core::telemetry::attributes([("user", "u1")]);
        t.record(ev);
        t.record(Event::new(EventKind::Render, "support/reply"));
        let b = t.take_batch(100).unwrap();
        let v = validate(&b.to_json(), i64::MAX / 2).unwrap();
        assert_eq!(v.project.as_deref(), Some("shop"));
        assert_eq!(v.calls.len(), 1);
        assert_eq!(v.calls[0].key.version, 3);
        assert_eq!(v.calls[0].error_type.as_deref(), Some("timeout"));
        assert_eq!(v.events_by_kind.get("render"), Some(&1));
    }

    #[test]
    fn names_the_field() {
        let e = validate(
            &batch(json!([{"kind": "call", "ts_ms": 1, "prompt": "p", "latency_ms": -1}])),
            10,
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("events[0].latency_ms"));
        let e = validate(
            &batch(json!([{"kind": "call", "ts_ms": 1, "prompt": "p", "colour": 1}])),
            10,
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("events[0].colour"));
        let e = validate(
            &batch(json!([{"kind": "nap", "ts_ms": 1, "prompt": "p"}])),
            10,
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("events[0].kind"));
        let mut v: Value = serde_json::from_slice(&batch(json!([]))).unwrap();
        v["schema"] = json!("promptops.telemetry.v2");
        let e = validate(v.to_string().as_bytes(), 10).unwrap_err();
        assert_eq!(e.body.code, "UNSUPPORTED_SCHEMA");
        assert_eq!(e.body.field.as_deref(), Some("schema"));
        let e = validate(b"{", 10).unwrap_err();
        assert_eq!(e.body.code, "MALFORMED_JSON");
    }

    #[test]
    fn percentiles_from_buckets() {
        let mut d = Dist::default();
        // 100 calls: 90 of 15 ms (bucket 10–20 ms), 10 of 3 s (2.56–5.12 s).
        for _ in 0..90 {
            d.observe(15.0);
        }
        for _ in 0..10 {
            d.observe(3000.0);
        }
        let p50 = d.quantile_ms(0.5).unwrap();
        assert!((10.0..=20.0).contains(&p50), "{p50}");
        // rank 50 of the 90 in [10, 20] ms: 10 + 10 × 50/90.
        assert!((p50 - (10.0 + 10.0 * 50.0 / 90.0)).abs() < 1e-9);
        let p99 = d.quantile_ms(0.99).unwrap();
        assert!((2560.0..=5120.0).contains(&p99), "{p99}");
        assert_eq!(Dist::default().quantile_ms(0.5), None);
        let mut big = Dist::default();
        big.observe(500_000.0);
        assert_eq!(big.quantile_ms(0.5), Some(81_920.0));
    }

    #[test]
    fn bounded_series() {
        let reg = Registry::new();
        let m = TelemetryMetrics::new(&reg, 2).unwrap();
        let mut calls = Vec::new();
        for i in 0..5 {
            calls.push(CallEvent {
                ts_ms: 0,
                key: SeriesKey {
                    prompt: format!("p{i}"),
                    version: 1,
                    model: "m".into(),
                    provider: String::new(),
                    label: String::new(),
                    variant: String::new(),
                },
                input_tokens: Some(1),
                output_tokens: None,
                cost_usd: None,
                latency_ms: Some(1.0),
                ttft_ms: None,
                error_type: None,
            });
        }
        let b = ValidBatch {
            project: None,
            events_by_kind: BTreeMap::from([("call", 5)]),
            calls,
            sdk: String::new(),
        };
        m.observe("shop", &b);
        assert_eq!(m.overflow.get(), 3);
        assert_eq!(
            m.requests
                .with_label_values(&["shop", OVERFLOW, "", OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW])
                .get(),
            3
        );
        assert_eq!(m.series_gauge.get(), 3);
    }
}
