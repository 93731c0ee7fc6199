//! Telemetry: every render, routing decision and provider call becomes an
//! [`Event`] recorded into a bounded, lock-free queue. Recording never
//! blocks and never allocates beyond the event itself; when the queue is
//! full the event is dropped **and counted** (`promptops_telemetry_dropped_total`).
//!
//! Off the hot path, [`Telemetry::flush`] drains the queue, applies the PII
//! [`Masker`] (before anything can leave the process), folds events into
//! aggregates (exported as Prometheus text with OpenTelemetry GenAI names,
//! see [`Telemetry::prometheus`]) and keeps them, bounded again, for the JSON
//! batch upload to the registry (`POST /v1/telemetry`, see [`Batch`]).
//! Nothing here does I/O; the uploader (feature `providers`) does.

mod prometheus;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::route::{Clock, SystemClock};

pub use prometheus::{DURATION_BUCKETS_S, TOKEN_BUCKETS};

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A prompt was rendered.
    Render,
    /// A routing decision was made.
    Decision,
    /// A provider call (one attempt) finished, or a caller recorded one.
    Call,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Render => "render",
            EventKind::Decision => "decision",
            EventKind::Call => "call",
        }
    }
}

/// One telemetry event. Strings shared across events are `Arc<str>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// Unix time in milliseconds (set by `record` when 0).
    pub ts_ms: u64,
    pub prompt: Arc<str>,
    pub version: Option<u32>,
    pub label: Option<Arc<str>>,
    pub variant: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    /// The model the provider says answered (calls made by `complete`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_model: Option<Arc<str>>,
    /// The policy target id (decisions and calls).
    pub target: Option<Arc<str>>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    /// `None` on success; a failure class or error kind otherwise.
    pub error_type: Option<Arc<str>>,
    /// A short error message (masked before export).
    pub error_message: Option<String>,
    /// Why the router chose the target (decisions and calls).
    pub route_reason: Option<Arc<str>>,
    /// The strategy of the policy (decisions).
    pub strategy: Option<&'static str>,
    /// Attempt number within one `complete` (1-based).
    pub attempt: Option<u32>,
    pub stream: Option<bool>,
    /// Caller attributes (masked before export).
    /// Serialised as a JSON object.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_attributes"
    )]
    pub attributes: Vec<(Arc<str>, String)>,
}

fn ser_attributes<S: serde::Serializer>(
    attrs: &[(Arc<str>, String)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(attrs.len()))?;
    for (k, v) in attrs {
        m.serialize_entry(&**k, v)?;
    }
    m.end()
}

impl Event {
    /// An event with only `kind` and `prompt` set.
    pub fn new(kind: EventKind, prompt: impl Into<Arc<str>>) -> Event {
        Event {
            kind,
            ts_ms: 0,
            prompt: prompt.into(),
            version: None,
            label: None,
            variant: None,
            provider: None,
            model: None,
            response_model: None,
            target: None,
            input_tokens: None,
            output_tokens: None,
            cost_usd: None,
            latency_ms: None,
            ttft_ms: None,
            error_type: None,
            error_message: None,
            route_reason: None,
            strategy: None,
            attempt: None,
            stream: None,
            attributes: Vec::new(),
        }
    }
}

/// A PII masking hook: called for every string field of every event
/// (`prompt`, `label`, `variant`, `provider`, `model`, `target`,
/// `error_message`, `route_reason`, `attributes.<key>`) before it is
/// aggregated or exported. Return `Some(replacement)` to change a value.
pub trait Masker: Send + Sync {
    fn mask(&self, field: &str, value: &str) -> Option<String>;
}

impl<F> Masker for F
where
    F: Fn(&str, &str) -> Option<String> + Send + Sync,
{
    fn mask(&self, field: &str, value: &str) -> Option<String> {
        self(field, value)
    }
}

/// A basic masker: e-mail addresses become `<email>` and runs of 7 or more
/// digits (phone, card and account numbers; separators ` `, `-`, `.` allowed
/// inside) become `<number>`, in every field.
#[derive(Debug, Clone, Copy, Default)]
pub struct BasicPiiMasker;

impl Masker for BasicPiiMasker {
    fn mask(&self, _field: &str, value: &str) -> Option<String> {
        let out = mask_numbers(&mask_emails(value));
        (out != value).then_some(out)
    }
}

fn mask_emails(s: &str) -> String {
    if !s.contains('@') {
        return s.to_string();
    }
    let is_local = |c: char| c.is_ascii_alphanumeric() || "._%+-".contains(c);
    let is_domain = |c: char| c.is_ascii_alphanumeric() || ".-".contains(c);
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '@' {
            // Local part: back up over what we already emitted.
            let mut start = i;
            while start > 0 && is_local(chars[start - 1]) {
                start -= 1;
            }
            let mut end = i + 1;
            while end < chars.len() && is_domain(chars[end]) {
                end += 1;
            }
            let domain: String = chars[i + 1..end].iter().collect();
            let domain = domain.trim_end_matches('.');
            if start < i && domain.contains('.') {
                let local_len = i - start;
                for _ in 0..local_len {
                    out.pop();
                }
                out.push_str("<email>");
                i = i + 1 + domain.chars().count();
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn mask_numbers(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            let mut j = i;
            let mut digits = 0;
            let mut last_digit = i;
            while j < chars.len() {
                let c = chars[j];
                if c.is_ascii_digit() {
                    digits += 1;
                    last_digit = j;
                } else if !(c == ' ' || c == '-' || c == '.' || (c == '+' && j == i)) {
                    break;
                }
                j += 1;
            }
            if digits >= 7 {
                out.push_str("<number>");
                i = last_digit + 1;
                continue;
            }
            out.extend(&chars[i..=last_digit.max(i)]);
            i = last_digit.max(i) + 1;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A masker that masks nothing: give it to keep events as recorded when
/// they leave the process (a client that exports masks with
/// [`BasicPiiMasker`] unless told otherwise).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMasking;

impl Masker for NoMasking {
    fn mask(&self, _field: &str, _value: &str) -> Option<String> {
        None
    }
}

/// Something that sees every event after masking, off the hot path (an
/// exporter's aggregates and span queue). Called by [`Telemetry::flush`]
/// with the drained events; must not block for long.
pub trait Sink: Send + Sync {
    fn consume(&self, events: &[Event]);
}

/// Telemetry settings.
#[derive(Clone)]
pub struct TelemetryConfig {
    /// Events the record queue holds before dropping (default 8192).
    pub capacity: usize,
    /// Events kept for the batch upload between uploads (default 8192);
    /// older events are dropped (and counted) first.
    pub export_capacity: usize,
    /// Keep events for the batch upload at all (default true). With
    /// `false`, only aggregates (Prometheus) are kept.
    pub keep_events: bool,
    pub masker: Option<Arc<dyn Masker>>,
    pub clock: Arc<dyn Clock>,
    /// Project named in batches.
    pub project: Option<String>,
    /// The language of the SDK the app uses ([`SdkLanguage`]): exports say
    /// `promptops-python` / `telemetry.sdk.language = python` when the
    /// Python package records, and so on.
    pub sdk_language: SdkLanguage,
}

/// The language front door of promptops that records telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SdkLanguage {
    #[default]
    Rust,
    Python,
    Node,
}

impl SdkLanguage {
    /// The SDK name in uploaded batches.
    pub fn sdk_name(self) -> &'static str {
        match self {
            SdkLanguage::Rust => "promptops-rust",
            SdkLanguage::Python => "promptops-python",
            SdkLanguage::Node => "promptops-node",
        }
    }

    /// OpenTelemetry's `telemetry.sdk.language` value.
    pub fn otel_language(self) -> &'static str {
        match self {
            SdkLanguage::Rust => "rust",
            SdkLanguage::Python => "python",
            SdkLanguage::Node => "nodejs",
        }
    }
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("capacity", &self.capacity)
            .field("export_capacity", &self.export_capacity)
            .field("keep_events", &self.keep_events)
            .field("masker", &self.masker.is_some())
            .field("project", &self.project)
            .field("sdk_language", &self.sdk_language)
            .finish()
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            capacity: 8192,
            export_capacity: 8192,
            keep_events: true,
            masker: None,
            clock: Arc::new(SystemClock::default()),
            project: None,
            sdk_language: SdkLanguage::Rust,
        }
    }
}

impl TelemetryConfig {
    pub fn masker(mut self, m: impl Masker + 'static) -> Self {
        self.masker = Some(Arc::new(m));
        self
    }

    /// PII masking on ([`BasicPiiMasker`]) or explicitly off
    /// ([`NoMasking`]: events leave the process as recorded). Without
    /// either, a client that exports telemetry masks with `BasicPiiMasker`.
    pub fn mask_pii(self, on: bool) -> Self {
        if on {
            self.masker(BasicPiiMasker)
        } else {
            self.masker(NoMasking)
        }
    }
}

/// Counters about the recorder itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Events accepted into the queue.
    pub recorded: u64,
    /// Events dropped because the record queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped from the export buffer (not uploaded in time).
    pub dropped_export_full: u64,
    /// Events in batches whose upload failed.
    pub dropped_upload_failed: u64,
}

/// The JSON batch format of `POST /v1/telemetry` (`schema`
/// `promptops.telemetry.v1`): the project, the SDK, the drop counters so far
/// and the events (already masked).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Batch {
    pub schema: &'static str,
    pub project: Option<String>,
    pub sdk: Sdk,
    pub sent_at_ms: u64,
    pub dropped: Counters,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sdk {
    pub name: &'static str,
    pub version: &'static str,
}

pub const BATCH_SCHEMA: &str = "promptops.telemetry.v1";

impl Batch {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The recorder. Cheap to share (`Arc<Telemetry>`).
pub struct Telemetry {
    tx: SyncSender<Event>,
    rx: Mutex<Receiver<Event>>,
    recorded: AtomicU64,
    dropped_full: AtomicU64,
    dropped_export: AtomicU64,
    dropped_upload: AtomicU64,
    agg: Mutex<prometheus::Aggregates>,
    outbox: Mutex<VecDeque<Event>>,
    sinks: Mutex<Vec<Arc<dyn Sink>>>,
    cfg: TelemetryConfig,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("config", &self.cfg)
            .field("counters", &self.counters())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Telemetry {
    pub fn new(cfg: TelemetryConfig) -> Telemetry {
        let (tx, rx) = sync_channel(cfg.capacity.max(1));
        Telemetry {
            tx,
            rx: Mutex::new(rx),
            recorded: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_export: AtomicU64::new(0),
            dropped_upload: AtomicU64::new(0),
            agg: Mutex::new(prometheus::Aggregates::default()),
            outbox: Mutex::new(VecDeque::new()),
            sinks: Mutex::new(Vec::new()),
            cfg,
        }
    }

    pub fn config(&self) -> &TelemetryConfig {
        &self.cfg
    }

    /// Add a sink: from the next [`flush`](Self::flush) on it sees every
    /// (masked) event.
    pub fn add_sink(&self, sink: Arc<dyn Sink>) {
        lock(&self.sinks).push(sink);
    }

    /// Record an event. Never blocks: a full queue drops the event and
    /// counts it.
    pub fn record(&self, mut ev: Event) {
        if ev.ts_ms == 0 {
            ev.ts_ms = self.cfg.clock.unix_ms();
        }
        match self.tx.try_send(ev) {
            Ok(()) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            recorded: self.recorded.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_export_full: self.dropped_export.load(Ordering::Relaxed),
            dropped_upload_failed: self.dropped_upload.load(Ordering::Relaxed),
        }
    }

    /// Drain the queue: mask, aggregate, and keep for upload. Returns the
    /// number of events drained.
    pub fn flush(&self) -> usize {
        let mut drained = Vec::new();
        {
            let rx = lock(&self.rx);
            while let Ok(ev) = rx.try_recv() {
                drained.push(ev);
            }
        }
        let n = drained.len();
        if n == 0 {
            return 0;
        }
        if let Some(m) = &self.cfg.masker {
            for ev in &mut drained {
                mask_event(m.as_ref(), ev);
            }
        }
        {
            let mut agg = lock(&self.agg);
            for ev in &drained {
                agg.add(ev);
            }
        }
        {
            let sinks = lock(&self.sinks).clone();
            for sk in sinks {
                sk.consume(&drained);
            }
        }
        if self.cfg.keep_events {
            let mut out = lock(&self.outbox);
            for ev in drained {
                if out.len() >= self.cfg.export_capacity.max(1) {
                    out.pop_front();
                    self.dropped_export.fetch_add(1, Ordering::Relaxed);
                }
                out.push_back(ev);
            }
        }
        n
    }

    /// The metrics in Prometheus text exposition format (flushes first).
    pub fn prometheus(&self) -> String {
        self.flush();
        let agg = lock(&self.agg);
        prometheus::render(&agg, &self.counters())
    }

    /// Up to `max` events for upload, oldest first (flushes first). `None`
    /// when there is nothing to send.
    pub fn take_batch(&self, max: usize) -> Option<Batch> {
        self.flush();
        let events: Vec<Event> = {
            let mut out = lock(&self.outbox);
            let k = out.len().min(max);
            out.drain(..k).collect()
        };
        if events.is_empty() {
            return None;
        }
        Some(Batch {
            schema: BATCH_SCHEMA,
            project: self.cfg.project.clone(),
            sdk: Sdk {
                name: self.cfg.sdk_language.sdk_name(),
                version: env!("CARGO_PKG_VERSION"),
            },
            sent_at_ms: self.cfg.clock.unix_ms(),
            dropped: self.counters(),
            events,
        })
    }

    /// Count a batch that could not be delivered.
    pub fn note_upload_failed(&self, events: usize) {
        self.dropped_upload
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Events waiting in the queue or the export buffer.
    pub fn pending(&self) -> usize {
        self.flush();
        lock(&self.outbox).len()
    }
}

fn mask_event(m: &dyn Masker, ev: &mut Event) {
    fn arc(m: &dyn Masker, field: &str, v: &mut Arc<str>) {
        if let Some(new) = m.mask(field, v) {
            *v = Arc::from(new);
        }
    }
    fn opt(m: &dyn Masker, field: &str, v: &mut Option<Arc<str>>) {
        if let Some(v) = v {
            arc(m, field, v);
        }
    }
    arc(m, "prompt", &mut ev.prompt);
    opt(m, "label", &mut ev.label);
    opt(m, "variant", &mut ev.variant);
    opt(m, "provider", &mut ev.provider);
    opt(m, "model", &mut ev.model);
    opt(m, "response_model", &mut ev.response_model);
    opt(m, "target", &mut ev.target);
    opt(m, "route_reason", &mut ev.route_reason);
    opt(m, "error_type", &mut ev.error_type);
    if let Some(msg) = &mut ev.error_message
        && let Some(new) = m.mask("error_message", msg)
    {
        *msg = new;
    }
    for (k, v) in &mut ev.attributes {
        if let Some(new) = m.mask(&format!("attributes.{k}"), v) {
            *v = new;
        }
    }
}

/// Attribute list from pairs (helper for callers).
pub fn attributes<K: AsRef<str>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<(Arc<str>, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (Arc::from(k.as_ref()), v.into()))
        .collect()
}

/// Group events by kind (a small helper for reports and tests).
pub fn count_by_kind(events: &[Event]) -> BTreeMap<EventKind, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.kind).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let m = BasicPiiMasker;
        assert_eq!(
            m.mask("x", "mail dana.k@example.com now").as_deref(),
            Some("mail <email> now")
        );
        assert_eq!(
            m.mask("x", "call +65 9123 4567 or 555-123-4567.")
                .as_deref(),
            Some("call <number> or <number>.")
        );
        assert_eq!(m.mask("x", "order A-20931 v2"), None);
        assert_eq!(m.mask("x", "a@b"), None);
    }

    #[test]
    fn bounded_and_counted() {
        let t = Telemetry::new(TelemetryConfig {
            capacity: 4,
            export_capacity: 3,
            ..Default::default()
        });
        for _ in 0..10 {
            t.record(Event::new(EventKind::Render, "m/p"));
        }
        let c = t.counters();
        assert_eq!((c.recorded, c.dropped_queue_full), (4, 6));
        assert_eq!(t.flush(), 4);
        assert_eq!(t.counters().dropped_export_full, 1);
        let b = t.take_batch(10).unwrap();
        assert_eq!(b.events.len(), 3);
        assert_eq!(b.dropped.dropped_queue_full, 6);
        assert!(t.take_batch(10).is_none());
    }
}
