//! Publish-to-every-client propagation, with real processes: a `promptops
//! serve --demo` registry (SQLite; plus Redis when `--via redis`) and N SDK
//! clients in this process. Each round moves the `canary` label of
//! `bench/prop` between versions 1 and 2 through the REST API and measures
//! the time from the publish call returning to the moment every client
//! serves the new version (clients report through their change listener).
//!
//! propagation --promptops PATH --clients N --publishes M [--via sse|redis] [--redis-url URL]
//!
//! Prints one JSON line: p50/p99/max over the publishes, of "all clients"
//! and of single-client latencies. Bounded: M publishes, each waits at most
//! 10 s.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promptops_core::sync::SyncOptions;
use promptops_core::{Client, GetOptions};

struct Server {
    child: Child,
    url: String,
    admin: String,
    sdk: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(bin: &str, redis: Option<&str>, prefix: &str) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--demo", "--addr", "127.0.0.1:0"]);
    if let Some(r) = redis {
        cmd.args(["--redis-url", r, "--redis-prefix", prefix]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start promptops serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let (mut url, mut admin, mut sdk) = (None, None, None);
    while let Some(Ok(line)) = lines.next() {
        if let Some(rest) = line.strip_prefix("promptops registry on ") {
            url = rest.split_whitespace().next().map(String::from);
        } else if let Some(k) = line.trim().strip_prefix("admin key:") {
            admin = Some(k.trim().to_string());
        } else if let Some(k) = line.trim().strip_prefix("SDK key:") {
            sdk = Some(k.trim().to_string());
        }
        if url.is_some() && admin.is_some() && sdk.is_some() {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: url.expect("server URL"),
        admin: admin.expect("admin key"),
        sdk: sdk.expect("SDK key"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let bin = arg("--promptops", "promptops");
    let n: usize = arg("--clients", "10").parse().expect("--clients");
    let publishes: usize = arg("--publishes", "100").parse().expect("--publishes");
    let via = arg("--via", "sse");
    let redis_url = arg("--redis-url", "redis://127.0.0.1:6399/");
    let redis = (via == "redis").then_some(redis_url.as_str());
    // A prefix of this run's own: a shared Redis may hold older runs' keys.
    let prefix = format!("promptops-bench-{}", std::process::id());
    let server = start_server(&bin, redis, &prefix);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let api = |path: &str| format!("{}/v1/projects/demo{path}", server.url);
    let auth = format!("Bearer {}", server.admin);

    // The prompt under test: versions 1 and 2, `canary` on 1.
    let r = http
        .post(api("/prompts"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"name": "bench/prop", "type": "text", "template": "version one"}))
        .send()
        .await
        .expect("create prompt");
    assert!(
        r.status().is_success(),
        "create prompt: {}",
        r.text().await.unwrap_or_default()
    );
    let r = http
        .post(api("/prompts/bench%2Fprop/versions"))
        .header("authorization", &auth)
        .json(&serde_json::json!({"type": "text", "template": "version two"}))
        .send()
        .await
        .expect("create version");
    assert!(
        r.status().is_success(),
        "create version: {}",
        r.text().await.unwrap_or_default()
    );
    let publish = |v: u32| {
        let http = http.clone();
        let url = api("/prompts/bench%2Fprop/publish");
        let auth = auth.clone();
        async move {
            let r = http
                .post(url)
                .header("authorization", auth)
                .json(&serde_json::json!({"version": v, "label": "canary"}))
                .send()
                .await
                .expect("publish");
            assert!(
                r.status().is_success(),
                "publish: {}",
                r.text().await.unwrap_or_default()
            );
        }
    };
    publish(1).await;

    // N clients on this process's runtime.
    let target = Arc::new(AtomicU32::new(1));
    let arrived = Arc::new(AtomicUsize::new(0));
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let handle = tokio::runtime::Handle::current();
    let mut clients = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let mut opts = SyncOptions::new("demo");
        opts.request_timeout = Duration::from_secs(30);
        opts.redis_prefix.clone_from(&prefix);
        let mut b = Client::builder()
            .project("demo")
            .runtime(handle.clone())
            .sync_options(opts);
        b = match redis {
            Some(r) => b.redis(r),
            None => b.server(&server.url).api_key(&server.sdk),
        };
        let c = b.build().expect("client");
        let (target, arrived, arrivals) = (target.clone(), arrived.clone(), arrivals.clone());
        c.on_change(move |changes| {
            let t = target.load(Ordering::Acquire);
            if changes
                .iter()
                .any(|c| c.prompt == "bench/prop" && c.label == "canary" && c.new == Some(t))
            {
                let now = Instant::now();
                if let Ok(mut a) = arrivals.lock() {
                    a.push(now);
                }
                arrived.fetch_add(1, Ordering::AcqRel);
            }
        });
        clients.push(c);
    }
    // Every client serving version 1 first.
    let opts = GetOptions::label("canary");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = clients
            .iter()
            .filter(|c| c.get_with("bench/prop", &opts).map(|p| p.version()).ok() == Some(1))
            .count();
        if ready == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready}/{n} clients connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = started.elapsed();

    let mut all = Vec::with_capacity(publishes);
    let mut single = Vec::with_capacity(publishes * n);
    for i in 0..publishes {
        let v = if i.is_multiple_of(2) { 2 } else { 1 };
        arrived.store(0, Ordering::Release);
        arrivals.lock().unwrap().clear();
        target.store(v, Ordering::Release);
        publish(v).await;
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(10);
        while arrived.load(Ordering::Acquire) < n {
            assert!(
                Instant::now() < deadline,
                "publish {i}: {}/{n} clients updated",
                arrived.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let lat = |t: &Instant| t.saturating_duration_since(t0).as_secs_f64() * 1e3;
        {
            let a = arrivals.lock().unwrap();
            all.push(a.iter().map(lat).fold(0.0, f64::max));
            single.extend(a.iter().map(lat));
        }
        // Let the system settle between rounds.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every client really serves the last version.
    let last = if (publishes - 1).is_multiple_of(2) {
        2
    } else {
        1
    };
    for c in &clients {
        assert_eq!(c.get_with("bench/prop", &opts).unwrap().version(), last);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    single.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({
            "via": via, "clients": n, "publishes": publishes,
            "connect_all_s": connect_time.as_secs_f64(),
            "all_clients_ms": {"p50": percentile(&all, 50.0), "p99": percentile(&all, 99.0), "max": all.last()},
            "per_client_ms": {"p50": percentile(&single, 50.0), "p99": percentile(&single, 99.0)},
        })
    );
    for c in &clients {
        c.close();
    }
}
