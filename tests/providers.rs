//! `Client::complete` against the mock provider: both protocols, streaming
//! and not, failover on connect errors / timeouts / 429 / 5xx / broken
//! streams, time-to-first-token timeouts, the breaker, fallback prompts and
//! API-key handling.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promptops_core::provider::{CallOptions, CompleteOptions, Endpoint};
use promptops_core::{Client, PromptData, SnapshotData, Source, Update, context};
use promptops_tests::mock_provider::{Behavior, MockProvider, refused_url};
use serde_json::{Value, json};

const MINI: &str = "gpt-4o-mini";
const HAIKU: &str = "claude-haiku-4-5";

fn prompts(policy: Value) -> Value {
    json!([
        {"name": "support/reply",
         "versions": [{"version": 1, "type": "chat",
            "messages": [
                {"role": "system", "content": "You are a support agent for {{ company }}."},
                {"role": "user", "content": "Where is order {{ order }}?"}],
            "config": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 100}}],
         "labels": {"production": 1},
         "policy": policy},
        {"name": "support/basic",
         "versions": [{"version": 1, "type": "text", "template": "Order {{ order }} status?",
            "config": {"provider": "anthropic", "model": "claude-haiku-4-5"}}],
         "labels": {"production": 1}}
    ])
}

fn failover(first: &str, second: &str) -> Value {
    let t = |m: &str| {
        if m == HAIKU {
            json!({"provider": "anthropic", "model": HAIKU})
        } else {
            json!({"provider": "openai", "model": m})
        }
    };
    json!({"strategy": "failover", "targets": [t(first), t(second)]})
}

fn client(mock: &MockProvider, policy: Value, call: CallOptions) -> Client {
    client_with(
        Endpoint::openai()
            .base_url(mock.url())
            .api_key("sk-test-openai"),
        Endpoint::anthropic()
            .base_url(mock.url())
            .api_key("sk-test-anthropic"),
        policy,
        call,
    )
}

fn client_with(openai: Endpoint, anthropic: Endpoint, policy: Value, call: CallOptions) -> Client {
    let c = Client::builder()
        .project("p")
        .provider(openai)
        .provider(anthropic)
        .call_options(call)
        .build()
        .expect("client");
    let prompts: Vec<PromptData> = serde_json::from_value(prompts(policy)).expect("prompts");
    c.apply(
        Update::Snapshot(SnapshotData::new("p", 1, prompts)),
        Source::Memory,
    )
    .expect("apply");
    c
}

fn vars() -> promptops_core::Value {
    context! { company => "Acme", order => "A-1" }
}

fn streaming() -> CallOptions {
    CallOptions {
        stream: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn openai_non_streaming() {
    let mock = MockProvider::start().await;
    let c = client(&mock, failover(MINI, HAIKU), CallOptions::default());
    let out = c
        .complete("support/reply", &vars(), Some("user-1"))
        .await
        .unwrap();
    assert_eq!(out.text, "Hello from gpt-4o-mini");
    assert_eq!(out.target.model, MINI);
    assert_eq!(out.attempts.len(), 1);
    assert!(out.attempts[0].ok);
    assert!(out.usage.reported);
    // The mock counts words: 7 + 4 in, 3 out.
    assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (11, 3));
    let expected = c.pricing().get(MINI).unwrap().cost(11, 3, 0);
    assert_eq!(out.cost_usd, Some(expected));
    assert!(out.ttft_ms.is_none());
    assert_eq!(out.finish_reason.as_deref(), Some("stop"));
    let req = &mock.received()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.authorization.as_deref(), Some("Bearer sk-test-openai"));
    assert_eq!(req.body["messages"][0]["role"], "system");
    assert_eq!(req.body["messages"][1]["content"], "Where is order A-1?");
    assert_eq!(req.body["temperature"], 0.2);
    assert_eq!(req.body["max_tokens"], 100);
    assert!(!req.stream);
    // Stats were fed.
    let stats = c.routing().stats();
    assert_eq!(stats[0].stats.successes, 1);
}

#[tokio::test]
async fn anthropic_streaming_with_chunks() {
    let mock = MockProvider::start().await;
    mock.script(
        HAIKU,
        [Behavior::Ok {
            text: "Your order ships today".into(),
            delay_ms: 0,
            chunk_delay_ms: 5,
        }],
    );
    let c = client(&mock, failover(HAIKU, MINI), streaming());
    let chunks = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = chunks.clone();
    let opts =
        CompleteOptions::key("u").on_chunk(move |t| sink.lock().unwrap().push(t.to_string()));
    let out = c
        .complete_with("support/reply", &vars(), &opts)
        .await
        .unwrap();
    assert_eq!(out.text, "Your order ships today");
    assert_eq!(chunks.lock().unwrap().concat(), out.text);
    assert_eq!(chunks.lock().unwrap().len(), 4);
    assert!(out.ttft_ms.unwrap() <= out.latency_ms);
    assert_eq!((out.usage.input_tokens, out.usage.output_tokens), (11, 4));
    assert_eq!(out.finish_reason.as_deref(), Some("end_turn"));
    let req = &mock.received()[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.api_key.as_deref(), Some("sk-test-anthropic"));
    assert_eq!(req.body["system"], "You are a support agent for Acme.");
    assert_eq!(req.body["messages"].as_array().unwrap().len(), 1);
    assert!(req.stream);
}

#[tokio::test]
async fn openai_streaming_and_text_prompts() {
    let mock = MockProvider::start().await;
    let c = client(&mock, failover(MINI, HAIKU), streaming());
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.text, "Hello from gpt-4o-mini");
    assert!(out.ttft_ms.is_some());
    assert!(out.usage.reported, "include_usage chunk read");
    assert_eq!(
        mock.received()[0].body["stream_options"]["include_usage"],
        true
    );
    // A text prompt is sent as one user message.
    let out = c.complete("support/basic", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    let req = &mock.received()[1];
    assert_eq!(
        req.body["messages"],
        json!([{"role": "user", "content": "Order A-1 status?"}])
    );
}

#[tokio::test]
async fn fails_over_on_5xx_and_429_and_honours_retry_after() {
    let mock = MockProvider::start().await;
    mock.script(MINI, [Behavior::status(503), Behavior::rate_limited("30")]);
    let c = client(&mock, failover(MINI, HAIKU), CallOptions::default());
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts.len(), 2);
    assert_eq!(out.attempts[0].status, Some(503));
    assert_eq!(out.attempts[0].error_type.as_deref(), Some("server_error"));
    assert!(out.attempts[1].ok);
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts[0].status, Some(429));
    assert_eq!(out.attempts[0].retry_after_ms, Some(30_000));
    // Retry-After: the endpoint is left alone, not even tried.
    let before = mock.count(MINI);
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts.len(), 1);
    assert_eq!(mock.count(MINI), before);
    assert!(
        out.decision
            .skipped
            .iter()
            .any(|s| s.target == "openai/gpt-4o-mini")
    );
    assert!(
        out.decision.reason.contains("first healthy"),
        "{}",
        out.decision.reason
    );
}

#[tokio::test]
async fn fails_over_on_connection_refused() {
    let mock = MockProvider::start().await;
    let c = client_with(
        Endpoint::openai().base_url(refused_url()).api_key("k"),
        Endpoint::anthropic().base_url(mock.url()).api_key("k"),
        failover(MINI, HAIKU),
        CallOptions::default(),
    );
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts[0].error_type.as_deref(), Some("connect"));
}

#[tokio::test]
async fn broken_streams_fail_over_before_the_first_token_only() {
    let mock = MockProvider::start().await;
    mock.script(
        MINI,
        [
            Behavior::Reset { tokens: 0 },
            Behavior::Malformed { tokens: 0 },
        ],
    );
    let c = client(&mock, failover(MINI, HAIKU), streaming());
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts[0].error_type.as_deref(), Some("stream_error"));
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(
        out.attempts[0].error_type.as_deref(),
        Some("malformed_response")
    );

    // After the first token the error surfaces: no failover.
    mock.script(
        MINI,
        [
            Behavior::Reset { tokens: 2 },
            Behavior::Malformed { tokens: 3 },
        ],
    );
    let haiku_calls = mock.count(HAIKU);
    let chunks = Arc::new(Mutex::new(0usize));
    let sink = chunks.clone();
    let opts = CompleteOptions::default().on_chunk(move |_| *sink.lock().unwrap() += 1);
    let err = c
        .complete_with("support/reply", &vars(), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PROVIDER_ERROR");
    assert_eq!(err.details()["error_type"], "stream_error");
    assert_eq!(err.details()["attempts"], 1);
    assert!(err.to_string().contains("after"), "{err}");
    assert_eq!(*chunks.lock().unwrap(), 2);
    let err = c
        .complete_with("support/reply", &vars(), &opts)
        .await
        .unwrap_err();
    assert_eq!(err.details()["error_type"], "malformed_response");
    assert_eq!(mock.count(HAIKU), haiku_calls, "never failed over");
    // Non-streaming: a truncated body and a non-JSON body fail over too.
    mock.script(
        MINI,
        [
            Behavior::Reset { tokens: 0 },
            Behavior::Malformed { tokens: 0 },
        ],
    );
    let c = client(&mock, failover(MINI, HAIKU), CallOptions::default());
    for _ in 0..2 {
        let out = c.complete("support/reply", &vars(), None).await.unwrap();
        assert_eq!(out.target.model, HAIKU, "{:?}", out.attempts);
    }
}

#[tokio::test]
async fn time_to_first_token_timeout_fails_over() {
    let mock = MockProvider::start().await;
    mock.script(
        MINI,
        [Behavior::Stall {
            ms: 1500,
            text: "late".into(),
        }],
    );
    let c = client(
        &mock,
        failover(MINI, HAIKU),
        CallOptions {
            stream: true,
            ttft_timeout: Duration::from_millis(150),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    let took = t.elapsed();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts[0].error_type.as_deref(), Some("ttft_timeout"));
    assert!(out.attempts[0].latency_ms >= 140.0, "{:?}", out.attempts[0]);
    assert!(took < Duration::from_millis(1200), "{took:?}");
}

#[tokio::test]
async fn total_timeout_fails_over() {
    let mock = MockProvider::start().await;
    mock.script(MINI, [Behavior::slow("late", 1500)]);
    let c = client(
        &mock,
        failover(MINI, HAIKU),
        CallOptions {
            total_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let t = Instant::now();
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.attempts[0].error_type.as_deref(), Some("timeout"));
    assert!(t.elapsed() < Duration::from_millis(1200));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mock = MockProvider::start().await;
    mock.script(MINI, [Behavior::status(400), Behavior::status(401)]);
    let c = client(&mock, failover(MINI, HAIKU), CallOptions::default());
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    let d = err.details();
    assert_eq!(
        (d["status"].clone(), d["error_type"].clone()),
        (json!(400), json!("client_error"))
    );
    assert!(err.to_string().contains("mock error 400"), "{err}");
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    assert_eq!(err.details()["error_type"], "auth");
    assert_eq!(mock.count(HAIKU), 0);
    // Client errors say nothing about health: the circuit stays closed.
    assert_eq!(
        c.routing().breaker_state("openai/gpt-4o-mini"),
        promptops_core::route::BreakerState::Closed
    );
    // Failover on client errors can be asked for.
    mock.script(MINI, [Behavior::status(400)]);
    let mut on: std::collections::BTreeSet<_> =
        promptops_core::route::FailureClass::DEFAULT_FAILOVER
            .into_iter()
            .collect();
    on.insert(promptops_core::route::FailureClass::ClientError);
    let opts = CompleteOptions::default().call(CallOptions {
        failover_on: Some(on),
        ..Default::default()
    });
    let out = c
        .complete_with("support/reply", &vars(), &opts)
        .await
        .unwrap();
    assert_eq!(out.target.model, HAIKU);
}

#[tokio::test]
async fn breaker_stops_calls_to_a_failing_endpoint() {
    let mock = MockProvider::start().await;
    mock.set_default(MINI, Behavior::status(500));
    let c = client(&mock, failover(MINI, HAIKU), CallOptions::default());
    // Default breaker: 5 outcomes in the window, half failing.
    for _ in 0..5 {
        let out = c.complete("support/reply", &vars(), None).await.unwrap();
        assert_eq!(out.attempts.len(), 2);
    }
    assert_eq!(mock.count(MINI), 5);
    for _ in 0..10 {
        let out = c.complete("support/reply", &vars(), None).await.unwrap();
        assert_eq!(out.attempts.len(), 1);
        assert_eq!(out.target.model, HAIKU);
    }
    assert_eq!(mock.count(MINI), 5, "open circuit: not called");
}

#[tokio::test]
async fn exhausted_targets_report_every_attempt_and_fall_back_to_another_prompt() {
    let mock = MockProvider::start().await;
    mock.set_default(MINI, Behavior::status(502));
    mock.script(HAIKU, [Behavior::status(503)]);
    let c = client(
        &mock,
        failover(MINI, "gpt-4.1-nano"),
        CallOptions::default(),
    );
    mock.set_default("gpt-4.1-nano", Behavior::status(504));
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "PROVIDER_ERROR");
    assert_eq!(err.details()["attempts"], 2);
    assert_eq!(err.details()["status"], 504);

    // With a fallback prompt, its own policy takes over.
    let mut policy = failover(MINI, "gpt-4.1-nano");
    policy["fallback_prompt"] = json!("support/basic");
    let c = client(&mock, policy, CallOptions::default());
    // support/basic routes to Haiku, whose first answer is a 503 (scripted):
    // every attempt of both prompts is counted.
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    assert_eq!(err.details()["attempts"], 3);
    assert_eq!(err.details()["model"], HAIKU);
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(out.prompt, "support/basic");
    assert_eq!(out.target.model, HAIKU);
    assert_eq!(out.text, "Hello from claude-haiku-4-5");
    assert_eq!(out.attempts.len(), 3);
    assert_eq!(out.attempts[0].model, MINI);
}

#[tokio::test]
async fn max_attempts_and_unknown_providers() {
    let mock = MockProvider::start().await;
    mock.script(MINI, [Behavior::status(500)]);
    let mut policy = failover(MINI, HAIKU);
    policy["failover"] = json!({"max_attempts": 1});
    let c = client(&mock, policy, CallOptions::default());
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    assert_eq!(err.details()["attempts"], 1);
    assert_eq!(mock.count(HAIKU), 0);

    let policy = json!({"strategy": "failover", "targets": [
        {"provider": "nowhere", "model": "gpt-4o"},
        {"provider": "openai", "model": "gpt-4o"}]});
    let c = client(&mock, policy, CallOptions::default());
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    assert_eq!(
        out.attempts[0].error_type.as_deref(),
        Some("unsupported_provider")
    );
    assert!(
        out.attempts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("nowhere")
    );
    assert_eq!(out.target.provider, "openai");
}

#[tokio::test]
async fn api_keys_from_the_environment_are_sent_but_never_shown() {
    let mock = MockProvider::start().await;
    // SAFETY: this variable is read by this test only.
    unsafe { std::env::set_var("PROMPTOPS_TEST_LOCAL_KEY", "sk-from-env-9f8e") };
    let mut local = Endpoint::openai_compatible("local", mock.url());
    local.api_key_env = Some("PROMPTOPS_TEST_LOCAL_KEY".into());
    let c = Client::builder()
        .project("p")
        .provider(local)
        .provider(
            Endpoint::openai()
                .base_url(mock.url())
                .api_key("sk-secret-in-code"),
        )
        .build()
        .unwrap();
    let prompts: Vec<PromptData> = serde_json::from_value(prompts(json!({
        "strategy": "failover",
        "targets": [{"provider": "local", "model": "llama-3.3-70b-instruct"}, {"provider": "openai", "model": MINI}]
    })))
    .unwrap();
    c.apply(
        Update::Snapshot(SnapshotData::new("p", 1, prompts)),
        Source::Memory,
    )
    .unwrap();
    mock.script("llama-3.3-70b-instruct", [Behavior::status(500)]);
    let out = c.complete("support/reply", &vars(), None).await.unwrap();
    let rec = mock.received();
    assert_eq!(
        rec[0].authorization.as_deref(),
        Some("Bearer sk-from-env-9f8e")
    );
    assert_eq!(
        rec[1].authorization.as_deref(),
        Some("Bearer sk-secret-in-code")
    );
    for shown in [
        format!("{c:?}"),
        format!("{out:?}"),
        format!("{:?}", Endpoint::openai().api_key("sk-secret-in-code")),
    ] {
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(!shown.contains("sk-from-env"), "{shown}");
    }
    // A provider error names provider, model and status, never the key.
    mock.script(MINI, [Behavior::status(401)]);
    mock.script("llama-3.3-70b-instruct", [Behavior::status(500)]);
    let err = c
        .complete("support/reply", &vars(), None)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("sk-"), "{err}");
    assert!(!format!("{err:?}").contains("sk-"), "{err:?}");
}
