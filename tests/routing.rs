//! Routing: the shared vectors (sticky hash, sticky targets, invalid
//! policies, snapshot-wide checks) and the strategies through the client's
//! bring-your-own-client path (`route` + `record`), with an injected clock.

use std::sync::Arc;

use promptops_core::route::{
    self, BreakerConfig, BreakerState, FailureClass, ManualClock, RouteInput, Router, RouterConfig,
    parse_policy, validate_snapshot_policies,
};
use promptops_core::{
    Client, ModelPrice, Outcome, PricingTable, PromptData, RouteOptions, SnapshotData, Source,
    Update, context, validate_policy,
};
use promptops_tests::load_vector;
use serde_json::{Value, json};

fn snapshot(prompts: Value) -> SnapshotData {
    let prompts: Vec<PromptData> = serde_json::from_value(prompts).expect("prompts");
    SnapshotData::new("p", 1, prompts)
}

fn client_with(prompts: Value, clock: Option<Arc<ManualClock>>) -> Client {
    let mut b = Client::builder().project("p");
    if let Some(c) = clock {
        b = b.router(RouterConfig {
            seed: 7,
            ewma_alpha: 0.5,
            breaker: BreakerConfig {
                window_ms: 10_000,
                min_requests: 3,
                failure_ratio: 0.5,
                cooldown_ms: 5_000,
                max_retry_after_ms: 60_000,
            },
            clock: c,
        });
    }
    let client = b
        .price(ModelPrice {
            provider: "local".into(),
            model: "tiny-ctx".into(),
            input_per_mtok: 0.01,
            output_per_mtok: 0.01,
            cached_input_per_mtok: None,
            context_window: Some(1000),
        })
        .build()
        .expect("client");
    client
        .apply(Update::Snapshot(snapshot(prompts)), Source::Memory)
        .expect("apply");
    client
}

#[test]
fn vector_buckets() {
    let doc = load_vector("routing.json");
    assert_eq!(doc["hash"]["buckets"], route::BUCKETS);
    for c in doc["buckets"].as_array().unwrap() {
        let b = route::bucket(
            c["policy_id"].as_str().unwrap(),
            c["experiment"].as_str().unwrap(),
            c["key"].as_str().unwrap(),
        );
        assert_eq!(json!(b), c["bucket"], "{c}");
    }
}

#[test]
fn vector_sticky_targets() {
    let doc = load_vector("routing.json");
    let router = Router::new(RouterConfig::default());
    let mut n = 0;
    for case in doc["sticky"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let policy = Arc::new(
            parse_policy(&case["policy"], case["prompt"].as_str())
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        for k in case["cases"].as_array().unwrap() {
            let key = k["key"].as_str().unwrap();
            let d = router
                .decide(
                    &policy,
                    &RouteInput {
                        key: Some(key),
                        estimates: None,
                        unavailable: None,
                    },
                )
                .unwrap();
            assert_eq!(json!(d.bucket), k["bucket"], "{name}: key {key:?}");
            assert_eq!(json!(d.target().id), k["target"], "{name}: key {key:?}");
            // Sticky: the same key again gets the same target.
            let again = router
                .decide(
                    &policy,
                    &RouteInput {
                        key: Some(key),
                        estimates: None,
                        unavailable: None,
                    },
                )
                .unwrap();
            assert_eq!(again.target, d.target);
            n += 1;
        }
    }
    assert!(n >= 60);
}

#[test]
fn vector_invalid_policies() {
    let doc = load_vector("routing.json");
    let pricing = PricingTable::builtin();
    for case in doc["invalid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let err =
            validate_policy(&case["policy"], case["prompt"].as_str(), &pricing).expect_err(name);
        assert_eq!(json!(err.kind()), case["error"], "{name}: {err}");
        let d = err.details();
        assert_eq!(d.get("field"), Some(&case["field"]), "{name}: {err}");
        assert_eq!(d.get("prompt"), Some(&case["prompt"]), "{name}: {err}");
        // The message names the field too.
        assert!(
            err.to_string().contains(case["field"].as_str().unwrap()),
            "{err}"
        );
    }
}

#[test]
fn vector_snapshot_checks() {
    let doc = load_vector("routing.json");
    for case in doc["snapshot"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let snap = snapshot(case["prompts"].clone());
        let mut got: Vec<Value> = validate_snapshot_policies(&snap, Some(&PricingTable::builtin()))
            .into_iter()
            .map(|(p, e)| json!({"prompt": p, "error": e.kind(), "field": e.details()["field"]}))
            .collect();
        got.sort_by_key(|v| v["prompt"].as_str().unwrap_or("").to_string());
        assert_eq!(Value::Array(got), case["errors"], "{name}");
        // Compiling the snapshot reports the same problems as diagnostics.
        let client = Client::builder().project("p").build().unwrap();
        let out = client
            .apply(Update::Snapshot(snap.clone()), Source::Memory)
            .unwrap();
        for e in case["errors"].as_array().unwrap() {
            let prompt = e["prompt"].as_str().unwrap();
            assert!(
                out.diagnostics
                    .iter()
                    .any(|d| d.prompt == prompt && d.error.kind() == "POLICY_ERROR"),
                "{name}: no diagnostic for {prompt}: {:?}",
                out.diagnostics
            );
            // And routing that prompt reports it.
            let err = client
                .route(prompt, &context! { name => "x" }, None)
                .unwrap_err();
            assert_eq!(err.kind(), "POLICY_ERROR", "{name}: {err}");
        }
    }
}

fn reply_prompt(policy: Value) -> Value {
    json!([{
        "name": "support/reply",
        "versions": [
            {"version": 6, "type": "text", "template": "v6: hi {{ name }}", "config": {"provider": "openai", "model": "gpt-4o-mini"}},
            {"version": 7, "type": "text", "template": "v7: hello {{ name }}", "config": {"provider": "openai", "model": "gpt-4o-mini"},
             "variants": {"claude": {"config": {"provider": "anthropic", "model": "claude-haiku-4-5"}}}}
        ],
        "labels": {"production": 6, "staging": 7},
        "policy": policy
    }])
}

#[test]
fn canary_sends_five_percent_of_production_to_version_7() {
    let client = client_with(
        reply_prompt(json!({
            "id": "reply-canary", "strategy": "canary", "labels": ["production"], "canary_percent": 5,
            "targets": [
                {"provider": "openai", "model": "gpt-4o-mini", "version": 6},
                {"provider": "openai", "model": "gpt-4o-mini", "version": 7}
            ]
        })),
        None,
    );
    let vars = context! { name => "Dana" };
    let n = 20_000;
    let mut v7 = 0;
    for i in 0..n {
        let r = client
            .route("support/reply", &vars, Some(&format!("user-{i}")))
            .unwrap();
        let text = r.rendered.text.clone().unwrap();
        if r.prompt.version() == 7 {
            v7 += 1;
            assert_eq!(text, "v7: hello Dana");
        } else {
            assert_eq!(text, "v6: hi Dana");
        }
        assert_eq!(r.decision.label.as_deref(), Some("production"));
    }
    let share = v7 as f64 / n as f64;
    assert!((0.044..0.056).contains(&share), "canary share {share}");
    // The shared vector's keys land where Python says they do.
    let doc = load_vector("routing.json");
    let canary = doc["sticky"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["policy"]["strategy"] == "canary")
        .unwrap();
    for k in canary["cases"].as_array().unwrap() {
        let r = client
            .route("support/reply", &vars, k["key"].as_str())
            .unwrap();
        assert_eq!(json!(r.target().id), k["target"]);
        assert_eq!(json!(r.decision.bucket), k["bucket"]);
    }
    // Staging is not under the policy: its own version and config.
    let r = client
        .route_with(
            "support/reply",
            &vars,
            &RouteOptions {
                key: Some("user-1".into()),
                label: Some("staging".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.prompt.version(), 7);
    assert_eq!(r.target().model, "gpt-4o-mini");
    assert_eq!(r.decision.policy_id(), "support/reply");
}

#[test]
fn weighted_split_matches_weights() {
    let client = client_with(
        reply_prompt(json!({
            "strategy": "weighted",
            "targets": [
                {"id": "mini", "provider": "openai", "model": "gpt-4o-mini", "weight": 70},
                {"id": "claude", "provider": "anthropic", "model": "claude-haiku-4-5", "variant": "claude", "version": 7, "weight": 30}
            ]
        })),
        None,
    );
    let vars = context! { name => "Dana" };
    let mut claude = 0;
    for i in 0..10_000 {
        let r = client
            .route("support/reply", &vars, Some(&format!("k{i}")))
            .unwrap();
        if r.target().id == "claude" {
            claude += 1;
            assert_eq!(r.prompt.variant_name(), Some("claude"));
            assert_eq!(r.rendered.config.model.as_deref(), Some("claude-haiku-4-5"));
        }
        if i == 0 {
            assert!(
                r.decision.reason.contains("sticky bucket"),
                "{}",
                r.decision.reason
            );
        }
    }
    assert!((2800..3200).contains(&claude), "{claude}");
    // Without a key: random but still weighted.
    let mut claude = 0;
    for _ in 0..4000 {
        let r = client.route("support/reply", &vars, None).unwrap();
        claude += usize::from(r.target().id == "claude");
    }
    assert!((1000..1400).contains(&claude), "{claude}");
}

fn long_prompt(policy: Value) -> Value {
    json!([{
        "name": "docs/summarise",
        "versions": [{"version": 1, "type": "text",
            "template": "Summarise:\n{% for i in range(n) %}The quick brown fox jumps over the lazy dog. {% endfor %}",
            "config": {"provider": "openai", "model": "gpt-4o", "max_tokens": 200}}],
        "labels": {"production": 1},
        "policy": policy
    }])
}

#[test]
fn cheapest_uses_exact_tokens_and_skips_small_context_windows() {
    let client = client_with(
        long_prompt(json!({
            "strategy": "cheapest",
            "targets": [
                {"provider": "openai", "model": "gpt-4o"},
                {"provider": "local", "model": "tiny-ctx"},
                {"provider": "openai", "model": "gpt-4o-mini"},
                {"provider": "anthropic", "model": "claude-haiku-4-5"}
            ]
        })),
        None,
    );
    // Small input: the tiny model fits and is cheapest.
    let r = client
        .route("docs/summarise", &context! { n => 5 }, None)
        .unwrap();
    assert_eq!(r.target().model, "tiny-ctx", "{}", r.decision.reason);
    let e = r.decision.estimate.unwrap();
    assert!(e.exact || r.target().model == "tiny-ctx");
    // ~1000+ tokens: it no longer fits (1000-token window incl. 200 output).
    let r = client
        .route("docs/summarise", &context! { n => 100 }, None)
        .unwrap();
    assert_eq!(r.target().model, "gpt-4o-mini", "{}", r.decision.reason);
    let e = r.decision.estimate.unwrap();
    assert!(e.exact);
    let expected_in = promptops_core::tokens::count_text(
        r.rendered.text.as_deref().unwrap(),
        "gpt-4o-mini",
    )
    .count as u64;
    assert_eq!(e.input_tokens, expected_in);
    assert_eq!(e.output_tokens, 200);
    let price = client.pricing().get("gpt-4o-mini").unwrap();
    assert!((e.predicted_cost_usd - price.cost(expected_in, 200, 0)).abs() < 1e-12);
    assert!(
        r.decision
            .skipped
            .iter()
            .any(|s| s.target == "local/tiny-ctx" && s.reason.contains("context window")),
        "{:?}",
        r.decision.skipped
    );
    assert!(
        r.decision.reason.starts_with("cheapest of 3 fitting"),
        "{}",
        r.decision.reason
    );
    // Fallback order: next cheapest first.
    let order: Vec<&str> = r.decision.fallbacks().map(|t| t.model.as_str()).collect();
    assert_eq!(order, vec!["claude-haiku-4-5", "gpt-4o"]);
}

#[test]
fn best_quality_respects_the_budget_and_learns_from_scores() {
    let client = client_with(
        long_prompt(json!({
            "strategy": "best_quality",
            "budget": {"max_cost_usd": 0.005},
            "min_samples": 3,
            "expected_output_tokens": 100,
            "targets": [
                {"id": "big", "provider": "openai", "model": "o1", "quality": 0.95},
                {"id": "mid", "provider": "openai", "model": "gpt-4o", "quality": 0.85},
                {"id": "small", "provider": "openai", "model": "gpt-4o-mini", "quality": 0.7}
            ]
        })),
        None,
    );
    let vars = context! { n => 50 };
    let r = client.route("docs/summarise", &vars, None).unwrap();
    // o1 at $15/$60 per Mtok is over $0.005 for ~500 + 100 tokens.
    assert_eq!(r.target().id, "mid", "{}", r.decision.reason);
    assert!(
        r.decision
            .skipped
            .iter()
            .any(|s| s.target == "big" && s.reason.contains("budget"))
    );
    // Observed scores replace the prior once there are enough.
    let d = r.decision.clone();
    for _ in 0..3 {
        client.record_quality(&d, 0.2);
    }
    let r = client.route("docs/summarise", &vars, None).unwrap();
    assert_eq!(r.target().id, "small", "{}", r.decision.reason);
    assert!(r.decision.reason.contains("prior"), "{}", r.decision.reason);
    // A budget nothing meets: no route, with the reasons.
    let tight = client_with(
        long_prompt(json!({
            "strategy": "best_quality", "budget": {"max_cost_usd": 0.0000001},
            "targets": [{"provider": "openai", "model": "gpt-4o"}]
        })),
        None,
    );
    let err = tight.route("docs/summarise", &vars, None).unwrap_err();
    assert_eq!(err.kind(), "NO_ROUTE");
    assert!(err.to_string().contains("budget"), "{err}");
}

#[test]
fn fastest_learns_latency_from_recorded_outcomes() {
    let clock = Arc::new(ManualClock::new(0));
    let client = client_with(
        reply_prompt(json!({
            "strategy": "fastest", "min_samples": 2,
            "targets": [
                {"id": "a", "provider": "openai", "model": "gpt-4o-mini"},
                {"id": "b", "provider": "anthropic", "model": "claude-haiku-4-5", "variant": "claude", "version": 7}
            ]
        })),
        Some(clock),
    );
    let vars = context! { name => "x" };
    for _ in 0..4 {
        let r = client.route("support/reply", &vars, None).unwrap();
        let l = if r.target().id == "a" { 900.0 } else { 250.0 };
        client.record(&r.decision, &Outcome::success(l));
    }
    let r = client.route("support/reply", &vars, None).unwrap();
    assert_eq!(r.target().id, "b");
    assert!(
        r.decision.reason.contains("250 ms"),
        "{}",
        r.decision.reason
    );
    let stats = client.routing().stats();
    assert_eq!(stats.len(), 2);
    assert!(stats.iter().all(|s| s.stats.calls == 2));
}

#[test]
fn breaker_opens_half_opens_and_closes_with_an_injected_clock() {
    let clock = Arc::new(ManualClock::new(1_000));
    let client = client_with(
        reply_prompt(json!({
            "strategy": "failover",
            "targets": [
                {"id": "primary", "provider": "openai", "model": "gpt-4o-mini"},
                {"id": "backup", "provider": "anthropic", "model": "claude-haiku-4-5", "variant": "claude", "version": 7}
            ]
        })),
        Some(clock.clone()),
    );
    let vars = context! { name => "x" };
    for _ in 0..3 {
        let r = client.route("support/reply", &vars, None).unwrap();
        assert_eq!(r.target().id, "primary");
        client.record(&r.decision, &Outcome::failure(FailureClass::ServerError));
    }
    assert!(matches!(
        client.routing().breaker_state("openai/gpt-4o-mini"),
        BreakerState::Open { until_ms: 6_000 }
    ));
    let r = client.route("support/reply", &vars, None).unwrap();
    assert_eq!(r.target().id, "backup", "{}", r.decision.reason);
    assert!(
        r.decision.reason.contains("first healthy"),
        "{}",
        r.decision.reason
    );
    assert_eq!(r.decision.skipped[0].target, "primary");
    // Cooldown over: one probe goes to the primary.
    clock.set(6_000);
    let probe = client.route("support/reply", &vars, None).unwrap();
    assert_eq!(probe.target().id, "primary");
    let other = client.route("support/reply", &vars, None).unwrap();
    assert_eq!(other.target().id, "backup", "one probe at a time");
    client.record(&probe.decision, &Outcome::success(120.0));
    assert_eq!(
        client.routing().breaker_state("openai/gpt-4o-mini"),
        BreakerState::Closed
    );
    assert_eq!(
        client
            .route("support/reply", &vars, None)
            .unwrap()
            .target()
            .id,
        "primary"
    );
    // A 429 with Retry-After keeps the endpoint out for exactly that long.
    let r = client.route("support/reply", &vars, None).unwrap();
    client.record(
        &r.decision,
        &Outcome {
            error: Some(FailureClass::RateLimited),
            status: Some(429),
            retry_after_ms: Some(2_500),
            ..Default::default()
        },
    );
    clock.advance(2_499);
    assert_eq!(
        client
            .route("support/reply", &vars, None)
            .unwrap()
            .target()
            .id,
        "backup"
    );
    clock.advance(1);
    assert_eq!(
        client
            .route("support/reply", &vars, None)
            .unwrap()
            .target()
            .id,
        "primary"
    );
    // Every circuit open: no route, and the message says why.
    let r = client.route("support/reply", &vars, None).unwrap();
    for t in [0, 1] {
        for _ in 0..3 {
            client.record_target(
                &r.decision,
                t,
                &Outcome::failure(FailureClass::Timeout),
                None,
            );
        }
    }
    let err = client.route("support/reply", &vars, None).unwrap_err();
    assert_eq!(err.kind(), "NO_ROUTE");
    assert!(err.to_string().contains("circuit open"), "{err}");
}

#[test]
fn adaptive_epsilon_greedy_is_deterministic_with_a_seed() {
    let policy = Arc::new(
        parse_policy(
            &json!({"strategy": "adaptive", "min_samples": 5,
                "adaptive": {"algorithm": "epsilon_greedy", "epsilon": 0.2, "reward": "quality"},
                "targets": [
                    {"id": "a", "provider": "openai", "model": "gpt-4o-mini"},
                    {"id": "b", "provider": "openai", "model": "gpt-4o"},
                    {"id": "c", "provider": "anthropic", "model": "claude-haiku-4-5"}]}),
            Some("m/p"),
        )
        .unwrap(),
    );
    let run = |seed: u64| -> (Vec<usize>, usize) {
        let r = Router::new(RouterConfig {
            seed,
            clock: Arc::new(ManualClock::new(0)),
            ..Default::default()
        });
        let mut picks = Vec::new();
        let mut explored = 0;
        for _ in 0..300 {
            let d = r.decide(&policy, &RouteInput::default()).unwrap();
            explored += usize::from(d.reason.contains("at random"));
            let q = [0.3, 0.9, 0.5][d.target];
            r.record(
                &policy.targets[d.target],
                &Outcome {
                    quality: Some(q),
                    latency_ms: Some(100.0),
                    ..Default::default()
                },
            );
            picks.push(d.target);
        }
        (picks, explored)
    };
    let (a, explored) = run(11);
    let (b, _) = run(11);
    assert_eq!(a, b, "same seed, same choices");
    let best = a.iter().filter(|&&t| t == 1).count();
    assert!(best > 200, "{best}");
    assert!((30..90).contains(&explored), "{explored}");
    assert_ne!(run(12).0, a);
}

#[test]
fn prompts_without_a_policy_route_to_their_config() {
    let client = client_with(
        json!([
            {"name": "a/plain", "versions": [{"version": 1, "type": "text", "template": "x", "config": {"model": "claude-haiku-4-5"}}], "labels": {"production": 1}},
            {"name": "a/nomodel", "versions": [{"version": 1, "type": "text", "template": "x"}], "labels": {"production": 1}},
            {"name": "a/unpriced", "versions": [{"version": 1, "type": "text", "template": "x"}], "labels": {"production": 1},
             "policy": {"strategy": "failover", "targets": [{"provider": "openai", "model": "gpt-9000"}]}}
        ]),
        None,
    );
    let r = client.route("a/plain", &context! {}, None).unwrap();
    assert_eq!(
        (r.target().provider.as_str(), r.target().model.as_str()),
        ("anthropic", "claude-haiku-4-5")
    );
    assert_eq!(r.decision.policy_id(), "a/plain");
    let err = client.route("a/nomodel", &context! {}, None).unwrap_err();
    assert_eq!(err.kind(), "NO_ROUTE");
    // A model the client's pricing table does not know: a policy error
    // naming the field.
    let err = client.route("a/unpriced", &context! {}, None).unwrap_err();
    assert_eq!(err.kind(), "POLICY_ERROR");
    assert_eq!(err.details()["field"], "targets[0].model");
}

#[test]
fn policies_in_prompt_files_load_and_bad_ones_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m")).unwrap();
    std::fs::write(
        dir.path().join("m/good.prompt"),
        "---\nmodel: openai/gpt-4o-mini\npolicy:\n  strategy: weighted\n  targets:\n    - {provider: openai, model: gpt-4o-mini, weight: 90}\n    - {provider: anthropic, model: claude-haiku-4-5, weight: 10}\n---\nHi {{ name }}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m/bad.prompt"),
        "---\nmodel: openai/gpt-4o-mini\npolicy:\n  strategy: weighted\n  targets:\n    - {provider: openai, model: gpt-4o-mini, weight: 90}\n---\nHi {{ name }}",
    )
    .unwrap();
    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    let diags = client.diagnostics();
    assert!(
        diags
            .iter()
            .any(|d| d.prompt == "m/bad" && d.error.kind() == "POLICY_ERROR"),
        "{diags:?}"
    );
    assert!(!diags.iter().any(|d| d.prompt == "m/good"), "{diags:?}");
    let r = client
        .route("m/good", &context! { name => "x" }, Some("u1"))
        .unwrap();
    assert!(r.decision.bucket.is_some());
    // Rendering the bad one still works; routing it reports the policy.
    assert!(
        client
            .get("m/bad")
            .unwrap()
            .render(&context! { name => "x" })
            .is_ok()
    );
    let err = client
        .route("m/bad", &context! { name => "x" }, None)
        .unwrap_err();
    assert_eq!(err.details()["field"], "targets");
}
