//! Ingest throughput of `POST /v1/telemetry`: an in-process registry on
//! SQLite (temporary directory) or on `--database-url`, an SDK key, and
//! `--concurrency` HTTP clients posting batches of `--events` call events
//! (3 prompts × 2 models × 2 versions, 5 % errors, as the core's uploader
//! serialises them) until `--batches` were accepted. Prints batches/s,
//! events/s and the latency percentiles of the POSTs.
//!
//! ```bash
//! cargo build --release --workspace --examples
//! $CARGO_TARGET_DIR/release/examples/telemetry_ingest --events 100 --batches 3000 --concurrency 4
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use promptops_core::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
use promptops_server::auth::Role;
use promptops_server::registry::Actor;
use promptops_server::{Server, ServerConfig};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch_body(n: usize, seed: usize) -> Vec<u8> {
    let t = Telemetry::new(TelemetryConfig {
        capacity: n,
        export_capacity: n,
        project: Some("bench".into()),
        ..Default::default()
    });
    for i in 0..n {
        let k = seed + i;
        let mut e = Event::new(
            EventKind::Call,
            ["support/reply", "sales/quote", "ops/triage"][k % 3],
        );
        e.version = Some(1 + (k % 2) as u32);
        e.provider = Some("openai".into());
        e.model = Some(["gpt-4o-mini", "gpt-4o"][k % 2].into());
        e.label = Some("production".into());
        e.input_tokens = Some(200 + (k % 50) as u64);
        e.output_tokens = Some(40 + (k % 20) as u64);
        e.cost_usd = Some(0.0004);
        e.latency_ms = Some(150.0 + (k % 400) as f64);
        e.ttft_ms = Some(60.0);
        if k.is_multiple_of(20) {
            e.error_type = Some("timeout".into());
        }
        t.record(e);
    }
    t.take_batch(n).map(|b| b.to_json()).unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let events = arg("--events", 100);
    let batches = arg("--batches", 2000);
    let conc = arg("--concurrency", 4);
    let dir = tempfile::tempdir()?;
    let db = std::env::args()
        .skip_while(|a| a != "--database-url")
        .nth(1)
        .unwrap_or_else(|| dir.path().join("bench.db").display().to_string());
    let cfg = ServerConfig {
        addr: "127.0.0.1:0".parse()?,
        database_url: Some(db.clone()),
        master_key: Some("00".repeat(32)),
        bootstrap: false,
        ..Default::default()
    };
    let server = Server::start(cfg).await?;
    let reg = &server.registry;
    let sys = Actor::system("bench");
    let org = reg
        .create_org("bench", &sys)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    reg.create_project(org, "bench", None, false, &sys)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = reg
        .create_key(org, Some("bench"), Role::Sdk, "sdk", "bench", &sys)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .key;
    promptops_server::client::install_crypto_provider();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .build()?;
    let url = format!("{}/v1/telemetry", server.url());
    // Bodies made up front (the SDK side is not what is measured).
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..16)
            .map(|i| bytes::Bytes::from(batch_body(events, i * 7)))
            .collect(),
    );
    // Warm-up.
    for b in bodies.iter().take(4) {
        let r = http
            .post(&url)
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(b.clone())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "warm-up: {}", r.status());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (http, url, key, bodies, next) = (
            http.clone(),
            url.clone(),
            key.clone(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= batches {
                    break;
                }
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(bodies[i % bodies.len()].clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => lat.push(t.elapsed()),
                    Ok(r) => panic!("HTTP {}", r.status()),
                    Err(e) => panic!("{e}"),
                }
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "POST /v1/telemetry on {}: {} batches × {events} events, {conc} clients: {:.0} batches/s, {:.0} events/s; latency p50 {:.2} ms p99 {:.2} ms",
        if db.starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        lat.len(),
        lat.len() as f64 / secs,
        (lat.len() * events) as f64 / secs,
        pct(0.5),
        pct(0.99),
    );
    // The aggregates agree with what was sent.
    let m = reqwest::get(format!("{}/metrics", server.url()))
        .await?
        .text()
        .await?;
    let total: f64 = m
        .lines()
        .filter(|l| l.starts_with("promptops_llm_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let sent = (batches + 4) * events;
    anyhow::ensure!(total as usize == sent, "metrics count {total}, sent {sent}");
    server.stop(Duration::from_secs(2)).await;
    Ok(())
}
