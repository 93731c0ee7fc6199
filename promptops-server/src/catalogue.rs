//! The model catalogue of a project: the models it may use (provider, model
//! id, context window, prices, enabled, base URL, health). Every change is
//! a registry event: the revision bumps and the delta carries the whole
//! catalogue (`Delta::models`), so SDKs get it like prompt changes.
//!
//! Provider API keys are not part of the catalogue: they stay in the app's
//! environment, or (for the registry's health check) in the project's
//! encrypted secrets, named `<PROVIDER>_API_KEY` (see [`key_secret_name`]).

use promptops_core::{HealthStatus, ModelEntry, ModelHealth, PricingTable};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use crate::db::now;
use crate::error::{ApiError, ApiResult};
use crate::registry::{Actor, AuditEntry, ProjectInfo, Registry, append_audit};

const COLUMNS: &str = "model, provider, context_window, max_output_tokens, input_per_mtok, \
     output_per_mtok, cached_input_per_mtok, enabled, base_url, health_status, health_changed_at, \
     health_checked_at, health_error, created_at, updated_at, updated_by";

/// The secret the health check reads a provider's API key from:
/// `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `<PROVIDER>_API_KEY` with `-`
/// as `_` for other (OpenAI-compatible) providers.
pub fn key_secret_name(provider: &str) -> String {
    format!(
        "{}_API_KEY",
        provider.to_ascii_uppercase().replace('-', "_")
    )
}

/// A catalogue row as the REST API shows it: the entry as SDKs get it, plus
/// when the health was last checked and who changed the entry.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    #[serde(flatten)]
    pub entry: ModelEntry,
    /// Health as SDKs see it (`status`, `checked_at` of the check that set
    /// it, `error`), repeated here even when `unknown`.
    pub health: ModelHealth,
    /// The last check, whether or not it changed the status.
    pub last_checked_at: Option<String>,
    /// The secret the health check uses (its value is never returned here).
    pub key_secret: String,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: String,
}

fn record_from_row(r: &sqlx::any::AnyRow) -> ModelRecord {
    let entry = entry_from_row(r);
    ModelRecord {
        health: entry.health.clone(),
        key_secret: key_secret_name(&entry.provider),
        entry,
        last_checked_at: r.get("health_checked_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        updated_by: r.get("updated_by"),
    }
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> ModelEntry {
    let status: String = r.get("health_status");
    ModelEntry {
        model: r.get("model"),
        provider: r.get("provider"),
        context_window: r.get::<Option<i64>, _>("context_window").map(|v| v as u64),
        max_output_tokens: r
            .get::<Option<i64>, _>("max_output_tokens")
            .map(|v| v as u64),
        input_per_mtok: r.get("input_per_mtok"),
        output_per_mtok: r.get("output_per_mtok"),
        cached_input_per_mtok: r.get("cached_input_per_mtok"),
        enabled: r.get::<i64, _>("enabled") != 0,
        base_url: r.get("base_url"),
        health: ModelHealth {
            status: HealthStatus::parse(&status).unwrap_or_default(),
            checked_at: r.get("health_changed_at"),
            error: r.get("health_error"),
        },
    }
}

/// The catalogue of a project as SDKs get it, sorted by model id.
pub(crate) async fn models_in(
    conn: &mut AnyConnection,
    project_id: i64,
) -> ApiResult<Vec<ModelEntry>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM models WHERE project_id = $1 ORDER BY model"
    )))
    .bind(project_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(entry_from_row).collect())
}

async fn records_in(
    conn: &mut AnyConnection,
    project_id: i64,
    model: Option<&str>,
) -> ApiResult<Vec<ModelRecord>> {
    let rows = match model {
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM models WHERE project_id = $1 ORDER BY model"
            )))
            .bind(project_id)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(m) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM models WHERE project_id = $1 AND model = $2"
            )))
            .bind(project_id)
            .bind(m)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows.iter().map(record_from_row).collect())
}

/// The body of `PUT …/models/{model}`, checked field by field so every
/// error names its field. Prices may be left out for a model of the
/// built-in price table (its prices are stored).
pub fn parse_model_body(model: &str, body: &Value) -> ApiResult<ModelEntry> {
    let obj: &Map<String, Value> = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "expected a JSON object"))?;
    let str_field = |k: &str| -> ApiResult<Option<String>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(k, format!("`{k}` must be a string"))),
        }
    };
    let num_field = |k: &str| -> ApiResult<Option<f64>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be a number (USD per million tokens)"),
            )),
        }
    };
    let int_field = |k: &str| -> ApiResult<Option<u64>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid(k, format!("`{k}` must be a positive integer (tokens)"))
            }),
            Some(_) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be a positive integer (tokens)"),
            )),
        }
    };
    for k in obj.keys() {
        match k.as_str() {
            "model"
            | "provider"
            | "context_window"
            | "max_output_tokens"
            | "input_per_mtok"
            | "output_per_mtok"
            | "cached_input_per_mtok"
            | "enabled"
            | "base_url" => {}
            "api_key" | "key" | "secret" => {
                return Err(ApiError::invalid(
                    k,
                    "API keys are not part of the catalogue: keep them in the app's environment, \
                     or store one as the project secret named in `key_secret` (encrypted at rest)",
                ));
            }
            "health" => {
                return Err(ApiError::invalid(
                    k,
                    "health is set by the registry's health check, not by requests",
                ));
            }
            other => {
                return Err(ApiError::invalid(other, format!("unknown field `{other}`")));
            }
        }
    }
    if let Some(m) = str_field("model")?
        && m != model
    {
        return Err(ApiError::invalid(
            "model",
            format!("the body names model `{m}` but the path names `{model}`"),
        ));
    }
    let provider = str_field("provider")?.ok_or_else(|| {
        ApiError::invalid(
            "provider",
            "`provider` is required (openai, anthropic, or an OpenAI-compatible name)",
        )
    })?;
    let builtin = PricingTable::builtin();
    let known = builtin.get(model).filter(|p| p.model == model);
    let price = |k: &str, from: Option<f64>| -> ApiResult<f64> {
        match (num_field(k)?, from) {
            (Some(v), _) => Ok(v),
            (None, Some(v)) => Ok(v),
            (None, None) => Err(ApiError::invalid(
                k,
                format!("`{k}` is required: `{model}` is not in the built-in price table"),
            )),
        }
    };
    let input = price("input_per_mtok", known.map(|p| p.input_per_mtok))?;
    let output = price("output_per_mtok", known.map(|p| p.output_per_mtok))?;
    let cached = match num_field("cached_input_per_mtok")? {
        Some(v) => Some(v),
        // The built-in cached price only goes with the built-in prices.
        None if obj.get("input_per_mtok").is_none_or(Value::is_null) => {
            known.and_then(|p| p.cached_input_per_mtok)
        }
        None => None,
    };
    let enabled = match obj.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "enabled",
                "`enabled` must be true or false",
            ));
        }
    };
    let mut e = ModelEntry::new(provider, model, input, output);
    e.cached_input_per_mtok = cached;
    e.context_window = int_field("context_window")?;
    e.max_output_tokens = int_field("max_output_tokens")?;
    e.enabled = enabled;
    e.base_url = str_field("base_url")?;
    e.check()
        .map_err(|(f, m)| ApiError::invalid(f, format!("`{f}` {m}")))?;
    if e.provider != "openai" && e.provider != "anthropic" && e.base_url.is_none() {
        return Err(ApiError::invalid(
            "base_url",
            format!(
                "provider `{}` is not built in: give the `base_url` of its OpenAI-compatible API",
                e.provider
            ),
        ));
    }
    Ok(e)
}

/// A health check's verdict on one model.
#[derive(Debug, Clone, Serialize)]
pub struct HealthResult {
    pub model: String,
    pub status: HealthStatus,
    pub error: Option<String>,
    /// The status differs from the stored one (a registry event was made).
    pub changed: bool,
    pub revision: i64,
}

impl Registry {
    pub async fn list_models(&self, project: &ProjectInfo) -> ApiResult<Vec<ModelRecord>> {
        let mut conn = self.db.pool.acquire().await?;
        records_in(&mut conn, project.id, None).await
    }

    pub async fn get_model(&self, project: &ProjectInfo, model: &str) -> ApiResult<ModelRecord> {
        let mut conn = self.db.pool.acquire().await?;
        records_in(&mut conn, project.id, Some(model))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| model_not_found(model))
    }

    /// Add or replace a catalogue entry. The health status is kept unless
    /// the provider or base URL changed (then it is `unknown` again). An
    /// identical entry changes nothing (no event, no audit entry).
    pub async fn put_model(
        &self,
        project_name: &str,
        mut entry: ModelEntry,
        actor: &Actor,
    ) -> ApiResult<Value> {
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let before = records_in(w.conn(), project.id, Some(&entry.model))
            .await?
            .into_iter()
            .next();
        if let Some(b) = &before
            && b.entry.provider == entry.provider
            && b.entry.base_url == entry.base_url
        {
            entry.health = b.entry.health.clone();
        }
        if let Some(b) = before.as_ref().filter(|b| b.entry == entry) {
            return Ok(json!({"model": b, "changed": false, "revision": project.revision}));
        }
        let at = now();
        let health_reset = before.is_some() && entry.health == ModelHealth::default();
        if before.is_some() {
            let mut q = sqlx::query(
                "UPDATE models SET provider = $1, context_window = $2, max_output_tokens = $3, \
                 input_per_mtok = $4, output_per_mtok = $5, cached_input_per_mtok = $6, enabled = $7, \
                 base_url = $8, updated_at = $9, updated_by = $10 WHERE project_id = $11 AND model = $12",
            );
            q = bind_entry(q, &entry)
                .bind(&at)
                .bind(&actor.user)
                .bind(project.id)
                .bind(&entry.model);
            q.execute(w.conn()).await?;
            if health_reset {
                sqlx::query(
                    "UPDATE models SET health_status = 'unknown', health_changed_at = NULL, \
                     health_checked_at = NULL, health_error = NULL WHERE project_id = $1 AND model = $2",
                )
                .bind(project.id)
                .bind(&entry.model)
                .execute(w.conn())
                .await?;
            }
        } else {
            let mut q = sqlx::query(
                "INSERT INTO models (provider, context_window, max_output_tokens, input_per_mtok, \
                 output_per_mtok, cached_input_per_mtok, enabled, base_url, updated_at, updated_by, \
                 project_id, model, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            );
            q = bind_entry(q, &entry)
                .bind(&at)
                .bind(&actor.user)
                .bind(project.id)
                .bind(&entry.model)
                .bind(&at);
            q.execute(w.conn()).await?;
        }
        let (change, revision) = self
            .catalogue_changed(w.conn(), &project, actor, "model.set", |revision| {
                json!({
                    "model": entry.model,
                    "before": before.as_ref().map(|b| &b.entry),
                    "after": &entry,
                    "revision": revision,
                })
            })
            .await?;
        let rec = records_in(w.conn(), project.id, Some(&entry.model))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal("the stored model is gone"))?;
        self.finish(w, change).await?;
        Ok(json!({"model": rec, "changed": true, "revision": revision}))
    }

    pub async fn delete_model(
        &self,
        project_name: &str,
        model: &str,
        actor: &Actor,
    ) -> ApiResult<Value> {
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let before = records_in(w.conn(), project.id, Some(model))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| model_not_found(model))?;
        sqlx::query("DELETE FROM models WHERE project_id = $1 AND model = $2")
            .bind(project.id)
            .bind(model)
            .execute(w.conn())
            .await?;
        let (change, revision) = self
            .catalogue_changed(
                w.conn(),
                &project,
                actor,
                "model.delete",
                |revision| json!({"model": model, "before": before.entry, "revision": revision}),
            )
            .await?;
        self.finish(w, change).await?;
        Ok(json!({"model": model, "deleted": true, "revision": revision}))
    }

    /// Record a health check's verdict. The time of the check is always
    /// kept (`last_checked_at`); a new status is a registry event (SDKs see
    /// `health`) with an audit entry by `health-check`. A verdict about an
    /// entry whose provider or base URL changed while it was checked is
    /// dropped.
    pub async fn record_health(
        &self,
        project_name: &str,
        checked: &ModelEntry,
        status: HealthStatus,
        error: Option<String>,
    ) -> ApiResult<HealthResult> {
        let actor = Actor::system("health-check");
        let mut w = self.db.write().await?;
        let project = self.lock_project(w.conn(), project_name).await?;
        let now_rec = records_in(w.conn(), project.id, Some(&checked.model))
            .await?
            .into_iter()
            .next();
        let Some(cur) = now_rec.filter(|c| {
            c.entry.provider == checked.provider && c.entry.base_url == checked.base_url
        }) else {
            return Ok(HealthResult {
                model: checked.model.clone(),
                status,
                error,
                changed: false,
                revision: project.revision,
            });
        };
        let at = now();
        sqlx::query(
            "UPDATE models SET health_checked_at = $1 WHERE project_id = $2 AND model = $3",
        )
        .bind(&at)
        .bind(project.id)
        .bind(&checked.model)
        .execute(w.conn())
        .await?;
        if cur.entry.health.status == status {
            w.commit().await?;
            return Ok(HealthResult {
                model: checked.model.clone(),
                status,
                error,
                changed: false,
                revision: project.revision,
            });
        }
        sqlx::query(
            "UPDATE models SET health_status = $1, health_changed_at = $2, health_error = $3 \
             WHERE project_id = $4 AND model = $5",
        )
        .bind(status.as_str())
        .bind(&at)
        .bind(error.clone())
        .bind(project.id)
        .bind(&checked.model)
        .execute(w.conn())
        .await?;
        let (change, revision) = self
            .catalogue_changed(w.conn(), &project, &actor, "model.health", |revision| {
                json!({
                    "model": checked.model,
                    "before": cur.entry.health.status,
                    "after": status,
                    "error": error,
                    "revision": revision,
                })
            })
            .await?;
        self.finish(w, change).await?;
        Ok(HealthResult {
            model: checked.model.clone(),
            status,
            error,
            changed: true,
            revision,
        })
    }

    /// Names of every project (for the health check).
    pub async fn project_names(&self) -> ApiResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM projects ORDER BY name")
                .fetch_all(&self.db.pool)
                .await?,
        )
    }

    /// A stored secret's value, `None` when the project has no such secret.
    pub(crate) async fn secret_if_any(
        &self,
        project: &ProjectInfo,
        name: &str,
    ) -> ApiResult<Option<String>> {
        match self.get_secret(project, name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn bind_entry<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    e: &ModelEntry,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(e.provider.clone())
        .bind(e.context_window.map(|v| v as i64))
        .bind(e.max_output_tokens.map(|v| v as i64))
        .bind(e.input_per_mtok)
        .bind(e.output_per_mtok)
        .bind(e.cached_input_per_mtok)
        .bind(e.enabled as i64)
        .bind(e.base_url.clone())
}

fn model_not_found(model: &str) -> ApiError {
    ApiError::not_found(format!("model `{model}` is not in the catalogue"))
}

impl Registry {
    /// After a change to a project's models: a delta carrying the new
    /// catalogue (a new revision) and the audit entry `action` with the
    /// `details` for that revision. Returns the change and its revision.
    async fn catalogue_changed(
        &self,
        conn: &mut AnyConnection,
        project: &ProjectInfo,
        actor: &Actor,
        action: &str,
        details: impl FnOnce(i64) -> Value,
    ) -> ApiResult<(crate::registry::Change, i64)> {
        let models = models_in(&mut *conn, project.id).await?;
        let change = self
            .record_delta(&mut *conn, project, vec![], vec![], Some(models))
            .await?;
        let revision = change.delta.revision as i64;
        append_audit(
            conn,
            actor,
            AuditEntry {
                action: action.into(),
                org: Some(project.org.clone()),
                project: Some(project.name.clone()),
                details: details(revision),
                ..Default::default()
            },
        )
        .await?;
        Ok((change, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: ApiResult<ModelEntry>) -> String {
        r.unwrap_err().body.field.unwrap_or_default()
    }

    #[test]
    fn body_errors_name_the_field() {
        let ok = parse_model_body(
            "house",
            &json!({"provider": "local", "base_url": "http://127.0.0.1:1/v1",
                    "input_per_mtok": 0.1, "output_per_mtok": 0.2}),
        )
        .unwrap();
        assert_eq!(ok.model, "house");
        assert!(ok.enabled);
        // Built-in model: prices from the table.
        let b = parse_model_body("gpt-4o-mini", &json!({"provider": "openai"})).unwrap();
        assert_eq!(
            (b.input_per_mtok, b.cached_input_per_mtok),
            (0.15, Some(0.075))
        );
        assert_eq!(
            field(parse_model_body("house", &json!({"provider": "local"}))),
            "input_per_mtok"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "api_key": "sk-1"})
            )),
            "api_key"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "input_per_mtok": "cheap"})
            )),
            "input_per_mtok"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "output_per_mtok": -1})
            )),
            "output_per_mtok"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "context_window": -5})
            )),
            "context_window"
        );
        assert_eq!(
            field(parse_model_body("gpt-4o", &json!({"input_per_mtok": 1}))),
            "provider"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "model": "gpt-5"})
            )),
            "model"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "enabled": "yes"})
            )),
            "enabled"
        );
        assert_eq!(
            field(parse_model_body(
                "m",
                &json!({"provider": "local", "input_per_mtok": 1, "output_per_mtok": 1})
            )),
            "base_url"
        );
        assert_eq!(
            field(parse_model_body(
                "gpt-4o",
                &json!({"provider": "openai", "colour": 1})
            )),
            "colour"
        );
        assert_eq!(key_secret_name("openai"), "OPENAI_API_KEY");
        assert_eq!(key_secret_name("my-vllm"), "MY_VLLM_API_KEY");
    }
}
