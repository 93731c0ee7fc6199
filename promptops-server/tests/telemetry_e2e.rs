//! End to end: a real `promptops serve` process (SQLite, or PostgreSQL when
//! PROMPTOPS_TEST_DATABASE_URL is set), an SDK client following it with
//! telemetry on, events with PII in their attributes, background upload
//! through a recording gateway (to see the bytes that left the process),
//! flush on close; the registry's `/metrics` and query endpoint show the
//! aggregates, and every metric the Grafana dashboard queries exists.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use promptops_core::export::ExportOptions;
use promptops_core::route::FailureClass;
use promptops_core::sync::{Backoff, SyncOptions};
use promptops_core::telemetry::TelemetryConfig;
use promptops_core::{Client, Outcome, RouteOptions, context};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

struct Serve {
    child: Child,
    url: String,
    admin: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(database_url: &str) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            database_url,
        ])
        .env("PROMPTOPS_MASTER_KEY", common::random_hex(32))
        .env("PROMPTOPS_LOG", "warn")
        .env_remove("PROMPTOPS_REDIS_URL")
        .env_remove("PROMPTOPS_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    loop {
        let l = lines.next().expect("server output").unwrap();
        if let Some(k) = l.split("admin key (shown once): ").nth(1) {
            admin = Some(k.trim().to_string());
        }
        if l.starts_with("promptops registry on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let admin = admin.unwrap_or_else(|| {
        let mut f = PathBuf::from(database_url).into_os_string();
        f.push(".admin-key");
        std::fs::read_to_string(f).unwrap().trim().to_string()
    });
    Serve {
        child,
        url: format!("http://127.0.0.1:{port}"),
        admin,
    }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut r = http.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// A gateway that records every telemetry body and forwards it to the
/// registry (the SDK's `upload_url`).
async fn gateway(registry: String, seen: Arc<Mutex<Vec<String>>>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let http = reqwest::Client::new();
    let app = axum::Router::new().route(
        "/v1/telemetry",
        axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
            let (http, registry, seen) = (http.clone(), registry.clone(), seen.clone());
            async move {
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let r = http
                    .post(format!("{registry}/v1/telemetry"))
                    .header("authorization", headers["authorization"].to_str().unwrap())
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
                (status, r.text().await.unwrap())
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn sample(metrics: &str, name: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every metric family a PromQL expression names (`promptops_…`, with the
/// histogram suffixes `_bucket`, `_sum`, `_count` taken off).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("promptops_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_telemetry_reaches_the_registry() {
    promptops_server::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let database_url = match common::pg_url() {
        Some(admin) => common::fresh_pg_database(&admin).await,
        None => dir.path().join("registry.db").display().to_string(),
    };
    let reg = serve(&database_url);
    let http = reqwest::Client::new();
    use reqwest::Method;
    call(
        &http,
        Method::POST,
        format!("{}/v1/projects", reg.url),
        &reg.admin,
        Some(json!({"name": "shop", "protected_labels": []})),
    )
    .await;
    let sdk = call(
        &http,
        Method::POST,
        format!("{}/v1/keys", reg.url),
        &reg.admin,
        Some(json!({"role": "sdk", "project": "shop", "name": "app"})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &http,
        Method::POST,
        format!("{}/v1/projects/shop/prompts", reg.url),
        &reg.admin,
        Some(
            json!({"name": "support/reply", "type": "text", "template": "Hi {{ name }}",
            "config": {"provider": "openai", "model": "gpt-4o-mini"}, "labels": ["production"]}),
        ),
    )
    .await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let gw = gateway(reg.url.clone(), seen.clone()).await;
    let mut sync = SyncOptions::new("shop");
    sync.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        jitter: 0.5,
        reset_after: Duration::from_secs(60),
    };
    // A long interval: only flush_telemetry and close upload in this test.
    let export = ExportOptions {
        upload_url: Some(gw.clone()),
        interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let client = Client::builder()
        .project("shop")
        .server(&reg.url)
        .api_key(&sdk)
        .sync_options(sync)
        .startup_wait(Duration::from_secs(10))
        // No masker given: a client that uploads masks with BasicPiiMasker.
        .telemetry(TelemetryConfig::default())
        .telemetry_export(export)
        .build()
        .unwrap();
    let opts = RouteOptions {
        key: Some("user-1".into()),
        attributes: vec![
            ("user_email".into(), "dana.k@example.com".into()),
            ("phone".into(), "+65 9123 4567".into()),
            ("tier".into(), "gold".into()),
        ],
        ..Default::default()
    };
    let vars = context! { name => "Dana" };
    for i in 0..8 {
        let routed = client.route_with("support/reply", &vars, &opts).unwrap();
        assert_eq!(routed.target().model, "gpt-4o-mini");
        let outcome = if i == 7 {
            Outcome {
                latency_ms: Some(4000.0),
                ..Outcome::failure(FailureClass::Timeout)
            }
        } else {
            Outcome {
                latency_ms: Some(100.0 + 10.0 * i as f64),
                ttft_ms: Some(30.0),
                input_tokens: Some(40),
                output_tokens: Some(10),
                ..Default::default()
            }
        };
        client.record(&routed.decision, &outcome);
    }
    let c = client.clone();
    assert!(
        tokio::task::spawn_blocking(move || c.flush_telemetry(Duration::from_secs(10)))
            .await
            .unwrap()
    );

    // What left the process was masked.
    let bodies = seen.lock().unwrap().clone();
    assert!(!bodies.is_empty());
    let all = bodies.join("\n");
    assert!(
        !all.contains("dana.k@example.com") && !all.contains("9123 4567"),
        "{all}"
    );
    assert!(
        all.contains("<email>") && all.contains("<number>") && all.contains("gold"),
        "{all}"
    );

    let metrics = http
        .get(format!("{}/metrics", reg.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = [
        "project=\"shop\"",
        "prompt=\"support/reply\"",
        "version=\"1\"",
        "model=\"gpt-4o-mini\"",
        "provider=\"openai\"",
        "label=\"production\"",
    ];
    assert_eq!(
        sample(&metrics, "promptops_llm_requests_total", &key),
        Some(8.0),
        "{metrics}"
    );
    let mut k = key.to_vec();
    k.push("error_type=\"timeout\"");
    assert_eq!(
        sample(&metrics, "promptops_llm_errors_total", &k),
        Some(1.0)
    );
    let mut k = key.to_vec();
    k.push("token_type=\"output\"");
    assert_eq!(
        sample(&metrics, "promptops_llm_tokens_total", &k),
        Some(70.0)
    );
    // Cost from the price table (the outcome gave none).
    assert!(sample(&metrics, "promptops_llm_cost_usd_total", &key).unwrap() > 0.0);

    // Every metric the dashboard queries is on /metrics.
    let dash: Value =
        serde_json::from_str(include_str!("../grafana/promptops-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut checked = 0;
    for e in &exprs {
        for name in metric_names(e) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| metrics.contains(&format!("# TYPE {f} histogram")))
                })
                .unwrap_or(&name);
            assert!(
                metrics.contains(&format!("# TYPE {family} ")),
                "the dashboard queries `{name}`, which the registry's /metrics does not have"
            );
            assert!(
                promptops_server::telemetry::METRIC_NAMES.contains(&family),
                "`{family}` is not a telemetry metric"
            );
            checked += 1;
        }
        // Label names the dashboard filters and groups by exist too.
        for label in [
            "project",
            "prompt",
            "version",
            "model",
            "error_type",
            "token_type",
        ] {
            if e.contains(&format!("{label}=~")) || e.contains(&format!(" {label}")) {
                assert!(
                    metrics.contains(&format!("{label}=\"")),
                    "label `{label}` in `{e}`"
                );
            }
        }
    }
    assert!(checked >= 12, "{checked}");

    // More events, then close: the last round uploads them.
    for _ in 0..3 {
        let routed = client.route_with("support/reply", &vars, &opts).unwrap();
        client.record(&routed.decision, &Outcome::success(50.0));
    }
    let c = client.clone();
    tokio::task::spawn_blocking(move || c.close())
        .await
        .unwrap();
    let (_, q) = {
        let v = call(
            &http,
            Method::GET,
            format!(
                "{}/v1/projects/shop/telemetry?group_by=prompt,version,model,provider,label",
                reg.url
            ),
            &reg.admin,
            None,
        )
        .await;
        ((), v)
    };
    let g = &q["groups"][0];
    assert_eq!(q["groups"].as_array().unwrap().len(), 1, "{q}");
    assert_eq!(g["prompt"], "support/reply");
    assert_eq!(g["version"], 1);
    assert_eq!(g["model"], "gpt-4o-mini");
    assert_eq!(g["provider"], "openai");
    assert_eq!(g["label"], "production");
    assert_eq!(g["requests"], 11, "{q}");
    assert_eq!(g["errors_by_type"]["timeout"], 1);
    assert_eq!(g["input_tokens"], 280);
    assert!(g["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(g["ttft_ms"]["count"], 7);
    let p50 = g["latency_ms"]["p50"].as_f64().unwrap();
    assert!((80.0..=160.0).contains(&p50), "{q}");
    let ev = sample(
        &metrics,
        "promptops_telemetry_events_total",
        &["kind=\"decision\""],
    );
    assert_eq!(ev, Some(8.0));
}
