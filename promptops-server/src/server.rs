//! Starting the server: key ring, database, hub, Redis, HTTP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::{AppState, router};
use crate::crypto::{Keyring, parse_key};
use crate::db::{Db, DbTarget};
use crate::hub::{Hub, HubOptions};
use crate::metrics::Metrics;
use crate::redis_bus::RedisBus;
use crate::registry::{Actor, Registry, RegistryOptions};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    /// Overrides `PROMPTOPS_MASTER_KEY`.
    pub master_key: Option<String>,
    pub key_file: Option<PathBuf>,
    pub event_retention: i64,
    pub max_body_bytes: usize,
    pub max_template_bytes: usize,
    /// How often projects with clients are checked against the database
    /// for changes made by other replicas (0 disables).
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    /// On an empty registry, create an organisation `default` and an
    /// organisation-wide admin key.
    pub bootstrap: bool,
    /// Model health check: interval (zero: off) and per-request timeout.
    pub health: crate::health::HealthOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8700)),
            database_url: None,
            redis_url: None,
            redis_prefix: "promptops".into(),
            master_key: None,
            key_file: None,
            event_retention: 10_000,
            max_body_bytes: 1024 * 1024,
            max_template_bytes: 256 * 1024,
            poll_interval: Duration::from_secs(2),
            heartbeat: Duration::from_secs(15),
            bootstrap: true,
            health: crate::health::HealthOptions::default(),
        }
    }
}

/// The key ring for a database: the master key (config or
/// `PROMPTOPS_MASTER_KEY`, plus `PROMPTOPS_OLD_KEYS`), else the key file
/// (`--key-file`, or `<db>.key` next to an embedded database, created with
/// mode 0600 on first run).
pub fn load_keyring(
    target: &DbTarget,
    master_key: Option<&str>,
    key_file: Option<&PathBuf>,
    create: bool,
) -> anyhow::Result<Keyring> {
    let env_key = std::env::var("PROMPTOPS_MASTER_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    if let Some(k) = master_key.map(String::from).or(env_key) {
        let current = parse_key(&k).context("PROMPTOPS_MASTER_KEY")?;
        let mut older = Vec::new();
        if let Ok(old) = std::env::var("PROMPTOPS_OLD_KEYS") {
            for part in old.split(',').filter(|s| !s.trim().is_empty()) {
                older.push(parse_key(part).context("PROMPTOPS_OLD_KEYS")?);
            }
        }
        return Ok(Keyring::new(current, older));
    }
    let file = key_file.cloned().or_else(|| target.default_key_file()).ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL needs an encryption key: set PROMPTOPS_MASTER_KEY (32 bytes, base64 or hex) or pass --key-file"
        )
    })?;
    Ok(Keyring::from_file(&file, create)?)
}

pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    pub registry: Arc<Registry>,
    pub hub: Arc<Hub>,
    /// The admin key created on an empty registry (shown once).
    pub bootstrap_key: Option<String>,
    serve: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Server> {
        let target = DbTarget::parse(cfg.database_url.as_deref());
        let keys = load_keyring(
            &target,
            cfg.master_key.as_deref(),
            cfg.key_file.as_ref(),
            true,
        )?;
        let db = Arc::new(Db::open(target, keys).await?);
        let metrics = Arc::new(Metrics::new()?);
        let hub = Arc::new(Hub::new(
            db.clone(),
            metrics.clone(),
            HubOptions {
                heartbeat: cfg.heartbeat,
                ..Default::default()
            },
        ));
        let registry = Arc::new(Registry::new(
            db.clone(),
            hub.clone(),
            RegistryOptions {
                event_retention: cfg.event_retention,
                max_template_bytes: cfg.max_template_bytes,
                health_timeout: cfg.health.timeout,
            },
        ));
        let mut tasks = Vec::new();
        let redis = match &cfg.redis_url {
            Some(url) => {
                let bus = Arc::new(
                    RedisBus::connect(url, &cfg.redis_prefix)
                        .await
                        .with_context(|| format!("connecting to Redis at {url}"))?,
                );
                hub.set_redis(bus.clone());
                tasks.push(bus.spawn_subscriber(Arc::downgrade(&hub)));
                Some(bus)
            }
            None => None,
        };
        if !cfg.poll_interval.is_zero() {
            tasks.push(hub.spawn_poller(cfg.poll_interval));
        }
        if let Some(t) = crate::health::spawn(registry.clone(), cfg.health) {
            tasks.push(t);
        }
        let mut bootstrap_key = None;
        if cfg.bootstrap
            && registry
                .key_count()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                == 0
        {
            let actor = Actor::system("bootstrap");
            let org = registry
                .create_org("default", &actor)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let k = registry
                .create_key(
                    org,
                    None,
                    crate::auth::Role::Admin,
                    "admin",
                    "bootstrap admin key",
                    &actor,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            bootstrap_key = Some(k.key);
        }
        let state = AppState::new(
            registry.clone(),
            hub.clone(),
            metrics.clone(),
            redis,
            cfg.max_body_bytes,
        );
        let listener = TcpListener::bind(cfg.addr)
            .await
            .with_context(|| format!("binding {}", cfg.addr))?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "server stopped");
            }
        });
        tracing::info!(%addr, db = %db.target.describe(), "promptops registry listening");
        Ok(Server {
            addr,
            state,
            registry,
            hub,
            bootstrap_key,
            serve,
            tasks,
            shutdown: Some(tx),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop accepting connections; give open requests `grace` to finish,
    /// then drop them (SSE streams never finish on their own).
    pub async fn stop(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
        let serve = &mut self.serve;
        if tokio::time::timeout(grace, &mut *serve).await.is_err() {
            serve.abort();
        }
        self.registry.db.pool.close().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.serve.abort();
    }
}
