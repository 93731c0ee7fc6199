//! Telemetry: events from renders, decisions and calls; the Prometheus text
//! (OpenTelemetry GenAI names); the JSON batch; PII masking before export;
//! bounded buffers with counted drops; the uploader.

use std::sync::Arc;
use std::time::Duration;

use promptops_core::provider::{CallOptions, CompleteOptions, Endpoint, Uploader};
use promptops_core::route::FailureClass;
use promptops_core::telemetry::{BasicPiiMasker, Event, EventKind, Telemetry, TelemetryConfig};
use promptops_core::{
    Client, Outcome, PromptData, RouteOptions, SnapshotData, Source, Update, context,
};
use promptops_tests::mock_provider::{Behavior, MockProvider, refused_url};
use serde_json::json;

fn client(tel: TelemetryConfig, mock: Option<&MockProvider>) -> Client {
    let mut b = Client::builder().project("acme").telemetry(tel);
    if let Some(m) = mock {
        b = b
            .provider(Endpoint::openai().base_url(m.url()).api_key("k"))
            .provider(Endpoint::anthropic().base_url(m.url()).api_key("k"));
    }
    let c = b.build().unwrap();
    let prompts: Vec<PromptData> = serde_json::from_value(json!([{
        "name": "support/reply",
        "versions": [{"version": 3, "type": "text", "template": "Hello {{ name }}",
            "config": {"provider": "openai", "model": "gpt-4o-mini"},
            "variants": {"claude": {"config": {"provider": "anthropic", "model": "claude-haiku-4-5"}}}}],
        "labels": {"production": 3},
        "policy": {"strategy": "failover", "targets": [
            {"provider": "openai", "model": "gpt-4o-mini"},
            {"provider": "anthropic", "model": "claude-haiku-4-5", "variant": "claude"}]}
    }]))
    .unwrap();
    c.apply(
        Update::Snapshot(SnapshotData::new("acme", 1, prompts)),
        Source::Memory,
    )
    .unwrap();
    c
}

#[test]
fn renders_decisions_and_calls_become_metrics() {
    let c = client(TelemetryConfig::default(), None);
    let p = c.get("support/reply").unwrap();
    p.render(&context! { name => "Dana" }).unwrap();
    assert!(p.render(&context! {}).is_err());
    let r = c
        .route("support/reply", &context! { name => "Dana" }, Some("u1"))
        .unwrap();
    c.record(
        &r.decision,
        &Outcome {
            latency_ms: Some(420.0),
            ttft_ms: Some(150.0),
            input_tokens: Some(12),
            output_tokens: Some(300),
            ..Default::default()
        },
    );
    c.record(
        &r.decision,
        &Outcome::failure(FailureClass::Timeout).tap(|o| o.latency_ms = Some(30_000.0)),
    );
    let tel = c.telemetry().unwrap();
    let text = tel.prometheus();
    let l = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\",promptops_prompt_name=\"support/reply\",promptops_prompt_version=\"3\",promptops_prompt_variant=\"\"";
    for line in [
        "# TYPE gen_ai_client_token_usage histogram".to_string(),
        format!("gen_ai_client_token_usage_bucket{{{l},gen_ai_token_type=\"input\",le=\"16\"}} 1"),
        format!("gen_ai_client_token_usage_bucket{{{l},gen_ai_token_type=\"input\",le=\"4\"}} 0"),
        format!("gen_ai_client_token_usage_bucket{{{l},gen_ai_token_type=\"output\",le=\"256\"}} 0"),
        format!("gen_ai_client_token_usage_bucket{{{l},gen_ai_token_type=\"output\",le=\"1024\"}} 1"),
        format!("gen_ai_client_token_usage_sum{{{l},gen_ai_token_type=\"output\"}} 300"),
        "# TYPE gen_ai_client_operation_duration_seconds histogram".to_string(),
        format!("gen_ai_client_operation_duration_seconds_bucket{{{l},le=\"0.64\"}} 1"),
        format!("gen_ai_client_operation_duration_seconds_count{{{l},error_type=\"timeout\"}} 1"),
        format!("gen_ai_client_operation_time_to_first_chunk_seconds_bucket{{{l},le=\"0.16\"}} 1"),
        "promptops_renders_total{promptops_prompt_name=\"support/reply\",promptops_prompt_version=\"3\",promptops_prompt_label=\"production\",promptops_prompt_variant=\"\"} 2".to_string(),
        "promptops_renders_total{promptops_prompt_name=\"support/reply\",promptops_prompt_version=\"3\",promptops_prompt_label=\"production\",promptops_prompt_variant=\"\",error_type=\"VARIABLE_ERROR\"} 1".to_string(),
        "promptops_route_decisions_total{promptops_prompt_name=\"support/reply\",promptops_route_strategy=\"failover\",promptops_route_target=\"openai/gpt-4o-mini\"} 1".to_string(),
        "promptops_telemetry_events_total{kind=\"call\"} 2".to_string(),
        "promptops_telemetry_dropped_total{reason=\"queue_full\"} 0".to_string(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in\n{text}");
    }
    // Cost: computed from tokens and the price table.
    let cost = c.pricing().get("gpt-4o-mini").unwrap().cost(12, 300, 0);
    assert!(
        text.contains(&format!("promptops_cost_usd_total{{{l}}} {cost}")),
        "{text}"
    );
    // The batch has every event, in order, with the route reason.
    let b = tel.take_batch(100).unwrap();
    assert_eq!(b.schema, "promptops.telemetry.v1");
    assert_eq!(b.project.as_deref(), Some("acme"));
    let kinds: Vec<EventKind> = b.events.iter().map(|e| e.kind).collect();
    use EventKind::*;
    assert_eq!(kinds, vec![Render, Render, Render, Decision, Call, Call]);
    let call = &b.events[4];
    assert_eq!(call.cost_usd, Some(cost));
    assert_eq!(call.ttft_ms, Some(150.0));
    assert!(
        call.route_reason
            .as_deref()
            .unwrap()
            .contains("failover order")
    );
    assert_eq!(b.events[5].error_type.as_deref(), Some("timeout"));
    let v: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
    assert_eq!(v["events"][3]["kind"], "decision");
    assert_eq!(v["events"][3]["strategy"], "failover");
    assert_eq!(v["events"][4]["prompt"], "support/reply");
    assert_eq!(v["events"][4]["version"], 3);
    assert_eq!(v["events"][4]["label"], "production");
}

/// `route_decide` + `RouteChoice::render` (or a render from the plan
/// reported with `record_plan_render`) is `route_with` in two steps: the
/// same decision and the same events (the render, then the decision).
#[test]
fn route_decide_then_render_is_route_with() {
    let c = client(TelemetryConfig::default(), None);
    let tel = c.telemetry().unwrap().clone();
    let vars = context! { name => "Dana" };
    let opts = RouteOptions {
        key: Some("u1".into()),
        label: None,
        attributes: vec![("tier".into(), "gold".into())],
    };
    let strip = |mut ev: Event| {
        ev.ts_ms = 0;
        ev.latency_ms = None;
        ev
    };
    let events = |tel: &Telemetry| -> Vec<Event> {
        tel.flush();
        tel.take_batch(1000)
            .map(|b| b.events.into_iter().map(strip).collect())
            .unwrap_or_default()
    };
    let whole = c.route_with("support/reply", &vars, &opts).unwrap();
    let expected = events(&tel);
    assert_eq!(
        expected.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Render, EventKind::Decision]
    );
    assert_eq!(expected[1].attributes.len(), 1);

    let choice = c.route_decide("support/reply", &opts).unwrap().unwrap();
    assert!(choice.telemetry_enabled());
    assert!(events(&tel).is_empty(), "deciding records nothing");
    assert_eq!(choice.prompt.body_id(), whole.prompt.body_id());
    assert!(choice.prompt.portable_plan().is_some());
    let rendered = choice.render(&vars).unwrap();
    assert_eq!(rendered.text, whole.rendered.text);
    assert_eq!(events(&tel), expected);
    let routed = choice.into_routed(rendered);
    assert_eq!(
        serde_json::to_value(&routed.decision).unwrap(),
        serde_json::to_value(&whole.decision)
            .unwrap()
            .tap(|v| v["at_ms"] = serde_json::to_value(routed.decision.at_ms).unwrap())
    );

    // Rendered outside the core from the plan: the same two events.
    let choice = c.route_decide("support/reply", &opts).unwrap().unwrap();
    choice.record_plan_render(Duration::from_micros(3));
    assert_eq!(events(&tel), expected);

    // A failed render records its error and no decision.
    let choice = c.route_decide("support/reply", &opts).unwrap().unwrap();
    assert!(choice.render(&context! {}).is_err());
    let failed = events(&tel);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].kind, EventKind::Render);
    assert!(failed[0].error_type.is_some());

    // Body ids: one per compiled body, the same for the same prompt.
    let p = c.get("support/reply").unwrap();
    assert_eq!(p.body_id(), whole.prompt.body_id());
    assert_ne!(p.variant("claude").unwrap().body_id(), p.body_id());
}

#[test]
fn route_decide_leaves_strategies_that_render_every_target_to_route_with() {
    let c = Client::builder().project("acme").build().unwrap();
    let prompts: Vec<PromptData> = serde_json::from_value(json!([{
        "name": "support/reply",
        "versions": [{"version": 1, "type": "text", "template": "Hello {{ name }}",
            "config": {"provider": "openai", "model": "gpt-4o-mini"}}],
        "labels": {"production": 1},
        "policy": {"strategy": "cheapest", "targets": [
            {"provider": "openai", "model": "gpt-4o"},
            {"provider": "openai", "model": "gpt-4o-mini"}]}
    }]))
    .unwrap();
    c.apply(
        Update::Snapshot(SnapshotData::new("acme", 1, prompts)),
        Source::Memory,
    )
    .unwrap();
    let opts = RouteOptions::key("u1");
    assert!(c.route_decide("support/reply", &opts).unwrap().is_none());
    let r = c
        .route_with("support/reply", &context! { name => "Dana" }, &opts)
        .unwrap();
    assert_eq!(r.target().model, "gpt-4o-mini");
    assert!(c.route_decide("nope/missing", &opts).is_err());
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for Outcome {}
impl Tap for serde_json::Value {}

#[test]
fn pii_is_masked_before_export() {
    let c = client(TelemetryConfig::default().masker(BasicPiiMasker), None);
    let r = c
        .route_with(
            "support/reply",
            &context! { name => "Dana" },
            &RouteOptions {
                key: Some("dana@example.com".into()),
                attributes: vec![
                    ("user".into(), "dana.k@example.com".into()),
                    ("tier".into(), "gold".into()),
                    ("phone".into(), "+65 9123 4567".into()),
                ],
                ..Default::default()
            },
        )
        .unwrap();
    let _ = r;
    let tel = c.telemetry().unwrap();
    let b = tel.take_batch(10).unwrap();
    let json = String::from_utf8(b.to_json()).unwrap();
    assert!(!json.contains("example.com"), "{json}");
    assert!(!json.contains("9123"), "{json}");
    assert!(json.contains("\"gold\""), "{json}");
    assert!(
        json.contains("<email>") && json.contains("<number>"),
        "{json}"
    );
    // A custom hook sees the field names.
    let c = client(
        TelemetryConfig::default()
            .masker(|field: &str, _v: &str| (field == "prompt").then(|| "redacted".to_string())),
        None,
    );
    c.get("support/reply")
        .unwrap()
        .render(&context! { name => "x" })
        .unwrap();
    let tel = c.telemetry().unwrap();
    assert!(
        tel.prometheus()
            .contains("promptops_prompt_name=\"redacted\"")
    );
    assert_eq!(&*tel.take_batch(1).unwrap().events[0].prompt, "redacted");
}

#[test]
fn full_buffers_drop_and_count_never_block() {
    let tel = Arc::new(Telemetry::new(TelemetryConfig {
        capacity: 100,
        export_capacity: 50,
        ..Default::default()
    }));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = tel.clone();
            std::thread::spawn(move || {
                for _ in 0..2500 {
                    t.record(Event::new(EventKind::Render, "m/p"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = tel.counters();
    assert_eq!(c.recorded + c.dropped_queue_full, 10_000);
    assert_eq!(c.recorded, 100);
    let text = tel.prometheus();
    assert!(
        text.contains("promptops_telemetry_dropped_total{reason=\"queue_full\"} 9900"),
        "{text}"
    );
    assert!(
        text.contains("promptops_telemetry_dropped_total{reason=\"export_full\"} 50"),
        "{text}"
    );
    assert!(
        text.contains("promptops_telemetry_events_total{kind=\"render\"} 100"),
        "{text}"
    );
    assert_eq!(tel.take_batch(1000).unwrap().events.len(), 50);
    // Sustained load with regular flushes: memory stays bounded by the two
    // capacities, whatever the volume.
    for round in 0..50 {
        for _ in 0..1000 {
            tel.record(Event::new(EventKind::Call, "m/p"));
        }
        tel.flush();
        assert!(tel.pending() <= 50, "round {round}");
    }
}

#[tokio::test]
async fn complete_records_every_attempt_and_the_uploader_delivers_batches() {
    let mock = MockProvider::start().await;
    mock.script(
        "gpt-4o-mini",
        [Behavior::Stall {
            ms: 1000,
            text: "late".into(),
        }],
    );
    let c = client(
        TelemetryConfig::default().masker(BasicPiiMasker),
        Some(&mock),
    );
    let opts = CompleteOptions::default().call(CallOptions {
        stream: true,
        ttft_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let out = c
        .complete_with("support/reply", &context! { name => "Dana" }, &opts)
        .await
        .unwrap();
    assert_eq!(out.target.model, "claude-haiku-4-5");
    assert_eq!(out.variant.as_deref(), Some("claude"));
    let tel = c.telemetry().unwrap().clone();
    let text = tel.prometheus();
    assert!(text.contains("error_type=\"ttft_timeout\""), "{text}");
    assert!(text.contains("gen_ai_provider_name=\"anthropic\",gen_ai_request_model=\"claude-haiku-4-5\",promptops_prompt_name=\"support/reply\",promptops_prompt_version=\"3\",promptops_prompt_variant=\"claude\""), "{text}");
    let up = Uploader::new(&mock.root(), Some("registry-key")).unwrap();
    let sent = up.upload_once(&tel).await.unwrap();
    assert!(sent >= 4, "{sent}");
    let batches = mock.telemetry_batches();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b["schema"], "promptops.telemetry.v1");
    assert_eq!(b["project"], "acme");
    let calls: Vec<&serde_json::Value> = b["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "call")
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["error_type"], "ttft_timeout");
    assert_eq!(calls[0]["attempt"], 1);
    assert_eq!(calls[1]["attempt"], 2);
    assert_eq!(calls[1]["stream"], true);
    assert!(calls[1]["ttft_ms"].as_f64().is_some());
    assert!(calls[1]["output_tokens"].as_u64().is_some());
    // Nothing left; a dead registry: the batch is dropped and counted.
    assert_eq!(up.upload_once(&tel).await.unwrap(), 0);
    c.get("support/reply")
        .unwrap()
        .render(&context! { name => "x" })
        .unwrap();
    let dead = Uploader::new(refused_url().trim_end_matches("/v1"), None).unwrap();
    let err = dead.upload_once(&tel).await.unwrap_err();
    assert_eq!(err.kind(), "REGISTRY_UNAVAILABLE");
    assert_eq!(tel.counters().dropped_upload_failed, 1);
    assert!(
        tel.prometheus()
            .contains("promptops_telemetry_dropped_total{reason=\"upload_failed\"} 1")
    );
}
