//! Routing, telemetry and provider-call overhead.
//!
//! cargo bench -p promptops-benches --bench routing
//!
//! Criterion groups: `route/decide/*` (the pure router), `route/client/*`
//! (lookup + render + decide), `telemetry/record` (one event into the
//! bounded queue). Then, outside criterion (percentiles need every sample):
//! telemetry memory under sustained load, `complete` vs a direct HTTP call
//! to the same mock provider (p50/p99), and failover time-to-switch with
//! and without the breaker. Those print a table to stderr.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use promptops_core::provider::{CallOptions, Endpoint};
use promptops_core::route::{
    BreakerConfig, Estimate, RouteInput, Router, RouterConfig, parse_policy,
};
use promptops_core::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
use promptops_core::{
    Client, Outcome, PromptData, RouteOptions, SnapshotData, Source, Update, context, to_value,
};
use promptops_tests::mock_provider::{Behavior, MockProvider};
use serde_json::json;

fn policy(v: serde_json::Value) -> Arc<promptops_core::Policy> {
    Arc::new(parse_policy(&v, Some("support/reply")).expect("policy"))
}

fn targets(n: usize) -> serde_json::Value {
    let models = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "claude-haiku-4-5"];
    json!(
        (0..n)
            .map(|i| json!({"id": format!("t{i}"), "provider": "openai", "model": models[i % 4]}))
            .collect::<Vec<_>>()
    )
}

fn decide(c: &mut Criterion) {
    let router = Router::new(RouterConfig {
        seed: 1,
        ..Default::default()
    });
    let weighted = policy(json!({"strategy": "weighted", "targets": [
        {"provider": "openai", "model": "gpt-4o-mini", "weight": 70},
        {"provider": "anthropic", "model": "claude-haiku-4-5", "weight": 20},
        {"provider": "openai", "model": "gpt-4.1-nano", "weight": 10}]}));
    let failover = policy(json!({"strategy": "failover", "targets": targets(3)}));
    let fastest = policy(json!({"strategy": "fastest", "min_samples": 1, "targets": targets(4)}));
    let adaptive = policy(json!({"strategy": "adaptive", "min_samples": 1, "targets": targets(4)}));
    let cheapest = policy(json!({"strategy": "cheapest", "targets": targets(4)}));
    for p in [&fastest, &adaptive] {
        for (i, t) in p.targets.iter().enumerate() {
            router.record(t, &Outcome::success(100.0 + i as f64));
        }
    }
    let est: Vec<Option<Estimate>> = (0..4)
        .map(|i| {
            Some(Estimate {
                input_tokens: 500,
                exact: true,
                output_tokens: 200,
                predicted_cost_usd: 0.001 * (4 - i) as f64,
                context_window: Some(128_000),
                fits: true,
            })
        })
        .collect();
    let mut g = c.benchmark_group("route/decide");
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i}")).collect();
    let mut k = 0usize;
    g.bench_function("weighted_sticky_key", |b| {
        b.iter(|| {
            k = (k + 1) & 1023;
            black_box(
                router
                    .decide(
                        &weighted,
                        &RouteInput {
                            key: Some(&keys[k]),
                            estimates: None,
                            unavailable: None,
                        },
                    )
                    .expect("decide"),
            )
        })
    });
    g.bench_function("weighted_no_key", |b| {
        b.iter(|| {
            black_box(
                router
                    .decide(&weighted, &RouteInput::default())
                    .expect("decide"),
            )
        })
    });
    g.bench_function("failover_3", |b| {
        b.iter(|| {
            black_box(
                router
                    .decide(&failover, &RouteInput::default())
                    .expect("decide"),
            )
        })
    });
    g.bench_function("fastest_4", |b| {
        b.iter(|| {
            black_box(
                router
                    .decide(&fastest, &RouteInput::default())
                    .expect("decide"),
            )
        })
    });
    g.bench_function("adaptive_ucb1_4", |b| {
        b.iter(|| {
            black_box(
                router
                    .decide(&adaptive, &RouteInput::default())
                    .expect("decide"),
            )
        })
    });
    g.bench_function("cheapest_4_given_estimates", |b| {
        b.iter(|| {
            black_box(
                router
                    .decide(
                        &cheapest,
                        &RouteInput {
                            key: None,
                            estimates: Some(&est),
                            unavailable: None,
                        },
                    )
                    .expect("decide"),
            )
        })
    });
    g.bench_function("record_outcome", |b| {
        let o = Outcome::success(120.0);
        b.iter(|| router.record(&failover.targets[0], black_box(&o)))
    });
    g.finish();
}

fn bench_client(policy: serde_json::Value, telemetry: bool) -> Client {
    let mut b = Client::builder().project("bench");
    if telemetry {
        b = b.telemetry(TelemetryConfig::default());
    }
    let c = b.build().expect("client");
    let prompts: Vec<PromptData> = serde_json::from_value(json!([{
        "name": "support/reply",
        "versions": [{"version": 1, "type": "chat",
            "messages": [
                {"role": "system", "content": "You are a support agent for {{ company }}. Be brief."},
                {"role": "user", "content": "Hi, I'm {{ name }}. Where is my order {{ order }}?"}],
            "config": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 200}}],
        "labels": {"production": 1},
        "policy": policy
    }]))
    .expect("prompts");
    c.apply(
        Update::Snapshot(SnapshotData::new("bench", 1, prompts)),
        Source::Memory,
    )
    .expect("apply");
    c
}

fn client_route(c: &mut Criterion) {
    let vars = context! { company => "Acme", name => "Dana", order => "A-1" };
    let mut g = c.benchmark_group("route/client");
    let plain = bench_client(json!(null), false);
    g.bench_function("get_render_only", |b| {
        b.iter(|| {
            black_box(
                plain
                    .get("support/reply")
                    .expect("get")
                    .render(&vars)
                    .expect("render"),
            )
        })
    });
    let weighted = bench_client(
        json!({"strategy": "weighted", "targets": [
            {"provider": "openai", "model": "gpt-4o-mini", "weight": 90},
            {"provider": "anthropic", "model": "claude-haiku-4-5", "weight": 10}]}),
        false,
    );
    g.bench_function("route_weighted", |b| {
        b.iter(|| {
            black_box(
                weighted
                    .route("support/reply", &vars, Some("user-42"))
                    .expect("route"),
            )
        })
    });
    // The decision and the target's prompt without the render (what the
    // Node binding asks for before it renders in JS).
    g.bench_function("route_decide_weighted_no_render", |b| {
        let opts = RouteOptions::key("user-42");
        b.iter(|| {
            black_box(
                weighted
                    .route_decide("support/reply", &opts)
                    .expect("route")
                    .expect("decided"),
            )
        })
    });
    let single = bench_client(json!(null), false);
    g.bench_function("route_decide_no_policy_no_render", |b| {
        let opts = RouteOptions::key("user-42");
        b.iter(|| {
            black_box(
                single
                    .route_decide("support/reply", &opts)
                    .expect("route")
                    .expect("decided"),
            )
        })
    });
    let with_tel = bench_client(
        json!({"strategy": "weighted", "targets": [
            {"provider": "openai", "model": "gpt-4o-mini", "weight": 90},
            {"provider": "anthropic", "model": "claude-haiku-4-5", "weight": 10}]}),
        true,
    );
    // Telemetry on: a render and a decision event per route; the consumer
    // (flush) runs between timed chunks.
    g.bench_function("route_weighted_with_telemetry", |b| {
        let tel = with_tel.telemetry().expect("on").clone();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(2048);
                let t = Instant::now();
                for _ in 0..chunk {
                    black_box(
                        with_tel
                            .route("support/reply", &vars, Some("user-42"))
                            .expect("route"),
                    );
                }
                total += t.elapsed();
                left -= chunk;
                tel.flush();
                tel.take_batch(usize::MAX);
            }
            total
        })
    });
    let cheapest = bench_client(
        json!({"strategy": "cheapest", "targets": [
            {"provider": "openai", "model": "gpt-4o-mini"},
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "anthropic", "model": "claude-haiku-4-5"}]}),
        false,
    );
    g.bench_function("route_cheapest_3_renders_and_counts", |b| {
        b.iter(|| black_box(cheapest.route("support/reply", &vars, None).expect("route")))
    });
    g.finish();
}

fn telemetry_record(c: &mut Criterion) {
    let tel = Telemetry::new(TelemetryConfig {
        capacity: 1 << 16,
        ..Default::default()
    });
    let prompt: Arc<str> = Arc::from("support/reply");
    let model: Arc<str> = Arc::from("gpt-4o-mini");
    let provider: Arc<str> = Arc::from("openai");
    let mut g = c.benchmark_group("telemetry");
    let make = || {
        let mut ev = Event::new(EventKind::Call, prompt.clone());
        ev.version = Some(3);
        ev.provider = Some(provider.clone());
        ev.model = Some(model.clone());
        ev.input_tokens = Some(512);
        ev.output_tokens = Some(200);
        ev.latency_ms = Some(420.0);
        ev.cost_usd = Some(0.0002);
        ev
    };
    // Only `record` is timed: the queue is drained (flush + take_batch, the
    // consumer's work) between timed chunks, so no record is a drop.
    g.bench_function("record_call_event", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(16_384);
                let t = Instant::now();
                for _ in 0..chunk {
                    tel.record(make());
                }
                total += t.elapsed();
                left -= chunk;
                tel.flush();
                tel.take_batch(usize::MAX);
            }
            total
        })
    });
    // The consumer: mask (none) + aggregate + keep for upload, per event.
    g.bench_function("flush_per_event", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(16_384);
                for _ in 0..chunk {
                    tel.record(make());
                }
                let t = Instant::now();
                tel.flush();
                total += t.elapsed();
                tel.take_batch(usize::MAX);
                left -= chunk;
            }
            total
        })
    });
    let full = Telemetry::new(TelemetryConfig {
        capacity: 16,
        ..Default::default()
    });
    for _ in 0..16 {
        full.record(Event::new(EventKind::Call, prompt.clone()));
    }
    g.bench_function("record_into_full_queue_dropped", |b| {
        b.iter(|| full.record(Event::new(EventKind::Call, prompt.clone())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = decide, client_route, telemetry_record
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}

fn telemetry_memory() {
    let cap = 8192;
    let tel = Telemetry::new(TelemetryConfig {
        capacity: cap,
        export_capacity: cap,
        ..Default::default()
    });
    let prompt: Arc<str> = Arc::from("support/reply");
    let before = vm_hwm_kib().unwrap_or(0);
    let t = Instant::now();
    let total = 5_000_000u64;
    for i in 0..total {
        let mut ev = Event::new(EventKind::Call, prompt.clone());
        ev.input_tokens = Some(i);
        tel.record(ev);
        if i % 100_000 == 0 {
            // A slow consumer: drains only now and then.
            tel.flush();
        }
    }
    let el = t.elapsed();
    tel.flush();
    let after = vm_hwm_kib().unwrap_or(0);
    let c = tel.counters();
    eprintln!(
        "telemetry sustained load: {total} events in {:.2} s ({:.0} ns/event incl. drops); recorded {}, dropped {} (queue) + {} (export buffer); \
         Event is {} bytes; bound = 2 x {cap} events = {:.1} MiB + shared strings; RSS {} KiB -> {} KiB",
        el.as_secs_f64(),
        el.as_nanos() as f64 / total as f64,
        c.recorded,
        c.dropped_queue_full,
        c.dropped_export_full,
        std::mem::size_of::<Event>(),
        (2 * cap * std::mem::size_of::<Event>()) as f64 / 1048576.0,
        before,
        after
    );
}

fn e2e() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mock = MockProvider::start().await;
        let vars = to_value(&json!({"company": "Acme", "name": "Dana", "order": "A-1"}));
        let client = {
            let c = Client::builder()
                .project("bench")
                .provider(Endpoint::openai().base_url(mock.url()).api_key("k"))
                .provider(Endpoint::anthropic().base_url(mock.url()).api_key("k"))
                .telemetry(TelemetryConfig::default())
                .build()
                .expect("client");
            let prompts: Vec<PromptData> = serde_json::from_value(json!([{
                "name": "support/reply",
                "versions": [{"version": 1, "type": "chat",
                    "messages": [
                        {"role": "system", "content": "You are a support agent for {{ company }}. Be brief."},
                        {"role": "user", "content": "Hi, I'm {{ name }}. Where is my order {{ order }}?"}],
                    "config": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 200}}],
                "labels": {"production": 1},
                "policy": {"strategy": "failover", "targets": [
                    {"provider": "openai", "model": "gpt-4o-mini"},
                    {"provider": "anthropic", "model": "claude-haiku-4-5"}]}
            }]))
            .expect("prompts");
            c.apply(Update::Snapshot(SnapshotData::new("bench", 1, prompts)), Source::Memory)
                .expect("apply");
            c
        };
        // The same request body `complete` sends, posted directly.
        let _ = client.complete("support/reply", &vars, Some("u")).await.expect("complete");
        let http = direct_http();
        let url = format!("{}/chat/completions", mock.url());
        let body = serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": "You are a support agent for Acme. Be brief."},
            {"role": "user", "content": "Hi, I'm Dana. Where is my order A-1?"}], "max_tokens": 200}))
        .expect("json");
        let n = 3000;
        let mut direct = Vec::with_capacity(n);
        let mut via = Vec::with_capacity(n);
        for _ in 0..300 {
            // warm-up (connections, tokenizer)
            let _ = client.complete("support/reply", &vars, Some("u")).await.expect("complete");
            let r = http.post(&url).bearer_auth("k").header("content-type", "application/json").body(body.clone()).send().await.expect("send");
            let _: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("bytes")).expect("json");
        }
        for i in 0..n {
            // Interleave so both see the same server state.
            if i % 2 == 0 {
                let t = Instant::now();
                let r = http.post(&url).bearer_auth("k").header("content-type", "application/json").body(body.clone()).send().await.expect("send");
                let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("bytes")).expect("json");
                black_box(v);
                direct.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                black_box(client.complete("support/reply", &vars, Some("u")).await.expect("complete"));
                via.push(t.elapsed().as_secs_f64() * 1e3);
            } else {
                let t = Instant::now();
                black_box(client.complete("support/reply", &vars, Some("u")).await.expect("complete"));
                via.push(t.elapsed().as_secs_f64() * 1e3);
                let t = Instant::now();
                let r = http.post(&url).bearer_auth("k").header("content-type", "application/json").body(body.clone()).send().await.expect("send");
                let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.expect("bytes")).expect("json");
                black_box(v);
                direct.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        client.telemetry().expect("on").flush();
        let (d50, d99) = (pct(&mut direct, 0.5), pct(&mut direct, 0.99));
        let (v50, v99) = (pct(&mut via, 0.5), pct(&mut via, 0.99));
        eprintln!(
            "complete vs direct HTTP to the mock ({n} calls each, non-streaming, telemetry on): direct p50 {d50:.3} ms p99 {d99:.3} ms; complete p50 {v50:.3} ms p99 {v99:.3} ms; overhead p50 {:.3} ms p99 {:.3} ms",
            v50 - d50,
            v99 - d99
        );

        // Failover time-to-switch.
        for (label, bad) in [
            ("primary answers 503", Behavior::status(503)),
            ("primary times out (total_timeout 50 ms)", Behavior::slow("late", 400)),
        ] {
            for breaker in [false, true] {
                let m = MockProvider::start().await;
                m.set_default("gpt-4o-mini", bad.clone());
                let bcfg = if breaker {
                    BreakerConfig::default()
                } else {
                    BreakerConfig {
                        min_requests: u32::MAX,
                        ..Default::default()
                    }
                };
                let c = Client::builder()
                    .project("bench")
                    .provider(Endpoint::openai().base_url(m.url()).api_key("k"))
                    .provider(Endpoint::anthropic().base_url(m.url()).api_key("k"))
                    .router(RouterConfig {
                        breaker: bcfg,
                        ..Default::default()
                    })
                    .call_options(CallOptions {
                        total_timeout: Duration::from_millis(50),
                        ..Default::default()
                    })
                    .build()
                    .expect("client");
                let prompts: Vec<PromptData> = serde_json::from_value(json!([{
                    "name": "support/reply",
                    "versions": [{"version": 1, "type": "text", "template": "Hi {{ name }}",
                        "config": {"provider": "openai", "model": "gpt-4o-mini"}}],
                    "labels": {"production": 1},
                    "policy": {"strategy": "failover", "targets": [
                        {"provider": "openai", "model": "gpt-4o-mini"},
                        {"provider": "anthropic", "model": "claude-haiku-4-5"}]}
                }]))
                .expect("prompts");
                c.apply(Update::Snapshot(SnapshotData::new("bench", 1, prompts)), Source::Memory)
                    .expect("apply");
                let mut times = Vec::new();
                for _ in 0..40 {
                    let t = Instant::now();
                    let out = c.complete("support/reply", &vars, None).await.expect("complete");
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(out.target.model, "claude-haiku-4-5");
                }
                let first = times[0];
                let steady = pct(&mut times[10..].to_vec(), 0.5);
                eprintln!(
                    "failover, {label}, breaker {}: first call {first:.2} ms; calls 11-40 p50 {steady:.2} ms; primary called {} times in 40",
                    if breaker { "on" } else { "off" },
                    m.count("gpt-4o-mini")
                );
            }
        }
    });
}

/// A plain reqwest client with the settings `complete` uses. Call after
/// the first `complete`, which installs rustls' crypto provider (reqwest is
/// built without one; building a client needs it even for plain HTTP).
fn direct_http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("reqwest")
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let extra = filter
        .as_deref()
        .is_none_or(|f| "e2e".contains(f) || f == "all");
    benches();
    Criterion::default().configure_from_args().final_summary();
    if extra {
        telemetry_memory();
        e2e();
    }
}
