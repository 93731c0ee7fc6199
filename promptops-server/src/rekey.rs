//! Key rotation: re-encrypt every row sealed with an older key.

use sqlx::Row;

use crate::db::Db;
use crate::error::ApiResult;

/// Re-seal every version body, event payload and secret whose key id is
/// not the current one. Returns the number of rows rewritten. One
/// transaction: a crash leaves every row readable with the old or new key.
pub async fn rekey(db: &Db) -> ApiResult<usize> {
    let current = db.keys.current_id().to_string();
    let mut w = db.write().await?;
    let mut n = 0;
    let rows =
        sqlx::query("SELECT id, prompt_id, version, key_id, body FROM versions WHERE key_id <> $1")
            .bind(&current)
            .fetch_all(w.conn())
            .await?;
    for r in &rows {
        let aad = format!(
            "promptops/version/{}/{}",
            r.get::<i64, _>("prompt_id"),
            r.get::<i64, _>("version")
        );
        let plain = db.keys.open(
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("body"),
            &aad,
        )?;
        let (kid, sealed) = db.keys.seal(&plain, &aad)?;
        sqlx::query("UPDATE versions SET key_id = $1, body = $2 WHERE id = $3")
            .bind(kid)
            .bind(sealed)
            .bind(r.get::<i64, _>("id"))
            .execute(w.conn())
            .await?;
        n += 1;
    }
    let rows =
        sqlx::query("SELECT project_id, revision, key_id, payload FROM events WHERE key_id <> $1")
            .bind(&current)
            .fetch_all(w.conn())
            .await?;
    for r in &rows {
        let (pid, rev) = (r.get::<i64, _>("project_id"), r.get::<i64, _>("revision"));
        let aad = format!("promptops/event/{pid}/{rev}");
        let plain = db.keys.open(
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("payload"),
            &aad,
        )?;
        let (kid, sealed) = db.keys.seal(&plain, &aad)?;
        sqlx::query(
            "UPDATE events SET key_id = $1, payload = $2 WHERE project_id = $3 AND revision = $4",
        )
        .bind(kid)
        .bind(sealed)
        .bind(pid)
        .bind(rev)
        .execute(w.conn())
        .await?;
        n += 1;
    }
    let rows =
        sqlx::query("SELECT project_id, name, key_id, value FROM secrets WHERE key_id <> $1")
            .bind(&current)
            .fetch_all(w.conn())
            .await?;
    for r in &rows {
        let (pid, name) = (r.get::<i64, _>("project_id"), r.get::<String, _>("name"));
        let aad = format!("promptops/secret/{pid}/{name}");
        let plain = db.keys.open(
            &r.get::<String, _>("key_id"),
            &r.get::<Vec<u8>, _>("value"),
            &aad,
        )?;
        let (kid, sealed) = db.keys.seal(&plain, &aad)?;
        sqlx::query(
            "UPDATE secrets SET key_id = $1, value = $2 WHERE project_id = $3 AND name = $4",
        )
        .bind(kid)
        .bind(sealed)
        .bind(pid)
        .bind(&name)
        .execute(w.conn())
        .await?;
        n += 1;
    }
    w.commit().await?;
    Ok(n)
}
