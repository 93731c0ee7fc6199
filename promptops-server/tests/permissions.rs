//! The permission matrix: every role × every endpoint, plus keys of another
//! project and another organisation, no key and an unknown key.
//! Allowed calls must not be 401/403 (and never 5xx); denied calls are 403
//! (401 without a valid key).

mod common;

use common::Env;
use promptops_server::auth::{ALL_ROLES, Perm, Role};
use reqwest::Method;
use serde_json::{Value, json};

/// Who may call: a permission on project `shop`, or a special rule.
#[derive(Clone, Copy, Debug)]
enum Need {
    Perm(Perm),
    /// Any valid key.
    AnyKey,
    /// An organisation-wide admin key.
    OrgAdmin,
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    body: Option<Value>,
    need: Need,
    /// Scoped to project `shop` (cross-tenant keys must get 403).
    project_scoped: bool,
}

fn cases() -> Vec<Case> {
    use Need::*;
    use promptops_server::auth::Perm::*;
    let c = |name, method, path, body, need, project_scoped| Case {
        name,
        method,
        path,
        body,
        need,
        project_scoped,
    };
    vec![
        c("whoami", Method::GET, "/v1/whoami", None, AnyKey, false),
        c(
            "list projects",
            Method::GET,
            "/v1/projects",
            None,
            AnyKey,
            false,
        ),
        c(
            "create project",
            Method::POST,
            "/v1/projects",
            Some(json!({"name": "p-NAME"})),
            OrgAdmin,
            false,
        ),
        c(
            "get project",
            Method::GET,
            "/v1/projects/shop",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "update project",
            Method::PATCH,
            "/v1/projects/shop",
            Some(json!({"mas_feat": false})),
            Need::Perm(Admin),
            true,
        ),
        c(
            "snapshot",
            Method::GET,
            "/v1/projects/shop/snapshot",
            None,
            Need::Perm(SnapshotRead),
            true,
        ),
        c(
            "stream",
            Method::GET,
            "/v1/projects/shop/stream",
            None,
            Need::Perm(SnapshotRead),
            true,
        ),
        c(
            "list prompts",
            Method::GET,
            "/v1/projects/shop/prompts",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "create prompt",
            Method::POST,
            "/v1/projects/shop/prompts",
            Some(json!({"name": "m/NAME", "type": "text", "template": "hi"})),
            Need::Perm(PromptWrite),
            true,
        ),
        c(
            "get prompt",
            Method::GET,
            "/v1/projects/shop/prompts/a%2Fb",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "list versions",
            Method::GET,
            "/v1/projects/shop/prompts/a%2Fb/versions",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "create version",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/versions",
            Some(json!({"type": "text", "template": "v NAME"})),
            Need::Perm(PromptWrite),
            true,
        ),
        c(
            "get version",
            Method::GET,
            "/v1/projects/shop/prompts/a%2Fb/versions/1",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "review comment",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/versions/1/reviews",
            Some(json!({"decision": "comment"})),
            Need::Perm(Review),
            true,
        ),
        c(
            "review approve",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/versions/2/reviews",
            Some(json!({"decision": "approve"})),
            Need::Perm(Approve),
            true,
        ),
        c(
            "list labels",
            Method::GET,
            "/v1/projects/shop/prompts/a%2Fb/labels",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "set label",
            Method::PUT,
            "/v1/projects/shop/prompts/a%2Fb/labels/staging",
            Some(json!({"version": 1})),
            Need::Perm(LabelWrite),
            true,
        ),
        c(
            "set protected label",
            Method::PUT,
            "/v1/projects/shop/prompts/a%2Fb/labels/production",
            Some(json!({"version": 2})),
            Need::Perm(Publish),
            true,
        ),
        c(
            "delete label",
            Method::DELETE,
            "/v1/projects/shop/prompts/a%2Fb/labels/staging",
            None,
            Need::Perm(LabelWrite),
            true,
        ),
        c(
            "publish",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/publish",
            Some(json!({"version": 2})),
            Need::Perm(Publish),
            true,
        ),
        c(
            "rollback protected",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/rollback",
            Some(json!({"to": 1})),
            Need::Perm(Publish),
            true,
        ),
        c(
            "rollback label",
            Method::POST,
            "/v1/projects/shop/prompts/a%2Fb/rollback",
            Some(json!({"label": "qa", "to": 1})),
            Need::Perm(LabelWrite),
            true,
        ),
        c(
            "diff",
            Method::GET,
            "/v1/projects/shop/prompts/a%2Fb/diff?from=1&to=2",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "archive",
            Method::POST,
            "/v1/projects/shop/prompts/z%2Fz/archive",
            None,
            Need::Perm(Publish),
            true,
        ),
        c(
            "unarchive",
            Method::POST,
            "/v1/projects/shop/prompts/z%2Fz/unarchive",
            None,
            Need::Perm(Publish),
            true,
        ),
        c(
            "list models",
            Method::GET,
            "/v1/projects/shop/models",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "get model",
            Method::GET,
            "/v1/projects/shop/models/gpt-4o",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "put model",
            Method::PUT,
            "/v1/projects/shop/models/gpt-4o-mini",
            Some(json!({"provider": "openai", "context_window": 1000})),
            Need::Perm(Admin),
            true,
        ),
        c(
            "delete model",
            Method::DELETE,
            "/v1/projects/shop/models/gpt-4o-mini",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "model health",
            Method::GET,
            "/v1/projects/shop/model-health",
            None,
            Need::Perm(PromptRead),
            true,
        ),
        c(
            "run model health check",
            Method::POST,
            "/v1/projects/shop/model-health",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "list secrets",
            Method::GET,
            "/v1/projects/shop/secrets",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "put secret",
            Method::PUT,
            "/v1/projects/shop/secrets/token",
            Some(json!({"value": "s3cret"})),
            Need::Perm(Admin),
            true,
        ),
        c(
            "get secret",
            Method::GET,
            "/v1/projects/shop/secrets/token",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "delete secret",
            Method::DELETE,
            "/v1/projects/shop/secrets/token",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "list keys",
            Method::GET,
            "/v1/keys",
            None,
            Need::Perm(Admin),
            false,
        ),
        c(
            "create key",
            Method::POST,
            "/v1/keys",
            Some(json!({"role": "viewer", "project": "shop"})),
            Need::Perm(Admin),
            true,
        ),
        c(
            "revoke key",
            Method::DELETE,
            "/v1/keys/KEYID",
            None,
            Need::Perm(Admin),
            true,
        ),
        c(
            "audit",
            Method::GET,
            "/v1/audit",
            None,
            Need::Perm(AuditRead),
            false,
        ),
        c(
            "audit csv",
            Method::GET,
            "/v1/audit?format=csv",
            None,
            Need::Perm(AuditRead),
            false,
        ),
        c(
            "audit verify",
            Method::GET,
            "/v1/audit/verify",
            None,
            Need::Perm(AuditRead),
            false,
        ),
        c(
            "telemetry upload",
            Method::POST,
            "/v1/telemetry",
            Some(telemetry_batch()),
            Need::Perm(TelemetryWrite),
            true,
        ),
        c(
            "telemetry query",
            Method::GET,
            "/v1/projects/shop/telemetry?group_by=prompt,model",
            None,
            Need::Perm(PromptRead),
            true,
        ),
    ]
}

/// A telemetry batch for project `shop`, as the SDK's uploader sends it.
fn telemetry_batch() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    json!({
        "schema": "promptops.telemetry.v1",
        "project": "shop",
        "sdk": {"name": "promptops-rust", "version": "0.1.0"},
        "sent_at_ms": now,
        "dropped": {"recorded": 1, "dropped_queue_full": 0, "dropped_export_full": 0, "dropped_upload_failed": 0},
        "events": [{"kind": "call", "ts_ms": now, "prompt": "a/b", "version": 1,
                    "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 12,
                    "output_tokens": 3, "cost_usd": 0.0001, "latency_ms": 250.0}],
    })
}

/// Prompts `a/b` (v1 on production and `qa`, v2 approved) and `z/z`.
async fn seed(env: &Env) {
    // Written by the `author` user, so every approver-capable key may approve.
    assert_eq!(env.create_prompt("author", "a/b", "one").await.0, 201);
    assert_eq!(env.new_version("author", "a/b", "two").await.0, 201);
    assert_eq!(env.create_prompt("author", "z/z", "zz").await.0, 201);
    env.approve("a/b", 1).await;
    let (s, v) = env
        .post(
            "org-admin",
            "/v1/projects/shop/prompts/a%2Fb/publish",
            json!({"version": 1}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    env.put(
        "org-admin",
        "/v1/projects/shop/prompts/a%2Fb/labels/qa",
        json!({"version": 2}),
    )
    .await;
    env.put(
        "org-admin",
        "/v1/projects/shop/secrets/token",
        json!({"value": "x"}),
    )
    .await;
    let (s, v) = env
        .put(
            "org-admin",
            "/v1/projects/shop/models/gpt-4o",
            json!({"provider": "openai"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

fn allowed(who: &str, need: Need, project_scoped: bool) -> bool {
    match who {
        "none" | "bogus" => false,
        "rival-admin" | "shop2-admin" => {
            // Another organisation, or another project of the same one:
            // nothing about `shop`; their own scope otherwise.
            !project_scoped
                && match need {
                    Need::AnyKey | Need::Perm(_) => true,
                    Need::OrgAdmin => who == "rival-admin",
                }
        }
        "org-admin" => true,
        role => {
            let r = Role::parse(role).unwrap();
            match need {
                Need::AnyKey => true,
                Need::OrgAdmin => false,
                Need::Perm(p) => r.allows(p),
            }
        }
    }
}

async fn run_matrix(who: &str) {
    let env = Env::start().await;
    seed(&env).await;
    // A key that may be revoked by the revoke case.
    let victim = env
        .post(
            "org-admin",
            "/v1/keys",
            json!({"role": "viewer", "project": "shop", "user": "victim"}),
        )
        .await
        .1["id"]
        .as_i64()
        .unwrap();
    let key: Option<String> = match who {
        "none" => None,
        "bogus" => Some("po_this_is_not_a_key".into()),
        other => Some(env.key(other).to_string()),
    };
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let path = case.path.replace("KEYID", &victim.to_string());
        let body = case.body.map(|b| {
            serde_json::from_str::<Value>(
                &b.to_string()
                    .replace("NAME", &format!("{who}{i}").replace('-', "")),
            )
            .unwrap()
        });
        let expect_ok = allowed(who, case.need, case.project_scoped);
        let (status, v) = if case.path.ends_with("/stream") {
            let mut req = env.http.get(format!("{}{path}", env.base));
            if let Some(k) = &key {
                req = req.bearer_auth(k);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), Value::Null)
        } else {
            env.call(key.as_deref(), case.method.clone(), &path, body)
                .await
        };
        let ok = if expect_ok {
            !matches!(status, 401 | 403) && status < 500
        } else if key.is_none() || who == "bogus" {
            status == 401
        } else {
            status == 403
        };
        if !ok {
            failures.push(format!(
                "{who} × {} ({} {path}): expected {}, got {status} {v}",
                case.name,
                case.method,
                if expect_ok { "allowed" } else { "denied" }
            ));
        }
        if expect_ok && status >= 500 {
            failures.push(format!("{who} × {}: server error {status} {v}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn matrix_sdk() {
    run_matrix("sdk").await;
}
#[tokio::test]
async fn matrix_viewer() {
    run_matrix("viewer").await;
}
#[tokio::test]
async fn matrix_author() {
    run_matrix("author").await;
}
#[tokio::test]
async fn matrix_reviewer() {
    run_matrix("reviewer").await;
}
#[tokio::test]
async fn matrix_approver() {
    run_matrix("approver").await;
}
#[tokio::test]
async fn matrix_publisher() {
    run_matrix("publisher").await;
}
#[tokio::test]
async fn matrix_auditor() {
    run_matrix("auditor").await;
}
#[tokio::test]
async fn matrix_admin() {
    run_matrix("admin").await;
}
#[tokio::test]
async fn matrix_org_admin() {
    run_matrix("org-admin").await;
}
#[tokio::test]
async fn matrix_other_tenant() {
    run_matrix("rival-admin").await;
}
#[tokio::test]
async fn matrix_other_project_same_org() {
    run_matrix("shop2-admin").await;
}
#[tokio::test]
async fn matrix_no_key() {
    run_matrix("none").await;
}
#[tokio::test]
async fn matrix_unknown_key() {
    run_matrix("bogus").await;
}

#[test]
fn every_role_is_in_the_matrix() {
    // The PERMISSIONS.md table and these tests cover the same roles.
    let doc = include_str!("../PERMISSIONS.md");
    for r in ALL_ROLES {
        assert!(
            doc.contains(&format!("| {} ", r.as_str())),
            "PERMISSIONS.md lacks role {r}"
        );
    }
}
