//! OpenTelemetry export over OTLP/HTTP with the JSON encoding (feature
//! `otlp`): `POST {endpoint}/v1/metrics` and `{endpoint}/v1/traces`,
//! `Content-Type: application/json`, with configurable headers (auth).
//!
//! Names follow the OpenTelemetry GenAI semantic conventions (client
//! metrics and inference spans):
//!
//! | instrument | kind | unit |
//! | --- | --- | --- |
//! | `gen_ai.client.token.usage` (attribute `gen_ai.token.type` = `input`/`output`) | histogram, the conventions' token buckets | `{token}` |
//! | `gen_ai.client.operation.duration` (`error.type` on failures) | histogram, the conventions' duration buckets | `s` |
//! | `promptops.client.cost` (the conventions have no cost metric) | monotonic sum | `USD` |
//!
//! Every point carries `gen_ai.operation.name` (`chat`),
//! `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`
//! (when the provider said), `promptops.prompt.name`,
//! `promptops.prompt.version`, `promptops.prompt.label` and
//! `promptops.variant` (when known). Temporality is cumulative since the
//! exporter started. Each call becomes a CLIENT span named
//! `{gen_ai.operation.name} {gen_ai.request.model}` with the same attributes
//! plus `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `promptops.cost_usd` and `error.type` (status ERROR on failures).
//!
//! The exporter is a [`Sink`] of the [`Telemetry`]: it sees masked events
//! when the queue is drained (off the hot path), keeps metrics as bounded
//! cumulative aggregates and spans in a bounded queue (full: the span is
//! dropped and counted), and sends on [`OtlpExporter::export_once`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::Secret;
use crate::error::{Error, Result};
use crate::telemetry::{DURATION_BUCKETS_S, Event, EventKind, Sink, TOKEN_BUCKETS, Telemetry};

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://127.0.0.1:4318`); `/v1/metrics`
    /// and `/v1/traces` are appended.
    pub endpoint: String,
    /// Extra request headers (`Authorization`, `x-api-key`, …).
    pub headers: Vec<(String, Secret)>,
    /// `service.name` of the resource (default `promptops-app`).
    pub service_name: String,
    /// Request timeout (default 10 s).
    pub timeout: Duration,
    /// Spans held between exports (default 2048); more are dropped and
    /// counted.
    pub max_spans: usize,
    /// Spans per request (default 512).
    pub max_spans_per_request: usize,
    /// Distinct metric attribute sets kept (default 2000); events beyond
    /// are counted in `dropped_points`.
    pub max_series: usize,
    pub metrics: bool,
    pub traces: bool,
}

impl OtlpConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            service_name: "promptops-app".into(),
            timeout: Duration::from_secs(10),
            max_spans: 2048,
            max_spans_per_request: 512,
            max_series: 2000,
            metrics: true,
            traces: true,
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret::new(value)));
        self
    }

    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// Check the settings (`ClientBuilder::build` does): the endpoint URL,
    /// header names and values (values are never shown in errors), a
    /// non-empty service name, a non-zero timeout and limits, and at least
    /// one of metrics and traces. Errors are [`Error::Config`].
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("otlp {m}")));
        super::check_endpoint("otlp endpoint", &self.endpoint)?;
        for (name, value) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!(
                    "header name `{name}` is not a valid HTTP header name"
                ));
            }
            if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                return bad(format!(
                    "header `{name}` has a value that is not a valid HTTP header value"
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return bad("service_name must not be empty".into());
        }
        if self.timeout.is_zero() {
            return bad("timeout must be greater than 0".into());
        }
        for (field, v) in [
            ("max_spans", self.max_spans),
            ("max_spans_per_request", self.max_spans_per_request),
            ("max_series", self.max_series),
        ] {
            if v == 0 {
                return bad(format!("{field} must be at least 1"));
            }
        }
        if !self.metrics && !self.traces {
            return bad("exports nothing: metrics and traces are both off".into());
        }
        Ok(())
    }
}

/// Counters of the exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtlpStats {
    pub spans_exported: u64,
    /// Spans dropped because the span queue was full.
    pub spans_dropped: u64,
    /// Spans in requests that failed.
    pub spans_failed: u64,
    pub metric_exports: u64,
    pub metric_exports_failed: u64,
    /// Metric observations dropped because the series limit was reached.
    pub dropped_points: u64,
}

type Attrs = Vec<(&'static str, String)>;

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new(n: usize) -> Hist {
        Hist {
            counts: vec![0; n + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

#[derive(Debug, Default)]
struct Agg {
    tokens: HashMap<Attrs, Hist>,
    duration: HashMap<Attrs, Hist>,
    cost: HashMap<Attrs, f64>,
}

impl Agg {
    fn series(&self) -> usize {
        self.tokens.len() + self.duration.len() + self.cost.len()
    }
}

/// The sink side: aggregates and the span queue.
struct State {
    agg: Mutex<Agg>,
    spans: Mutex<VecDeque<Event>>,
    max_spans: usize,
    max_series: usize,
    traces: bool,
    spans_dropped: AtomicU64,
    spans_exported: AtomicU64,
    spans_failed: AtomicU64,
    metric_exports: AtomicU64,
    metric_exports_failed: AtomicU64,
    dropped_points: AtomicU64,
    start_ns: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The attributes every point and span of a call carries.
fn call_attrs(ev: &Event) -> Attrs {
    let mut a: Attrs = vec![("gen_ai.operation.name", "chat".into())];
    let mut put = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            a.push((k, v.to_string()));
        }
    };
    put("gen_ai.provider.name", ev.provider.as_deref());
    put("gen_ai.request.model", ev.model.as_deref());
    put("gen_ai.response.model", ev.response_model.as_deref());
    put("promptops.prompt.name", Some(&ev.prompt));
    put("promptops.prompt.label", ev.label.as_deref());
    put("promptops.variant", ev.variant.as_deref());
    if let Some(v) = ev.version {
        a.push(("promptops.prompt.version", v.to_string()));
    }
    a
}

impl State {
    fn admit<V>(&self, map: &HashMap<Attrs, V>, key: &Attrs, total: usize) -> bool {
        if map.contains_key(key) || total < self.max_series {
            true
        } else {
            self.dropped_points.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl Sink for State {
    fn consume(&self, events: &[Event]) {
        let mut agg = lock(&self.agg);
        let mut spans = lock(&self.spans);
        for ev in events.iter().filter(|e| e.kind == EventKind::Call) {
            let base = call_attrs(ev);
            for (tt, n) in [("input", ev.input_tokens), ("output", ev.output_tokens)] {
                if let Some(n) = n {
                    let mut k = base.clone();
                    k.push(("gen_ai.token.type", tt.into()));
                    let total = agg.series();
                    if self.admit(&agg.tokens, &k, total) {
                        agg.tokens
                            .entry(k)
                            .or_insert_with(|| Hist::new(TOKEN_BUCKETS.len()))
                            .observe(&TOKEN_BUCKETS, n as f64);
                    }
                }
            }
            if let Some(ms) = ev.latency_ms {
                let mut k = base.clone();
                if let Some(et) = &ev.error_type {
                    k.push(("error.type", et.to_string()));
                }
                let total = agg.series();
                if self.admit(&agg.duration, &k, total) {
                    agg.duration
                        .entry(k)
                        .or_insert_with(|| Hist::new(DURATION_BUCKETS_S.len()))
                        .observe(&DURATION_BUCKETS_S, ms / 1000.0);
                }
            }
            if let Some(c) = ev.cost_usd {
                let total = agg.series();
                if self.admit(&agg.cost, &base, total) {
                    *agg.cost.entry(base.clone()).or_insert(0.0) += c;
                }
            }
            if !self.traces {
                continue;
            }
            if spans.len() >= self.max_spans.max(1) {
                self.spans_dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                spans.push_back(ev.clone());
            }
        }
    }
}

fn attr_json(k: &str, v: &str) -> Value {
    if k == "promptops.prompt.version"
        && let Ok(n) = v.parse::<i64>()
    {
        return json!({"key": k, "value": {"intValue": n.to_string()}});
    }
    json!({"key": k, "value": {"stringValue": v}})
}

fn attrs_json(a: &Attrs) -> Vec<Value> {
    let mut sorted: Vec<&(&str, String)> = a.iter().collect();
    sorted.sort_by(|x, y| x.0.cmp(y.0));
    sorted.into_iter().map(|(k, v)| attr_json(k, v)).collect()
}

fn hist_points(m: &HashMap<Attrs, Hist>, bounds: &[f64], start: u64, now: u64) -> Vec<Value> {
    let mut pts: Vec<(&Attrs, &Hist)> = m.iter().collect();
    pts.sort_by(|a, b| a.0.cmp(b.0));
    pts.into_iter()
        .map(|(a, h)| {
            json!({
                "attributes": attrs_json(a),
                "startTimeUnixNano": start.to_string(),
                "timeUnixNano": now.to_string(),
                "count": h.count.to_string(),
                "sum": h.sum,
                "min": h.min,
                "max": h.max,
                "bucketCounts": h.counts.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                "explicitBounds": bounds,
            })
        })
        .collect()
}

/// A random id of `n` bytes in hex (not for security).
fn random_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n * 2);
    while out.len() < n * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(unix_ns());
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n * 2);
    out
}

/// Sends the telemetry of one [`Telemetry`] to an OTLP/HTTP collector.
pub struct OtlpExporter {
    cfg: OtlpConfig,
    language: &'static str,
    http: reqwest::Client,
    state: Arc<State>,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("config", &self.cfg)
            .field("stats", &self.stats())
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter fed by `tel` (registered as its sink).
    pub fn new(cfg: OtlpConfig, tel: &Telemetry) -> Result<OtlpExporter> {
        let http = super::build_http(Duration::from_secs(5)).map_err(Error::Config)?;
        let state = Arc::new(State {
            agg: Mutex::new(Agg::default()),
            spans: Mutex::new(VecDeque::new()),
            max_spans: cfg.max_spans,
            max_series: cfg.max_series,
            traces: cfg.traces,
            spans_dropped: AtomicU64::new(0),
            spans_exported: AtomicU64::new(0),
            spans_failed: AtomicU64::new(0),
            metric_exports: AtomicU64::new(0),
            metric_exports_failed: AtomicU64::new(0),
            dropped_points: AtomicU64::new(0),
            start_ns: unix_ns(),
        });
        tel.add_sink(state.clone());
        Ok(OtlpExporter {
            cfg,
            language: tel.config().sdk_language.otel_language(),
            http,
            state,
        })
    }

    pub fn stats(&self) -> OtlpStats {
        let s = &self.state;
        OtlpStats {
            spans_exported: s.spans_exported.load(Ordering::Relaxed),
            spans_dropped: s.spans_dropped.load(Ordering::Relaxed),
            spans_failed: s.spans_failed.load(Ordering::Relaxed),
            metric_exports: s.metric_exports.load(Ordering::Relaxed),
            metric_exports_failed: s.metric_exports_failed.load(Ordering::Relaxed),
            dropped_points: s.dropped_points.load(Ordering::Relaxed),
        }
    }

    fn resource(&self) -> Value {
        json!({"attributes": [
            {"key": "service.name", "value": {"stringValue": self.cfg.service_name}},
            {"key": "telemetry.sdk.name", "value": {"stringValue": "promptops"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": self.language}},
            {"key": "telemetry.sdk.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
        ]})
    }

    fn scope() -> Value {
        json!({"name": "promptops", "version": env!("CARGO_PKG_VERSION")})
    }

    /// The metrics request body (`ExportMetricsServiceRequest`), `None`
    /// when nothing was observed yet.
    pub fn metrics_json(&self) -> Option<Value> {
        let agg = lock(&self.state.agg);
        if agg.series() == 0 {
            return None;
        }
        let (start, now) = (self.state.start_ns, unix_ns());
        let mut metrics = Vec::new();
        if !agg.tokens.is_empty() {
            metrics.push(json!({
                "name": "gen_ai.client.token.usage",
                "description": "Number of input and output tokens used.",
                "unit": "{token}",
                "histogram": {"aggregationTemporality": 2,
                    "dataPoints": hist_points(&agg.tokens, &TOKEN_BUCKETS, start, now)},
            }));
        }
        if !agg.duration.is_empty() {
            metrics.push(json!({
                "name": "gen_ai.client.operation.duration",
                "description": "GenAI operation duration.",
                "unit": "s",
                "histogram": {"aggregationTemporality": 2,
                    "dataPoints": hist_points(&agg.duration, &DURATION_BUCKETS_S, start, now)},
            }));
        }
        if !agg.cost.is_empty() {
            let mut pts: Vec<(&Attrs, &f64)> = agg.cost.iter().collect();
            pts.sort_by(|a, b| a.0.cmp(b.0));
            metrics.push(json!({
                "name": "promptops.client.cost",
                "description": "Cost of GenAI operations in USD, from token usage and the promptops price table.",
                "unit": "USD",
                "sum": {"aggregationTemporality": 2, "isMonotonic": true,
                    "dataPoints": pts.into_iter().map(|(a, v)| json!({
                        "attributes": attrs_json(a),
                        "startTimeUnixNano": start.to_string(),
                        "timeUnixNano": now.to_string(),
                        "asDouble": v,
                    })).collect::<Vec<_>>()},
            }));
        }
        Some(json!({"resourceMetrics": [{
            "resource": self.resource(),
            "scopeMetrics": [{"scope": Self::scope(), "metrics": metrics}],
        }]}))
    }

    fn span_json(ev: &Event) -> Value {
        let mut a = call_attrs(ev);
        if let Some(et) = &ev.error_type {
            a.push(("error.type", et.to_string()));
        }
        let mut attrs = attrs_json(&a);
        for (k, v) in [
            ("gen_ai.usage.input_tokens", ev.input_tokens),
            ("gen_ai.usage.output_tokens", ev.output_tokens),
        ] {
            if let Some(v) = v {
                attrs.push(json!({"key": k, "value": {"intValue": v.to_string()}}));
            }
        }
        if let Some(c) = ev.cost_usd {
            attrs.push(json!({"key": "promptops.cost_usd", "value": {"doubleValue": c}}));
        }
        let end = ev.ts_ms.saturating_mul(1_000_000);
        let dur = ev
            .latency_ms
            .map(|ms| (ms * 1_000_000.0) as u64)
            .unwrap_or(0);
        let status = match &ev.error_type {
            Some(et) => json!({"code": 2, "message": ev.error_message.as_deref().unwrap_or(et)}),
            None => json!({"code": 0}),
        };
        json!({
            "traceId": random_hex(16),
            "spanId": random_hex(8),
            "name": format!("chat {}", ev.model.as_deref().unwrap_or("unknown")),
            "kind": 3,
            "startTimeUnixNano": end.saturating_sub(dur).to_string(),
            "endTimeUnixNano": end.to_string(),
            "attributes": attrs,
            "status": status,
        })
    }

    async fn post(&self, path: &str, body: &Value) -> std::result::Result<(), String> {
        let url = format!("{}{path}", self.cfg.endpoint.trim_end_matches('/'));
        let mut rb = self
            .http
            .post(&url)
            .timeout(self.cfg.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).unwrap_or_default());
        for (k, v) in &self.cfg.headers {
            rb = rb.header(k.as_str(), v.expose());
        }
        match rb.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{url}: HTTP {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err(format!("{url}: timed out")),
            Err(e) if e.is_connect() => Err(format!("{url}: connection failed")),
            Err(_) => Err(format!("{url}: request failed")),
        }
    }

    /// Drain `tel`, then send the cumulative metrics and the queued spans.
    /// Spans of a failed request are dropped and counted; metrics are
    /// cumulative, so the next export carries them again.
    pub async fn export_once(&self, tel: &Telemetry) -> Result<()> {
        tel.flush();
        let mut errors = Vec::new();
        if self.cfg.metrics
            && let Some(body) = self.metrics_json()
        {
            match self.post("/v1/metrics", &body).await {
                Ok(()) => self.state.metric_exports.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    errors.push(e);
                    self.state
                        .metric_exports_failed
                        .fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        if self.cfg.traces {
            loop {
                let batch: Vec<Event> = {
                    let mut q = lock(&self.state.spans);
                    let k = q.len().min(self.cfg.max_spans_per_request.max(1));
                    q.drain(..k).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let body = json!({"resourceSpans": [{
                    "resource": self.resource(),
                    "scopeSpans": [{"scope": Self::scope(),
                        "spans": batch.iter().map(Self::span_json).collect::<Vec<_>>()}],
                }]});
                match self.post("/v1/traces", &body).await {
                    Ok(()) => {
                        self.state.spans_exported.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.state.spans_failed.fetch_add(n, Ordering::Relaxed);
                        errors.push(e);
                        break;
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::RegistryUnavailable(format!(
                "OTLP export failed: {}",
                errors.join("; ")
            )))
        }
    }
}
