//! `POST /v1/telemetry` and `GET /v1/projects/{p}/telemetry` on an
//! in-process registry (SQLite, or PostgreSQL when
//! PROMPTOPS_TEST_DATABASE_URL is set): the core's own uploader sends the
//! batches; aggregates show on `/metrics` and in the query endpoint;
//! validation names the field; other tenants and oversized bodies are
//! refused.

mod common;

use std::sync::Arc;

use common::Env;
use promptops_core::export::Uploader;
use promptops_core::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
use reqwest::Method;
use serde_json::{Value, json};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn call(prompt: &str, version: u32, model: &str, latency_ms: f64, err: Option<&str>) -> Event {
    let mut e = Event::new(EventKind::Call, prompt);
    e.version = Some(version);
    e.model = Some(model.into());
    e.provider = Some("openai".into());
    e.label = Some("production".into());
    e.input_tokens = Some(100);
    e.output_tokens = Some(20);
    e.cost_usd = Some(0.002);
    e.latency_ms = Some(latency_ms);
    e.error_type = err.map(Into::into);
    e
}

/// The value of the first sample line starting with `prefix` that contains
/// every `parts`.
fn sample(metrics: &str, prefix: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn upload_aggregate_query() {
    let env = Env::start().await;
    let tel = Arc::new(Telemetry::new(TelemetryConfig {
        project: Some("shop".into()),
        ..Default::default()
    }));
    for i in 0..10 {
        tel.record(call(
            "support/reply",
            2,
            "gpt-4o-mini",
            100.0 + i as f64 * 10.0,
            None,
        ));
    }
    tel.record(call(
        "support/reply",
        2,
        "gpt-4o-mini",
        5000.0,
        Some("timeout"),
    ));
    tel.record(call("support/reply", 1, "claude-haiku-4-5", 300.0, None));
    tel.record(Event::new(EventKind::Render, "support/reply"));
    let up = Uploader::new(&env.base, Some(env.key("sdk"))).unwrap();
    assert_eq!(up.upload_once(&tel).await.unwrap(), 13);

    let metrics = env
        .http
        .get(format!("{}/metrics", env.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    let key = [
        "project=\"shop\"",
        "prompt=\"support/reply\"",
        "version=\"2\"",
        "model=\"gpt-4o-mini\"",
    ];
    assert_eq!(
        sample(&metrics, "promptops_llm_requests_total{", &key),
        Some(11.0),
        "{metrics}"
    );
    let mut k = key.to_vec();
    k.push("error_type=\"timeout\"");
    assert_eq!(
        sample(&metrics, "promptops_llm_errors_total{", &k),
        Some(1.0)
    );
    let mut k = key.to_vec();
    k.push("token_type=\"input\"");
    assert_eq!(
        sample(&metrics, "promptops_llm_tokens_total{", &k),
        Some(1100.0)
    );
    let cost = sample(&metrics, "promptops_llm_cost_usd_total{", &key).unwrap();
    assert!((cost - 0.022).abs() < 1e-9, "{cost}");
    assert_eq!(
        sample(
            &metrics,
            "promptops_llm_request_duration_seconds_count{",
            &key
        ),
        Some(11.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "promptops_telemetry_events_total{",
            &["kind=\"render\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "promptops_telemetry_batches_total{",
            &["result=\"accepted\""]
        ),
        Some(1.0)
    );

    let (s, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/telemetry?group_by=prompt,version,model",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    let g = groups.iter().find(|g| g["model"] == "gpt-4o-mini").unwrap();
    assert_eq!(g["prompt"], "support/reply");
    assert_eq!(g["version"], 2);
    assert_eq!(g["requests"], 11);
    assert_eq!(g["errors"], 1);
    assert_eq!(g["errors_by_type"]["timeout"], 1);
    assert_eq!(g["input_tokens"], 1100);
    assert_eq!(g["output_tokens"], 220);
    assert!((g["cost_usd"].as_f64().unwrap() - 0.022).abs() < 1e-9);
    assert_eq!(g["latency_ms"]["count"], 11);
    // 10 calls of 100–190 ms (bucket 80–160 ms and 160–320 ms) and one of
    // 5 s: p50 lies in the 80–160 ms bucket, p99 in 2.56–5.12 s.
    let p50 = g["latency_ms"]["p50"].as_f64().unwrap();
    assert!((80.0..=160.0).contains(&p50), "{p50}");
    let p99 = g["latency_ms"]["p99"].as_f64().unwrap();
    assert!((2560.0..=5120.0).contains(&p99), "{p99}");

    // Filters and one total.
    let (_, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/telemetry?model=claude-haiku-4-5&group_by=",
        )
        .await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["groups"][0]["requests"], 1);
    let (_, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/telemetry?version=1&group_by=minute",
        )
        .await;
    assert_eq!(v["groups"][0]["requests"], 1, "{v}");
    assert!(
        v["groups"][0]["minute"]
            .as_str()
            .unwrap()
            .ends_with(":00.000000Z")
    );
    // A window before the data: nothing.
    let (_, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/telemetry?since=2020-01-01&until=2020-01-02",
        )
        .await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 0, "{v}");
    // Query errors name the parameter.
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/telemetry?group_by=colour")
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("group_by")), "{v}");
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/telemetry?since=yesterday")
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("since")), "{v}");
}

fn batch(project: Option<&str>, events: Value) -> Value {
    json!({
        "schema": "promptops.telemetry.v1",
        "project": project,
        "sdk": {"name": "promptops-rust", "version": "0.1.0"},
        "sent_at_ms": now_ms(),
        "dropped": {"recorded": 1, "dropped_queue_full": 0, "dropped_export_full": 0, "dropped_upload_failed": 0},
        "events": events,
    })
}

fn one_call() -> Value {
    json!([{"kind": "call", "ts_ms": now_ms(), "prompt": "a/b", "model": "m", "latency_ms": 10.0}])
}

#[tokio::test]
async fn refuses_bad_batches_and_other_tenants() {
    let env = Env::start().await;
    let sdk = env.key("sdk").to_string();
    let post = |key: Option<String>, body: Value| {
        let env = &env;
        async move {
            env.call(key.as_deref(), Method::POST, "/v1/telemetry", Some(body))
                .await
        }
    };
    // The key's project is used when the batch names none.
    let (s, v) = post(Some(sdk.clone()), batch(None, one_call())).await;
    assert_eq!((s, v["project"].as_str()), (200, Some("shop")), "{v}");
    // Another project of the same organisation, another organisation.
    let (s, v) = post(Some(sdk.clone()), batch(Some("shop2"), one_call())).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = post(Some(sdk.clone()), batch(Some("rival"), one_call())).await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = post(
        Some(env.key("rival-admin").to_string()),
        batch(Some("shop"), one_call()),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    // An organisation-wide key must name the project.
    let (s, v) = post(
        Some(env.key("org-admin").to_string()),
        batch(None, one_call()),
    )
    .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("project")), "{v}");
    // A role without telemetry_write.
    let (s, _) = post(
        Some(env.key("viewer").to_string()),
        batch(Some("shop"), one_call()),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = post(None, batch(Some("shop"), one_call())).await;
    assert_eq!(s, 401);
    // Validation names the field.
    let (s, v) = post(
        Some(sdk.clone()),
        batch(
            None,
            json!([{"kind": "call", "ts_ms": now_ms(), "prompt": "a/b", "cost_usd": "free"}]),
        ),
    )
    .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("events[0].cost_usd")),
        "{v}"
    );
    let (s, v) = post(
        Some(sdk.clone()),
        batch(
            None,
            json!([{"kind": "call", "ts_ms": now_ms() + 3_600_000, "prompt": "a/b"}]),
        ),
    )
    .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (422, Some("events[0].ts_ms")),
        "{v}"
    );
    let mut b = batch(None, one_call());
    b["schema"] = json!("promptops.telemetry.v9");
    let (s, v) = post(Some(sdk.clone()), b).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("UNSUPPORTED_SCHEMA")),
        "{v}"
    );
    // Body limit: 4 MiB.
    let big: Vec<Value> = (0..9_000)
        .map(|_| json!({"kind": "render", "ts_ms": now_ms(), "prompt": "x".repeat(250), "error_message": "y".repeat(300)}))
        .collect();
    let (s, v) = post(Some(sdk.clone()), batch(None, Value::Array(big))).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("BODY_TOO_LARGE")),
        "{v}"
    );
    // Nothing from the refused batches was counted: one accepted call.
    let (_, v) = env
        .get("viewer", "/v1/projects/shop/telemetry?group_by=")
        .await;
    assert_eq!(v["groups"][0]["requests"], 1, "{v}");
    let (_, v) = env
        .get("org-admin", "/v1/projects/shop2/telemetry?group_by=")
        .await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 0, "{v}");
}
