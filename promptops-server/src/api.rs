//! The HTTP API: routes (one table drives both the router and the OpenAPI
//! document), authentication, request ids, metrics, and JSON errors for
//! every bad request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{Perm, Principal, Role};
use crate::error::{ApiError, ApiResult};
use crate::hub::{Hub, ProjectHub};
use crate::metrics::Metrics;
use crate::redis_bus::RedisBus;
use crate::registry::{
    Actor, AuditFilter, LabelTarget, NewVersion, ProjectInfo, Registry, validate_slug,
};

pub struct AppInner {
    pub registry: Arc<Registry>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub redis: Option<Arc<RedisBus>>,
    pub max_body_bytes: usize,
    key_cache: Mutex<HashMap<String, (Option<Principal>, Instant)>>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

impl AppState {
    pub fn new(
        registry: Arc<Registry>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        redis: Option<Arc<RedisBus>>,
        max_body_bytes: usize,
    ) -> AppState {
        AppState(Arc::new(AppInner {
            registry,
            hub,
            metrics,
            redis,
            max_body_bytes,
            key_cache: Mutex::new(HashMap::new()),
        }))
    }

    async fn principal(&self, token: &str) -> ApiResult<Option<Principal>> {
        let hash = crate::auth::hash_key(token);
        if let Ok(c) = self.key_cache.lock()
            && let Some((p, at)) = c.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(p.clone());
        }
        let p = self.registry.lookup_key(token).await?;
        if let Ok(mut c) = self.key_cache.lock() {
            if c.len() > 10_000 {
                c.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
            }
            c.insert(hash, (p.clone(), Instant::now()));
        }
        Ok(p)
    }

    fn forget_keys(&self) {
        if let Ok(mut c) = self.key_cache.lock() {
            c.clear();
        }
    }
}

// ---------------------------------------------------------------------------
// Extractors.

/// The authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing `Authorization: Bearer <api key>` header")
        })?;
        let text = header
            .to_str()
            .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
        let token = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <api key>`"))?;
        if !token.starts_with(crate::auth::KEY_PREFIX) || token.len() > 200 {
            return Err(ApiError::unauthorized("unknown API key"));
        }
        match state.principal(token).await? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub struct Rid(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Rid {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Rid(parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())))
    }
}

/// JSON body with JSON errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

/// A request id for a request that brought none: random, or (if the
/// random source failed) a process-wide counter.
fn new_request_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    match crate::crypto::random_bytes::<8>() {
        Ok(b) => hex::encode(b),
        Err(_) => format!(
            "{:016x}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let (code, status) = match &r {
        JsonRejection::JsonSyntaxError(_) => ("MALFORMED_JSON", StatusCode::BAD_REQUEST),
        JsonRejection::JsonDataError(_) => ("INVALID_BODY", StatusCode::UNPROCESSABLE_ENTITY),
        JsonRejection::MissingJsonContentType(_) => {
            ("UNSUPPORTED_MEDIA_TYPE", StatusCode::UNSUPPORTED_MEDIA_TYPE)
        }
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ("BODY_TOO_LARGE", StatusCode::PAYLOAD_TOO_LARGE)
        }
        _ => ("BAD_REQUEST", r.status()),
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    ApiError::new(status, code, r.body_text())
}

/// Path parameters with JSON errors.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "BAD_PATH", r.body_text()))
    }
}

/// Query parameters with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiQuery(p.0))
            .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "BAD_QUERY", r.body_text()))
    }
}

// ---------------------------------------------------------------------------
// Authorization helpers.

async fn project_access(
    state: &AppState,
    p: &Principal,
    name: &str,
    perm: Perm,
) -> ApiResult<ProjectInfo> {
    let info = state.registry.project(name).await?;
    check_scope(p, name, info.as_ref().map(|i| (i.org_id, i.id)), perm)?;
    info.ok_or_else(|| ApiError::not_found(format!("project `{name}` does not exist")))
}

fn check_scope(p: &Principal, name: &str, ids: Option<(i64, i64)>, perm: Perm) -> ApiResult<()> {
    match ids {
        None => {
            if p.project_id.is_some() {
                return Err(ApiError::forbidden(format!(
                    "this key is scoped to project `{}`",
                    p.project.as_deref().unwrap_or("?")
                )));
            }
        }
        Some((org_id, id)) => {
            if !p.in_scope(org_id, id) {
                return Err(ApiError::forbidden(format!(
                    "this key has no access to project `{name}`"
                )));
            }
        }
    }
    if !p.can(perm) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `{}` permission",
            p.role,
            perm_name(perm)
        )));
    }
    Ok(())
}

pub fn perm_name(p: Perm) -> &'static str {
    match p {
        Perm::SnapshotRead => "snapshot_read",
        Perm::PromptRead => "prompt_read",
        Perm::PromptWrite => "prompt_write",
        Perm::LabelWrite => "label_write",
        Perm::Publish => "publish",
        Perm::Review => "review",
        Perm::Approve => "approve",
        Perm::AuditRead => "audit_read",
        Perm::Admin => "admin",
        Perm::TelemetryWrite => "telemetry_write",
    }
}

async fn hub_access(state: &AppState, p: &Principal, name: &str) -> ApiResult<Arc<ProjectHub>> {
    let ph = state.hub.project(name).await?;
    check_scope(
        p,
        name,
        ph.as_ref().map(|h| (h.org_id, h.id)),
        Perm::SnapshotRead,
    )?;
    ph.ok_or_else(|| ApiError::not_found(format!("project `{name}` does not exist")))
}

fn actor(p: &Principal, rid: Rid) -> Actor {
    Actor::from_principal(p, rid.0)
}

// ---------------------------------------------------------------------------
// Handlers.

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<AppState>) -> Response {
    let db = s.registry.db.ping().await;
    let redis = match &s.redis {
        None => None,
        Some(r) => Some(r.ping().await),
    };
    let ok = db.is_ok() && redis.as_ref().is_none_or(|r| r.is_ok());
    let body = json!({
        "status": if ok { "ready" } else { "unavailable" },
        "database": if db.is_ok() { "ok" } else { "error" },
        "redis": match &redis { None => "disabled", Some(Ok(_)) => "ok", Some(Err(_)) => "error" },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn openapi_doc() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn whoami(Auth(p): Auth) -> Json<Value> {
    let perms: Vec<&str> = crate::auth::ALL_PERMS
        .iter()
        .filter(|x| p.can(**x))
        .map(|x| perm_name(*x))
        .collect();
    Json(json!({
        "user": p.user,
        "org": p.org,
        "project": p.project,
        "role": p.role,
        "key": p.key_prefix,
        "permissions": perms,
    }))
}

async fn list_projects(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    let ps = s.registry.list_projects(&p).await?;
    Ok(Json(json!({"projects": ps})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    name: String,
    #[serde(default)]
    protected_labels: Option<Vec<String>>,
    #[serde(default)]
    mas_feat: bool,
}

async fn create_project(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiJson(body): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<ProjectInfo>)> {
    if p.role != Role::Admin || p.project_id.is_some() {
        return Err(ApiError::forbidden(
            "creating projects needs an organisation-wide admin key",
        ));
    }
    let info = s
        .registry
        .create_project(
            p.org_id,
            &body.name,
            body.protected_labels,
            body.mas_feat,
            &actor(&p, rid),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn get_project(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
) -> ApiResult<Json<ProjectInfo>> {
    Ok(Json(
        project_access(&s, &p, &project, Perm::PromptRead).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateProject {
    #[serde(default)]
    protected_labels: Option<Vec<String>>,
    #[serde(default)]
    mas_feat: Option<bool>,
}

async fn update_project(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath(project): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateProject>,
) -> ApiResult<Json<ProjectInfo>> {
    project_access(&s, &p, &project, Perm::Admin).await?;
    Ok(Json(
        s.registry
            .update_project(
                &project,
                body.protected_labels,
                body.mas_feat,
                &actor(&p, rid),
            )
            .await?,
    ))
}

async fn get_snapshot(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ph = hub_access(&s, &p, &project).await?;
    let snap = s.hub.snapshot(&ph).await?;
    let etag = HeaderValue::from_str(&snap.etag).map_err(|_| ApiError::internal("bad etag"))?;
    let rev = HeaderValue::from(snap.revision);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == snap.etag || t.trim() == "*")
        });
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::HeaderName::from_static("x-promptops-revision"), rev),
            ],
        )
            .into_response());
    }
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
            (header::HeaderName::from_static("x-promptops-revision"), rev),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from(snap.json.clone()),
    )
        .into_response())
}

async fn stream(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let ph = hub_access(&s, &p, &project).await?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => {
            // An unparseable id is treated like an unknown one: full snapshot.
            v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok())
        }
    };
    let body = Body::from_stream(s.hub.open_stream(ph, last_event_id));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct ListPromptsQuery {
    #[serde(default)]
    archived: Option<bool>,
}

async fn list_prompts(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListPromptsQuery>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let list = s
        .registry
        .list_prompts(&info, q.archived.unwrap_or(false))
        .await?;
    Ok(Json(
        json!({"project": info.name, "revision": info.revision, "prompts": list}),
    ))
}

#[derive(Deserialize)]
struct CreatePrompt {
    name: String,
    #[serde(flatten)]
    version: NewVersion,
}

async fn check_label_perms(p: &Principal, info: &ProjectInfo, labels: &[String]) -> ApiResult<()> {
    if labels.is_empty() {
        return Ok(());
    }
    let need = if labels.iter().any(|l| info.is_protected(l)) {
        Perm::Publish
    } else {
        Perm::LabelWrite
    };
    if !p.can(need) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `{}` permission needed to set labels {:?}",
            p.role,
            perm_name(need),
            labels
        ))
        .field("labels"));
    }
    Ok(())
}

async fn create_prompt(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath(project): ApiPath<String>,
    ApiJson(body): ApiJson<CreatePrompt>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let info = project_access(&s, &p, &project, Perm::PromptWrite).await?;
    check_label_perms(&p, &info, &body.version.labels).await?;
    let out = s
        .registry
        .create_version(
            Some(p.role),
            &project,
            &body.name,
            body.version,
            true,
            &actor(&p, rid),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(out).unwrap_or_default()),
    ))
}

async fn get_prompt(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    Ok(Json(s.registry.get_prompt(&info, &prompt).await?))
}

async fn list_versions(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let vs = s.registry.list_versions(&info, &prompt).await?;
    Ok(Json(json!({"prompt": prompt, "versions": vs})))
}

async fn create_version(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<NewVersion>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let info = project_access(&s, &p, &project, Perm::PromptWrite).await?;
    check_label_perms(&p, &info, &body.labels).await?;
    let out = s
        .registry
        .create_version(
            Some(p.role),
            &project,
            &prompt,
            body,
            false,
            &actor(&p, rid),
        )
        .await?;
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::to_value(out).unwrap_or_default())))
}

async fn get_version(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, prompt, version)): ApiPath<(String, String, u32)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let v = s
        .registry
        .get_version(&info, &prompt, version as i64)
        .await?;
    Ok(Json(serde_json::to_value(v).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    decision: String,
    #[serde(default)]
    note: Option<String>,
}

async fn review(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt, version)): ApiPath<(String, String, u32)>,
    ApiJson(body): ApiJson<ReviewBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let perm = if body.decision == "approve" {
        Perm::Approve
    } else {
        Perm::Review
    };
    project_access(&s, &p, &project, perm).await?;
    let r = s
        .registry
        .review(
            &project,
            &prompt,
            version as i64,
            &body.decision,
            body.note,
            &actor(&p, rid),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(r).unwrap_or_default()),
    ))
}

async fn list_labels(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let v = s.registry.get_prompt(&info, &prompt).await?;
    Ok(Json(json!({
        "prompt": prompt,
        "labels": v.get("labels").cloned().unwrap_or(Value::Null),
        "latest": v.get("latest").cloned().unwrap_or(Value::Null),
        "protected": info.protected_labels,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetLabel {
    version: u32,
    /// Optimistic concurrency: the version the label must point at now
    /// (0 = not set); 409 otherwise.
    #[serde(default)]
    expected_version: Option<u32>,
}

fn label_perm(info: &ProjectInfo, label: &str) -> Perm {
    if info.is_protected(label) {
        Perm::Publish
    } else {
        Perm::LabelWrite
    }
}

fn count_publish(s: &AppState, info: &ProjectInfo, label: &str, action: &str, changed: bool) {
    if changed && info.is_protected(label) {
        s.metrics
            .publishes
            .with_label_values(&[info.name.as_str(), action])
            .inc();
    }
}

async fn set_label(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt, label)): ApiPath<(String, String, String)>,
    ApiJson(body): ApiJson<SetLabel>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    check_scope(
        &p,
        &project,
        Some((info.org_id, info.id)),
        label_perm(&info, &label),
    )?;
    let action = if info.is_protected(&label) {
        "publish"
    } else {
        "label.set"
    };
    let out = s
        .registry
        .move_label(
            &project,
            &prompt,
            &label,
            LabelTarget::Version(body.version),
            body.expected_version,
            action,
            &actor(&p, rid),
        )
        .await?;
    count_publish(&s, &info, &label, "publish", out.changed);
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

async fn delete_label(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt, label)): ApiPath<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    check_scope(
        &p,
        &project,
        Some((info.org_id, info.id)),
        label_perm(&info, &label),
    )?;
    let out = s
        .registry
        .move_label(
            &project,
            &prompt,
            &label,
            LabelTarget::Remove,
            None,
            "label.delete",
            &actor(&p, rid),
        )
        .await?;
    if !out.changed {
        return Err(ApiError::not_found(format!(
            "prompt `{prompt}` has no label `{label}`"
        )));
    }
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    version: u32,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    expected_version: Option<u32>,
}

async fn publish(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PublishBody>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::Publish).await?;
    let label = body
        .label
        .unwrap_or_else(|| promptops_core::DEFAULT_LABEL.to_string());
    let out = s
        .registry
        .move_label(
            &project,
            &prompt,
            &label,
            LabelTarget::Version(body.version),
            body.expected_version,
            "publish",
            &actor(&p, rid),
        )
        .await?;
    count_publish(&s, &info, &label, "publish", out.changed);
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    to: Option<u32>,
    #[serde(default)]
    expected_version: Option<u32>,
}

async fn rollback(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<RollbackBody>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let label = body
        .label
        .unwrap_or_else(|| promptops_core::DEFAULT_LABEL.to_string());
    check_scope(
        &p,
        &project,
        Some((info.org_id, info.id)),
        label_perm(&info, &label),
    )?;
    let target = match body.to {
        Some(v) => LabelTarget::Version(v),
        None => LabelTarget::Previous,
    };
    let out = s
        .registry
        .move_label(
            &project,
            &prompt,
            &label,
            target,
            body.expected_version,
            "rollback",
            &actor(&p, rid),
        )
        .await?;
    count_publish(&s, &info, &label, "rollback", out.changed);
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

#[derive(Deserialize, Default)]
struct DiffQuery {
    #[serde(default)]
    from: Option<u32>,
    #[serde(default)]
    to: Option<u32>,
}

async fn diff(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let to = match q.to {
        Some(t) => t as i64,
        None => s
            .registry
            .get_prompt(&info, &prompt)
            .await?
            .get("latest")
            .and_then(Value::as_i64)
            .unwrap_or(1),
    };
    let from = q.from.map(|f| f as i64).unwrap_or((to - 1).max(1));
    let d = s.registry.diff(&info, &prompt, from, to).await?;
    Ok(Json(serde_json::to_value(d).unwrap_or_default()))
}

async fn archive(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    project_access(&s, &p, &project, Perm::Publish).await?;
    Ok(Json(
        s.registry
            .set_archived(&project, &prompt, true, &actor(&p, rid))
            .await?,
    ))
}

async fn unarchive(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, prompt)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    project_access(&s, &p, &project, Perm::Publish).await?;
    Ok(Json(
        s.registry
            .set_archived(&project, &prompt, false, &actor(&p, rid))
            .await?,
    ))
}

// -- model catalogue --------------------------------------------------------

async fn list_models(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    Ok(Json(
        json!({"models": s.registry.list_models(&info).await?, "revision": info.revision}),
    ))
}

async fn get_model(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, model)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    Ok(Json(
        serde_json::to_value(s.registry.get_model(&info, &model).await?).unwrap_or_default(),
    ))
}

async fn put_model(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, model)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    project_access(&s, &p, &project, Perm::Admin).await?;
    let entry = crate::catalogue::parse_model_body(&model, &body)?;
    Ok(Json(
        s.registry
            .put_model(&project, entry, &actor(&p, rid))
            .await?,
    ))
}

async fn delete_model(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, model)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    project_access(&s, &p, &project, Perm::Admin).await?;
    Ok(Json(
        s.registry
            .delete_model(&project, &model, &actor(&p, rid))
            .await?,
    ))
}

async fn model_health(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let models: Vec<Value> = s
        .registry
        .list_models(&info)
        .await?
        .into_iter()
        .map(|m| {
            json!({
                "model": m.entry.model,
                "provider": m.entry.provider,
                "enabled": m.entry.enabled,
                "status": m.health.status,
                "since": m.health.checked_at,
                "error": m.health.error,
                "last_checked_at": m.last_checked_at,
                "key_secret": m.key_secret,
            })
        })
        .collect();
    Ok(Json(json!({"models": models, "revision": info.revision})))
}

async fn check_model_health(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::Admin).await?;
    let results =
        crate::health::check_project(&s.registry, &info, s.registry.opts.health_timeout).await?;
    let revision = s
        .registry
        .project(&project)
        .await?
        .map_or(info.revision, |i| i.revision);
    Ok(Json(json!({"checked": results, "revision": revision})))
}

async fn list_secrets(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::Admin).await?;
    Ok(Json(
        json!({"secrets": s.registry.list_secrets(&info).await?}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

async fn put_secret(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SecretBody>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::Admin).await?;
    Ok(Json(
        s.registry
            .put_secret(&info, &name, &body.value, &actor(&p, rid))
            .await?,
    ))
}

async fn get_secret(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath((project, name)): ApiPath<(String, String)>,
) -> ApiResult<Json<Value>> {
    let info = project_access(&s, &p, &project, Perm::Admin).await?;
    let v = s.registry.get_secret(&info, &name).await?;
    Ok(Json(json!({"name": name, "value": v})))
}

async fn delete_secret(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath((project, name)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let info = project_access(&s, &p, &project, Perm::Admin).await?;
    s.registry
        .delete_secret(&info, &name, &actor(&p, rid))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_keys(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Json<Value>> {
    if !p.can(Perm::Admin) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `admin` permission",
            p.role
        )));
    }
    Ok(Json(json!({"keys": s.registry.list_keys(&p).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    role: String,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn create_key(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !p.can(Perm::Admin) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `admin` permission",
            p.role
        )));
    }
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "unknown role `{}`; roles: sdk, viewer, author, reviewer, approver, publisher, auditor, admin",
                body.role
            ),
        )
    })?;
    let project = match (&p.project, &body.project) {
        (Some(own), Some(req)) if own != req => {
            return Err(ApiError::forbidden(format!(
                "this key is scoped to project `{own}` and cannot create keys for `{req}`"
            )));
        }
        (Some(own), _) => Some(own.clone()),
        (None, req) => req.clone(),
    };
    if let Some(pn) = &project {
        project_access(&s, &p, pn, Perm::Admin).await?;
    }
    let user = body.user.unwrap_or_else(|| p.user.clone());
    validate_slug(&user, "user")?;
    let name = body
        .name
        .unwrap_or_else(|| format!("{} key for {user}", role));
    let k = s
        .registry
        .create_key(
            p.org_id,
            project.as_deref(),
            role,
            &user,
            &name,
            &actor(&p, rid),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(k).unwrap_or_default()),
    ))
}

async fn revoke_key(
    State(s): State<AppState>,
    Auth(p): Auth,
    rid: Rid,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    if !p.can(Perm::Admin) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `admin` permission",
            p.role
        )));
    }
    let k = s.registry.revoke_key(&p, id, &actor(&p, rid)).await?;
    s.forget_keys();
    Ok(Json(serde_json::to_value(k).unwrap_or_default()))
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    from: Option<String>,
    to: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    project: Option<String>,
    prompt: Option<String>,
    limit: Option<i64>,
    format: Option<String>,
}

async fn audit(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    if !p.can(Perm::AuditRead) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `audit_read` permission",
            p.role
        )));
    }
    let filter = AuditFilter {
        from: q.from,
        to: q.to,
        actor: q.actor,
        action: q.action,
        project: q.project,
        prompt: q.prompt,
        limit: q.limit,
    };
    let rows = s
        .registry
        .audit_query(&p.org, p.project.as_deref(), &filter)
        .await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(json!({"entries": rows})).into_response()),
        "csv" => Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"audit.csv\"",
                ),
            ],
            crate::audit::to_csv(&rows),
        )
            .into_response()),
        other => Err(
            ApiError::bad_request(format!("unknown format `{other}`; use json or csv"))
                .field("format"),
        ),
    }
}

async fn audit_verify(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    if !p.can(Perm::AuditRead) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `audit_read` permission",
            p.role
        )));
    }
    let r = s.registry.audit_verify().await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()).into_response())
}

// ---------------------------------------------------------------------------
// Telemetry (see crate::telemetry and PROTOCOL.md).

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn telemetry_ingest(
    State(s): State<AppState>,
    Auth(p): Auth,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<Value>> {
    let tm = &s.metrics.telemetry;
    let r = telemetry_ingest_inner(&s, &p, body).await;
    match &r {
        Ok(_) => tm.batch("accepted"),
        Err(e) if e.status == StatusCode::FORBIDDEN => tm.batch("forbidden"),
        Err(e) if e.status.is_client_error() => tm.batch("invalid"),
        Err(_) => tm.batch("failed"),
    }
    r
}

async fn telemetry_ingest_inner(
    s: &AppState,
    p: &Principal,
    body: Result<bytes::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<Value>> {
    if !p.can(Perm::TelemetryWrite) {
        return Err(ApiError::forbidden(format!(
            "role `{}` lacks the `telemetry_write` permission",
            p.role
        )));
    }
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE",
                format!(
                    "a telemetry batch may be at most {} bytes",
                    crate::telemetry::MAX_BODY_BYTES
                ),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let batch = crate::telemetry::validate(&body, now_ms())?;
    // The project: the batch's, else the key's. A key scoped to another
    // project (or organisation) gets 403 from the scope check.
    let name = match (&batch.project, &p.project) {
        (Some(b), _) => b.clone(),
        (None, Some(k)) => k.clone(),
        (None, None) => {
            return Err(ApiError::invalid(
                "project",
                "`project` is required with an organisation-wide key",
            ));
        }
    };
    let info = project_access(s, p, &name, Perm::TelemetryWrite).await?;
    let rollup = crate::telemetry::rollup(&batch.calls);
    crate::telemetry::persist(&s.registry.db, info.id, &rollup).await?;
    s.metrics.telemetry.observe(&info.name, &batch);
    let events: u64 = batch.events_by_kind.values().sum();
    Ok(Json(json!({
        "project": info.name,
        "accepted": events,
        "calls": batch.calls.len(),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TelemetryQuery {
    prompt: Option<String>,
    version: Option<String>,
    model: Option<String>,
    since: Option<String>,
    until: Option<String>,
    group_by: Option<String>,
}

async fn telemetry_query(
    State(s): State<AppState>,
    Auth(p): Auth,
    ApiPath(project): ApiPath<String>,
    ApiQuery(q): ApiQuery<TelemetryQuery>,
) -> ApiResult<Json<Value>> {
    use crate::telemetry as t;
    let info = project_access(&s, &p, &project, Perm::PromptRead).await?;
    let until = match &q.until {
        Some(u) => t::parse_unix("until", u)?,
        None => now_ms() / 1000 + 1,
    };
    let since = match &q.since {
        Some(v) => t::parse_unix("since", v)?,
        None => until - 24 * 3600,
    };
    if since >= until {
        return Err(ApiError::invalid("since", "`since` must be before `until`"));
    }
    let version = match q.version.as_deref() {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::invalid(
                "version",
                format!("`version` must be a whole number, got `{v}`"),
            )
        })?),
    };
    let group_by = t::parse_group_by(q.group_by.as_deref())?;
    let query = t::Query {
        prompt: q.prompt.filter(|x| !x.is_empty()),
        version,
        model: q.model.filter(|x| !x.is_empty()),
        since,
        until,
        group_by: group_by.clone(),
    };
    let groups = t::query(&s.registry.db, info.id, &query).await?;
    let fmt = |u: i64| {
        time::OffsetDateTime::from_unix_timestamp(u)
            .map(crate::db::format_time)
            .unwrap_or_default()
    };
    Ok(Json(json!({
        "project": info.name,
        "since": fmt(since),
        "until": fmt(until),
        "group_by": group_by,
        "bucket_seconds": t::BUCKET_SECONDS,
        "latency_buckets_s": t::DURATION_BUCKETS_S,
        "percentiles": "estimated from fixed histogram buckets by linear interpolation within the bucket holding the rank (like PromQL histogram_quantile)",
        "groups": groups,
    })))
}

// ---------------------------------------------------------------------------
// Route table.

/// One route: what the router serves and what the OpenAPI document says.
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Permission needed (`None`: no authentication).
    pub perm: Option<&'static str>,
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<&'static str>,
    pub ok: (u16, &'static str),
}

const fn doc(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    perm: Option<&'static str>,
    body: Option<&'static str>,
    ok: (u16, &'static str),
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        perm,
        query: &[],
        body,
        ok,
    }
}

pub fn routes() -> Vec<(RouteDoc, MethodRouter<AppState>)> {
    const P: &str = "/v1/projects/{project}";
    const PR: &str = "/v1/projects/{project}/prompts/{prompt}";
    let _ = (P, PR);
    vec![
        (
            doc(
                "GET",
                "/healthz",
                "Liveness probe",
                None,
                None,
                (200, "Health"),
            ),
            get(healthz),
        ),
        (
            doc(
                "GET",
                "/readyz",
                "Readiness: database (and Redis) reachable",
                None,
                None,
                (200, "Health"),
            ),
            get(readyz),
        ),
        (
            doc(
                "GET",
                "/metrics",
                "Prometheus metrics (text format)",
                None,
                None,
                (200, "Metrics"),
            ),
            get(metrics),
        ),
        (
            doc(
                "GET",
                "/openapi.json",
                "This document",
                None,
                None,
                (200, "OpenApi"),
            ),
            get(openapi_doc),
        ),
        (
            doc(
                "GET",
                "/v1/whoami",
                "The calling key: user, organisation, project, role, permissions",
                Some("any key"),
                None,
                (200, "Whoami"),
            ),
            get(whoami),
        ),
        (
            doc(
                "GET",
                "/v1/projects",
                "Projects visible to the key",
                Some("any key"),
                None,
                (200, "ProjectList"),
            ),
            get(list_projects),
        ),
        (
            doc(
                "POST",
                "/v1/projects",
                "Create a project (organisation-wide admin key)",
                Some("admin (organisation-wide)"),
                Some("CreateProject"),
                (201, "Project"),
            ),
            post(create_project),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}",
                "Project settings and revision",
                Some("prompt_read"),
                None,
                (200, "Project"),
            ),
            get(get_project),
        ),
        (
            doc(
                "PATCH",
                "/v1/projects/{project}",
                "Change protected labels or the MAS FEAT policy",
                Some("admin"),
                Some("UpdateProject"),
                (200, "Project"),
            ),
            patch(update_project),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/snapshot",
                "The project's snapshot (ETag = content hash; 304 on If-None-Match)",
                Some("snapshot_read"),
                None,
                (200, "Snapshot"),
            ),
            get(get_snapshot),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/stream",
                "Server-sent events: snapshot, then deltas (Last-Event-ID replays)",
                Some("snapshot_read"),
                None,
                (200, "EventStream"),
            ),
            get(stream),
        ),
        (
            RouteDoc {
                query: &[("archived", "boolean: include archived prompts")],
                ..doc(
                    "GET",
                    "/v1/projects/{project}/prompts",
                    "List prompts",
                    Some("prompt_read"),
                    None,
                    (200, "PromptList"),
                )
            },
            get(list_prompts),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts",
                "Create a prompt with its first version",
                Some("prompt_write"),
                Some("CreatePrompt"),
                (201, "VersionCreated"),
            ),
            post(create_prompt),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/prompts/{prompt}",
                "A prompt: labels and versions (prompt name with `/` encoded as %2F)",
                Some("prompt_read"),
                None,
                (200, "Prompt"),
            ),
            get(get_prompt),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/prompts/{prompt}/versions",
                "List versions",
                Some("prompt_read"),
                None,
                (200, "VersionList"),
            ),
            get(list_versions),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/versions",
                "Create a version (validated: templates compile, schema valid, includes resolve, no cycles)",
                Some("prompt_write"),
                Some("NewVersion"),
                (201, "VersionCreated"),
            ),
            post(create_version),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/prompts/{prompt}/versions/{version}",
                "One version with its labels and reviews",
                Some("prompt_read"),
                None,
                (200, "Version"),
            ),
            get(get_version),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/versions/{version}/reviews",
                "Review a version (`approve` needs the approve permission and another user than the author)",
                Some("review (approve: approve)"),
                Some("Review"),
                (201, "ReviewRecord"),
            ),
            post(review),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/prompts/{prompt}/labels",
                "Labels of a prompt",
                Some("prompt_read"),
                None,
                (200, "Labels"),
            ),
            get(list_labels),
        ),
        (
            doc(
                "PUT",
                "/v1/projects/{project}/prompts/{prompt}/labels/{label}",
                "Set or move a label (protected labels: publish permission and an approval)",
                Some("label_write (protected: publish)"),
                Some("SetLabel"),
                (200, "LabelChange"),
            ),
            put(set_label),
        ),
        (
            doc(
                "DELETE",
                "/v1/projects/{project}/prompts/{prompt}/labels/{label}",
                "Remove a label",
                Some("label_write (protected: publish)"),
                None,
                (200, "LabelChange"),
            ),
            delete(delete_label),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/publish",
                "Move `production` (or another label) to an approved version",
                Some("publish"),
                Some("Publish"),
                (200, "LabelChange"),
            ),
            post(publish),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/rollback",
                "Move a label back (default: to the version it pointed at before)",
                Some("label_write (protected: publish)"),
                Some("Rollback"),
                (200, "LabelChange"),
            ),
            post(rollback),
        ),
        (
            RouteDoc {
                query: &[
                    ("from", "integer: older version (default: to - 1)"),
                    ("to", "integer: newer version (default: latest)"),
                ],
                ..doc(
                    "GET",
                    "/v1/projects/{project}/prompts/{prompt}/diff",
                    "Unified diff of two versions plus changed fields",
                    Some("prompt_read"),
                    None,
                    (200, "Diff"),
                )
            },
            get(diff),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/archive",
                "Archive a prompt (it leaves the snapshot)",
                Some("publish"),
                None,
                (200, "ArchiveResult"),
            ),
            post(archive),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/prompts/{prompt}/unarchive",
                "Bring an archived prompt back",
                Some("publish"),
                None,
                (200, "ArchiveResult"),
            ),
            post(unarchive),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/models",
                "The model catalogue (provider, prices, context window, enabled, health)",
                Some("prompt_read"),
                None,
                (200, "ModelList"),
            ),
            get(list_models),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/models/{model}",
                "One catalogue model",
                Some("prompt_read"),
                None,
                (200, "ModelRecord"),
            ),
            get(get_model),
        ),
        (
            doc(
                "PUT",
                "/v1/projects/{project}/models/{model}",
                "Add or replace a catalogue model (a registry event)",
                Some("admin"),
                Some("PutModel"),
                (200, "ModelChange"),
            ),
            put(put_model),
        ),
        (
            doc(
                "DELETE",
                "/v1/projects/{project}/models/{model}",
                "Remove a catalogue model (a registry event)",
                Some("admin"),
                None,
                (200, "ModelChange"),
            ),
            delete(delete_model),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/model-health",
                "Health of every catalogue model, with the last check",
                Some("prompt_read"),
                None,
                (200, "ModelHealthList"),
            ),
            get(model_health),
        ),
        (
            doc(
                "POST",
                "/v1/projects/{project}/model-health",
                "Run the health check of the project's models now",
                Some("admin"),
                None,
                (200, "ModelHealthCheck"),
            ),
            post(check_model_health),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/secrets",
                "Secret names (values are encrypted at rest)",
                Some("admin"),
                None,
                (200, "SecretList"),
            ),
            get(list_secrets),
        ),
        (
            doc(
                "PUT",
                "/v1/projects/{project}/secrets/{name}",
                "Store a secret",
                Some("admin"),
                Some("Secret"),
                (200, "SecretInfo"),
            ),
            put(put_secret),
        ),
        (
            doc(
                "GET",
                "/v1/projects/{project}/secrets/{name}",
                "Read a secret",
                Some("admin"),
                None,
                (200, "SecretValue"),
            ),
            get(get_secret),
        ),
        (
            doc(
                "DELETE",
                "/v1/projects/{project}/secrets/{name}",
                "Delete a secret",
                Some("admin"),
                None,
                (204, "Empty"),
            ),
            delete(delete_secret),
        ),
        (
            doc(
                "GET",
                "/v1/keys",
                "API keys of the organisation (or the key's project)",
                Some("admin"),
                None,
                (200, "KeyList"),
            ),
            get(list_keys),
        ),
        (
            doc(
                "POST",
                "/v1/keys",
                "Create an API key (returned once)",
                Some("admin"),
                Some("CreateKey"),
                (201, "CreatedKey"),
            ),
            post(create_key),
        ),
        (
            doc(
                "DELETE",
                "/v1/keys/{id}",
                "Revoke an API key",
                Some("admin"),
                None,
                (200, "Key"),
            ),
            delete(revoke_key),
        ),
        (
            RouteDoc {
                query: &[
                    ("from", "RFC 3339 time or YYYY-MM-DD (inclusive)"),
                    ("to", "RFC 3339 time or YYYY-MM-DD (exclusive)"),
                    ("actor", "user name"),
                    ("action", "e.g. publish, rollback, version.create"),
                    ("project", "project name"),
                    ("prompt", "prompt name"),
                    ("limit", "integer, default 10000"),
                    ("format", "json (default) or csv"),
                ],
                ..doc(
                    "GET",
                    "/v1/audit",
                    "Query or export the audit log",
                    Some("audit_read"),
                    None,
                    (200, "AuditEntries"),
                )
            },
            get(audit),
        ),
        (
            doc(
                "GET",
                "/v1/audit/verify",
                "Verify the audit log's hash chain",
                Some("audit_read"),
                None,
                (200, "AuditVerify"),
            ),
            get(audit_verify),
        ),
        // Telemetry.
        (
            doc(
                "POST",
                "/v1/telemetry",
                "Upload an SDK telemetry batch (schema promptops.telemetry.v1; project from the batch or the key; at most 4 MiB and 10,000 events)",
                Some("telemetry_write"),
                Some("TelemetryBatch"),
                (200, "TelemetryAccepted"),
            ),
            post(telemetry_ingest).layer(DefaultBodyLimit::max(crate::telemetry::MAX_BODY_BYTES)),
        ),
        (
            RouteDoc {
                query: &[
                    ("prompt", "prompt name"),
                    ("version", "integer: prompt version"),
                    ("model", "model name"),
                    (
                        "since",
                        "RFC 3339 time or YYYY-MM-DD (inclusive; default: until - 24 h)",
                    ),
                    (
                        "until",
                        "RFC 3339 time or YYYY-MM-DD (exclusive; default: now)",
                    ),
                    (
                        "group_by",
                        "comma-separated: prompt, version, model, provider, label, variant, minute (default prompt,version,model; empty: one total)",
                    ),
                ],
                ..doc(
                    "GET",
                    "/v1/projects/{project}/telemetry",
                    "Telemetry rollups: requests, errors by type, tokens, cost, latency and TTFT percentiles per group",
                    Some("prompt_read"),
                    None,
                    (200, "TelemetryReport"),
                )
            },
            get(telemetry_query),
        ),
    ]
}

async fn request_context(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let rid = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(rid.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let m = method.as_str();
    s.metrics
        .http_requests
        .with_label_values(&[m, route.as_str(), resp.status().as_str()])
        .inc();
    s.metrics
        .http_latency
        .with_label_values(&[m, route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("method {method} is not allowed here; see /openapi.json"),
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("internal error").into_response()
}

pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for (d, mr) in routes() {
        r = r.route(d.path, mr);
    }
    let max = state.max_body_bytes;
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}
