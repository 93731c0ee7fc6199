//! Storage: encryption at rest (raw database file), the audit chain against
//! edits and deletions made directly in the database, the append-only
//! triggers, and crash consistency (kill -9 during a burst of writes).
//! These use the embedded SQLite database (they read its file).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Env, Options, random_hex};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

fn sqlite_env() -> Options {
    let dir = tempfile::tempdir().unwrap();
    Options {
        database_url: Some(dir.path().join("registry.db").display().to_string()),
        dir: Some(dir),
        ..Default::default()
    }
}

fn read_all(db: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            out.extend(b);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_plaintext_templates_or_secrets_in_the_database_file() {
    let env = Env::start_with(sqlite_env()).await;
    let db = PathBuf::from(&env.database_url);
    let (s, v) = env
        .post(
            "author",
            "/v1/projects/shop/prompts",
            json!({"name": "secret/plan", "type": "chat", "messages": [{"role": "system", "content": "TOPSECRET-TEMPLATE-MARKER {{ x }}"}],
                   "variants": {"claude": {"template": "VARIANT-MARKER-TEXT"}}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    env.new_version("author", "secret/plan", "SECOND-VERSION-MARKER")
        .await;
    env.put(
        "admin",
        "/v1/projects/shop/secrets/api",
        json!({"value": "SECRET-VALUE-MARKER"}),
    )
    .await;
    // Served decrypted.
    let snap = env.snapshot("sdk", "shop").await.to_string();
    assert!(snap.contains("SECOND-VERSION-MARKER"), "{snap}");
    let Env { server, dir, .. } = env;
    server.stop(Duration::from_secs(1)).await;
    let bytes = read_all(&db);
    assert!(
        contains(&bytes, "secret/plan"),
        "read the right file (names are not encrypted)"
    );
    for marker in [
        "TOPSECRET-TEMPLATE-MARKER",
        "VARIANT-MARKER-TEXT",
        "SECOND-VERSION-MARKER",
        "SECRET-VALUE-MARKER",
    ] {
        assert!(
            !contains(&bytes, marker),
            "plaintext `{marker}` found in the database file"
        );
    }
    drop(dir);
}

#[tokio::test]
async fn embedded_key_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let key = dir.path().join("p.db.key");
    let mut child = spawn_server(&db, None, &[]);
    let (_url, _) = wait_ready(&mut child, &db);
    kill(&mut child);
    let meta = std::fs::metadata(&key).expect("key file created next to the db");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let first = std::fs::read_to_string(&key).unwrap();
    let mut child = spawn_server(&db, None, &[]);
    wait_ready(&mut child, &db);
    kill(&mut child);
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        first,
        "the key is reused, not regenerated"
    );
}

async fn raw_sqlite(db: &Path) -> sqlx::SqliteConnection {
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(db);
    sqlx::SqliteConnection::connect_with(&opts).await.unwrap()
}

fn copy_db(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut a = from.as_os_str().to_owned();
        a.push(suffix);
        let mut b = to.as_os_str().to_owned();
        b.push(suffix);
        let _ = std::fs::copy(PathBuf::from(a), PathBuf::from(b));
    }
}

fn verify_cli(db: &Path, master_key: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--database-url"])
        .arg(db)
        .env("PROMPTOPS_MASTER_KEY", master_key)
        .env_remove("PROMPTOPS_API_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn audit_verify_detects_edits_and_deletions_in_the_raw_database() {
    let env = Env::start_with(sqlite_env()).await;
    env.create_prompt("author", "a/b", "one").await;
    env.new_version("author", "a/b", "two").await;
    env.approve("a/b", 2).await;
    env.publish("a/b", 2).await;
    let db = PathBuf::from(&env.database_url);
    let key = env.master_key.clone();
    let Env { server, dir, .. } = env;
    server.stop(Duration::from_secs(1)).await;
    let (ok, out) = verify_cli(&db, &key);
    assert!(ok, "intact log verifies: {out}");
    assert!(out.contains("audit log OK"), "{out}");

    // The append-only triggers refuse edits through SQL.
    {
        let mut c = raw_sqlite(&db).await;
        let e = c
            .execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
            .await;
        assert!(e.is_err(), "trigger blocks updates");
        let e = c.execute("DELETE FROM audit_log WHERE seq = 2").await;
        assert!(e.is_err(), "trigger blocks deletes");
    }

    let n: i64 = {
        let mut c = raw_sqlite(&db).await;
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert!(n >= 8, "{n} entries");

    // Someone with file access drops the triggers and edits a row.
    let edited = dir.path().join("edited.db");
    copy_db(&db, &edited);
    {
        let mut c = raw_sqlite(&edited).await;
        c.execute("DROP TRIGGER audit_log_no_update").await.unwrap();
        c.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
            .await
            .unwrap();
    }
    let (ok, out) = verify_cli(&edited, &key);
    assert!(!ok, "edit detected: {out}");
    assert!(
        out.contains("entry 3: content does not match its hash"),
        "{out}"
    );

    // …or deletes a row in the middle.
    let deleted = dir.path().join("deleted.db");
    copy_db(&db, &deleted);
    {
        let mut c = raw_sqlite(&deleted).await;
        c.execute("DROP TRIGGER audit_log_no_delete").await.unwrap();
        c.execute("DELETE FROM audit_log WHERE seq = 4")
            .await
            .unwrap();
    }
    let (ok, out) = verify_cli(&deleted, &key);
    assert!(!ok, "deletion detected: {out}");
    assert!(out.contains("entries 4..4 are missing"), "{out}");

    // …or truncates the end (the head records the last entry).
    let truncated = dir.path().join("truncated.db");
    copy_db(&db, &truncated);
    {
        let mut c = raw_sqlite(&truncated).await;
        c.execute("DROP TRIGGER audit_log_no_delete").await.unwrap();
        c.execute(sqlx::AssertSqlSafe(format!(
            "DELETE FROM audit_log WHERE seq = {n}"
        )))
        .await
        .unwrap();
    }
    let (ok, out) = verify_cli(&truncated, &key);
    assert!(!ok, "truncation detected: {out}");
    assert!(out.contains("removed from the end"), "{out}");

    // …or rewrites a row and recomputes its hash: the next link breaks.
    let rehashed = dir.path().join("rehashed.db");
    copy_db(&db, &rehashed);
    {
        let mut c = raw_sqlite(&rehashed).await;
        c.execute("DROP TRIGGER audit_log_no_update").await.unwrap();
        let row: (i64, String, String, String, String, String) = sqlx::query_as(
            "SELECT seq, at, actor, action, details, prev_hash FROM audit_log WHERE seq = 2",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        let mut rec = promptops_server::registry::AuditRecord {
            seq: row.0,
            at: row.1,
            actor: "mallory".into(),
            action: row.3,
            org: None,
            project: None,
            prompt: None,
            label: None,
            before_version: None,
            after_version: None,
            request_id: None,
            details: row.4,
            prev_hash: row.5,
            hash: String::new(),
        };
        #[allow(clippy::type_complexity)]
        let full: (Option<String>, Option<String>, Option<String>, Option<String>, Option<i64>, Option<i64>, Option<String>) =
            sqlx::query_as("SELECT org, project, prompt, label, before_version, after_version, request_id FROM audit_log WHERE seq = 2")
                .fetch_one(&mut c)
                .await
                .unwrap();
        (
            rec.org,
            rec.project,
            rec.prompt,
            rec.label,
            rec.before_version,
            rec.after_version,
            rec.request_id,
        ) = full;
        rec.hash = rec.compute_hash();
        sqlx::query("UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 2")
            .bind(&rec.actor)
            .bind(&rec.hash)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let (ok, out) = verify_cli(&rehashed, &key);
    assert!(!ok, "re-hashed edit detected: {out}");
    assert!(
        out.contains("entry 3: previous-hash link is broken"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------
// Crash consistency with the real binary.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(db: &Path, master_key: Option<&str>, extra: &[&str]) -> Child {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--database-url",
    ])
    .arg(db)
    .args(extra)
    .env("PROMPTOPS_LOG", "warn")
    .env_remove("PROMPTOPS_REDIS_URL")
    .env_remove("PROMPTOPS_DATABASE_URL")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    match master_key {
        Some(k) => cmd.env("PROMPTOPS_MASTER_KEY", k),
        None => cmd.env_remove("PROMPTOPS_MASTER_KEY"),
    };
    cmd.spawn().unwrap()
}

/// Wait for the "registry on URL" line; returns the URL and the bootstrap
/// admin key when one was written.
fn wait_ready(child: &mut Child, db: &Path) -> (String, Option<String>) {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = loop {
        let l = lines.next().expect("server output").unwrap();
        if l.starts_with("promptops registry on") {
            break l;
        }
    };
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first}"))
        .to_string();
    // Drain the rest in the background so the pipe never fills.
    std::thread::spawn(move || for _ in lines {});
    let mut keyfile = db.as_os_str().to_owned();
    keyfile.push(".admin-key");
    let key = std::fs::read_to_string(PathBuf::from(keyfile))
        .ok()
        .map(|k| k.trim().to_string());
    (url, key)
}

fn kill(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[tokio::test]
async fn kill_9_during_a_burst_leaves_a_consistent_registry() {
    promptops_server::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let master = random_hex(32);
    let mut child = spawn_server(&db, Some(&master), &["--poll-interval-ms", "0"]);
    let (url, admin) = wait_ready(&mut child, &db);
    let admin = admin.expect("bootstrap admin key");
    let http = reqwest::Client::new();
    let call = {
        let (http, url, admin) = (http.clone(), url.clone(), admin.clone());
        move |method: reqwest::Method, path: String, body: Option<Value>| {
            let http = http.clone();
            let url = url.clone();
            let admin = admin.clone();
            async move {
                let mut r = http
                    .request(method, format!("{url}{path}"))
                    .bearer_auth(admin)
                    .timeout(Duration::from_secs(5));
                if let Some(b) = body {
                    r = r.json(&b);
                }
                match r.send().await {
                    Ok(resp) => {
                        let s = resp.status().as_u16();
                        (s, resp.json::<Value>().await.unwrap_or(Value::Null))
                    }
                    Err(_) => (0, Value::Null),
                }
            }
        }
    };
    let (s, v) = call(
        reqwest::Method::POST,
        "/v1/projects".into(),
        Some(json!({"name": "crash"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    for i in 0..4 {
        let (s, v) = call(
            reqwest::Method::POST,
            "/v1/projects/crash/prompts".into(),
            Some(json!({"name": format!("m/p{i}"), "type": "text", "template": "start"})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    // Burst: 8 writers creating versions and moving labels, killed mid-way.
    let acked: Arc<Vec<AtomicU32>> = Arc::new((0..4).map(|_| AtomicU32::new(1)).collect());
    let stop_at = Instant::now() + Duration::from_secs(20);
    let mut writers = Vec::new();
    for w in 0..8usize {
        let call = call.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < stop_at && n < 500 {
                n += 1;
                let p = w % 4;
                let (s, v) = call(
                    reqwest::Method::POST,
                    format!("/v1/projects/crash/prompts/m%2Fp{p}/versions"),
                    Some(json!({"type": "text", "template": format!("w{w} n{n}"), "labels": ["staging"]})),
                )
                .await;
                if s == 0 {
                    break; // server gone
                }
                if s == 201 {
                    acked[p].fetch_max(v["version"].as_u64().unwrap() as u32, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill(&mut child);
    for w in writers {
        w.await.unwrap();
    }
    let acked: Vec<u32> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert!(
        acked.iter().sum::<u32>() > 8,
        "the burst wrote something before the kill: {acked:?}"
    );

    // SQLite's own check.
    {
        let mut c = raw_sqlite(&db).await;
        let r: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(r, "ok");
        // Labels point at existing versions; latest_version matches.
        let orphans: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM labels l LEFT JOIN versions v ON v.prompt_id = l.prompt_id AND v.version = l.version WHERE v.id IS NULL",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(orphans, 0);
        let bad_latest: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM prompts p WHERE p.latest_version <> (SELECT MAX(version) FROM versions v WHERE v.prompt_id = p.id)",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!(bad_latest, 0);
        // The event log is gapless up to the project's revision.
        let (rev, events, min_rev): (i64, i64, i64) = sqlx::query_as(
            "SELECT p.revision, (SELECT COUNT(*) FROM events e WHERE e.project_id = p.id), (SELECT MIN(revision) FROM events e WHERE e.project_id = p.id) FROM projects p WHERE p.name = 'crash'",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!((events, min_rev), (rev, 1), "events 1..={rev}");
        // Every acknowledged write survived.
        for (i, a) in acked.iter().enumerate() {
            let latest: i64 =
                sqlx::query_scalar("SELECT latest_version FROM prompts WHERE name = ?")
                    .bind(format!("m/p{i}"))
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            assert!(
                latest as u32 >= *a,
                "m/p{i}: acknowledged version {a} lost (latest {latest})"
            );
        }
    }
    // Restart: the registry serves, the audit chain verifies, and replaying
    // the whole event log gives exactly the served snapshot.
    let mut child = spawn_server(&db, Some(&master), &["--poll-interval-ms", "0"]);
    let (url, _) = wait_ready(&mut child, &db);
    let r = http
        .get(format!("{url}/v1/projects/crash/snapshot"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let served =
        promptops_core::SnapshotData::from_json(r.text().await.unwrap().as_bytes()).unwrap();
    let mut sse = common::Sse::connect(&http, &url, &admin, "crash", Some("0")).await;
    let mut state = promptops_core::SnapshotData::new("crash", 0, vec![]);
    while state.revision < served.revision {
        let e = sse.expect("delta").await;
        let d: promptops_core::Delta = serde_json::from_value(e.data).unwrap();
        state = state.apply_delta(&d).unwrap();
    }
    assert_eq!(
        *state.content_hash(),
        *served.hash,
        "event log replays to the snapshot"
    );
    kill(&mut child);
    let (ok, out) = verify_cli(&db, &master);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn key_rotation_with_rekey() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rot.db");
    let old = random_hex(32);
    let new = random_hex(32);
    let env = Env::start_with(Options {
        database_url: Some(db.display().to_string()),
        master_key: Some(old.clone()),
        ..Default::default()
    })
    .await;
    env.create_prompt("author", "k/p", "ROTATED-TEMPLATE").await;
    env.put(
        "admin",
        "/v1/projects/shop/secrets/s",
        json!({"value": "ROTATED-SECRET"}),
    )
    .await;
    let keys = env.keys.clone();
    let Env { server, .. } = env;
    server.stop(Duration::from_secs(1)).await;
    // Without the old key the rows cannot be read: rekey refuses.
    let o = Command::new(BIN)
        .args(["rekey", "--database-url"])
        .arg(&db)
        .env("PROMPTOPS_MASTER_KEY", &new)
        .env_remove("PROMPTOPS_OLD_KEYS")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not in the key ring"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // With the old key as an older key, every row is re-sealed.
    let o = Command::new(BIN)
        .args(["rekey", "--database-url"])
        .arg(&db)
        .env("PROMPTOPS_MASTER_KEY", &new)
        .env("PROMPTOPS_OLD_KEYS", &old)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("re-encrypted"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The new key alone now reads everything.
    let mut env = Env::start_with(Options {
        database_url: Some(db.display().to_string()),
        master_key: Some(new.clone()),
        setup: false,
        ..Default::default()
    })
    .await;
    env.keys = keys;
    assert!(
        env.snapshot("sdk", "shop")
            .await
            .to_string()
            .contains("ROTATED-TEMPLATE")
    );
    let (s, v) = env.get("admin", "/v1/projects/shop/secrets/s").await;
    assert_eq!((s, v["value"].as_str()), (200, Some("ROTATED-SECRET")));
    let (s, v) = env
        .get("viewer", "/v1/projects/shop/prompts/k%2Fp/versions/1")
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_flags_creates_promptops_db_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(cwd.path())
        .env("PROMPTOPS_LOG", "warn")
        .env_remove("PROMPTOPS_DATABASE_URL")
        .env_remove("PROMPTOPS_MASTER_KEY")
        .env_remove("PROMPTOPS_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = cwd.path().join("promptops.db");
    let (url, admin) = wait_ready(&mut child, &db);
    assert!(db.exists());
    assert!(cwd.path().join("promptops.db.key").exists());
    let admin = admin.expect("admin key file");
    promptops_server::client::install_crypto_provider();
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["org"].as_str(), v["role"].as_str(), v["project"].clone()),
        (Some("default"), Some("admin"), Value::Null)
    );
    kill(&mut child);
}
