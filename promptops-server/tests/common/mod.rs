//! Test harness: a real server in-process on 127.0.0.1:0, on SQLite in a
//! temporary directory, or on PostgreSQL + Redis when
//! PROMPTOPS_TEST_DATABASE_URL / PROMPTOPS_TEST_REDIS_URL are set (a fresh
//! database and Redis key prefix per test).

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use promptops_server::auth::{ALL_ROLES, Role};
use promptops_server::registry::Actor;
use promptops_server::{Server, ServerConfig};
use reqwest::Method;
use serde_json::{Value, json};

pub fn pg_url() -> Option<String> {
    std::env::var("PROMPTOPS_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn redis_url() -> Option<String> {
    std::env::var("PROMPTOPS_TEST_REDIS_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

/// A fresh PostgreSQL database on the test cluster.
pub async fn fresh_pg_database(admin_url: &str) -> String {
    use sqlx::{ConnectOptions, Executor};
    let name = format!("po_test_{}", random_hex(6));
    let opts: sqlx::postgres::PgConnectOptions = admin_url.parse().unwrap();
    let mut conn = opts
        .connect()
        .await
        .expect("connect to the test PostgreSQL");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    // Replace the database part of the URL.
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let cut = base.rfind('/').unwrap();
    let mut url = format!("{}/{name}", &base[..cut]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

pub struct Env {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub base: String,
    /// role name → key (scoped to project `shop` of org `acme`); also
    /// `org-admin` (acme, organisation-wide), `rival-admin` (org `rival`,
    /// organisation-wide) and `shop2-admin` (acme, project `shop2`).
    pub keys: HashMap<String, String>,
    pub database_url: String,
    pub redis_prefix: String,
    pub master_key: String,
}

pub struct Options {
    pub event_retention: i64,
    pub poll_interval: Duration,
    pub max_body_bytes: usize,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub redis_prefix: Option<String>,
    pub dir: Option<tempfile::TempDir>,
    pub setup: bool,
    pub heartbeat: Duration,
    /// Model health check (default: off, tests run it on demand).
    pub health: promptops_server::health::HealthOptions,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            event_retention: 10_000,
            poll_interval: Duration::from_millis(200),
            max_body_bytes: 1024 * 1024,
            database_url: None,
            master_key: None,
            redis_prefix: None,
            dir: None,
            setup: true,
            heartbeat: Duration::from_secs(15),
            health: promptops_server::health::HealthOptions {
                interval: Duration::ZERO,
                timeout: Duration::from_secs(2),
            },
        }
    }
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(Options::default()).await
    }

    pub async fn start_with(o: Options) -> Env {
        promptops_server::client::install_crypto_provider();
        let dir = o.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let database_url = match o.database_url {
            Some(u) => u,
            None => match pg_url() {
                Some(admin) => fresh_pg_database(&admin).await,
                None => dir.path().join("registry.db").display().to_string(),
            },
        };
        let master_key = o.master_key.unwrap_or_else(|| random_hex(32));
        let redis_prefix = o
            .redis_prefix
            .unwrap_or_else(|| format!("potest{}", random_hex(4)));
        let cfg = ServerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            database_url: Some(database_url.clone()),
            redis_url: redis_url(),
            redis_prefix: redis_prefix.clone(),
            master_key: Some(master_key.clone()),
            key_file: None,
            event_retention: o.event_retention,
            max_body_bytes: o.max_body_bytes,
            max_template_bytes: 64 * 1024,
            poll_interval: o.poll_interval,
            heartbeat: o.heartbeat,
            bootstrap: false,
            health: o.health,
        };
        let server = Server::start(cfg).await.expect("server starts");
        let base = server.url();
        let mut env = Env {
            server,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base,
            keys: HashMap::new(),
            database_url,
            redis_prefix,
            master_key,
        };
        if o.setup {
            env.setup().await;
        }
        env
    }

    /// Orgs `acme` (projects `shop`, `shop2`) and `rival` (project
    /// `rival`), a key per role on `shop`.
    async fn setup(&mut self) {
        let reg = &self.server.registry;
        let sys = Actor::system("test-setup");
        let acme = reg.create_org("acme", &sys).await.unwrap();
        let rival = reg.create_org("rival", &sys).await.unwrap();
        reg.create_project(acme, "shop", None, false, &sys)
            .await
            .unwrap();
        reg.create_project(acme, "shop2", None, false, &sys)
            .await
            .unwrap();
        reg.create_project(rival, "rival", None, false, &sys)
            .await
            .unwrap();
        for role in ALL_ROLES {
            let k = reg
                .create_key(acme, Some("shop"), role, role.as_str(), "test", &sys)
                .await
                .unwrap();
            self.keys.insert(role.as_str().to_string(), k.key);
        }
        let k = reg
            .create_key(acme, None, Role::Admin, "orgadmin", "test", &sys)
            .await
            .unwrap();
        self.keys.insert("org-admin".into(), k.key);
        let k = reg
            .create_key(rival, None, Role::Admin, "rivaladmin", "test", &sys)
            .await
            .unwrap();
        self.keys.insert("rival-admin".into(), k.key);
        let k = reg
            .create_key(acme, Some("shop2"), Role::Admin, "shop2admin", "test", &sys)
            .await
            .unwrap();
        self.keys.insert("shop2-admin".into(), k.key);
    }

    pub fn key(&self, role: &str) -> &str {
        self.keys.get(role).map(String::as_str).unwrap_or("")
    }

    pub async fn call(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, role: &str, path: &str) -> (u16, Value) {
        self.call(Some(self.key(role)), Method::GET, path, None)
            .await
    }

    pub async fn post(&self, role: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(Some(self.key(role)), Method::POST, path, Some(body))
            .await
    }

    pub async fn put(&self, role: &str, path: &str, body: Value) -> (u16, Value) {
        self.call(Some(self.key(role)), Method::PUT, path, Some(body))
            .await
    }

    pub async fn delete(&self, role: &str, path: &str) -> (u16, Value) {
        self.call(Some(self.key(role)), Method::DELETE, path, None)
            .await
    }

    /// Create `name` in `shop` as `role` with a text template.
    pub async fn create_prompt(&self, role: &str, name: &str, template: &str) -> (u16, Value) {
        self.post(
            role,
            "/v1/projects/shop/prompts",
            json!({"name": name, "type": "text", "template": template}),
        )
        .await
    }

    pub async fn new_version(&self, role: &str, name: &str, template: &str) -> (u16, Value) {
        self.post(
            role,
            &format!("/v1/projects/shop/prompts/{}/versions", enc(name)),
            json!({"type": "text", "template": template}),
        )
        .await
    }

    pub async fn approve(&self, name: &str, version: u32) {
        let (s, v) = self
            .post(
                "approver",
                &format!(
                    "/v1/projects/shop/prompts/{}/versions/{version}/reviews",
                    enc(name)
                ),
                json!({"decision": "approve"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    pub async fn publish(&self, name: &str, version: u32) -> (u16, Value) {
        self.post(
            "publisher",
            &format!("/v1/projects/shop/prompts/{}/publish", enc(name)),
            json!({"version": version}),
        )
        .await
    }

    pub async fn snapshot(&self, role: &str, project: &str) -> Value {
        let (s, v) = self
            .get(role, &format!("/v1/projects/{project}/snapshot"))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn stream(&self, role: &str, project: &str, last_event_id: Option<&str>) -> Sse {
        Sse::connect(
            &self.http,
            &self.base,
            self.key(role),
            project,
            last_event_id,
        )
        .await
    }
}

pub fn enc(name: &str) -> String {
    name.replace('/', "%2F")
}

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<u64>,
    pub data: Value,
}

/// A minimal SSE client over reqwest.
pub struct Sse {
    pub status: u16,
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub comments: usize,
}

impl Sse {
    pub async fn connect(
        http: &reqwest::Client,
        base: &str,
        key: &str,
        project: &str,
        last_event_id: Option<&str>,
    ) -> Sse {
        let client = reqwest::Client::builder().build().unwrap();
        let _ = http;
        let mut req = client
            .get(format!("{base}/v1/projects/{project}/stream"))
            .bearer_auth(key);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("stream request");
        let status = resp.status().as_u16();
        Sse {
            status,
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            comments: 0,
        }
    }

    /// The next event (comments are counted and skipped).
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let frame: String = self.buf[..pos].to_string();
                self.buf.drain(..pos + 2);
                let mut event = String::from("message");
                let mut id = None;
                let mut data = String::new();
                let mut only_comment = true;
                for line in frame.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    only_comment = false;
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if only_comment {
                    self.comments += 1;
                    continue;
                }
                return Some(SseEvent {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap_or(Value::String(data)),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            let chunk = chunk.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    pub async fn expect(&mut self, event: &str) -> SseEvent {
        let e = self
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no `{event}` event within 10 s"));
        assert_eq!(e.event, event, "{e:?}");
        e
    }
}
