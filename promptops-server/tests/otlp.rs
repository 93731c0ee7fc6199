//! The core's OTLP/HTTP JSON exporter (feature `otlp`) against a local
//! receiver that decodes what arrives: metric and span names, attributes,
//! values, temporality, content type and auth header; bounded span queue
//! with counted drops; failed exports counted; a Client exporting in the
//! background and on close.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use promptops_core::export::otlp::{OtlpConfig, OtlpExporter};
use promptops_core::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
use serde_json::Value;

#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, String, Value)>,
}

/// A receiver on 127.0.0.1 answering `status`; returns its URL.
async fn receiver(seen: Arc<Mutex<Seen>>, status: u16) -> String {
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: bytes::Bytes| {
                let seen = seen.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    seen.lock().unwrap().requests.push((
                        format!("/{path}"),
                        h("content-type"),
                        h("authorization"),
                        v,
                    ));
                    (StatusCode::from_u16(status).unwrap(), "{}")
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn call(model: &str, latency_ms: f64, err: Option<&str>) -> Event {
    let mut e = Event::new(EventKind::Call, "support/reply");
    e.version = Some(3);
    e.label = Some("production".into());
    e.variant = Some("short".into());
    e.provider = Some("openai".into());
    e.model = Some(model.into());
    e.response_model = Some(format!("{model}-2024-07-18").into());
    e.input_tokens = Some(40);
    e.output_tokens = Some(10);
    e.cost_usd = Some(0.25);
    e.latency_ms = Some(latency_ms);
    e.error_type = err.map(Into::into);
    e
}

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}

fn metric<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

#[tokio::test]
async fn metrics_and_spans_with_genai_names() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = receiver(seen.clone(), 200).await;
    let tel = Telemetry::new(TelemetryConfig::default());
    let exp = OtlpExporter::new(
        OtlpConfig::new(&url)
            .header("authorization", "Bearer otlp-secret")
            .service_name("checkout"),
        &tel,
    )
    .unwrap();
    tel.record(call("gpt-4o-mini", 200.0, None));
    tel.record(call("gpt-4o-mini", 300.0, None));
    tel.record(call("gpt-4o-mini", 1000.0, Some("timeout")));
    tel.record(Event::new(EventKind::Render, "support/reply"));
    exp.export_once(&tel).await.unwrap();

    let first: Vec<(String, String, String, Value)> = seen.lock().unwrap().requests.clone();
    let s = Seen { requests: first };
    let paths: Vec<&str> = s.requests.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(paths, ["/v1/metrics", "/v1/traces"]);
    for (_, ct, auth, _) in &s.requests {
        assert_eq!(ct, "application/json");
        assert_eq!(auth, "Bearer otlp-secret");
    }
    let m = &s.requests[0].3;
    let res = &m["resourceMetrics"][0]["resource"]["attributes"];
    assert_eq!(
        attr(res, "service.name").unwrap()["stringValue"],
        "checkout"
    );

    let tokens = metric(m, "gen_ai.client.token.usage");
    assert_eq!(tokens["unit"], "{token}");
    assert_eq!(tokens["histogram"]["aggregationTemporality"], 2);
    let pts = tokens["histogram"]["dataPoints"].as_array().unwrap();
    // input and output for the success attribute set (error.type is not a
    // token attribute, so all three calls share them).
    assert_eq!(pts.len(), 2, "{tokens}");
    let input = pts
        .iter()
        .find(|p| attr(&p["attributes"], "gen_ai.token.type").unwrap()["stringValue"] == "input")
        .unwrap();
    assert_eq!(input["count"], "3");
    assert_eq!(input["sum"], 120.0);
    let a = &input["attributes"];
    for (k, v) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o-mini"),
        ("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
        ("promptops.prompt.name", "support/reply"),
        ("promptops.prompt.label", "production"),
        ("promptops.variant", "short"),
    ] {
        assert_eq!(attr(a, k).unwrap()["stringValue"], v, "{k}");
    }
    assert_eq!(
        attr(a, "promptops.prompt.version").unwrap()["intValue"],
        "3"
    );
    // 40 tokens fall in the (16, 64] bucket.
    let bounds = input["explicitBounds"].as_array().unwrap();
    let counts = input["bucketCounts"].as_array().unwrap();
    assert_eq!(counts.len(), bounds.len() + 1);
    assert_eq!(bounds[3], 64.0);
    assert_eq!(counts[3], "3");

    let dur = metric(m, "gen_ai.client.operation.duration");
    assert_eq!(dur["unit"], "s");
    assert_eq!(dur["histogram"]["aggregationTemporality"], 2);
    let pts = dur["histogram"]["dataPoints"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    let failed = pts
        .iter()
        .find(|p| attr(&p["attributes"], "error.type").is_some())
        .unwrap();
    assert_eq!(
        attr(&failed["attributes"], "error.type").unwrap()["stringValue"],
        "timeout"
    );
    assert_eq!(failed["count"], "1");
    assert_eq!(failed["sum"], 1.0);
    let ok = pts
        .iter()
        .find(|p| attr(&p["attributes"], "error.type").is_none())
        .unwrap();
    assert_eq!(ok["count"], "2");
    assert!((ok["sum"].as_f64().unwrap() - 0.5).abs() < 1e-9);

    let cost = metric(m, "promptops.client.cost");
    assert_eq!(cost["unit"], "USD");
    assert_eq!(cost["sum"]["aggregationTemporality"], 2);
    assert_eq!(cost["sum"]["isMonotonic"], true);
    assert_eq!(cost["sum"]["dataPoints"][0]["asDouble"], 0.75);

    let t = &s.requests[1].3;
    let spans = t["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), 3, "render events are not spans");
    for sp in spans {
        assert_eq!(sp["name"], "chat gpt-4o-mini");
        assert_eq!(sp["kind"], 3);
        assert_eq!(sp["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(sp["spanId"].as_str().unwrap().len(), 16);
        let a = &sp["attributes"];
        assert_eq!(
            attr(a, "gen_ai.usage.input_tokens").unwrap()["intValue"],
            "40"
        );
        assert_eq!(
            attr(a, "gen_ai.usage.output_tokens").unwrap()["intValue"],
            "10"
        );
        assert_eq!(
            attr(a, "gen_ai.request.model").unwrap()["stringValue"],
            "gpt-4o-mini"
        );
        let start: u64 = sp["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u64 = sp["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(end - start >= 200_000_000, "{sp}");
    }
    let err = spans.iter().find(|s| s["status"]["code"] == 2).unwrap();
    assert_eq!(
        attr(&err["attributes"], "error.type").unwrap()["stringValue"],
        "timeout"
    );
    let input = input.clone();
    drop(s);

    // Cumulative: a second export carries the totals again, spans only once.
    tel.record(call("gpt-4o-mini", 100.0, None));
    exp.export_once(&tel).await.unwrap();
    let s = seen.lock().unwrap();
    let m2 = &s.requests[2].3;
    let input2 = metric(m2, "gen_ai.client.token.usage")["histogram"]["dataPoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| attr(&p["attributes"], "gen_ai.token.type").unwrap()["stringValue"] == "input")
        .unwrap()
        .clone();
    assert_eq!(input2["count"], "4");
    assert_eq!(
        input2["startTimeUnixNano"], input["startTimeUnixNano"],
        "cumulative points keep their start time"
    );
    let spans2 = s.requests[3].3["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(spans2, 1);
    assert_eq!(exp.stats().spans_exported, 4);
}

#[tokio::test]
async fn bounded_queue_drops_counted_and_failures_counted() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = receiver(seen.clone(), 503).await;
    let tel = Telemetry::new(TelemetryConfig::default());
    let mut cfg = OtlpConfig::new(&url);
    cfg.max_spans = 5;
    let exp = OtlpExporter::new(cfg, &tel).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..20 {
        tel.record(call("gpt-4o", 10.0, None));
    }
    // Recording never waits for the network.
    assert!(t.elapsed() < Duration::from_millis(50));
    assert!(exp.export_once(&tel).await.is_err());
    let st = exp.stats();
    assert_eq!(st.spans_dropped, 15);
    assert_eq!(st.spans_failed, 5);
    assert_eq!(st.metric_exports_failed, 1);
    // Metrics stay cumulative: the next export still has all 20 calls.
    let m = exp.metrics_json().unwrap();
    let d = &metric(&m, "gen_ai.client.operation.duration")["histogram"]["dataPoints"][0];
    assert_eq!(d["count"], "20");
}

#[test]
fn client_exports_in_the_background_and_on_close() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = rt.block_on(receiver(seen.clone(), 200));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("support")).unwrap();
    std::fs::write(
        dir.path().join("support/reply.prompt"),
        "---\nmodel: openai/gpt-4o-mini\n---\nHello {{ name }}, mail me at {{ email }}",
    )
    .unwrap();
    let client = promptops_core::Client::builder()
        .prompts_dir(dir.path())
        .telemetry(TelemetryConfig::default())
        .telemetry_export(promptops_core::export::ExportOptions {
            interval: Duration::from_millis(100),
            ..Default::default()
        })
        .otlp(OtlpConfig::new(&url))
        .build()
        .unwrap();
    let vars = promptops_core::context! { name => "Dana", email => "dana@example.com" };
    let opts = promptops_core::RouteOptions {
        attributes: vec![("email".into(), "dana@example.com".into())],
        ..Default::default()
    };
    let routed = client.route_with("support/reply", &vars, &opts).unwrap();
    client.record(&routed.decision, &promptops_core::Outcome::success(120.0));
    // The periodic round exports without being asked.
    let t = std::time::Instant::now();
    while !seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .any(|r| r.0 == "/v1/traces")
    {
        assert!(t.elapsed() < Duration::from_secs(10), "no periodic export");
        std::thread::sleep(Duration::from_millis(20));
    }
    let routed = client.route_with("support/reply", &vars, &opts).unwrap();
    client.record(&routed.decision, &promptops_core::Outcome::success(80.0));
    client.close();
    let s = seen.lock().unwrap();
    let spans: usize = s
        .requests
        .iter()
        .filter(|r| r.0 == "/v1/traces")
        .map(|r| {
            r.3["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(spans, 2, "the second call is exported by close");
    let all = s
        .requests
        .iter()
        .map(|r| r.3.to_string())
        .collect::<String>();
    assert!(!all.contains("dana@example.com"));
}

#[test]
fn client_checks_export_options_and_reports_otlp_stats() {
    use promptops_core::export::ExportOptions;
    // OTLP (or an upload URL) without telemetry would export nothing.
    let err = promptops_core::Client::builder()
        .otlp(OtlpConfig::new("http://127.0.0.1:4318"))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), "CONFIG_ERROR");
    assert!(err.to_string().contains("needs telemetry on"), "{err}");
    let err = promptops_core::Client::builder()
        .telemetry(TelemetryConfig::default())
        .otlp(OtlpConfig::new("localhost:4318"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("otlp endpoint"), "{err}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let url = rt.block_on(receiver(seen.clone(), 200));
    let client = promptops_core::Client::builder()
        .telemetry(TelemetryConfig::default())
        .telemetry_export(ExportOptions {
            interval: Duration::from_secs(3600),
            ..Default::default()
        })
        .otlp(OtlpConfig::new(&url))
        .build()
        .unwrap();
    client.apply(
        promptops_core::Update::Snapshot(
            promptops_core::SnapshotData::from_json(
                br#"{"format":"promptops.snapshot/1","project":"p","revision":1,"hash":"",
                "prompts":[{"name":"a/b","versions":[{"version":1,"type":"text","template":"hi",
                "config":{"provider":"openai","model":"gpt-4o-mini"}}],"labels":{"production":1}}]}"#,
            )
            .unwrap(),
        ),
        promptops_core::Source::Memory,
    )
    .unwrap();
    assert_eq!(client.otlp_stats().unwrap().spans_exported, 0);
    let routed = client
        .route("a/b", &promptops_core::context! {}, None)
        .unwrap();
    client.record(&routed.decision, &promptops_core::Outcome::success(50.0));
    assert!(client.flush_telemetry(Duration::from_secs(10)));
    let stats = client.otlp_stats().unwrap();
    assert_eq!(
        (stats.spans_exported, stats.metric_exports),
        (1, 1),
        "{stats:?}"
    );
    client.close();
    assert!(client.otlp_stats().is_none());
    // Without OTLP: no stats.
    let plain = promptops_core::Client::builder()
        .telemetry(TelemetryConfig::default())
        .build()
        .unwrap();
    assert!(plain.otlp_stats().is_none());
}
