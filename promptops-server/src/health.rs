//! The model health check: for every enabled catalogue model whose
//! provider key the project stores as a secret (`OPENAI_API_KEY`,
//! `ANTHROPIC_API_KEY`, `<PROVIDER>_API_KEY`), one cheap request —
//! a 1-token chat completion (OpenAI and compatible servers) or a 1-token
//! message (Anthropic) — with a timeout. The verdict is written to the
//! registry; a new status is a registry event, so every SDK sees it and
//! routing skips `unavailable` models.
//!
//! Verdicts: any 2xx, and 429 (reachable and authorised, only throttled:
//! the SDK's breakers handle throttling) → `healthy`; 401/403, 404, other
//! 4xx, 5xx, a timeout or a connection failure → `unavailable`. Errors name
//! the status and the endpoint only: response bodies (which may echo part
//! of a key) and keys are never stored or logged. Models without a stored
//! key are not checked (their status stays as it is).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use promptops_core::{HealthStatus, ModelEntry};
use serde_json::json;

use crate::catalogue::{HealthResult, key_secret_name, models_in};
use crate::error::ApiResult;
use crate::registry::{ProjectInfo, Registry};

/// Settings of the health check.
#[derive(Debug, Clone, Copy)]
pub struct HealthOptions {
    /// Between two rounds (zero: no periodic check).
    pub interval: Duration,
    /// Per request.
    pub timeout: Duration,
}

impl Default for HealthOptions {
    fn default() -> Self {
        HealthOptions {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Models checked at once.
const CONCURRENCY: usize = 8;

fn http_client(timeout: Duration) -> reqwest::Client {
    crate::client::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The base URL a model is checked at (its own, or its provider's).
fn base_url(m: &ModelEntry) -> Option<String> {
    match (&m.base_url, m.provider.as_str()) {
        (Some(u), _) => Some(u.trim_end_matches('/').to_string()),
        (None, "openai") => Some("https://api.openai.com/v1".into()),
        (None, "anthropic") => Some("https://api.anthropic.com/v1".into()),
        (None, _) => None,
    }
}

/// One probe: `Ok(())` for a usable model, `Err(why)` otherwise.
async fn probe(http: &reqwest::Client, m: &ModelEntry, key: &str) -> Result<(), String> {
    let Some(base) = base_url(m) else {
        return Err("no base_url for an OpenAI-compatible provider".into());
    };
    let (path, req) = if m.provider == "anthropic" {
        (
            "/messages",
            http.post(format!("{base}/messages"))
                .header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": m.model, "max_tokens": 1,
                              "messages": [{"role": "user", "content": "ping"}]})),
        )
    } else {
        // OpenAI's own API takes `max_completion_tokens` for every chat
        // model; compatible servers know `max_tokens`.
        let limit = if m.provider == "openai" {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let mut body = json!({"model": m.model,
                              "messages": [{"role": "user", "content": "ping"}]});
        body[limit] = json!(1);
        (
            "/chat/completions",
            http.post(format!("{base}/chat/completions"))
                .bearer_auth(key)
                .json(&body),
        )
    };
    match req.send().await {
        Ok(resp) => {
            let s = resp.status();
            if s.is_success() || s.as_u16() == 429 {
                Ok(())
            } else {
                let what = match s.as_u16() {
                    401 | 403 => "the provider refused the key",
                    404 => "the provider does not know the model",
                    c if c >= 500 => "provider error",
                    _ => "request refused",
                };
                Err(format!("HTTP {} from POST {path}: {what}", s.as_u16()))
            }
        }
        Err(e) if e.is_timeout() => Err(format!("no answer from POST {path} within the timeout")),
        Err(e) if e.is_connect() => Err(format!("cannot connect for POST {path}")),
        Err(_) => Err(format!("POST {path} failed before an answer")),
    }
}

/// Check every enabled model of `project` that has a stored key and record
/// the verdicts.
pub async fn check_project(
    registry: &Registry,
    project: &ProjectInfo,
    timeout: Duration,
) -> ApiResult<Vec<HealthResult>> {
    let models = {
        let mut conn = registry.db.pool.acquire().await?;
        models_in(&mut conn, project.id).await?
    };
    let mut jobs = Vec::new();
    for m in models.into_iter().filter(|m| m.enabled) {
        let Some(key) = registry
            .secret_if_any(project, &key_secret_name(&m.provider))
            .await?
        else {
            continue;
        };
        jobs.push((m, key));
    }
    let http = http_client(timeout);
    let verdicts: Vec<(ModelEntry, Result<(), String>)> = futures_util::stream::iter(jobs)
        .map(|(m, key)| {
            let http = http.clone();
            async move {
                let r = probe(&http, &m, &key).await;
                (m, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::with_capacity(verdicts.len());
    for (m, r) in verdicts {
        let (status, error) = match r {
            Ok(()) => (HealthStatus::Healthy, None),
            Err(e) => (HealthStatus::Unavailable, Some(e)),
        };
        let res = registry
            .record_health(&project.name, &m, status, error)
            .await?;
        if res.changed {
            tracing::info!(
                project = %project.name,
                model = %m.model,
                provider = %m.provider,
                status = status.as_str(),
                error = res.error.as_deref().unwrap_or(""),
                "model health changed"
            );
        }
        out.push(res);
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(out)
}

/// One round over every project.
pub async fn check_all(registry: &Registry, timeout: Duration) -> ApiResult<()> {
    for name in registry.project_names().await? {
        if let Some(p) = registry.project(&name).await? {
            check_project(registry, &p, timeout).await?;
        }
    }
    Ok(())
}

/// Run a round now and then every `opts.interval`.
pub fn spawn(registry: Arc<Registry>, opts: HealthOptions) -> Option<tokio::task::JoinHandle<()>> {
    if opts.interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = check_all(&registry, opts.timeout).await {
                tracing::warn!(error = %e, "model health check round failed");
            }
        }
    }))
}
