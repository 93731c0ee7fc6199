//! REST API against a real server: prompts, versions, validation, labels,
//! approvals, publish, rollback, diff, archive, audit, keys, secrets,
//! health, metrics, OpenAPI, and bad input.

mod common;

use common::{Env, enc};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn health_ready_metrics_openapi() {
    let env = Env::start().await;
    let (s, v) = env.call(None, Method::GET, "/healthz", None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = env.call(None, Method::GET, "/readyz", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["database"], "ok");
    // Some traffic, then metrics.
    env.create_prompt("author", "a/b", "hi").await;
    env.snapshot("sdk", "shop").await;
    let resp = env
        .http
        .get(format!("{}/metrics", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for needle in [
        "promptops_http_requests_total{method=\"GET\",route=\"/v1/projects/{project}/snapshot\",status=\"200\"} 1",
        "promptops_http_request_duration_seconds_bucket",
        "promptops_stream_clients 0",
        "promptops_snapshot_build_seconds_count",
        "promptops_events_total 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let (s, doc) = env.call(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // Every documented operation exists (not 404 "no such route", not 405).
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25);
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            let concrete = path
                .replace("{project}", "shop")
                .replace("{prompt}", "nope%2Fnope")
                .replace("{version}", "1")
                .replace("{label}", "x")
                .replace("{name}", "x")
                .replace("{id}", "999999");
            if concrete.ends_with("/stream") {
                continue; // long-lived; covered by the SSE tests
            }
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = if matches!(method.as_str(), "post" | "put" | "patch") {
                Some(json!({}))
            } else {
                None
            };
            let (s, v) = env
                .call(Some(env.key("org-admin")), m, &concrete, body)
                .await;
            assert_ne!(s, 405, "{method} {path}: {v}");
            if s == 404 {
                assert_ne!(
                    v["message"], "no such route; see /openapi.json",
                    "{method} {path}"
                );
            }
            assert!(s < 500, "{method} {path}: {s} {v}");
        }
    }
}

#[tokio::test]
async fn prompt_and_version_lifecycle() {
    let env = Env::start().await;
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({
                "name": "support/reply",
                "type": "chat",
                "messages": [{"role": "system", "content": "You help {{ company }}."}, {"role": "user", "content": "{{ q }}"}],
                "config": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.2},
                "schema": {"type": "object", "properties": {"company": {"type": "string"}, "q": {"type": "string"}}, "required": ["q"]},
                "tags": ["support"],
                "labels": ["staging"]
            }),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["created"], true);
    assert_eq!(v["labels"]["staging"], 1);
    // Same name again: conflict.
    let (s, v) = env.create_prompt("author", "support/reply", "x").await;
    assert_eq!((s, v["code"].as_str()), (409, Some("CONFLICT")));
    // New version; identical content does not create another.
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts/support%2Freply/versions",
            json!({"type": "chat", "messages": [{"role": "system", "content": "You help {{ company }} politely."}, {"role": "user", "content": "{{ q }}"}],
                   "config": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.3}}),
        )
        .await;
    assert_eq!((s, v["version"].as_u64()), (201, Some(2)), "{v}");
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts/support%2Freply/versions",
            json!({"type": "chat", "messages": [{"role": "system", "content": "You help {{ company }} politely."}, {"role": "user", "content": "{{ q }}"}],
                   "config": {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.3}}),
        )
        .await;
    assert_eq!(
        (s, v["created"].as_bool(), v["version"].as_u64()),
        (200, Some(false), Some(2)),
        "{v}"
    );
    // Reads.
    let (s, v) = env.get("viewer", "/v1/projects/shop/prompts").await;
    assert_eq!(s, 200);
    assert_eq!(v["prompts"][0]["name"], "support/reply");
    assert_eq!(v["prompts"][0]["module"], "support");
    assert_eq!(v["prompts"][0]["latest"], 2);
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/support%2Freply")
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    assert_eq!(v["versions"][0]["author"], "author");
    let (s, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/prompts/support%2Freply/versions",
        )
        .await;
    assert_eq!(
        (s, v["versions"].as_array().map(|a| a.len())),
        (200, Some(2))
    );
    let (s, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/prompts/support%2Freply/versions/1",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "chat");
    assert_eq!(v["labels"], json!(["staging"]));
    assert_eq!(v["schema"]["required"], json!(["q"]));
    // Diff.
    let (s, v) = env
        .get(
            "viewer",
            "/v1/projects/shop/prompts/support%2Freply/diff?from=1&to=2",
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = v["diff"].as_str().unwrap();
    assert!(
        d.contains("-You help {{ company }}.") && d.contains("+You help {{ company }} politely."),
        "{d}"
    );
    assert!(
        d.starts_with("--- support/reply@1\n+++ support/reply@2"),
        "{d}"
    );
    let fields: Vec<&str> = v["changed_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"config") && fields.contains(&"schema") && fields.contains(&"tags"),
        "{fields:?}"
    );
    // Default diff: latest against the one before.
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/support%2Freply/diff")
        .await;
    assert_eq!(
        (s, v["from"].as_u64(), v["to"].as_u64()),
        (200, Some(1), Some(2))
    );
    // Snapshot carries labelled + newest versions.
    let snap = env.snapshot("sdk", "shop").await;
    let p = &snap["prompts"][0];
    assert_eq!(p["labels"], json!({"staging": 1}));
    let vs: Vec<u64> = p["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(vs, vec![1, 2]);
    let parsed =
        promptops_core::SnapshotData::from_json(serde_json::to_string(&snap).unwrap().as_bytes())
            .unwrap();
    assert_eq!(parsed.revision, 2);
}

#[tokio::test]
async fn validation_errors_name_prompt_part_line_column() {
    let env = Env::start().await;
    env.create_prompt("author", "shared/sig", "Regards").await;
    // Template syntax error in the second message.
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": "chat/x", "type": "chat", "messages": [{"role": "system", "content": "ok"}, {"role": "user", "content": "line one\nHi {{ name }"}]}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["code"], "TEMPLATE_ERROR");
    assert_eq!(v["field"], "messages[1]");
    assert_eq!(v["details"]["prompt"], "chat/x");
    assert_eq!(v["details"]["part"], "messages[1]");
    assert_eq!(v["details"]["line"], 2);
    assert!(v["details"]["column"].as_u64().unwrap() > 1, "{v}");
    // Include of a prompt that does not exist.
    let (s, v) = env
        .create_prompt("author", "a/inc", "x {% include \"nope/missing\" %}")
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("TEMPLATE_ERROR")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("nope/missing"),
        "{v}"
    );
    assert_eq!(v["details"]["line"], 1);
    // Include that resolves is fine.
    let (s, v) = env
        .create_prompt("author", "a/ok", "x {% include \"shared/sig\" %}")
        .await;
    assert_eq!(s, 201, "{v}");
    // Include cycle: shared/sig's new version includes a/ok, which includes shared/sig.
    let (s, v) = env
        .new_version("author", "shared/sig", "{% include \"a/ok\" %}")
        .await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["code"], "INCLUDE_CYCLE");
    assert!(v["details"]["cycle"].as_array().unwrap().len() >= 2, "{v}");
    // Invalid schema.
    let (s, v) = env
        .post("author", "/v1/projects/shop/prompts", json!({"name": "a/s", "type": "text", "template": "x", "schema": {"type": "object", "required": ["missing"]}}))
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("schema")), "{v}");
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": "a/s", "type": "text", "template": "x", "schema": {"type": "string"}}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("schema")), "{v}");
    // Bad names and labels.
    let (s, v) = env.create_prompt("author", "noslash", "x").await;
    assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
    let (s, v) = env.create_prompt("author", "a/b c", "x").await;
    assert_eq!((s, v["field"].as_str()), (422, Some("name")), "{v}");
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": "a/l", "type": "text", "template": "x", "labels": ["latest"]}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("labels")), "{v}");
    // Missing body type, wrong JSON types.
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": "a/t", "template": "x"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (422, Some("INVALID_BODY")), "{v}");
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": 5, "type": "text", "template": "x"}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    // Template over the size limit (64 KiB in tests).
    let big = "x".repeat(70 * 1024);
    let (s, v) = env.create_prompt("author", "a/big", &big).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (413, Some("TEMPLATE_TOO_LARGE")),
        "{v}"
    );
    // Nothing invalid reached the snapshot.
    let snap = env.snapshot("sdk", "shop").await;
    let names: Vec<&str> = snap["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a/ok", "shared/sig"]);
}

#[tokio::test]
async fn bad_requests_are_json_4xx() {
    let env = Env::start_with(common::Options {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    })
    .await;
    let url = format!("{}/v1/projects/shop/prompts", env.base);
    // Malformed JSON.
    let r = env
        .http
        .post(&url)
        .bearer_auth(env.key("author"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "MALFORMED_JSON");
    for k in ["code", "message", "field", "details"] {
        assert!(v.get(k).is_some(), "error body lacks {k}: {v}");
    }
    // Wrong content type.
    let r = env
        .http
        .post(&url)
        .bearer_auth(env.key("author"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "UNSUPPORTED_MEDIA_TYPE"
    );
    // Oversized body.
    let huge = json!({"name": "a/b", "type": "text", "template": "y".repeat(200 * 1024)});
    let r = env
        .http
        .post(&url)
        .bearer_auth(env.key("author"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "BODY_TOO_LARGE");
    // Unknown prompt, unknown version, unknown project, bad version number.
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/nope%2Fnope")
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("NOT_FOUND")));
    let (s, _) = env.new_version("author", "nope/nope", "x").await;
    assert_eq!(s, 404);
    env.create_prompt("author", "a/b", "v1").await;
    let (s, _) = env
        .get("viewer", "/v1/projects/shop/prompts/a%2Fb/versions/9")
        .await;
    assert_eq!(s, 404);
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/a%2Fb/versions/abc")
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("BAD_PATH")));
    let (s, _) = env.get("org-admin", "/v1/projects/ghost").await;
    assert_eq!(s, 404);
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/a%2Fb/diff?from=x")
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("BAD_QUERY")));
    // Label pointing at a version that does not exist.
    let (s, v) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/a%2Fb/labels/staging",
            json!({"version": 7}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (404, Some("version")), "{v}");
    let (s, v) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/a%2Fb/labels/bad label",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/a%2Fb/labels/latest",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    // Unknown fields are rejected where the body is closed.
    let (s, v) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/a%2Fb/labels/staging",
            json!({"version": 1, "bogus": 1}),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    // Unknown route and wrong method.
    let (s, v) = env.get("viewer", "/v1/nothing").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("NOT_FOUND")));
    let (s, v) = env
        .call(
            Some(env.key("admin")),
            Method::DELETE,
            "/v1/projects/shop/snapshot",
            None,
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (405, Some("METHOD_NOT_ALLOWED")));
    // Deleting a label that is not set.
    let (s, _) = env
        .delete("author", "/v1/projects/shop/prompts/a%2Fb/labels/nothing")
        .await;
    assert_eq!(s, 404);
    // Review decisions are checked.
    let (s, v) = env
        .post(
            "reviewer",
            "/v1/projects/shop/prompts/a%2Fb/versions/1/reviews",
            json!({"decision": "maybe"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("decision")));
}

#[tokio::test]
async fn approval_workflow_publish_and_rollback() {
    let env = Env::start().await;
    env.create_prompt("author", "s/r", "v1").await;
    // Not approved: publishing to production is refused.
    let (s, v) = env.publish("s/r", 1).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("APPROVAL_REQUIRED")),
        "{v}"
    );
    // The author cannot approve their own version even with an approver key.
    let reg = &env.server.registry;
    let sys = promptops_server::registry::Actor::system("t");
    let acme_author_approver = reg
        .create_key(
            env.server
                .registry
                .project("shop")
                .await
                .unwrap()
                .unwrap()
                .org_id,
            Some("shop"),
            promptops_server::auth::Role::Approver,
            "author",
            "author with approver role",
            &sys,
        )
        .await
        .unwrap();
    let (s, v) = env
        .call(
            Some(&acme_author_approver.key),
            Method::POST,
            "/v1/projects/shop/prompts/s%2Fr/versions/1/reviews",
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // A reviewer's comment is not an approval.
    let (s, _) = env
        .post(
            "reviewer",
            "/v1/projects/shop/prompts/s%2Fr/versions/1/reviews",
            json!({"decision": "comment", "note": "looks fine"}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(env.publish("s/r", 1).await.0, 409);
    env.approve("s/r", 1).await;
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/s%2Fr/versions/1")
        .await;
    assert_eq!((s, v["approved"].as_bool()), (200, Some(true)));
    assert_eq!(v["reviews"].as_array().unwrap().len(), 2);
    let (s, v) = env.publish("s/r", 1).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["from"].clone(), v["to"].as_u64(), v["changed"].as_bool()),
        (Value::Null, Some(1), Some(true))
    );
    // Publishing the same version again changes nothing.
    let (s, v) = env.publish("s/r", 1).await;
    assert_eq!((s, v["changed"].as_bool()), (200, Some(false)));
    // v2 and v3 published in turn.
    env.new_version("author", "s/r", "v2").await;
    env.new_version("author", "s/r", "v3").await;
    env.approve("s/r", 2).await;
    env.approve("s/r", 3).await;
    assert_eq!(env.publish("s/r", 2).await.0, 200);
    assert_eq!(env.publish("s/r", 3).await.0, 200);
    // Setting a protected label through PUT is a publish too (and needs it).
    let (s, _) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/s%2Fr/labels/production",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, 403);
    // Rollback without `to`: back to the version before (2).
    let (s, v) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/rollback",
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["from"].as_u64(), v["to"].as_u64()),
        (200, Some(3), Some(2)),
        "{v}"
    );
    // Rollback to an explicit earlier version.
    let (s, v) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/rollback",
            json!({"to": 1}),
        )
        .await;
    assert_eq!((s, v["to"].as_u64()), (200, Some(1)), "{v}");
    // Rollback to a version that was never approved nor live is refused.
    env.new_version("author", "s/r", "v4").await;
    let (s, v) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/rollback",
            json!({"to": 4}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("APPROVAL_REQUIRED")),
        "{v}"
    );
    // Rollback of a label never set.
    let (s, _) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/rollback",
            json!({"label": "canary"}),
        )
        .await;
    assert_eq!(s, 409);
    // Optimistic concurrency.
    let (s, v) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/publish",
            json!({"version": 2, "expected_version": 3}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (409, Some("expected_version")),
        "{v}"
    );
    let (s, _) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/s%2Fr/publish",
            json!({"version": 2, "expected_version": 1}),
        )
        .await;
    assert_eq!(s, 200);
    // Non-protected labels need no approval; authors may move them.
    let (s, v) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/s%2Fr/labels/staging",
            json!({"version": 4}),
        )
        .await;
    assert_eq!((s, v["to"].as_u64()), (200, Some(4)), "{v}");
    let (s, _) = env
        .delete("author", "/v1/projects/shop/prompts/s%2Fr/labels/staging")
        .await;
    assert_eq!(s, 200);
    // Audit trail of all of it.
    let (s, v) = env.get("auditor", "/v1/audit?action=rollback").await;
    assert_eq!(s, 200);
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(
        (
            e[0]["before_version"].as_i64(),
            e[0]["after_version"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(e[0]["actor"], "publisher");
    assert!(e[0]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let (_, v) = env.get("auditor", "/v1/audit?action=approve").await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
    let (_, v) = env
        .get("auditor", "/v1/audit?actor=author&action=version.create")
        .await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn protected_labels_and_mas_feat_are_per_project() {
    let env = Env::start().await;
    let (s, v) = env
        .call(
            Some(env.key("admin")),
            Method::PATCH,
            "/v1/projects/shop",
            Some(json!({"protected_labels": ["production", "canary"], "mas_feat": true})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["mas_feat"], true);
    env.create_prompt("author", "m/x", "hello").await;
    env.approve("m/x", 1).await;
    // canary is protected now.
    let (s, _) = env
        .put(
            "author",
            "/v1/projects/shop/prompts/m%2Fx/labels/canary",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, 403);
    // MAS FEAT: compliance fields required for production.
    let (s, v) = env.publish("m/x", 1).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("COMPLIANCE_REQUIRED")),
        "{v}"
    );
    assert_eq!(
        v["details"]["missing"],
        json!(["intent", "owner", "fairness_notes", "data_classification"])
    );
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts/m%2Fx/versions",
            json!({"type": "text", "template": "hello", "compliance": {"intent": "greet", "owner": "team@x", "fairness_notes": "same for all", "data_classification": "public"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    env.approve("m/x", 2).await;
    let (s, v) = env.publish("m/x", 2).await;
    assert_eq!(s, 200, "{v}");
    // Only admins change settings.
    let (s, _) = env
        .call(
            Some(env.key("publisher")),
            Method::PATCH,
            "/v1/projects/shop",
            Some(json!({"mas_feat": false})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn publish_validates_includes_under_the_label() {
    let env = Env::start().await;
    env.create_prompt("author", "shared/sig", "Regards").await;
    env.approve("shared/sig", 1).await;
    assert_eq!(env.publish("shared/sig", 1).await.0, 200);
    // a/b includes a prompt that has no production label yet.
    env.create_prompt("author", "shared/footer", "Footer").await;
    let (s, v) = env
        .create_prompt("author", "a/b", "{% include \"shared/footer\" %}")
        .await;
    assert_eq!(s, 201, "{v}");
    env.approve("a/b", 1).await;
    let (s, v) = env.publish("a/b", 1).await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("has no label `production`"),
        "{v}"
    );
    assert_eq!(v["details"]["under_label"], "production");
    env.approve("shared/footer", 1).await;
    assert_eq!(env.publish("shared/footer", 1).await.0, 200);
    assert_eq!(env.publish("a/b", 1).await.0, 200);
}

#[tokio::test]
async fn archive_and_unarchive() {
    let env = Env::start().await;
    env.create_prompt("author", "a/b", "x").await;
    env.create_prompt("author", "a/c", "y").await;
    let (s, v) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/a%2Fb/archive",
            json!({}),
        )
        .await;
    assert_eq!((s, v["changed"].as_bool()), (200, Some(true)), "{v}");
    let snap = env.snapshot("sdk", "shop").await;
    assert_eq!(snap["prompts"].as_array().unwrap().len(), 1);
    let (_, v) = env.get("viewer", "/v1/projects/shop/prompts").await;
    assert_eq!(v["prompts"].as_array().unwrap().len(), 1);
    let (_, v) = env
        .get("viewer", "/v1/projects/shop/prompts?archived=true")
        .await;
    assert_eq!(v["prompts"].as_array().unwrap().len(), 2);
    // No new versions on an archived prompt.
    let (s, _) = env.new_version("author", "a/b", "z").await;
    assert_eq!(s, 409);
    let (s, _) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/a%2Fb/archive",
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = env
        .post(
            "publisher",
            "/v1/projects/shop/prompts/a%2Fb/unarchive",
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        env.snapshot("sdk", "shop").await["prompts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn snapshot_etag_and_revision() {
    let env = Env::start().await;
    env.create_prompt("author", "a/b", "x").await;
    let r = env
        .http
        .get(format!("{}/v1/projects/shop/snapshot", env.base))
        .bearer_auth(env.key("sdk"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with("\"sha256:") && etag.ends_with('"'),
        "{etag}"
    );
    assert_eq!(r.headers()["x-promptops-revision"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(format!("\"{}\"", body["hash"].as_str().unwrap()), etag);
    assert_eq!(body["format"], "promptops.snapshot/1");
    let r = env
        .http
        .get(format!("{}/v1/projects/shop/snapshot", env.base))
        .bearer_auth(env.key("sdk"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.headers()["x-promptops-revision"], "1");
    env.new_version("author", "a/b", "y").await;
    let r = env
        .http
        .get(format!("{}/v1/projects/shop/snapshot", env.base))
        .bearer_auth(env.key("sdk"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-promptops-revision"], "2");
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    // The snapshot hash is the core's content hash.
    let text = r.text().await.unwrap();
    let s = promptops_core::SnapshotData::from_json(text.as_bytes()).unwrap();
    assert_eq!(s.hash, s.compute_hash());
    assert_eq!(s.revision, 2);
}

#[tokio::test]
async fn concurrent_publishes_of_one_label_are_last_writer_wins_and_audited() {
    let env = std::sync::Arc::new(Env::start().await);
    env.create_prompt("author", "c/p", "v1").await;
    for i in 2..=6 {
        env.new_version("author", "c/p", &format!("v{i}")).await;
    }
    for i in 1..=6 {
        env.approve("c/p", i).await;
    }
    let mut tasks = Vec::new();
    for i in 1..=6u32 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move { env.publish("c/p", i).await }));
    }
    let mut ok = 0;
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        ok += 1;
    }
    assert_eq!(ok, 6);
    let (_, v) = env.get("auditor", "/v1/audit?action=publish").await;
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "every publish is in the audit log");
    // The label holds the last writer's version; the chain of before/after
    // versions in the audit log is consistent.
    let last = entries.last().unwrap()["after_version"].as_u64().unwrap();
    let snap = env.snapshot("sdk", "shop").await;
    assert_eq!(
        snap["prompts"][0]["labels"]["production"].as_u64(),
        Some(last)
    );
    for w in entries.windows(2) {
        assert_eq!(w[0]["after_version"], w[1]["before_version"]);
    }
    // Revisions are gapless: 6 versions + 6 publishes.
    assert_eq!(snap["revision"], 12);
}

#[tokio::test]
async fn audit_export_and_verify() {
    let env = Env::start().await;
    env.create_prompt("author", "a/b", "x").await;
    env.approve("a/b", 1).await;
    env.publish("a/b", 1).await;
    let r = env
        .http
        .get(format!("{}/v1/audit?format=csv", env.base))
        .bearer_auth(env.key("auditor"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], promptops_server::audit::CSV_HEADER);
    assert!(lines.iter().any(|l| l.contains(",publish,")), "{csv}");
    // Date range filters.
    let (_, v) = env
        .get("auditor", "/v1/audit?from=2000-01-01&to=2999-01-01")
        .await;
    let all = v["entries"].as_array().unwrap().len();
    assert!(all >= 3);
    let (_, v) = env.get("auditor", "/v1/audit?to=2000-01-01").await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 0);
    let (s, v) = env.get("auditor", "/v1/audit?from=yesterday").await;
    assert_eq!((s, v["field"].as_str()), (422, Some("from")));
    let (s, _) = env.get("auditor", "/v1/audit?format=xml").await;
    assert_eq!(s, 400);
    // Project-scoped auditors see only their project; the rival org sees none of it.
    let (_, v) = env.get("rival-admin", "/v1/audit").await;
    assert!(
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["org"] == "rival")
    );
    let (s, v) = env.get("auditor", "/v1/audit/verify").await;
    assert_eq!(s, 200);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn keys_create_list_revoke() {
    let env = Env::start().await;
    let (s, v) = env
        .post(
            "admin",
            "/v1/keys",
            json!({"role": "sdk", "name": "web app"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("po_"));
    assert_eq!(
        v["project"], "shop",
        "a project admin's keys are scoped to its project"
    );
    let id = v["id"].as_i64().unwrap();
    let (s, w) = env.call(Some(&key), Method::GET, "/v1/whoami", None).await;
    assert_eq!((s, w["role"].as_str()), (200, Some("sdk")));
    // The key itself is never listed.
    let (s, list) = env.get("admin", "/v1/keys").await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains(&key));
    // Project admins cannot mint keys for other projects or org-wide.
    let (s, _) = env
        .post(
            "admin",
            "/v1/keys",
            json!({"role": "admin", "project": "shop2"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = env
        .post("admin", "/v1/keys", json!({"role": "wizard"}))
        .await;
    assert_eq!((s, v["field"].as_str()), (422, Some("role")));
    // Revoke: the key stops working immediately on this replica.
    let (s, _) = env.delete("admin", &format!("/v1/keys/{id}")).await;
    assert_eq!(s, 200);
    let (s, _) = env
        .call(Some(&key), Method::GET, "/v1/projects/shop/snapshot", None)
        .await;
    assert_eq!(s, 401);
    // Keys are stored hashed.
    let rows = env
        .server
        .registry
        .list_keys(
            &env.server
                .registry
                .lookup_key(env.key("org-admin"))
                .await
                .unwrap()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(rows.iter().all(|k| k.prefix.len() == 9));
}

#[tokio::test]
async fn secrets_roundtrip() {
    let env = Env::start().await;
    let (s, v) = env
        .put(
            "admin",
            "/v1/projects/shop/secrets/openai_key",
            json!({"value": "sk-test-123"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = env.get("admin", "/v1/projects/shop/secrets").await;
    assert_eq!(
        (s, v["secrets"][0]["name"].as_str()),
        (200, Some("openai_key"))
    );
    assert!(!v.to_string().contains("sk-test-123"));
    let (s, v) = env
        .get("admin", "/v1/projects/shop/secrets/openai_key")
        .await;
    assert_eq!((s, v["value"].as_str()), (200, Some("sk-test-123")));
    let (s, _) = env
        .get("publisher", "/v1/projects/shop/secrets/openai_key")
        .await;
    assert_eq!(s, 403);
    let (s, _) = env
        .delete("admin", "/v1/projects/shop/secrets/openai_key")
        .await;
    assert_eq!(s, 204);
    let (s, _) = env
        .get("admin", "/v1/projects/shop/secrets/openai_key")
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn projects_create_and_list() {
    let env = Env::start().await;
    let (s, v) = env
        .post(
            "org-admin",
            "/v1/projects",
            json!({"name": "newproj", "protected_labels": ["production", "prod-eu"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["protected_labels"], json!(["production", "prod-eu"]));
    let (s, _) = env
        .post("org-admin", "/v1/projects", json!({"name": "newproj"}))
        .await;
    assert_eq!(s, 409);
    let (s, _) = env
        .post("org-admin", "/v1/projects", json!({"name": "bad name"}))
        .await;
    assert_eq!(s, 422);
    let (s, _) = env
        .post("admin", "/v1/projects", json!({"name": "x2"}))
        .await;
    assert_eq!(s, 403, "project-scoped admins cannot create projects");
    let (_, v) = env.get("org-admin", "/v1/projects").await;
    let names: Vec<&str> = v["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["newproj", "shop", "shop2"]);
    let (_, v) = env.get("viewer", "/v1/projects").await;
    assert_eq!(v["projects"].as_array().unwrap().len(), 1);
    let (_, v) = env.get("rival-admin", "/v1/projects").await;
    assert_eq!(v["projects"][0]["name"], "rival");
    let _ = enc("x");
}
