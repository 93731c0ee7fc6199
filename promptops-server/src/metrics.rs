//! Prometheus metrics, served at `/metrics` in the text format.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
    pub publishes: IntCounterVec,
    pub stream_clients: IntGauge,
    pub snapshot_build: Histogram,
    pub redis_publish: Histogram,
    pub events: IntCounter,
    pub remote_events: IntCounter,
    /// SDK telemetry aggregates (`POST /v1/telemetry`).
    pub telemetry: crate::telemetry::TelemetryMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

impl Metrics {
    /// The registry's metrics. Fails only if a metric definition were
    /// invalid (they are constants) or registered twice.
    pub fn new() -> prometheus::Result<Metrics> {
        Metrics::with_telemetry_series(crate::telemetry::DEFAULT_MAX_SERIES)
    }

    /// Metrics whose telemetry series are bounded to `max_series` label sets.
    pub fn with_telemetry_series(max_series: usize) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "promptops_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "promptops_http_request_duration_seconds",
                "HTTP request latency by route (time to response headers)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        let publishes = IntCounterVec::new(
            Opts::new(
                "promptops_publishes_total",
                "Moves of protected labels (publish and rollback) by project",
            ),
            &["project", "action"],
        )?;
        let stream_clients = IntGauge::new(
            "promptops_stream_clients",
            "SSE clients currently connected",
        )?;
        let snapshot_build = Histogram::with_opts(
            HistogramOpts::new(
                "promptops_snapshot_build_seconds",
                "Time to build a project snapshot from the database",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let redis_publish = Histogram::with_opts(
            HistogramOpts::new(
                "promptops_redis_publish_seconds",
                "Time to store a snapshot in Redis and publish its delta",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let events = IntCounter::new(
            "promptops_events_total",
            "Snapshot-changing events committed by this replica",
        )?;
        let remote_events = IntCounter::new(
            "promptops_remote_events_total",
            "Events received from other replicas (Redis or database catch-up)",
        )?;
        for m in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_latency.clone()),
            Box::new(publishes.clone()),
            Box::new(stream_clients.clone()),
            Box::new(snapshot_build.clone()),
            Box::new(redis_publish.clone()),
            Box::new(events.clone()),
            Box::new(remote_events.clone()),
        ] {
            registry.register(m)?;
        }
        let telemetry = crate::telemetry::TelemetryMetrics::new(&registry, max_series)?;
        Ok(Metrics {
            telemetry,
            registry,
            http_requests,
            http_latency,
            publishes,
            stream_clients,
            snapshot_build,
            redis_publish,
            events,
            remote_events,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
