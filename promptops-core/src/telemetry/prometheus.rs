//! Aggregates and their Prometheus text exposition.
//!
//! Names follow the OpenTelemetry GenAI semantic conventions, converted the
//! way the OpenTelemetry Prometheus exporter converts them (dots become
//! underscores, the unit `s` becomes a `_seconds` suffix, `{token}` adds
//! nothing):
//!
//! | OpenTelemetry instrument | Prometheus family |
//! | --- | --- |
//! | `gen_ai.client.token.usage` (histogram, `{token}`) | `gen_ai_client_token_usage` |
//! | `gen_ai.client.operation.duration` (histogram, `s`) | `gen_ai_client_operation_duration_seconds` |
//! | `gen_ai.client.operation.time_to_first_chunk` (histogram, `s`) | `gen_ai_client_operation_time_to_first_chunk_seconds` |
//!
//! Attributes become labels the same way: `gen_ai.operation.name` →
//! `gen_ai_operation_name` (always `chat`), `gen_ai.provider.name` →
//! `gen_ai_provider_name`, `gen_ai.request.model` → `gen_ai_request_model`,
//! `gen_ai.token.type` → `gen_ai_token_type` (`input`/`output`),
//! `error.type` → `error_type` (failed calls only), plus
//! `promptops_prompt_name`, `promptops_prompt_version` and
//! `promptops_prompt_variant`. Bucket boundaries are the ones the
//! conventions recommend. promptops adds `promptops_cost_usd_total`,
//! `promptops_renders_total`, `promptops_route_decisions_total` and
//! `promptops_telemetry_events_total` / `promptops_telemetry_dropped_total`.

use std::fmt::Write as _;

use super::{Counters, Event, EventKind};

/// Token-usage buckets recommended by the GenAI conventions.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Duration buckets (seconds) recommended by the GenAI conventions.
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Debug, Clone, Default)]
struct Hist {
    counts: [u64; 14],
    sum: f64,
    count: u64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64; 14], v: f64) {
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// A family of series: label values → value. Lookups hash the borrowed
/// label values (no allocation once a series exists); collisions are kept
/// apart by comparing the values.
#[derive(Debug)]
struct Family<const N: usize, V> {
    map: crate::compile::HashMap<u64, Vec<([String; N], V)>>,
}

impl<const N: usize, V: Default> Default for Family<N, V> {
    fn default() -> Self {
        Family {
            map: Default::default(),
        }
    }
}

impl<const N: usize, V: Default> Family<N, V> {
    fn get(&mut self, labels: [&str; N]) -> &mut V {
        use std::hash::BuildHasher;
        let h = self.map.hasher().hash_one(labels);
        let series = self.map.entry(h).or_default();
        let pos = series
            .iter()
            .position(|(k, _)| k.iter().map(String::as_str).eq(labels.iter().copied()));
        let i = match pos {
            Some(i) => i,
            None => {
                series.push((labels.map(String::from), V::default()));
                series.len() - 1
            }
        };
        &mut series[i].1
    }

    /// Every series, sorted by label values (stable output).
    fn sorted(&self) -> Vec<(&[String; N], &V)> {
        let mut v: Vec<(&[String; N], &V)> = self
            .map
            .values()
            .flat_map(|s| s.iter().map(|(k, v)| (k, v)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

#[derive(Debug, Default)]
pub(super) struct Aggregates {
    /// provider, model, prompt, version, variant, token type
    tokens: Family<6, Hist>,
    /// provider, model, prompt, version, variant, error type or ""
    duration: Family<6, Hist>,
    /// provider, model, prompt, version, variant
    ttft: Family<5, Hist>,
    cost: Family<5, f64>,
    /// prompt, version, label, variant, error type or ""
    renders: Family<5, u64>,
    /// prompt, strategy, target
    decisions: Family<3, u64>,
    events: Family<1, u64>,
}

fn s(v: &Option<std::sync::Arc<str>>) -> &str {
    v.as_deref().unwrap_or("")
}

impl Aggregates {
    pub(super) fn add(&mut self, ev: &Event) {
        *self.events.get([ev.kind.as_str()]) += 1;
        let mut vb = [0u8; 10];
        let version = fmt_u32(ev.version, &mut vb);
        let prompt: &str = &ev.prompt;
        match ev.kind {
            EventKind::Render => {
                *self.renders.get([
                    prompt,
                    version,
                    s(&ev.label),
                    s(&ev.variant),
                    s(&ev.error_type),
                ]) += 1;
            }
            EventKind::Decision => {
                *self
                    .decisions
                    .get([prompt, ev.strategy.unwrap_or(""), s(&ev.target)]) += 1;
            }
            EventKind::Call => {
                let (p, m, var) = (s(&ev.provider), s(&ev.model), s(&ev.variant));
                if let Some(n) = ev.input_tokens {
                    self.tokens
                        .get([p, m, prompt, version, var, "input"])
                        .observe(&TOKEN_BUCKETS, n as f64);
                }
                if let Some(n) = ev.output_tokens {
                    self.tokens
                        .get([p, m, prompt, version, var, "output"])
                        .observe(&TOKEN_BUCKETS, n as f64);
                }
                if let Some(l) = ev.latency_ms {
                    self.duration
                        .get([p, m, prompt, version, var, s(&ev.error_type)])
                        .observe(&DURATION_BUCKETS_S, l / 1000.0);
                }
                if let Some(t) = ev.ttft_ms
                    && ev.error_type.is_none()
                {
                    self.ttft
                        .get([p, m, prompt, version, var])
                        .observe(&DURATION_BUCKETS_S, t / 1000.0);
                }
                if let Some(c) = ev.cost_usd {
                    *self.cost.get([p, m, prompt, version, var]) += c;
                }
            }
        }
    }
}

/// A `u32` as decimal text in `buf`, without allocating ("" for `None`).
fn fmt_u32(v: Option<u32>, buf: &mut [u8; 10]) -> &str {
    let Some(mut v) = v else { return "" };
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Escape a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn key_labels(k: &[String]) -> String {
    format!(
        "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\",promptops_prompt_name=\"{}\",promptops_prompt_version=\"{}\",promptops_prompt_variant=\"{}\"",
        esc(&k[0]),
        esc(&k[1]),
        esc(&k[2]),
        esc(&k[3]),
        esc(&k[4])
    )
}

fn fmt_f(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn hist(out: &mut String, name: &str, labels: &str, h: &Hist, bounds: &[f64; 14]) {
    for (i, b) in bounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {}",
            fmt_f(*b),
            h.counts[i]
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", fmt_f(h.sum));
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

pub(super) fn render(a: &Aggregates, c: &Counters) -> String {
    let mut out = String::new();
    let name = "gen_ai_client_token_usage";
    let _ = writeln!(
        out,
        "# HELP {name} Number of input and output tokens used (gen_ai.client.token.usage)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (k, h) in a.tokens.sorted() {
        let labels = format!("{},gen_ai_token_type=\"{}\"", key_labels(k), esc(&k[5]));
        hist(&mut out, name, &labels, h, &TOKEN_BUCKETS);
    }
    let name = "gen_ai_client_operation_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} GenAI operation duration (gen_ai.client.operation.duration)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (k, h) in a.duration.sorted() {
        let err = &k[5];
        let mut labels = key_labels(k);
        if !err.is_empty() {
            let _ = write!(labels, ",error_type=\"{}\"", esc(err));
        }
        hist(&mut out, name, &labels, h, &DURATION_BUCKETS_S);
    }
    let name = "gen_ai_client_operation_time_to_first_chunk_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to receive the first chunk of a streamed response (gen_ai.client.operation.time_to_first_chunk)."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (k, h) in a.ttft.sorted() {
        hist(&mut out, name, &key_labels(k), h, &DURATION_BUCKETS_S);
    }
    let name = "promptops_cost_usd_total";
    let _ = writeln!(
        out,
        "# HELP {name} Cost of provider calls in USD, from token usage and the price table."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (k, v) in a.cost.sorted() {
        let _ = writeln!(out, "{name}{{{}}} {v}", key_labels(k));
    }
    let name = "promptops_renders_total";
    let _ = writeln!(out, "# HELP {name} Prompt renders.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for ([p, v, l, var, err], n) in a.renders.sorted() {
        let _ = write!(
            out,
            "{name}{{promptops_prompt_name=\"{}\",promptops_prompt_version=\"{}\",promptops_prompt_label=\"{}\",promptops_prompt_variant=\"{}\"",
            esc(p),
            esc(v),
            esc(l),
            esc(var)
        );
        if !err.is_empty() {
            let _ = write!(out, ",error_type=\"{}\"", esc(err));
        }
        let _ = writeln!(out, "}} {n}");
    }
    let name = "promptops_route_decisions_total";
    let _ = writeln!(
        out,
        "# HELP {name} Routing decisions by strategy and chosen target."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for ([p, st, t], n) in a.decisions.sorted() {
        let _ = writeln!(
            out,
            "{name}{{promptops_prompt_name=\"{}\",promptops_route_strategy=\"{}\",promptops_route_target=\"{}\"}} {n}",
            esc(p),
            esc(st),
            esc(t)
        );
    }
    let name = "promptops_telemetry_events_total";
    let _ = writeln!(out, "# HELP {name} Telemetry events aggregated, by kind.");
    let _ = writeln!(out, "# TYPE {name} counter");
    for ([k], n) in a.events.sorted() {
        let _ = writeln!(out, "{name}{{kind=\"{}\"}} {n}", esc(k));
    }
    let name = "promptops_telemetry_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Telemetry events dropped, by reason (never silent)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, n) in [
        ("queue_full", c.dropped_queue_full),
        ("export_full", c.dropped_export_full),
        ("upload_failed", c.dropped_upload_failed),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
    }
    out
}
