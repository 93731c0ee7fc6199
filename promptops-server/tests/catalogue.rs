//! The model catalogue: CRUD, validation, audit, events to SDKs, the
//! health check against a mock provider (200 / 500 / hanging), routing in
//! an SDK client skipping unavailable models, and provider keys never
//! reaching read keys. On SQLite, or PostgreSQL (+ Redis) when
//! PROMPTOPS_TEST_DATABASE_URL (/ PROMPTOPS_TEST_REDIS_URL) is set.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, Options};
use promptops_core::sync::{Backoff, SyncOptions};
use promptops_core::{Client, HealthStatus, SnapshotData, context};
use promptops_tests::mock_provider::{Behavior, MockProvider};
use serde_json::{Value, json};

const KEY: &str = "sk-mock-0123456789-secret";

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sync_options(project: &str) -> SyncOptions {
    let mut o = SyncOptions::new(project);
    o.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        jitter: 0.5,
        reset_after: Duration::from_secs(60),
    };
    o
}

fn health_of(c: &Client, model: &str) -> Option<HealthStatus> {
    c.models()
        .into_iter()
        .find(|m| m.model == model)
        .map(|m| m.health.status)
}

#[tokio::test]
async fn crud_validation_audit_and_snapshot() {
    let env = Env::start().await;
    let rev0 = env.get("admin", "/v1/projects/shop").await.1["revision"]
        .as_i64()
        .unwrap();
    // A model of the built-in table: prices come from it.
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/models/gpt-4o-mini",
            json!({"provider": "openai", "context_window": 100000}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["changed"], true);
    assert_eq!(v["revision"], rev0 + 1);
    assert_eq!(v["model"]["input_per_mtok"], 0.15);
    assert_eq!(v["model"]["health"]["status"], "unknown");
    assert_eq!(v["model"]["key_secret"], "OPENAI_API_KEY");
    // A model id with `/` (percent-encoded in the path).
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/models/meta-llama%2FLlama-3.3-70B",
            json!({"provider": "vllm", "base_url": "http://127.0.0.1:9/v1",
                   "input_per_mtok": 0.2, "output_per_mtok": 0.6, "enabled": false}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revision"], rev0 + 2);
    // The same body again changes nothing.
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/models/gpt-4o-mini",
            json!({"provider": "openai", "context_window": 100000}),
        )
        .await;
    assert_eq!(
        (s, &v["changed"], &v["revision"]),
        (200, &json!(false), &json!(rev0 + 2))
    );
    // Reads: any role with prompt_read.
    let (s, v) = env.get("viewer", "/v1/projects/shop/models").await;
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpt-4o-mini", "meta-llama/Llama-3.3-70B"]);
    let (s, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/models/meta-llama%2FLlama-3.3-70B",
        )
        .await;
    assert_eq!((s, &v["enabled"]), (200, &json!(false)), "{v}");
    let (s, _) = env.get("viewer", "/v1/projects/shop/models/nope").await;
    assert_eq!(s, 404);
    // Validation: 422 naming the field, nothing stored.
    for (body, field) in [
        (
            json!({"provider": "openai", "input_per_mtok": -1}),
            "input_per_mtok",
        ),
        (
            json!({"provider": "openai", "context_window": "big"}),
            "context_window",
        ),
        (
            json!({"provider": "local", "input_per_mtok": 1, "output_per_mtok": 1}),
            "base_url",
        ),
        (
            json!({"input_per_mtok": 1, "output_per_mtok": 1}),
            "provider",
        ),
        (json!({"provider": "openai", "api_key": "sk-x"}), "api_key"),
        (
            json!({"provider": "openai", "health": {"status": "healthy"}}),
            "health",
        ),
        (
            json!({"provider": "openai", "base_url": "ftp://x"}),
            "base_url",
        ),
    ] {
        let (s, v) = env
            .put("admin", "/v1/projects/shop/models/gpt-4o", body.clone())
            .await;
        assert_eq!(s, 422, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
        assert_eq!(v["code"], "VALIDATION_ERROR");
    }
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/models/house",
            json!({"provider": "local", "base_url": "http://h/v1"}),
        )
        .await;
    assert_eq!((s, &v["field"]), (422, &json!("input_per_mtok")), "{v}");
    assert_eq!(
        env.get("admin", "/v1/projects/shop").await.1["revision"],
        rev0 + 2
    );
    // The snapshot carries the catalogue; its hash covers it and checks out
    // in the core; a fresh build from the database equals the cached one.
    let snap = env.snapshot("sdk", "shop").await;
    assert_eq!(snap["models"].as_array().unwrap().len(), 2);
    assert_eq!(snap["models"][1]["enabled"], false);
    let parsed = SnapshotData::from_json(snap.to_string().as_bytes()).unwrap();
    assert_eq!(parsed.models[0].context_window, Some(100_000));
    let id = env
        .server
        .registry
        .project("shop")
        .await
        .unwrap()
        .unwrap()
        .id;
    let fresh = env.server.registry.build_snapshot(id).await.unwrap();
    assert_eq!(fresh.hash, parsed.hash);
    // Delete: an event; a second delete is 404.
    let (s, v) = env
        .delete(
            "admin",
            "/v1/projects/shop/models/meta-llama%2FLlama-3.3-70B",
        )
        .await;
    assert_eq!((s, &v["revision"]), (200, &json!(rev0 + 3)), "{v}");
    let (s, _) = env
        .delete(
            "admin",
            "/v1/projects/shop/models/meta-llama%2FLlama-3.3-70B",
        )
        .await;
    assert_eq!(s, 404);
    let snap = env.snapshot("sdk", "shop").await;
    assert_eq!(snap["models"].as_array().unwrap().len(), 1);
    // Audit: who changed what, before and after.
    let (s, v) = env.get("auditor", "/v1/audit?action=model.set").await;
    assert_eq!(s, 200, "{v}");
    let entries = v["entries"].as_array().or(v.as_array()).unwrap().clone();
    assert_eq!(entries.len(), 2, "{v}");
    assert_eq!(entries[0]["actor"], "admin");
    // `details` is stored as JSON text.
    let details: Value = match &entries[0]["details"] {
        Value::String(t) => serde_json::from_str(t).unwrap(),
        other => other.clone(),
    };
    assert_eq!(details["after"]["model"], "gpt-4o-mini");
    assert_eq!(details["before"], Value::Null);
    let (_, v) = env.get("auditor", "/v1/audit?action=model.delete").await;
    let entries = v["entries"].as_array().or(v.as_array()).unwrap().clone();
    assert_eq!(entries.len(), 1, "{v}");
    let (_, v) = env.get("auditor", "/v1/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn catalogue_changes_reach_the_stream_and_replay() {
    let env = Env::start().await;
    let mut sse = env.stream("sdk", "shop", None).await;
    let first = sse.expect("snapshot").await;
    assert!(first.data.get("models").is_none(), "no catalogue: no field");
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/models/gpt-4o",
            json!({"provider": "openai"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = sse.expect("delta").await;
    assert_eq!(d.data["upserts"], json!([]));
    assert_eq!(d.data["models"][0]["model"], "gpt-4o");
    let (s, _) = env.delete("admin", "/v1/projects/shop/models/gpt-4o").await;
    assert_eq!(s, 200);
    let d2 = sse.expect("delta").await;
    assert_eq!(d2.data["models"], json!([]));
    // Replay from the first snapshot gives the same two deltas.
    let mut replay = env
        .stream("sdk", "shop", Some(&first.id.unwrap().to_string()))
        .await;
    assert_eq!(replay.expect("delta").await.data, d.data);
    assert_eq!(replay.expect("delta").await.data, d2.data);
}

/// Project `shop` with a prompt routed by failover over two mock models, a
/// provider key stored as a secret, and the catalogue entries.
async fn health_setup(env: &Env, mock: &MockProvider) {
    let (s, v) = env
        .post(
            "org-admin",
            "/v1/projects/shop/prompts",
            json!({"name": "support/reply", "type": "text", "template": "Hi {{ name }}",
                   "config": {"provider": "mock", "model": "good-model"},
                   "policy": {"strategy": "failover", "targets": [
                        {"provider": "mock", "model": "flaky-model"},
                        {"provider": "mock", "model": "good-model"}]},
                   "labels": ["staging"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/secrets/MOCK_API_KEY",
            json!({"value": KEY}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for m in ["good-model", "flaky-model", "hang-model"] {
        let (s, v) = env
            .put(
                "admin",
                &format!("/v1/projects/shop/models/{m}"),
                json!({"provider": "mock", "base_url": mock.url(),
                       "input_per_mtok": 0.1, "output_per_mtok": 0.1}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_marks_models_and_sdk_routing_skips_them() {
    let env = Env::start().await;
    let mock = MockProvider::start().await;
    mock.set_default("good-model", Behavior::ok("pong"));
    mock.set_default("flaky-model", Behavior::status(500));
    // Hangs past the 2 s health timeout of the test server.
    mock.set_default("hang-model", Behavior::slow("late", 10_000));
    health_setup(&env, &mock).await;
    let sdk_key = env.key("sdk").to_string();
    let base = env.base.clone();
    let client = tokio::task::spawn_blocking(move || {
        Client::builder()
            .project("shop")
            .server(base)
            .api_key(sdk_key)
            .default_label("staging")
            .sync_options(sync_options("shop"))
            .startup_wait(Duration::from_secs(10))
            .build()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(client.models().len(), 3);
    assert_eq!(
        health_of(&client, "flaky-model"),
        Some(HealthStatus::Unknown)
    );
    // Unknown health is no reason to skip: failover starts at flaky-model.
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "flaky-model");

    // Only admins may run the check.
    let (s, _) = env
        .post("viewer", "/v1/projects/shop/model-health", json!({}))
        .await;
    assert_eq!(s, 403);
    let rev_before = env.get("admin", "/v1/projects/shop").await.1["revision"]
        .as_i64()
        .unwrap();
    let t = Instant::now();
    let (s, v) = env
        .post("admin", "/v1/projects/shop/model-health", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "the timeout bounds the check"
    );
    let by: std::collections::HashMap<&str, &Value> = v["checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["model"].as_str().unwrap(), r))
        .collect();
    assert_eq!(by["good-model"]["status"], "healthy", "{v}");
    assert_eq!(by["flaky-model"]["status"], "unavailable", "{v}");
    assert!(
        by["flaky-model"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 500"),
        "{v}"
    );
    assert_eq!(by["hang-model"]["status"], "unavailable", "{v}");
    assert!(
        by["hang-model"]["error"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{v}"
    );
    // Three status changes, three events.
    assert_eq!(v["revision"], rev_before + 3, "{v}");
    // The probe was one cheap request per model with the stored key.
    let got = mock.received();
    let probe = got.iter().find(|r| r.model == "good-model").unwrap();
    assert_eq!(
        probe.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(probe.body["max_tokens"], 1);
    // The key never shows up in what read keys (or anyone) can see.
    for (role, path) in [
        ("viewer", "/v1/projects/shop/models"),
        ("viewer", "/v1/projects/shop/model-health"),
        ("sdk", "/v1/projects/shop/snapshot"),
        ("auditor", "/v1/audit"),
    ] {
        let (s, v) = env.get(role, path).await;
        assert_eq!(s, 200, "{role} {path}: {v}");
        assert!(!v.to_string().contains(KEY), "{role} {path} leaks the key");
    }
    // The SDK gets the verdicts through the stream and routes around them.
    let c = client.clone();
    wait_until(
        "the SDK sees flaky-model unavailable",
        Duration::from_secs(10),
        || health_of(&c, "flaky-model") == Some(HealthStatus::Unavailable),
    )
    .await;
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "good-model");
    assert!(
        d.reason.contains("skipped by the model catalogue"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("HTTP 500"), "{}", d.reason);
    assert_eq!(d.skipped[0].target, "mock/flaky-model");
    // Checking again without a change: no event.
    let (_, v) = env
        .post("admin", "/v1/projects/shop/model-health", json!({}))
        .await;
    assert_eq!(v["revision"], rev_before + 3, "{v}");
    let (_, h) = env.get("viewer", "/v1/projects/shop/model-health").await;
    let flaky = h["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "flaky-model")
        .unwrap()
        .clone();
    assert!(
        flaky["last_checked_at"].as_str() >= flaky["since"].as_str(),
        "{flaky}"
    );
    // Recovery: healthy again, and routing goes back to the first target.
    mock.set_default("flaky-model", Behavior::ok("pong"));
    let (_, v) = env
        .post("admin", "/v1/projects/shop/model-health", json!({}))
        .await;
    assert_eq!(v["revision"], rev_before + 4, "{v}");
    let c = client.clone();
    wait_until(
        "the SDK sees flaky-model healthy",
        Duration::from_secs(10),
        || health_of(&c, "flaky-model") == Some(HealthStatus::Healthy),
    )
    .await;
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "flaky-model");
    // Disabling a model is a catalogue change the SDK follows too.
    let (s, _) = env
        .put(
            "admin",
            "/v1/projects/shop/models/flaky-model",
            json!({"provider": "mock", "base_url": mock.url(),
                   "input_per_mtok": 0.1, "output_per_mtok": 0.1, "enabled": false}),
        )
        .await;
    assert_eq!(s, 200);
    let c = client.clone();
    wait_until(
        "the SDK sees flaky-model disabled",
        Duration::from_secs(10),
        || {
            c.models()
                .iter()
                .any(|m| m.model == "flaky-model" && !m.enabled)
        },
    )
    .await;
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "good-model");
    assert!(d.reason.contains("disabled"), "{}", d.reason);
    // Health changes are audited, by the health check.
    let (_, v) = env.get("auditor", "/v1/audit?action=model.health").await;
    let entries = v["entries"].as_array().or(v.as_array()).unwrap().clone();
    assert_eq!(entries.len(), 4, "{v}");
    assert!(entries.iter().all(|e| e["actor"] == "health-check"));
    client.close();
}

#[tokio::test]
async fn models_without_a_stored_key_are_not_checked() {
    let env = Env::start().await;
    let mock = MockProvider::start().await;
    let (s, _) = env
        .put(
            "admin",
            "/v1/projects/shop/models/good-model",
            json!({"provider": "mock", "base_url": mock.url(),
                   "input_per_mtok": 0.1, "output_per_mtok": 0.1}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = env
        .post("admin", "/v1/projects/shop/model-health", json!({}))
        .await;
    assert_eq!((s, &v["checked"]), (200, &json!([])), "{v}");
    assert!(mock.received().is_empty());
    // Secrets stay admin-only: no other role reads the key.
    env.put(
        "admin",
        "/v1/projects/shop/secrets/MOCK_API_KEY",
        json!({"value": KEY}),
    )
    .await;
    for role in [
        "sdk",
        "viewer",
        "author",
        "reviewer",
        "approver",
        "publisher",
        "auditor",
    ] {
        let (s, v) = env
            .get(role, "/v1/projects/shop/secrets/MOCK_API_KEY")
            .await;
        assert_eq!(s, 403, "{role}: {v}");
        assert!(!v.to_string().contains(KEY));
        let (s, _) = env.get(role, "/v1/projects/shop/secrets").await;
        assert_eq!(s, 403, "{role}");
    }
}

#[tokio::test]
async fn the_periodic_check_runs_on_its_interval() {
    let env = Env::start_with(Options {
        health: promptops_server::health::HealthOptions {
            interval: Duration::from_millis(300),
            timeout: Duration::from_secs(2),
        },
        ..Default::default()
    })
    .await;
    let mock = MockProvider::start().await;
    mock.set_default("flaky-model", Behavior::status(503));
    health_setup(&env, &mock).await;
    let t = Instant::now();
    loop {
        let (_, v) = env
            .get("viewer", "/v1/projects/shop/models/flaky-model")
            .await;
        if v["health"]["status"] == "unavailable" {
            assert!(
                v["health"]["error"].as_str().unwrap().contains("HTTP 503"),
                "{v}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no periodic check: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// -- the real `promptops serve` -------------------------------------------

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promptops_serve_health_interval_reaches_an_sdk_client() {
    promptops_server::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("reg.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_promptops"))
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--health-interval",
            "1",
            "--health-timeout",
            "1",
            "--database-url",
        ])
        .arg(&db)
        .env("PROMPTOPS_MASTER_KEY", common::random_hex(32))
        .env("PROMPTOPS_LOG", "warn")
        .env_remove("PROMPTOPS_REDIS_URL")
        .env_remove("PROMPTOPS_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, BufReader};
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let l = lines.next().expect("server output").unwrap();
            if l.starts_with("promptops registry on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
    }
    let _serve = Serve(child);
    let url = format!("http://127.0.0.1:{port}");
    let mut key_file = db.as_os_str().to_owned();
    key_file.push(".admin-key");
    let admin = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{url}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let ok = |r: reqwest::Response| async move {
        let s = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(s.is_success(), "{s}: {v}");
        v
    };
    use reqwest::Method;
    ok(call(
        Method::POST,
        "/v1/projects",
        json!({"name": "shop", "protected_labels": []}),
    )
    .await
    .unwrap())
    .await;
    let sdk = ok(call(
        Method::POST,
        "/v1/keys",
        json!({"role": "sdk", "project": "shop"}),
    )
    .await
    .unwrap())
    .await["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mock = MockProvider::start().await;
    mock.set_default("flaky-model", Behavior::status(500));
    ok(call(
        Method::POST,
        "/v1/projects/shop/prompts",
        json!({"name": "support/reply", "type": "text", "template": "Hi {{ name }}",
               "policy": {"strategy": "failover", "targets": [
                    {"provider": "mock", "model": "flaky-model"},
                    {"provider": "mock", "model": "good-model"}]},
               "labels": ["production"]}),
    )
    .await
    .unwrap())
    .await;
    ok(call(
        Method::PUT,
        "/v1/projects/shop/secrets/MOCK_API_KEY",
        json!({"value": KEY}),
    )
    .await
    .unwrap())
    .await;
    for m in ["good-model", "flaky-model"] {
        ok(call(
            Method::PUT,
            &format!("/v1/projects/shop/models/{m}"),
            json!({"provider": "mock", "base_url": mock.url(),
                   "input_per_mtok": 0.1, "output_per_mtok": 0.1}),
        )
        .await
        .unwrap())
        .await;
    }
    let u = url.clone();
    let client = tokio::task::spawn_blocking(move || {
        Client::builder()
            .project("shop")
            .server(u)
            .api_key(sdk)
            .sync_options(sync_options("shop"))
            .startup_wait(Duration::from_secs(10))
            .build()
            .unwrap()
    })
    .await
    .unwrap();
    let c = client.clone();
    wait_until(
        "the periodic check reaches the SDK",
        Duration::from_secs(20),
        || {
            health_of(&c, "flaky-model") == Some(HealthStatus::Unavailable)
                && health_of(&c, "good-model") == Some(HealthStatus::Healthy)
        },
    )
    .await;
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "good-model");
    assert!(d.reason.contains("unavailable"), "{}", d.reason);
    // The CLI: models list / set / rm.
    let cli = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_promptops"))
            .args(["models"])
            .args(args)
            .args(["--project", "shop", "--server", &url, "--api-key", &admin])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{args:?}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let list = cli(&["list"]);
    let flaky = list.lines().find(|l| l.starts_with("flaky-model")).unwrap();
    assert!(
        flaky.contains("unavailable") && flaky.contains("HTTP 500"),
        "{list}"
    );
    assert!(!list.contains(KEY));
    let set = cli(&[
        "set",
        "gpt-4o-mini",
        "--provider",
        "openai",
        "--context-window",
        "64000",
    ]);
    assert!(set.contains("saved"), "{set}");
    assert!(cli(&["list"]).contains("64000"));
    assert!(cli(&["rm", "gpt-4o-mini"]).contains("removed"));
    assert!(!cli(&["list"]).contains("gpt-4o-mini"));
    mock.set_default("flaky-model", Behavior::ok("pong"));
    let c = client.clone();
    wait_until("recovery reaches the SDK", Duration::from_secs(20), || {
        health_of(&c, "flaky-model") == Some(HealthStatus::Healthy)
    })
    .await;
    let d = client
        .route("support/reply", &context! { name => "Ann" }, None)
        .unwrap()
        .decision;
    assert_eq!(d.target().model, "flaky-model");
    client.close();
}
