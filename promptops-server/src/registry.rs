//! The registry: organisations → projects → modules → prompts → immutable
//! versions, labels, reviews, keys, secrets, the per-project event log and
//! the hash-chained audit log. Every mutation is one serialized write
//! transaction; a change to what a project's snapshot holds bumps the
//! project's revision, appends one event (the delta, sealed) and one audit
//! entry, and after commit is handed to the hub for delivery.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use axum::http::StatusCode;
use promptops_core::model::{validate_label, validate_name};
use promptops_core::{
    Body, Compatibility, CompiledSnapshot, Compliance, DEFAULT_LABEL, Delta, LATEST_LABEL, Limits,
    ModelConfig, PromptData, PromptVersion, SnapshotData, Source, Variant,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;
use sqlx::Row;

use crate::auth::{Principal, Role};
use crate::db::{Db, now};
use crate::error::{ApiError, ApiResult};
use crate::hub::Hub;

pub const AUDIT_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Events kept per project for SSE replay (older ones are pruned).
    pub event_retention: i64,
    /// Largest total template text of one version, in bytes.
    pub max_template_bytes: usize,
    /// Per-request timeout of the model health check.
    pub health_timeout: std::time::Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            event_retention: 10_000,
            max_template_bytes: 256 * 1024,
            health_timeout: std::time::Duration::from_secs(10),
        }
    }
}

pub struct Registry {
    pub db: Arc<Db>,
    pub hub: Arc<Hub>,
    pub opts: RegistryOptions,
}

/// Who performs a mutation (for authorship, reviews and the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: String,
    pub key_prefix: Option<String>,
    pub request_id: Option<String>,
    /// System actions (the demo loader) skip the approval workflow.
    pub system: bool,
}

impl Actor {
    pub fn from_principal(p: &Principal, request_id: Option<String>) -> Actor {
        Actor {
            user: p.user.clone(),
            key_prefix: Some(p.key_prefix.clone()),
            request_id,
            system: false,
        }
    }

    pub fn system(name: &str) -> Actor {
        Actor {
            user: name.to_string(),
            key_prefix: None,
            request_id: None,
            system: true,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectInfo {
    #[serde(skip)]
    pub id: i64,
    #[serde(skip)]
    pub org_id: i64,
    pub org: String,
    pub name: String,
    pub revision: i64,
    pub protected_labels: Vec<String>,
    pub mas_feat: bool,
    pub created_at: String,
}

impl ProjectInfo {
    pub fn is_protected(&self, label: &str) -> bool {
        self.protected_labels.iter().any(|l| l == label)
    }
}

#[derive(Debug, Clone)]
pub struct PromptRow {
    pub id: i64,
    pub name: String,
    pub archived: bool,
    pub latest: i64,
    pub policy: Option<Value>,
    pub created_at: String,
}

/// A version as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRecord {
    pub prompt: String,
    #[serde(flatten)]
    pub data: PromptVersion,
    pub labels: Vec<String>,
    pub reviews: Vec<Review>,
    pub approved: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub reviewer: String,
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: String,
}

/// The body of "create a version" (and, with `name`, "create a prompt").
#[derive(Debug, Clone, Deserialize)]
pub struct NewVersion {
    #[serde(flatten)]
    pub body: Body,
    #[serde(default)]
    pub config: ModelConfig,
    #[serde(default)]
    pub variants: BTreeMap<String, Variant>,
    #[serde(default)]
    pub compatibility: BTreeMap<String, Compatibility>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub compliance: Compliance,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Routing policy of the prompt (replaces the current one when given).
    #[serde(default)]
    pub policy: Option<Value>,
    /// Labels to point at the new version (protected labels need `publish`).
    #[serde(default)]
    pub labels: Vec<String>,
}

impl NewVersion {
    pub fn from_version(v: &PromptVersion, labels: Vec<String>, policy: Option<Value>) -> Self {
        NewVersion {
            body: v.body.clone(),
            config: v.config.clone(),
            variants: v.variants.clone(),
            compatibility: v.compatibility.clone(),
            schema: v
                .schema
                .as_ref()
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null)),
            compliance: v.compliance.clone(),
            tags: v.tags.clone(),
            description: v.description.clone(),
            policy,
            labels,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionCreated {
    pub prompt: String,
    pub version: u32,
    /// `false` when the content equals the newest version (nothing stored).
    pub created: bool,
    pub revision: i64,
    pub labels: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelChange {
    pub prompt: String,
    pub label: String,
    pub from: Option<u32>,
    pub to: Option<u32>,
    pub changed: bool,
    pub revision: i64,
}

/// The content of a version that identifies it (what `push` compares).
pub fn normalized_content(v: &PromptVersion) -> Value {
    let mut c = v.clone();
    c.version = 1;
    c.created_at = None;
    c.author = None;
    c.compliance.approval = None;
    serde_json::to_value(&c).unwrap_or(Value::Null)
}

fn version_aad(prompt_id: i64, version: i64) -> String {
    format!("promptops/version/{prompt_id}/{version}")
}

fn event_aad(project_id: i64, revision: i64) -> String {
    format!("promptops/event/{project_id}/{revision}")
}

fn secret_aad(project_id: i64, name: &str) -> String {
    format!("promptops/secret/{project_id}/{name}")
}

fn parse_labels_json(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|_| vec![DEFAULT_LABEL.to_string()])
}

fn template_bytes(v: &PromptVersion) -> usize {
    let mut n: usize = v.body.parts().iter().map(|(_, t)| t.len()).sum();
    for var in v.variants.values() {
        n += var.template.as_ref().map_or(0, |t| t.len());
        n += var
            .messages
            .as_ref()
            .map_or(0, |m| m.iter().map(|x| x.content.len()).sum());
    }
    n
}

// ---------------------------------------------------------------------------
// Reads shared by the write and read paths.

pub(crate) async fn project_by_name(
    conn: &mut AnyConnection,
    name: &str,
) -> Result<Option<ProjectInfo>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT p.id, p.org_id, o.name AS org, p.name, p.revision, p.protected_labels, p.mas_feat, p.created_at \
         FROM projects p JOIN orgs o ON o.id = p.org_id WHERE p.name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| project_from_row(&r)))
}

fn project_from_row(r: &sqlx::any::AnyRow) -> ProjectInfo {
    ProjectInfo {
        id: r.get("id"),
        org_id: r.get("org_id"),
        org: r.get("org"),
        name: r.get("name"),
        revision: r.get("revision"),
        protected_labels: parse_labels_json(&r.get::<String, _>("protected_labels")),
        mas_feat: r.get::<i64, _>("mas_feat") != 0,
        created_at: r.get("created_at"),
    }
}

async fn prompt_row(
    conn: &mut AnyConnection,
    project_id: i64,
    name: &str,
) -> Result<Option<PromptRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, archived, latest_version, policy, created_at FROM prompts WHERE project_id = $1 AND name = $2",
    )
    .bind(project_id)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| PromptRow {
        id: r.get("id"),
        name: r.get("name"),
        archived: r.get::<i64, _>("archived") != 0,
        latest: r.get("latest_version"),
        policy: r
            .get::<Option<String>, _>("policy")
            .and_then(|p| serde_json::from_str::<Value>(&p).ok()),
        created_at: r.get("created_at"),
    }))
}

async fn require_prompt(
    conn: &mut AnyConnection,
    project: &ProjectInfo,
    name: &str,
) -> ApiResult<PromptRow> {
    prompt_row(conn, project.id, name).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "prompt `{name}` does not exist in project `{}`",
            project.name
        ))
        .field("prompt")
    })
}

fn decode_version(
    db: &Db,
    prompt_id: i64,
    version: i64,
    key_id: &str,
    body: &[u8],
    author: String,
    created_at: String,
) -> ApiResult<PromptVersion> {
    let plain = db
        .keys
        .open(key_id, body, &version_aad(prompt_id, version))?;
    let mut v: PromptVersion = serde_json::from_slice(&plain)
        .map_err(|e| ApiError::internal(format!("stored version is not readable: {e}")))?;
    v.version = version as u32;
    v.author = Some(author);
    v.created_at = Some(created_at);
    Ok(v)
}

async fn load_version(
    db: &Db,
    conn: &mut AnyConnection,
    prompt_id: i64,
    version: i64,
) -> ApiResult<Option<PromptVersion>> {
    let row = sqlx::query(
        "SELECT key_id, body, author, created_at FROM versions WHERE prompt_id = $1 AND version = $2",
    )
    .bind(prompt_id)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(decode_version(
            db,
            prompt_id,
            version,
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("body"),
            r.get("author"),
            r.get("created_at"),
        )?)),
    }
}

async fn labels_of(
    conn: &mut AnyConnection,
    prompt_id: i64,
) -> Result<BTreeMap<String, u32>, sqlx::Error> {
    let rows = sqlx::query("SELECT label, version FROM labels WHERE prompt_id = $1")
        .bind(prompt_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("label"),
                r.get::<i64, _>("version") as u32,
            )
        })
        .collect())
}

/// The prompt as a snapshot carries it: every labelled version plus the
/// newest, and the labels.
async fn prompt_data(db: &Db, conn: &mut AnyConnection, p: &PromptRow) -> ApiResult<PromptData> {
    let labels = labels_of(conn, p.id).await?;
    let mut wanted: BTreeSet<i64> = labels.values().map(|v| *v as i64).collect();
    wanted.insert(p.latest);
    let mut versions = Vec::with_capacity(wanted.len());
    for v in wanted {
        if let Some(pv) = load_version(db, conn, p.id, v).await? {
            versions.push(pv);
        }
    }
    Ok(PromptData {
        name: p.name.clone(),
        versions,
        labels,
        policy: p.policy.clone(),
    })
}

/// The snapshot of a project as of the state `conn` sees.
pub(crate) async fn snapshot_in(
    db: &Db,
    conn: &mut AnyConnection,
    project_id: i64,
) -> ApiResult<SnapshotData> {
    let head = sqlx::query("SELECT name, revision FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut *conn)
        .await?;
    let project: String = head.get("name");
    let revision: i64 = head.get("revision");
    let label_rows = sqlx::query(
        "SELECT l.prompt_id, l.label, l.version FROM labels l JOIN prompts p ON p.id = l.prompt_id \
         WHERE p.project_id = $1 AND p.archived = 0",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    let version_rows = sqlx::query(
        "SELECT p.id AS prompt_id, p.name, p.policy, v.version, v.key_id, v.body, v.author, v.created_at \
         FROM prompts p JOIN versions v ON v.prompt_id = p.id \
         WHERE p.project_id = $1 AND p.archived = 0 AND (v.version = p.latest_version OR EXISTS \
           (SELECT 1 FROM labels l WHERE l.prompt_id = p.id AND l.version = v.version)) \
         ORDER BY p.name, v.version",
    )
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut labels: BTreeMap<i64, BTreeMap<String, u32>> = BTreeMap::new();
    for r in &label_rows {
        labels
            .entry(r.get("prompt_id"))
            .or_default()
            .insert(r.get("label"), r.get::<i64, _>("version") as u32);
    }
    let mut prompts: Vec<PromptData> = Vec::new();
    let mut current: Option<i64> = None;
    for r in &version_rows {
        let pid: i64 = r.get("prompt_id");
        if current != Some(pid) {
            current = Some(pid);
            prompts.push(PromptData {
                name: r.get("name"),
                versions: Vec::new(),
                labels: labels.remove(&pid).unwrap_or_default(),
                policy: r
                    .get::<Option<String>, _>("policy")
                    .and_then(|p| serde_json::from_str::<Value>(&p).ok()),
            });
        }
        let v = decode_version(
            db,
            pid,
            r.get("version"),
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("body"),
            r.get("author"),
            r.get("created_at"),
        )?;
        if let Some(last) = prompts.last_mut() {
            last.versions.push(v);
        }
    }
    let models = crate::catalogue::models_in(&mut *conn, project_id).await?;
    let mut snap = SnapshotData::with_catalogue(project, revision as u64, prompts, models);
    snap.created_at = Some(now());
    Ok(snap)
}

/// Every event after `after`, in order, when the log still holds all of
/// them up to the project's current revision; `None` when it does not
/// (pruned, or `after` is ahead of the project).
pub(crate) async fn events_after(
    db: &Db,
    project_id: i64,
    after: i64,
) -> ApiResult<Option<Vec<Delta>>> {
    let mut tx = db.read().await?;
    let current: i64 = sqlx::query_scalar("SELECT revision FROM projects WHERE id = $1")
        .bind(project_id)
        .fetch_one(&mut *tx)
        .await?;
    if after > current || after < 0 {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT revision, key_id, payload FROM events WHERE project_id = $1 AND revision > $2 ORDER BY revision",
    )
    .bind(project_id)
    .bind(after)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut expect = after + 1;
    for r in &rows {
        let rev: i64 = r.get("revision");
        if rev != expect {
            return Ok(None);
        }
        let plain = db.keys.open(
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("payload"),
            &event_aad(project_id, rev),
        )?;
        let d: Delta = serde_json::from_slice(&plain)
            .map_err(|e| ApiError::internal(format!("stored event is not readable: {e}")))?;
        out.push(d);
        expect += 1;
    }
    if expect - 1 != current {
        return Ok(None);
    }
    Ok(Some(out))
}

pub(crate) async fn current_revision(db: &Db, project_id: i64) -> ApiResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT revision FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_one(&db.pool)
            .await?,
    )
}

pub(crate) async fn build_snapshot(db: &Db, project_id: i64) -> ApiResult<SnapshotData> {
    let mut tx = db.read().await?;
    let s = snapshot_in(db, &mut tx, project_id).await?;
    tx.commit().await?;
    Ok(s)
}

// ---------------------------------------------------------------------------
// Validation through the core engine.

type DiagKey = (String, Option<String>, String);

fn diagnostics_of(s: &SnapshotData) -> (Vec<promptops_core::Diagnostic>, HashSet<DiagKey>) {
    let compiled = CompiledSnapshot::compile(s.clone(), Limits::default(), Source::Memory);
    let diags = compiled.diagnostics().to_vec();
    let keys = diags
        .iter()
        .map(|d| (d.prompt.clone(), d.label.clone(), d.error.to_string()))
        .collect();
    (diags, keys)
}

/// Check that replacing `candidate.name` in `base` breaks nothing under
/// `labels` that was not broken before, and that `new_version` compiles.
fn validate_change(
    base: &SnapshotData,
    candidate: PromptData,
    labels: &[String],
    new_version: Option<u32>,
) -> ApiResult<()> {
    let mut prompts: Vec<Arc<PromptData>> = base
        .prompts
        .iter()
        .filter(|p| p.name != candidate.name)
        .cloned()
        .collect();
    let name = candidate.name.clone();
    prompts.push(Arc::new(candidate));
    let after = SnapshotData::from_shared(
        base.project.clone(),
        base.revision,
        prompts,
        base.models.clone(),
    );
    after
        .validate()
        .map_err(|e| ApiError::from_core(&e).field("labels"))?;
    let (after_diags, _) = diagnostics_of(&after);
    if let Some(v) = new_version
        && let Some(d) = after_diags
            .iter()
            .find(|d| d.prompt == name && d.label.is_none() && d.version == Some(v))
    {
        return Err(ApiError::from_core(&d.error));
    }
    let relevant: Vec<&promptops_core::Diagnostic> = after_diags
        .iter()
        .filter(|d| d.label.as_ref().is_some_and(|l| labels.contains(l)))
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    let (_, before) = diagnostics_of(base);
    // Problems of this prompt first, then of prompts that include it.
    let mut fresh: Vec<&&promptops_core::Diagnostic> = relevant
        .iter()
        .filter(|d| !before.contains(&(d.prompt.clone(), d.label.clone(), d.error.to_string())))
        .collect();
    fresh.sort_by_key(|d| d.prompt != name);
    match fresh.first() {
        None => Ok(()),
        Some(d) => {
            let mut e = ApiError::from_core(&d.error);
            if let Value::Object(m) = &mut e.body.details {
                m.insert("under_label".into(), json!(d.label));
                m.insert("affected_prompt".into(), json!(d.prompt));
            }
            Err(e)
        }
    }
}

fn check_new_version(v: &NewVersion, max_bytes: usize) -> ApiResult<PromptVersion> {
    let schema = match &v.schema {
        None | Some(Value::Null) => None,
        Some(s) => {
            let parsed: promptops_core::InputSchema = serde_json::from_value(s.clone())
                .map_err(|e| ApiError::invalid("schema", format!("invalid input schema: {e}")))?;
            parsed
                .check()
                .map_err(|m| ApiError::invalid("schema", format!("invalid input schema: {m}")))?;
            Some(parsed)
        }
    };
    if let Body::Chat { messages } = &v.body {
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "messages",
                "a chat version needs at least one message",
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            if m.role.trim().is_empty() {
                return Err(ApiError::invalid(
                    &format!("messages[{i}].role"),
                    "role is empty",
                ));
            }
        }
    }
    for l in &v.labels {
        validate_label(l).map_err(|m| ApiError::invalid("labels", m))?;
        if l == LATEST_LABEL {
            return Err(ApiError::invalid(
                "labels",
                "`latest` is implicit and cannot be set",
            ));
        }
    }
    let pv = PromptVersion {
        version: 1,
        body: v.body.clone(),
        config: v.config.clone(),
        variants: v.variants.clone(),
        compatibility: v.compatibility.clone(),
        schema,
        compliance: v.compliance.clone(),
        tags: v.tags.clone(),
        description: v.description.clone(),
        created_at: None,
        author: None,
    };
    let n = template_bytes(&pv);
    if n > max_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TEMPLATE_TOO_LARGE",
            format!("templates of this version total {n} bytes; the limit is {max_bytes}"),
        )
        .field("template"));
    }
    Ok(pv)
}

fn missing_compliance(c: &Compliance) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let empty = |s: &Option<String>| s.as_ref().is_none_or(|x| x.trim().is_empty());
    if empty(&c.intent) {
        missing.push("intent");
    }
    if empty(&c.owner) {
        missing.push("owner");
    }
    if empty(&c.fairness_notes) {
        missing.push("fairness_notes");
    }
    if empty(&c.data_classification) {
        missing.push("data_classification");
    }
    missing
}

// ---------------------------------------------------------------------------
// Audit entries.

#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    pub action: String,
    pub org: Option<String>,
    pub project: Option<String>,
    pub prompt: Option<String>,
    pub label: Option<String>,
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub org: Option<String>,
    pub project: Option<String>,
    pub prompt: Option<String>,
    pub label: Option<String>,
    pub before_version: Option<i64>,
    pub after_version: Option<i64>,
    pub request_id: Option<String>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 over the JSON of every field but `hash`, in a fixed order.
    pub fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Hashed<'a> {
            seq: i64,
            at: &'a str,
            actor: &'a str,
            action: &'a str,
            org: &'a Option<String>,
            project: &'a Option<String>,
            prompt: &'a Option<String>,
            label: &'a Option<String>,
            before_version: Option<i64>,
            after_version: Option<i64>,
            request_id: &'a Option<String>,
            details: &'a str,
            prev_hash: &'a str,
        }
        let buf = serde_json::to_vec(&Hashed {
            seq: self.seq,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            org: &self.org,
            project: &self.project,
            prompt: &self.prompt,
            label: &self.label,
            before_version: self.before_version,
            after_version: self.after_version,
            request_id: &self.request_id,
            details: &self.details,
            prev_hash: &self.prev_hash,
        })
        .unwrap_or_default();
        hex::encode(Sha256::digest(&buf))
    }

    fn from_row(r: &sqlx::any::AnyRow) -> AuditRecord {
        AuditRecord {
            seq: r.get("seq"),
            at: r.get("at"),
            actor: r.get("actor"),
            action: r.get("action"),
            org: r.get("org"),
            project: r.get("project"),
            prompt: r.get("prompt"),
            label: r.get("label"),
            before_version: r.get("before_version"),
            after_version: r.get("after_version"),
            request_id: r.get("request_id"),
            details: r.get("details"),
            prev_hash: r.get("prev_hash"),
            hash: r.get("hash"),
        }
    }
}

pub(crate) async fn append_audit(
    conn: &mut AnyConnection,
    actor: &Actor,
    e: AuditEntry,
) -> Result<AuditRecord, sqlx::Error> {
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (seq, prev_hash) = match last {
        Some(r) => (r.get::<i64, _>("seq") + 1, r.get::<String, _>("hash")),
        None => (1, AUDIT_GENESIS.to_string()),
    };
    let mut details = match e.details {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other);
            m
        }
    };
    if let Some(k) = &actor.key_prefix {
        details.insert("key".into(), json!(k));
    }
    let mut rec = AuditRecord {
        seq,
        at: now(),
        actor: actor.user.clone(),
        action: e.action,
        org: e.org,
        project: e.project,
        prompt: e.prompt,
        label: e.label,
        before_version: e.before,
        after_version: e.after,
        request_id: actor.request_id.clone(),
        details: Value::Object(details).to_string(),
        prev_hash,
        hash: String::new(),
    };
    rec.hash = rec.compute_hash();
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor, action, org, project, prompt, label, before_version, after_version, request_id, details, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(rec.seq)
    .bind(&rec.at)
    .bind(&rec.actor)
    .bind(&rec.action)
    .bind(&rec.org)
    .bind(&rec.project)
    .bind(&rec.prompt)
    .bind(&rec.label)
    .bind(rec.before_version)
    .bind(rec.after_version)
    .bind(&rec.request_id)
    .bind(&rec.details)
    .bind(&rec.prev_hash)
    .bind(&rec.hash)
    .execute(&mut *conn)
    .await?;
    let updated = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(rec.seq)
        .bind(&rec.hash)
        .execute(&mut *conn)
        .await?;
    if updated.rows_affected() == 0 {
        sqlx::query("INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2)")
            .bind(rec.seq)
            .bind(&rec.hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rec)
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub project: Option<String>,
    pub prompt: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub entries: i64,
    pub head: Option<String>,
    pub problems: Vec<String>,
}

// ---------------------------------------------------------------------------
// Keys.

#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub prefix: String,
    pub name: String,
    pub user: String,
    pub org: String,
    pub project: Option<String>,
    pub role: Role,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key itself: shown once, never stored.
    pub key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptSummary {
    pub name: String,
    pub module: String,
    pub latest: u32,
    pub labels: BTreeMap<String, u32>,
    pub archived: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionSummary {
    pub version: u32,
    pub author: String,
    pub created_at: String,
    pub labels: Vec<String>,
    pub approved: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffResult {
    pub prompt: String,
    pub from: u32,
    pub to: u32,
    /// Unified diff of the template text (chat messages as `role:` blocks).
    pub diff: String,
    pub changed_fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

fn body_text(v: &PromptVersion) -> String {
    match &v.body {
        Body::Text { template } => {
            let mut s = template.clone();
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s
        }
        Body::Chat { messages } => {
            let mut s = String::new();
            for m in messages {
                s.push_str(&m.role);
                if let Some(n) = &m.name {
                    s.push_str(&format!(" ({n})"));
                }
                s.push_str(":\n");
                s.push_str(&m.content);
                if !m.content.ends_with('\n') {
                    s.push('\n');
                }
            }
            s
        }
    }
}

pub fn diff_versions(prompt: &str, a: &PromptVersion, b: &PromptVersion) -> DiffResult {
    let ta = body_text(a);
    let tb = body_text(b);
    let diff = similar::TextDiff::from_lines(&ta, &tb)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{prompt}@{}", a.version),
            &format!("{prompt}@{}", b.version),
        )
        .to_string();
    let ja = serde_json::to_value(a).unwrap_or(Value::Null);
    let jb = serde_json::to_value(b).unwrap_or(Value::Null);
    let mut changed = Vec::new();
    let skip = ["version", "created_at", "author", "template", "messages"];
    let keys: BTreeSet<&String> = ja
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .chain(jb.as_object().into_iter().flat_map(|m| m.keys()))
        .collect();
    for k in keys {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let va = ja.get(k).cloned().unwrap_or(Value::Null);
        let vb = jb.get(k).cloned().unwrap_or(Value::Null);
        if va != vb {
            changed.push(FieldChange {
                field: k.clone(),
                from: va,
                to: vb,
            });
        }
    }
    DiffResult {
        prompt: prompt.to_string(),
        from: a.version,
        to: b.version,
        diff,
        changed_fields: changed,
    }
}

// ---------------------------------------------------------------------------

/// What a committed change hands to the hub.
pub(crate) struct Change {
    pub(crate) delta: Delta,
}

impl Registry {
    pub fn new(db: Arc<Db>, hub: Arc<Hub>, opts: RegistryOptions) -> Registry {
        Registry { db, hub, opts }
    }

    pub async fn project(&self, name: &str) -> ApiResult<Option<ProjectInfo>> {
        let mut conn = self.db.pool.acquire().await?;
        Ok(project_by_name(&mut conn, name).await?)
    }

    /// Bump the revision, append the event, prune old events. Returns the delta.
    async fn record_change(
        &self,
        conn: &mut AnyConnection,
        project: &ProjectInfo,
        upserts: Vec<PromptData>,
        removed: Vec<String>,
    ) -> ApiResult<Change> {
        self.record_delta(conn, project, upserts, removed, None)
            .await
    }

    /// [`record_change`](Self::record_change) with the whole model catalogue
    /// when the change touched it.
    pub(crate) async fn record_delta(
        &self,
        conn: &mut AnyConnection,
        project: &ProjectInfo,
        upserts: Vec<PromptData>,
        removed: Vec<String>,
        models: Option<Vec<promptops_core::ModelEntry>>,
    ) -> ApiResult<Change> {
        let at = now();
        let rev: i64 = sqlx::query_scalar(
            "UPDATE projects SET revision = revision + 1, updated_at = $2 WHERE id = $1 RETURNING revision",
        )
        .bind(project.id)
        .bind(&at)
        .fetch_one(&mut *conn)
        .await?;
        let delta = Delta {
            project: project.name.clone(),
            base_revision: (rev - 1) as u64,
            revision: rev as u64,
            upserts,
            removed,
            models,
        };
        let json = serde_json::to_vec(&delta).unwrap_or_default();
        let (key_id, sealed) = self.db.keys.seal(&json, &event_aad(project.id, rev))?;
        sqlx::query(
            "INSERT INTO events (project_id, revision, key_id, payload, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(project.id)
        .bind(rev)
        .bind(key_id)
        .bind(sealed)
        .bind(&at)
        .execute(&mut *conn)
        .await?;
        if self.opts.event_retention > 0 && rev > self.opts.event_retention {
            sqlx::query("DELETE FROM events WHERE project_id = $1 AND revision <= $2")
                .bind(project.id)
                .bind(rev - self.opts.event_retention)
                .execute(&mut *conn)
                .await?;
        }
        Ok(Change { delta })
    }

    /// The snapshot the write transaction sees (from the hub's cache when it
    /// is at the same revision).
    async fn base_snapshot(
        &self,
        conn: &mut AnyConnection,
        project: &ProjectInfo,
    ) -> ApiResult<Arc<SnapshotData>> {
        if let Some(s) = self.hub.cached_data(&project.name)
            && s.revision == project.revision as u64
        {
            return Ok(s);
        }
        Ok(Arc::new(snapshot_in(&self.db, conn, project.id).await?))
    }

    pub(crate) async fn lock_project(
        &self,
        conn: &mut AnyConnection,
        name: &str,
    ) -> ApiResult<ProjectInfo> {
        project_by_name(conn, name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("project `{name}` does not exist")))
    }

    // -- organisations and projects -------------------------------------

    pub async fn ensure_org(&self, conn: &mut AnyConnection, name: &str) -> ApiResult<i64> {
        if let Some(id) = sqlx::query_scalar::<_, i64>("SELECT id FROM orgs WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
        {
            return Ok(id);
        }
        Ok(
            sqlx::query_scalar("INSERT INTO orgs (name, created_at) VALUES ($1, $2) RETURNING id")
                .bind(name)
                .bind(now())
                .fetch_one(&mut *conn)
                .await?,
        )
    }

    pub async fn create_org(&self, name: &str, actor: &Actor) -> ApiResult<i64> {
        validate_slug(name, "org")?;
        let mut w = self.db.write().await?;
        let id = self.ensure_org(w.conn(), name).await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "org.ensure".into(),
                org: Some(name.into()),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(id)
    }

    pub async fn create_project(
        &self,
        org_id: i64,
        name: &str,
        protected_labels: Option<Vec<String>>,
        mas_feat: bool,
        actor: &Actor,
    ) -> ApiResult<ProjectInfo> {
        validate_slug(name, "name")?;
        let labels = protected_labels.unwrap_or_else(|| vec![DEFAULT_LABEL.to_string()]);
        for l in &labels {
            validate_label(l).map_err(|m| ApiError::invalid("protected_labels", m))?;
        }
        let mut w = self.db.write().await?;
        if project_by_name(w.conn(), name).await?.is_some() {
            return Err(
                ApiError::conflict(format!("project `{name}` already exists")).field("name"),
            );
        }
        let at = now();
        sqlx::query(
            "INSERT INTO projects (org_id, name, revision, protected_labels, mas_feat, created_at, updated_at) VALUES ($1, $2, 0, $3, $4, $5, $5)",
        )
        .bind(org_id)
        .bind(name)
        .bind(serde_json::to_string(&labels).unwrap_or_default())
        .bind(mas_feat as i64)
        .bind(&at)
        .execute(w.conn())
        .await?;
        let info = project_by_name(w.conn(), name)
            .await?
            .ok_or_else(|| ApiError::internal("project vanished"))?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "project.create".into(),
                org: Some(info.org.clone()),
                project: Some(name.into()),
                details: json!({"protected_labels": labels, "mas_feat": mas_feat}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(info)
    }

    pub async fn update_project(
        &self,
        name: &str,
        protected_labels: Option<Vec<String>>,
        mas_feat: Option<bool>,
        actor: &Actor,
    ) -> ApiResult<ProjectInfo> {
        if let Some(ls) = &protected_labels {
            for l in ls {
                validate_label(l).map_err(|m| ApiError::invalid("protected_labels", m))?;
            }
        }
        let mut w = self.db.write().await?;
        let before = self.lock_project(w.conn(), name).await?;
        let labels = protected_labels.unwrap_or_else(|| before.protected_labels.clone());
        let mas = mas_feat.unwrap_or(before.mas_feat);
        sqlx::query("UPDATE projects SET protected_labels = $1, mas_feat = $2, updated_at = $3 WHERE id = $4")
            .bind(serde_json::to_string(&labels).unwrap_or_default())
            .bind(mas as i64)
            .bind(now())
            .bind(before.id)
            .execute(w.conn())
            .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "project.update".into(),
                org: Some(before.org.clone()),
                project: Some(name.into()),
                details: json!({
                    "before": {"protected_labels": before.protected_labels, "mas_feat": before.mas_feat},
                    "after": {"protected_labels": labels, "mas_feat": mas},
                }),
                ..Default::default()
            },
        )
        .await?;
        let after = self.lock_project(w.conn(), name).await?;
        w.commit().await?;
        Ok(after)
    }

    pub async fn list_projects(&self, p: &Principal) -> ApiResult<Vec<ProjectInfo>> {
        let rows = sqlx::query(
            "SELECT p.id, p.org_id, o.name AS org, p.name, p.revision, p.protected_labels, p.mas_feat, p.created_at \
             FROM projects p JOIN orgs o ON o.id = p.org_id WHERE p.org_id = $1 ORDER BY p.name",
        )
        .bind(p.org_id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .iter()
            .map(project_from_row)
            .filter(|pr| p.project_id.is_none_or(|id| id == pr.id))
            .collect())
    }

    // -- snapshot and events ------------------------------------------------

    pub async fn build_snapshot(&self, project_id: i64) -> ApiResult<SnapshotData> {
        build_snapshot(&self.db, project_id).await
    }

    pub async fn events_after(&self, project_id: i64, after: i64) -> ApiResult<Option<Vec<Delta>>> {
        events_after(&self.db, project_id, after).await
    }

    // -- prompts and versions ---------------------------------------------

    pub async fn list_prompts(
        &self,
        project: &ProjectInfo,
        archived: bool,
    ) -> ApiResult<Vec<PromptSummary>> {
        let rows = sqlx::query(
            "SELECT id, name, archived, latest_version, created_at FROM prompts WHERE project_id = $1 ORDER BY name",
        )
        .bind(project.id)
        .fetch_all(&self.db.pool)
        .await?;
        let label_rows = sqlx::query(
            "SELECT l.prompt_id, l.label, l.version FROM labels l JOIN prompts p ON p.id = l.prompt_id WHERE p.project_id = $1",
        )
        .bind(project.id)
        .fetch_all(&self.db.pool)
        .await?;
        let mut labels: BTreeMap<i64, BTreeMap<String, u32>> = BTreeMap::new();
        for r in &label_rows {
            labels
                .entry(r.get("prompt_id"))
                .or_default()
                .insert(r.get("label"), r.get::<i64, _>("version") as u32);
        }
        Ok(rows
            .iter()
            .filter(|r| archived || r.get::<i64, _>("archived") == 0)
            .map(|r| {
                let name: String = r.get("name");
                PromptSummary {
                    module: name
                        .rsplit_once('/')
                        .map(|(m, _)| m.to_string())
                        .unwrap_or_default(),
                    name,
                    latest: r.get::<i64, _>("latest_version") as u32,
                    labels: labels.remove(&r.get::<i64, _>("id")).unwrap_or_default(),
                    archived: r.get::<i64, _>("archived") != 0,
                    created_at: r.get("created_at"),
                }
            })
            .collect())
    }

    pub async fn get_prompt(&self, project: &ProjectInfo, name: &str) -> ApiResult<Value> {
        let mut conn = self.db.pool.acquire().await?;
        let p = require_prompt(&mut conn, project, name).await?;
        let labels = labels_of(&mut conn, p.id).await?;
        let versions = self.version_summaries(&mut conn, &p).await?;
        Ok(json!({
            "name": p.name,
            "module": p.name.rsplit_once('/').map(|(m, _)| m).unwrap_or(""),
            "archived": p.archived,
            "latest": p.latest,
            "labels": labels,
            "policy": p.policy,
            "created_at": p.created_at,
            "versions": versions,
        }))
    }

    async fn version_summaries(
        &self,
        conn: &mut AnyConnection,
        p: &PromptRow,
    ) -> ApiResult<Vec<VersionSummary>> {
        let rows = sqlx::query(
            "SELECT version, author, created_at FROM versions WHERE prompt_id = $1 ORDER BY version",
        )
        .bind(p.id)
        .fetch_all(&mut *conn)
        .await?;
        let labels = labels_of(conn, p.id).await?;
        let approved: HashSet<i64> = sqlx::query_scalar(
            "SELECT DISTINCT r.version FROM reviews r JOIN versions v ON v.prompt_id = r.prompt_id AND v.version = r.version \
             WHERE r.prompt_id = $1 AND r.decision = 'approve' AND r.reviewer <> v.author",
        )
        .bind(p.id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        Ok(rows
            .iter()
            .map(|r| {
                let v: i64 = r.get("version");
                VersionSummary {
                    version: v as u32,
                    author: r.get("author"),
                    created_at: r.get("created_at"),
                    labels: labels
                        .iter()
                        .filter(|(_, lv)| **lv as i64 == v)
                        .map(|(l, _)| l.clone())
                        .collect(),
                    approved: approved.contains(&v),
                }
            })
            .collect())
    }

    pub async fn list_versions(
        &self,
        project: &ProjectInfo,
        name: &str,
    ) -> ApiResult<Vec<VersionSummary>> {
        let mut conn = self.db.pool.acquire().await?;
        let p = require_prompt(&mut conn, project, name).await?;
        self.version_summaries(&mut conn, &p).await
    }

    async fn reviews_of(
        &self,
        conn: &mut AnyConnection,
        prompt_id: i64,
        version: i64,
    ) -> ApiResult<Vec<Review>> {
        let rows = sqlx::query(
            "SELECT reviewer, decision, note, created_at FROM reviews WHERE prompt_id = $1 AND version = $2 ORDER BY id",
        )
        .bind(prompt_id)
        .bind(version)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Review {
                reviewer: r.get("reviewer"),
                decision: r.get("decision"),
                note: r.get("note"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    pub async fn get_version(
        &self,
        project: &ProjectInfo,
        name: &str,
        version: i64,
    ) -> ApiResult<VersionRecord> {
        let mut conn = self.db.pool.acquire().await?;
        let p = require_prompt(&mut conn, project, name).await?;
        let data = load_version(&self.db, &mut conn, p.id, version)
            .await?
            .ok_or_else(|| version_not_found(name, version))?;
        let labels = labels_of(&mut conn, p.id).await?;
        let reviews = self.reviews_of(&mut conn, p.id, version).await?;
        let author = data.author.clone().unwrap_or_default();
        let approved = reviews
            .iter()
            .any(|r| r.decision == "approve" && r.reviewer != author);
        Ok(VersionRecord {
            prompt: name.to_string(),
            data,
            labels: labels
                .iter()
                .filter(|(_, v)| **v as i64 == version)
                .map(|(l, _)| l.clone())
                .collect(),
            reviews,
            approved,
        })
    }

    pub async fn diff(
        &self,
        project: &ProjectInfo,
        name: &str,
        from: i64,
        to: i64,
    ) -> ApiResult<DiffResult> {
        let mut conn = self.db.pool.acquire().await?;
        let p = require_prompt(&mut conn, project, name).await?;
        let a = load_version(&self.db, &mut conn, p.id, from)
            .await?
            .ok_or_else(|| version_not_found(name, from).field("from"))?;
        let b = load_version(&self.db, &mut conn, p.id, to)
            .await?
            .ok_or_else(|| version_not_found(name, to).field("to"))?;
        Ok(diff_versions(name, &a, &b))
    }

    /// Create a version (and the prompt, when `create_prompt`). Validated
    /// through the core: templates compile, the schema is valid, includes
    /// resolve, no include cycles.
    pub async fn create_version(
        &self,
        principal_role: Option<Role>,
        project_name: &str,
        name: &str,
        input: NewVersion,
        create_prompt: bool,
        actor: &Actor,
    ) -> ApiResult<VersionCreated> {
        validate_name(name).map_err(|m| ApiError::invalid("name", m))?;
        let mut pv = check_new_version(&input, self.opts.max_template_bytes)?;
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        // Protected labels in the request need the publish permission and
        // an approval, which a brand-new version cannot have yet.
        for l in &input.labels {
            if project.is_protected(l) && !actor.system {
                let can = principal_role.is_some_and(|r| r.allows(crate::auth::Perm::Publish));
                return Err(if can {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "APPROVAL_REQUIRED",
                        format!("label `{l}` is protected: a new version must be approved before it is published"),
                    )
                    .field("labels")
                } else {
                    ApiError::forbidden(format!(
                        "label `{l}` is protected; setting it needs the publish permission"
                    ))
                    .field("labels")
                });
            }
        }
        let existing = prompt_row(w.conn(), project.id, name).await?;
        let (prompt, mut data) = match (&existing, create_prompt) {
            (Some(_), true) => {
                return Err(
                    ApiError::conflict(format!("prompt `{name}` already exists")).field("name"),
                );
            }
            (None, false) => {
                return Err(ApiError::not_found(format!(
                    "prompt `{name}` does not exist in project `{}`",
                    project.name
                ))
                .field("prompt"));
            }
            (Some(p), false) => {
                if p.archived {
                    return Err(ApiError::conflict(format!(
                        "prompt `{name}` is archived; unarchive it first"
                    )));
                }
                let d = prompt_data(&self.db, w.conn(), p).await?;
                (Some(p.clone()), d)
            }
            (None, true) => (
                None,
                PromptData {
                    name: name.to_string(),
                    versions: Vec::new(),
                    labels: BTreeMap::new(),
                    policy: None,
                },
            ),
        };
        // Unchanged content: nothing to store.
        if let Some(p) = &prompt
            && let Some(latest) = data.version(p.latest as u32)
            && normalized_content(latest) == normalized_content(&pv)
            && input
                .policy
                .as_ref()
                .is_none_or(|pol| Some(pol) == p.policy.as_ref())
            && input
                .labels
                .iter()
                .all(|l| data.labels.get(l) == Some(&(p.latest as u32)))
        {
            let out = VersionCreated {
                prompt: name.to_string(),
                version: p.latest as u32,
                created: false,
                revision: project.revision,
                labels: data.labels.clone(),
            };
            return Ok(out);
        }
        let new_v = prompt.as_ref().map_or(1, |p| p.latest + 1) as u32;
        pv.version = new_v;
        pv.author = Some(actor.user.clone());
        let at = now();
        pv.created_at = Some(at.clone());
        data.versions.push(pv.clone());
        if input.policy.is_some() {
            data.policy = input.policy.clone();
        }
        let mut moved = Vec::new();
        for l in &input.labels {
            let old = data.labels.insert(l.clone(), new_v);
            moved.push((l.clone(), old));
        }
        // Versions no label points at any more leave the snapshot record.
        let keep: BTreeSet<u32> = data.labels.values().copied().chain([new_v]).collect();
        data.versions.retain(|v| keep.contains(&v.version));
        let base = self.base_snapshot(w.conn(), &project).await?;
        let mut checked = vec![LATEST_LABEL.to_string()];
        checked.extend(input.labels.iter().cloned());
        validate_change(&base, data.clone(), &checked, Some(new_v))?;

        // Store.
        let prompt_id = match &prompt {
            Some(p) => p.id,
            None => {
                let module = name.rsplit_once('/').map(|(m, _)| m).unwrap_or("");
                let module_id: i64 = match sqlx::query_scalar::<_, i64>(
                    "SELECT id FROM modules WHERE project_id = $1 AND name = $2",
                )
                .bind(project.id)
                .bind(module)
                .fetch_optional(w.conn())
                .await?
                {
                    Some(id) => id,
                    None => {
                        sqlx::query_scalar(
                            "INSERT INTO modules (project_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
                        )
                        .bind(project.id)
                        .bind(module)
                        .bind(&at)
                        .fetch_one(w.conn())
                        .await?
                    }
                };
                sqlx::query_scalar(
                    "INSERT INTO prompts (project_id, module_id, name, archived, latest_version, policy, created_at) VALUES ($1, $2, $3, 0, 0, $4, $5) RETURNING id",
                )
                .bind(project.id)
                .bind(module_id)
                .bind(name)
                .bind(input.policy.as_ref().map(|p| p.to_string()))
                .bind(&at)
                .fetch_one(w.conn())
                .await?
            }
        };
        let mut stored = pv.clone();
        stored.author = None;
        stored.created_at = None;
        let plain = serde_json::to_vec(&stored).unwrap_or_default();
        let (key_id, sealed) = self
            .db
            .keys
            .seal(&plain, &version_aad(prompt_id, new_v as i64))?;
        sqlx::query(
            "INSERT INTO versions (prompt_id, version, key_id, body, author, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(prompt_id)
        .bind(new_v as i64)
        .bind(key_id)
        .bind(sealed)
        .bind(&actor.user)
        .bind(&at)
        .execute(w.conn())
        .await?;
        sqlx::query(
            "UPDATE prompts SET latest_version = $1, policy = COALESCE($2, policy) WHERE id = $3",
        )
        .bind(new_v as i64)
        .bind(input.policy.as_ref().map(|p| p.to_string()))
        .bind(prompt_id)
        .execute(w.conn())
        .await?;
        for (l, old) in &moved {
            self.write_label(w.conn(), prompt_id, l, Some(new_v), *old, &actor.user)
                .await?;
        }
        let change = self
            .record_change(w.conn(), &project, vec![data.clone()], vec![])
            .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: if prompt.is_none() {
                    "prompt.create"
                } else {
                    "version.create"
                }
                .into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                prompt: Some(name.to_string()),
                before: prompt.as_ref().map(|p| p.latest),
                after: Some(new_v as i64),
                details: json!({"revision": change.delta.revision}),
                ..Default::default()
            },
        )
        .await?;
        for (l, old) in &moved {
            append_audit(
                w.conn(),
                actor,
                AuditEntry {
                    action: if project.is_protected(l) {
                        "publish"
                    } else {
                        "label.set"
                    }
                    .into(),
                    org: Some(project.org.clone()),
                    project: Some(project.name.clone()),
                    prompt: Some(name.to_string()),
                    label: Some(l.clone()),
                    before: old.map(|v| v as i64),
                    after: Some(new_v as i64),
                    details: json!({"revision": change.delta.revision}),
                },
            )
            .await?;
        }
        let revision = change.delta.revision as i64;
        self.finish(w, change).await?;
        Ok(VersionCreated {
            prompt: name.to_string(),
            version: new_v,
            created: true,
            revision,
            labels: data.labels,
        })
    }

    pub(crate) async fn finish(&self, w: crate::db::WriteTx<'_>, change: Change) -> ApiResult<()> {
        let guard = w.commit_locked().await?;
        // Still under the write lock: deltas reach the hub in order.
        self.hub.ingest_local(change.delta).await;
        drop(guard);
        Ok(())
    }

    async fn write_label(
        &self,
        conn: &mut AnyConnection,
        prompt_id: i64,
        label: &str,
        to: Option<u32>,
        from: Option<u32>,
        actor: &str,
    ) -> ApiResult<()> {
        let at = now();
        match to {
            Some(v) => {
                let n = sqlx::query(
                    "UPDATE labels SET version = $1, updated_at = $2, updated_by = $3 WHERE prompt_id = $4 AND label = $5",
                )
                .bind(v as i64)
                .bind(&at)
                .bind(actor)
                .bind(prompt_id)
                .bind(label)
                .execute(&mut *conn)
                .await?;
                if n.rows_affected() == 0 {
                    sqlx::query(
                        "INSERT INTO labels (prompt_id, label, version, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(prompt_id)
                    .bind(label)
                    .bind(v as i64)
                    .bind(&at)
                    .bind(actor)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            None => {
                sqlx::query("DELETE FROM labels WHERE prompt_id = $1 AND label = $2")
                    .bind(prompt_id)
                    .bind(label)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO label_history (prompt_id, label, from_version, to_version, actor, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(prompt_id)
        .bind(label)
        .bind(from.map(|v| v as i64))
        .bind(to.map(|v| v as i64))
        .bind(actor)
        .bind(&at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn is_approved(
        &self,
        conn: &mut AnyConnection,
        prompt_id: i64,
        version: i64,
    ) -> ApiResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM reviews r JOIN versions v ON v.prompt_id = r.prompt_id AND v.version = r.version \
             WHERE r.prompt_id = $1 AND r.version = $2 AND r.decision = 'approve' AND r.reviewer <> v.author",
        )
        .bind(prompt_id)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
        Ok(n > 0)
    }

    async fn was_on_label(
        &self,
        conn: &mut AnyConnection,
        prompt_id: i64,
        label: &str,
        version: i64,
    ) -> ApiResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM label_history WHERE prompt_id = $1 AND label = $2 AND to_version = $3",
        )
        .bind(prompt_id)
        .bind(label)
        .bind(version)
        .fetch_one(&mut *conn)
        .await?;
        Ok(n > 0)
    }

    /// Point `label` at `version` (or remove it with `None`). `action` is
    /// `label.set`, `label.delete`, `publish` or `rollback`.
    #[allow(clippy::too_many_arguments)]
    pub async fn move_label(
        &self,
        project_name: &str,
        name: &str,
        label: &str,
        target: LabelTarget,
        expected: Option<u32>,
        action: &str,
        actor: &Actor,
    ) -> ApiResult<LabelChange> {
        validate_label(label).map_err(|m| ApiError::invalid("label", m))?;
        if label == LATEST_LABEL {
            return Err(ApiError::invalid(
                "label",
                "`latest` is implicit and cannot be set",
            ));
        }
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let p = require_prompt(w.conn(), &project, name).await?;
        if p.archived {
            return Err(ApiError::conflict(format!("prompt `{name}` is archived")));
        }
        let mut data = prompt_data(&self.db, w.conn(), &p).await?;
        let current = data.labels.get(label).copied();
        if let Some(e) = expected
            && current.unwrap_or(0) != e
        {
            return Err(ApiError::conflict(format!(
                "label `{label}` of `{name}` points at {}, not the expected {e}",
                current.map_or("nothing".to_string(), |v| format!("version {v}"))
            ))
            .field("expected_version")
            .details(json!({"current": current, "expected": e})));
        }
        let to: Option<u32> = match target {
            LabelTarget::Version(v) => Some(v),
            LabelTarget::Remove => None,
            LabelTarget::Previous => {
                let Some(cur) = current else {
                    return Err(ApiError::conflict(format!(
                        "label `{label}` of `{name}` is not set; nothing to roll back"
                    )));
                };
                let prev: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT from_version FROM label_history WHERE prompt_id = $1 AND label = $2 AND to_version = $3 ORDER BY id DESC LIMIT 1",
                )
                .bind(p.id)
                .bind(label)
                .bind(cur as i64)
                .fetch_optional(w.conn())
                .await?;
                match prev.flatten() {
                    Some(v) => Some(v as u32),
                    None => {
                        return Err(ApiError::conflict(format!(
                            "label `{label}` of `{name}` has no earlier version to roll back to; give one with `to`"
                        )));
                    }
                }
            }
        };
        if let Some(v) = to
            && load_version(&self.db, w.conn(), p.id, v as i64)
                .await?
                .is_none()
        {
            return Err(version_not_found(name, v as i64).field("version"));
        }
        if to == current {
            return Ok(LabelChange {
                prompt: name.to_string(),
                label: label.to_string(),
                from: current,
                to,
                changed: false,
                revision: project.revision,
            });
        }
        if let Some(v) = to
            && project.is_protected(label)
            && !actor.system
        {
            let previously_live =
                action == "rollback" && self.was_on_label(w.conn(), p.id, label, v as i64).await?;
            if !previously_live && !self.is_approved(w.conn(), p.id, v as i64).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "APPROVAL_REQUIRED",
                    format!(
                        "version {v} of `{name}` needs an approval by an approver other than its author before it can be published to `{label}`"
                    ),
                )
                .field("version"));
            }
            if project.mas_feat {
                let pv = load_version(&self.db, w.conn(), p.id, v as i64)
                    .await?
                    .ok_or_else(|| version_not_found(name, v as i64))?;
                let missing = missing_compliance(&pv.compliance);
                if !missing.is_empty() {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "COMPLIANCE_REQUIRED",
                        format!(
                            "project `{}` follows the MAS FEAT policy: version {v} of `{name}` lacks compliance fields {}",
                            project.name,
                            missing.join(", ")
                        ),
                    )
                    .field(format!("compliance.{}", missing[0]))
                    .details(json!({"missing": missing})));
                }
            }
        }
        // The candidate record.
        match to {
            Some(v) => {
                data.labels.insert(label.to_string(), v);
                if data.version(v).is_none()
                    && let Some(pv) = load_version(&self.db, w.conn(), p.id, v as i64).await?
                {
                    data.versions.push(pv);
                    data.versions.sort_by_key(|x| x.version);
                }
            }
            None => {
                data.labels.remove(label);
            }
        }
        let keep: BTreeSet<u32> = data
            .labels
            .values()
            .copied()
            .chain([p.latest as u32])
            .collect();
        data.versions.retain(|v| keep.contains(&v.version));
        if to.is_some() {
            let base = self.base_snapshot(w.conn(), &project).await?;
            validate_change(&base, data.clone(), &[label.to_string()], None)?;
        }
        self.write_label(w.conn(), p.id, label, to, current, &actor.user)
            .await?;
        let change = self
            .record_change(w.conn(), &project, vec![data], vec![])
            .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: action.into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                prompt: Some(name.to_string()),
                label: Some(label.to_string()),
                before: current.map(|v| v as i64),
                after: to.map(|v| v as i64),
                details: json!({"revision": change.delta.revision, "protected": project.is_protected(label)}),
            },
        )
        .await?;
        let revision = change.delta.revision as i64;
        self.finish(w, change).await?;
        Ok(LabelChange {
            prompt: name.to_string(),
            label: label.to_string(),
            from: current,
            to,
            changed: true,
            revision,
        })
    }

    pub async fn set_archived(
        &self,
        project_name: &str,
        name: &str,
        archived: bool,
        actor: &Actor,
    ) -> ApiResult<Value> {
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let p = require_prompt(w.conn(), &project, name).await?;
        if p.archived == archived {
            return Ok(
                json!({"prompt": name, "archived": archived, "changed": false, "revision": project.revision}),
            );
        }
        sqlx::query("UPDATE prompts SET archived = $1 WHERE id = $2")
            .bind(archived as i64)
            .bind(p.id)
            .execute(w.conn())
            .await?;
        let (upserts, removed) = if archived {
            (vec![], vec![name.to_string()])
        } else {
            (vec![prompt_data(&self.db, w.conn(), &p).await?], vec![])
        };
        let change = self
            .record_change(w.conn(), &project, upserts, removed)
            .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: if archived { "archive" } else { "unarchive" }.into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                prompt: Some(name.to_string()),
                before: Some(p.latest),
                after: Some(p.latest),
                details: json!({"revision": change.delta.revision}),
                ..Default::default()
            },
        )
        .await?;
        let revision = change.delta.revision;
        self.finish(w, change).await?;
        Ok(json!({"prompt": name, "archived": archived, "changed": true, "revision": revision}))
    }

    /// Record a review. `approve` needs the approve permission (checked by
    /// the caller) and a reviewer other than the version's author.
    pub async fn review(
        &self,
        project_name: &str,
        name: &str,
        version: i64,
        decision: &str,
        note: Option<String>,
        actor: &Actor,
    ) -> ApiResult<Review> {
        if !["approve", "comment", "request_changes"].contains(&decision) {
            return Err(ApiError::invalid(
                "decision",
                "decision must be `approve`, `comment` or `request_changes`",
            ));
        }
        if note.as_ref().is_some_and(|n| n.len() > 16 * 1024) {
            return Err(ApiError::invalid("note", "a review note is at most 16 KiB"));
        }
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let p = require_prompt(w.conn(), &project, name).await?;
        let author: Option<String> =
            sqlx::query_scalar("SELECT author FROM versions WHERE prompt_id = $1 AND version = $2")
                .bind(p.id)
                .bind(version)
                .fetch_optional(w.conn())
                .await?;
        let author = author.ok_or_else(|| version_not_found(name, version))?;
        if decision == "approve" && author == actor.user {
            return Err(ApiError::forbidden(format!(
                "`{}` wrote version {version} of `{name}` and cannot approve it; another approver must",
                actor.user
            ))
            .field("decision"));
        }
        let at = now();
        sqlx::query(
            "INSERT INTO reviews (prompt_id, version, reviewer, decision, note, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(p.id)
        .bind(version)
        .bind(&actor.user)
        .bind(decision)
        .bind(&note)
        .bind(&at)
        .execute(w.conn())
        .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: if decision == "approve" {
                    "approve"
                } else {
                    "review"
                }
                .into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                prompt: Some(name.to_string()),
                after: Some(version),
                details: json!({"decision": decision}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(Review {
            reviewer: actor.user.clone(),
            decision: decision.to_string(),
            note,
            created_at: at,
        })
    }

    // -- keys -----------------------------------------------------------

    pub async fn lookup_key(&self, token: &str) -> ApiResult<Option<Principal>> {
        let row = sqlx::query(
            "SELECT k.id, k.prefix, k.org_id, o.name AS org, k.project_id, p.name AS project, k.role, u.name AS user_name \
             FROM api_keys k JOIN orgs o ON o.id = k.org_id JOIN users u ON u.id = k.user_id \
             LEFT JOIN projects p ON p.id = k.project_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        )
        .bind(crate::auth::hash_key(token))
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row.and_then(|r| {
            Some(Principal {
                key_id: r.get("id"),
                key_prefix: r.get("prefix"),
                user: r.get("user_name"),
                org_id: r.get("org_id"),
                org: r.get("org"),
                project_id: r.get("project_id"),
                project: r.get("project"),
                role: Role::parse(&r.get::<String, _>("role"))?,
            })
        }))
    }

    pub async fn key_count(&self) -> ApiResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.db.pool)
            .await?)
    }

    /// Create a key for `user` in `org_id`, scoped to `project` (or the
    /// whole organisation).
    pub async fn create_key(
        &self,
        org_id: i64,
        project: Option<&str>,
        role: Role,
        user: &str,
        name: &str,
        actor: &Actor,
    ) -> ApiResult<CreatedKey> {
        validate_slug(user, "user")?;
        if name.len() > 200 {
            return Err(ApiError::invalid(
                "name",
                "a key name is at most 200 characters",
            ));
        }
        let mut w = self.db.write().await?;
        let org: String = sqlx::query_scalar("SELECT name FROM orgs WHERE id = $1")
            .bind(org_id)
            .fetch_optional(w.conn())
            .await?
            .ok_or_else(|| ApiError::not_found("organisation does not exist"))?;
        let project_id = match project {
            None => None,
            Some(pn) => {
                let p = project_by_name(w.conn(), pn).await?.ok_or_else(|| {
                    ApiError::not_found(format!("project `{pn}` does not exist")).field("project")
                })?;
                if p.org_id != org_id {
                    return Err(ApiError::forbidden(format!(
                        "project `{pn}` belongs to another organisation"
                    )));
                }
                Some(p.id)
            }
        };
        let user_id: i64 =
            match sqlx::query_scalar::<_, i64>(
                "SELECT id FROM users WHERE org_id = $1 AND name = $2",
            )
            .bind(org_id)
            .bind(user)
            .fetch_optional(w.conn())
            .await?
            {
                Some(id) => id,
                None => sqlx::query_scalar(
                    "INSERT INTO users (org_id, name, created_at) VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(org_id)
                .bind(user)
                .bind(now())
                .fetch_one(w.conn())
                .await?,
            };
        let token = crate::auth::generate_key()?;
        let prefix = crate::auth::display_prefix(&token);
        let at = now();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_keys (key_hash, prefix, name, user_id, org_id, project_id, role, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(crate::auth::hash_key(&token))
        .bind(&prefix)
        .bind(name)
        .bind(user_id)
        .bind(org_id)
        .bind(project_id)
        .bind(role.as_str())
        .bind(&at)
        .fetch_one(w.conn())
        .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "key.create".into(),
                org: Some(org.clone()),
                project: project.map(String::from),
                details: json!({"key_id": id, "prefix": prefix, "role": role, "user": user, "name": name}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(CreatedKey {
            info: KeyInfo {
                id,
                prefix,
                name: name.to_string(),
                user: user.to_string(),
                org,
                project: project.map(String::from),
                role,
                created_at: at,
                revoked_at: None,
            },
            key: token,
        })
    }

    pub async fn list_keys(&self, p: &Principal) -> ApiResult<Vec<KeyInfo>> {
        let rows = sqlx::query(
            "SELECT k.id, k.prefix, k.name, u.name AS user_name, o.name AS org, k.project_id, p.name AS project, k.role, k.created_at, k.revoked_at \
             FROM api_keys k JOIN orgs o ON o.id = k.org_id JOIN users u ON u.id = k.user_id \
             LEFT JOIN projects p ON p.id = k.project_id WHERE k.org_id = $1 ORDER BY k.id",
        )
        .bind(p.org_id)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows
            .iter()
            .filter(|r| {
                p.project_id.is_none() || r.get::<Option<i64>, _>("project_id") == p.project_id
            })
            .filter_map(|r| {
                Some(KeyInfo {
                    id: r.get("id"),
                    prefix: r.get("prefix"),
                    name: r.get("name"),
                    user: r.get("user_name"),
                    org: r.get("org"),
                    project: r.get("project"),
                    role: Role::parse(&r.get::<String, _>("role"))?,
                    created_at: r.get("created_at"),
                    revoked_at: r.get("revoked_at"),
                })
            })
            .collect())
    }

    pub async fn revoke_key(&self, p: &Principal, id: i64, actor: &Actor) -> ApiResult<KeyInfo> {
        let keys = self.list_keys(p).await?;
        let Some(k) = keys.into_iter().find(|k| k.id == id) else {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?;
            return Err(match exists {
                Some(_) => ApiError::forbidden(format!("key {id} is outside this key's scope")),
                None => ApiError::not_found(format!("key {id} does not exist")),
            });
        };
        let mut w = self.db.write().await?;
        let at = now();
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(&at)
            .bind(id)
            .execute(w.conn())
            .await?;
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "key.revoke".into(),
                org: Some(k.org.clone()),
                project: k.project.clone(),
                details: json!({"key_id": id, "prefix": k.prefix}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(KeyInfo {
            revoked_at: Some(k.revoked_at.unwrap_or(at)),
            ..k
        })
    }

    // -- secrets --------------------------------------------------------

    pub async fn put_secret(
        &self,
        project: &ProjectInfo,
        name: &str,
        value: &str,
        actor: &Actor,
    ) -> ApiResult<Value> {
        validate_slug(name, "name")?;
        if value.len() > 64 * 1024 {
            return Err(ApiError::invalid("value", "a secret is at most 64 KiB"));
        }
        let mut w = self.db.write().await?;
        let (key_id, sealed) = self
            .db
            .keys
            .seal(value.as_bytes(), &secret_aad(project.id, name))?;
        let at = now();
        let n = sqlx::query(
            "UPDATE secrets SET key_id = $1, value = $2, updated_at = $3, updated_by = $4 WHERE project_id = $5 AND name = $6",
        )
        .bind(&key_id)
        .bind(&sealed)
        .bind(&at)
        .bind(&actor.user)
        .bind(project.id)
        .bind(name)
        .execute(w.conn())
        .await?;
        if n.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO secrets (project_id, name, key_id, value, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(project.id)
            .bind(name)
            .bind(&key_id)
            .bind(&sealed)
            .bind(&at)
            .bind(&actor.user)
            .execute(w.conn())
            .await?;
        }
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "secret.set".into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                details: json!({"secret": name}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(json!({"name": name, "key_id": key_id, "updated_at": at, "updated_by": actor.user}))
    }

    pub async fn list_secrets(&self, project: &ProjectInfo) -> ApiResult<Vec<Value>> {
        let rows = sqlx::query("SELECT name, key_id, updated_at, updated_by FROM secrets WHERE project_id = $1 ORDER BY name")
            .bind(project.id)
            .fetch_all(&self.db.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.get::<String, _>("name"),
                    "key_id": r.get::<String, _>("key_id"),
                    "updated_at": r.get::<String, _>("updated_at"),
                    "updated_by": r.get::<String, _>("updated_by"),
                })
            })
            .collect())
    }

    pub async fn get_secret(&self, project: &ProjectInfo, name: &str) -> ApiResult<String> {
        let row =
            sqlx::query("SELECT key_id, value FROM secrets WHERE project_id = $1 AND name = $2")
                .bind(project.id)
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("secret `{name}` does not exist")))?;
        Ok(self.db.keys.open_string(
            &row.get::<String, _>("key_id"),
            &row.get::<Vec<u8>, _>("value"),
            &secret_aad(project.id, name),
        )?)
    }

    pub async fn delete_secret(
        &self,
        project: &ProjectInfo,
        name: &str,
        actor: &Actor,
    ) -> ApiResult<()> {
        let mut w = self.db.write().await?;
        let n = sqlx::query("DELETE FROM secrets WHERE project_id = $1 AND name = $2")
            .bind(project.id)
            .bind(name)
            .execute(w.conn())
            .await?;
        if n.rows_affected() == 0 {
            return Err(ApiError::not_found(format!(
                "secret `{name}` does not exist"
            )));
        }
        append_audit(
            w.conn(),
            actor,
            AuditEntry {
                action: "secret.delete".into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                details: json!({"secret": name}),
                ..Default::default()
            },
        )
        .await?;
        w.commit().await?;
        Ok(())
    }

    // -- audit ------------------------------------------------------------

    /// Entries matching `f`, oldest first. `org`/`project` restrict the
    /// scope (the caller's key).
    pub async fn audit_query(
        &self,
        org: &str,
        project: Option<&str>,
        f: &AuditFilter,
    ) -> ApiResult<Vec<AuditRecord>> {
        let mut sql = String::from(
            "SELECT seq, at, actor, action, org, project, prompt, label, before_version, after_version, request_id, details, prev_hash, hash FROM audit_log WHERE org = $1",
        );
        let mut binds: Vec<String> = vec![org.to_string()];
        let mut add = |cond: &str, v: String, binds: &mut Vec<String>| {
            binds.push(v);
            sql.push_str(&format!(" AND {cond} ${}", binds.len()));
        };
        if let Some(p) = project {
            add("project =", p.to_string(), &mut binds);
        }
        if let Some(p) = &f.project {
            add("project =", p.clone(), &mut binds);
        }
        if let Some(from) = &f.from {
            let t = crate::db::parse_time(from).ok_or_else(|| {
                ApiError::invalid("from", "expected an RFC 3339 time or YYYY-MM-DD")
            })?;
            add("at >=", t, &mut binds);
        }
        if let Some(to) = &f.to {
            let t = crate::db::parse_time(to).ok_or_else(|| {
                ApiError::invalid("to", "expected an RFC 3339 time or YYYY-MM-DD")
            })?;
            add("at <", t, &mut binds);
        }
        if let Some(a) = &f.actor {
            add("actor =", a.clone(), &mut binds);
        }
        if let Some(a) = &f.action {
            add("action =", a.clone(), &mut binds);
        }
        if let Some(p) = &f.prompt {
            add("prompt =", p.clone(), &mut binds);
        }
        let limit = f.limit.unwrap_or(10_000).clamp(1, 1_000_000);
        sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.db.pool).await?;
        Ok(rows.iter().map(AuditRecord::from_row).collect())
    }

    /// Walk the whole chain: sequence numbers, links, hashes, and the head.
    pub async fn audit_verify(&self) -> ApiResult<VerifyReport> {
        let mut tx = self.db.read().await?;
        let mut problems = Vec::new();
        let mut prev_hash = AUDIT_GENESIS.to_string();
        let mut expect_seq = 1i64;
        let mut count = 0i64;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT seq, at, actor, action, org, project, prompt, label, before_version, after_version, request_id, details, prev_hash, hash \
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT 5000",
            )
            .bind(after)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let rec = AuditRecord::from_row(r);
                after = rec.seq;
                count += 1;
                if rec.seq != expect_seq {
                    problems.push(format!(
                        "entry {} follows entry {}: entries {}..{} are missing",
                        rec.seq,
                        expect_seq - 1,
                        expect_seq,
                        rec.seq - 1
                    ));
                }
                if rec.prev_hash != prev_hash {
                    problems.push(format!(
                        "entry {}: previous-hash link is broken (an entry before it was edited or removed)",
                        rec.seq
                    ));
                }
                let actual = rec.compute_hash();
                if actual != rec.hash {
                    problems.push(format!(
                        "entry {}: content does not match its hash (edited)",
                        rec.seq
                    ));
                }
                prev_hash = rec.hash.clone();
                expect_seq = rec.seq + 1;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match head {
            Some(h) => {
                let hs: i64 = h.get("seq");
                let hh: String = h.get("hash");
                if hs != expect_seq - 1 || (count > 0 && hh != prev_hash) {
                    problems.push(format!(
                        "the log ends at entry {} but its head records entry {hs}: entries were removed from the end",
                        expect_seq - 1
                    ));
                }
            }
            None if count > 0 => problems.push("the audit head is missing".into()),
            None => {}
        }
        Ok(VerifyReport {
            ok: problems.is_empty(),
            entries: count,
            head: if count > 0 { Some(prev_hash) } else { None },
            problems,
        })
    }

    // -- bulk load (demo, tests) -----------------------------------------

    /// Load a prompt directory's snapshot into a project as a system actor:
    /// every prompt gets a version (when its content changed) and the labels
    /// its file names, protected ones included, without approvals.
    pub async fn import_snapshot(
        &self,
        project: &str,
        snap: &SnapshotData,
        actor: &Actor,
    ) -> ApiResult<usize> {
        let mut pending: Vec<&PromptData> = snap.prompts.iter().map(|p| &**p).collect();
        let mut created = 0;
        // Includes may point at prompts not loaded yet: retry in passes.
        for _ in 0..=snap.prompts.len() {
            let mut failed = Vec::new();
            let mut last_err = None;
            for p in &pending {
                let Some(latest) = p.versions.iter().max_by_key(|v| v.version) else {
                    continue;
                };
                let labels: Vec<String> = p
                    .labels
                    .iter()
                    .filter(|(_, v)| **v == latest.version)
                    .map(|(l, _)| l.clone())
                    .collect();
                let mut conn = self.db.pool.acquire().await?;
                let pr = project_by_name(&mut conn, project).await?.ok_or_else(|| {
                    ApiError::not_found(format!("project `{project}` does not exist"))
                })?;
                let has = prompt_row(&mut conn, pr.id, &p.name).await?.is_some();
                drop(conn);
                let nv = NewVersion::from_version(latest, labels, p.policy.clone());
                match self
                    .create_version(None, project, &p.name, nv, !has, actor)
                    .await
                {
                    Ok(out) => {
                        if out.created {
                            created += 1;
                        }
                    }
                    Err(e) => {
                        last_err = Some(e);
                        failed.push(*p);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(created);
            }
            if failed.len() == pending.len() {
                return Err(last_err.unwrap_or_else(|| ApiError::internal("import failed")));
            }
            pending = failed;
        }
        Ok(created)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum LabelTarget {
    Version(u32),
    Remove,
    /// The version the label pointed at before its current one.
    Previous,
}

fn version_not_found(name: &str, v: i64) -> ApiError {
    ApiError::not_found(format!("prompt `{name}` has no version {v}"))
}

/// Organisation, project, user and secret names: letters, digits, `-`, `_`, `.`.
pub fn validate_slug(s: &str, field: &str) -> ApiResult<()> {
    if s.is_empty()
        || s.len() > 100
        || s.starts_with('.')
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(ApiError::invalid(
            field,
            format!("`{s}` must be 1-100 characters of letters, digits, `-`, `_`, `.`, `@`"),
        ));
    }
    Ok(())
}
