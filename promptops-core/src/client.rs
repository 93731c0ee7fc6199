//! The Rust API: a `Client` built with a builder, reading from a local prompt
//! directory and/or a snapshot bundle (live sources come with the delivery
//! feature). Lookups are lock-free and never touch the network.

use std::path::PathBuf;
use std::sync::Arc;

use crate::compile::{
    CompiledSnapshot, DEFAULT_LABEL_ID, Diagnostic, LATEST_LABEL_ID, Limits, Source,
    compile_version, new_environment,
};
use crate::error::{Error, Result};
use crate::format;
use crate::model::{Body, DEFAULT_LABEL, LATEST_LABEL, MessageTemplate, PromptVersion};
use crate::pricing::{ModelPrice, PricingTable};
use crate::prompt::{EnvOwner, Prompt};
use crate::store::{ApplyOutcome, Change, Store, Update};

/// An inline fallback: used only when the prompt is in no source (or cannot
/// be served); the result says `Source::Fallback`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    Text(String),
    Chat(Vec<(String, String)>),
}

impl From<&str> for Fallback {
    fn from(s: &str) -> Self {
        Fallback::Text(s.to_string())
    }
}

impl From<String> for Fallback {
    fn from(s: String) -> Self {
        Fallback::Text(s)
    }
}

/// How to look a prompt up: by label (default `production`) or a pinned
/// version, optionally with an inline fallback.
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    pub label: Option<String>,
    pub version: Option<u32>,
    pub fallback: Option<Fallback>,
}

impl GetOptions {
    pub fn label(label: impl Into<String>) -> Self {
        GetOptions {
            label: Some(label.into()),
            ..Default::default()
        }
    }

    pub fn version(version: u32) -> Self {
        GetOptions {
            version: Some(version),
            ..Default::default()
        }
    }

    pub fn with_fallback(mut self, f: impl Into<Fallback>) -> Self {
        self.fallback = Some(f.into());
        self
    }
}

/// Builds a [`Client`].
#[derive(Debug, Default)]
pub struct ClientBuilder {
    project: Option<String>,
    prompts_dir: Option<PathBuf>,
    bundle: Option<PathBuf>,
    default_label: Option<String>,
    limits: Limits,
    prices: Vec<ModelPrice>,
    strict: bool,
    /// Routing, telemetry and provider settings (see `crate::route`).
    pub(crate) engine: crate::route::client::EngineConfig,
    server: Option<String>,
    api_key: Option<String>,
    redis: Option<String>,
    cache_dir: Option<PathBuf>,
    startup_wait: std::time::Duration,
    #[cfg(feature = "sync")]
    sync_tuning: Option<crate::sync::SyncOptions>,
    #[cfg(feature = "sync")]
    runtime: Option<RuntimeSource>,
    #[cfg(feature = "export")]
    export: crate::export::ExportOptions,
}

impl ClientBuilder {
    /// How telemetry leaves the process (feature `export`): with telemetry
    /// on and a `server`, batches are uploaded to it every 10 s by default
    /// (and on `close`); OTLP export is configured here too.
    #[cfg(feature = "export")]
    pub fn telemetry_export(mut self, opts: crate::export::ExportOptions) -> Self {
        self.export = opts;
        self
    }

    /// Export telemetry over OTLP/HTTP JSON (feature `otlp`).
    #[cfg(feature = "otlp")]
    pub fn otlp(mut self, cfg: crate::export::otlp::OtlpConfig) -> Self {
        self.export.otlp = Some(cfg);
        self
    }

    /// The project this client serves. Defaults to the bundle's project, or
    /// the prompt directory's name.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// A local prompt directory (`module/name.prompt`, `.prompty`).
    pub fn prompts_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.prompts_dir = Some(dir.into());
        self
    }

    /// A snapshot bundle file shipped with the app.
    pub fn bundle(mut self, path: impl Into<PathBuf>) -> Self {
        self.bundle = Some(path.into());
        self
    }

    /// The label `get` uses when none is given (default `production`).
    pub fn default_label(mut self, label: impl Into<String>) -> Self {
        self.default_label = Some(label.into());
        self
    }

    /// Bounds on rendering work (fuel and output size).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Override or add a model price.
    pub fn price(mut self, price: ModelPrice) -> Self {
        self.prices.push(price);
        self
    }

    /// The registry to sync from (`http://host:8700`): a snapshot with
    /// ETag, then the SSE stream of changes. Needs the `sync` feature.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.server = Some(url.into());
        self
    }

    /// The API key sent to the registry (`Authorization: Bearer …`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Redis to sync from (`redis://host:6379`): the project's snapshot key
    /// and change channel. Needs the `redis` feature.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(url.into());
        self
    }

    /// Where the last-known-good snapshot is kept (written atomically on
    /// every accepted update, read at start).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How long `build` may wait for the registry's first answer (default
    /// 0: serve what disk and bundle hold now, update when it answers).
    pub fn startup_wait(mut self, wait: std::time::Duration) -> Self {
        self.startup_wait = wait;
        self
    }

    /// Run sync tasks on this tokio runtime (default: a one-thread runtime
    /// of the client's own).
    #[cfg(feature = "sync")]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(RuntimeSource::Handle(handle));
        self
    }

    /// Run sync tasks on the runtime `provider` returns, asked each time
    /// sync starts (at `build`, and again by [`Client::start_sync`] in a
    /// forked child). A binding that owns one runtime per process, rebuilt
    /// after `fork()`, passes a provider returning that process's runtime,
    /// so every client of the process syncs on it.
    #[cfg(feature = "sync")]
    pub fn runtime_provider(
        mut self,
        provider: impl Fn() -> Result<tokio::runtime::Handle> + Send + Sync + 'static,
    ) -> Self {
        self.runtime = Some(RuntimeSource::Provider(Arc::new(provider)));
        self
    }

    /// Fine-tune sync (poll interval, backoff, timeouts, streaming on/off).
    /// Project, server, key, Redis and cache dir still come from the builder.
    #[cfg(feature = "sync")]
    pub fn sync_options(mut self, opts: crate::sync::SyncOptions) -> Self {
        self.sync_tuning = Some(opts);
        self
    }

    /// Fail `build` on any load diagnostic (default: report them and load
    /// the rest).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    pub fn build(self) -> Result<Client> {
        let mut pricing = PricingTable::builtin();
        for p in self.prices {
            pricing.set(p)?;
        }
        let default_label = self.default_label.unwrap_or_else(|| DEFAULT_LABEL.into());
        crate::model::validate_label(&default_label).map_err(Error::Config)?;
        let bundle = match &self.bundle {
            Some(b) => Some(crate::snapshot::SnapshotData::read_bundle(b)?),
            None => None,
        };
        let dir = match &self.prompts_dir {
            Some(d) => {
                let project = self
                    .project
                    .clone()
                    .or_else(|| bundle.as_ref().map(|b| b.project.clone()))
                    .unwrap_or_else(|| format::dir_project_name(d));
                Some(format::load_dir(d, &project)?)
            }
            None => None,
        };
        let project = self
            .project
            .clone()
            .or_else(|| bundle.as_ref().map(|b| b.project.clone()))
            .or_else(|| dir.as_ref().map(|d| d.snapshot.project.clone()));
        let store = Arc::new(Store::new(project.clone(), self.limits));
        let mut load_diags: Vec<Diagnostic> = Vec::new();
        let live = self.server.is_some() || self.redis.is_some();
        if live && project.is_none() {
            return Err(Error::Config(
                "a project is required to sync from a registry or Redis".into(),
            ));
        }
        // The last-known-good copy on disk, the shipped bundle and the
        // prompt directory all load now; newer data wins in the store.
        if let (Some(dir), Some(p)) = (&self.cache_dir, &project)
            && let Some((snap, _etag)) = crate::sync::DiskCache::new(dir, p).load()
        {
            match store.apply(Update::Snapshot(snap), Source::Disk) {
                Ok(out) => load_diags.extend(out.diagnostics),
                Err(e) => tracing::warn!(target: "promptops", "ignoring the disk cache: {e}"),
            }
        }
        if let Some(b) = bundle {
            let out = store.apply(Update::Snapshot(b), Source::Bundle)?;
            load_diags.extend(out.diagnostics);
        }
        if let Some(d) = dir {
            load_diags.extend(d.diagnostics);
            let out = store.apply(Update::Snapshot(d.snapshot), Source::Disk)?;
            load_diags.extend(out.diagnostics);
        }
        if self.strict
            && let Some(first) = load_diags.first()
        {
            return Err(first.error.clone());
        }
        let status = Arc::new(crate::sync::StatusCell::default());
        let sync_cfg = SyncConfig {
            project: project.clone().unwrap_or_default(),
            server: self.server,
            api_key: self.api_key,
            redis: self.redis,
            cache_dir: self.cache_dir,
            #[cfg(feature = "sync")]
            tuning: self.sync_tuning,
            #[cfg(feature = "sync")]
            runtime: self.runtime,
        };
        let mut engine_cfg = self.engine;
        #[cfg(feature = "export")]
        {
            self.export.check()?;
            #[cfg(feature = "otlp")]
            let otlp = self.export.otlp.is_some();
            #[cfg(not(feature = "otlp"))]
            let otlp = false;
            if engine_cfg.telemetry.is_none() && (otlp || self.export.upload_url.is_some()) {
                return Err(Error::Config(format!(
                    "{} needs telemetry on (ClientBuilder::telemetry)",
                    if otlp {
                        "OTLP export"
                    } else {
                        "a telemetry upload_url"
                    }
                )));
            }
        }
        #[cfg(feature = "export")]
        let exporting =
            engine_cfg.telemetry.is_some() && self.export.active(sync_cfg.server.is_some());
        #[cfg(feature = "export")]
        if exporting
            && let Some(t) = engine_cfg.telemetry.as_mut()
            && t.masker.is_none()
        {
            // Nothing leaves the process unmasked unless the caller says so
            // (a masker that returns `None` turns masking off).
            t.masker = Some(Arc::new(crate::telemetry::BasicPiiMasker));
        }
        let engine = Arc::new(crate::route::client::Engine::new(
            engine_cfg,
            project.as_deref(),
        ));
        #[cfg(feature = "export")]
        let exporter = match (&engine.telemetry, exporting) {
            (Some(tel), true) => Some(crate::export::Exporter::start(
                tel.clone(),
                sync_cfg.server.as_deref(),
                sync_cfg.api_key.as_deref(),
                &self.export,
            )?),
            _ => None,
        };
        let client = Client {
            inner: Arc::new(Inner {
                store,
                default_label,
                pricing: Arc::new(pricing),
                project,
                load_diagnostics: load_diags,
                limits: self.limits,
                status,
                sync: std::sync::Mutex::new(None),
                sync_cfg,
                engine,
                #[cfg(feature = "export")]
                exporter: std::sync::Mutex::new(exporter),
                #[cfg(feature = "export")]
                export_opts: self.export.clone(),
            }),
        };
        if live {
            client.start_sync()?;
            if !self.startup_wait.is_zero() {
                client.inner.status.wait_for_live_data(self.startup_wait);
            }
        }
        Ok(client)
    }
}

/// Live-sync settings kept so sync can be restarted (after `fork()`).
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "sync"), allow(dead_code))]
struct SyncConfig {
    project: String,
    server: Option<String>,
    api_key: Option<String>,
    redis: Option<String>,
    cache_dir: Option<PathBuf>,
    #[cfg(feature = "sync")]
    tuning: Option<crate::sync::SyncOptions>,
    #[cfg(feature = "sync")]
    runtime: Option<RuntimeSource>,
}

/// Where sync tasks run (see [`ClientBuilder::runtime`] and
/// [`ClientBuilder::runtime_provider`]).
#[cfg(feature = "sync")]
#[derive(Clone)]
enum RuntimeSource {
    Handle(tokio::runtime::Handle),
    Provider(Arc<dyn Fn() -> Result<tokio::runtime::Handle> + Send + Sync>),
}

#[cfg(feature = "sync")]
impl std::fmt::Debug for RuntimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeSource::Handle(h) => f.debug_tuple("Handle").field(h).finish(),
            RuntimeSource::Provider(_) => f.write_str("Provider(..)"),
        }
    }
}

#[cfg(feature = "sync")]
impl RuntimeSource {
    fn handle(&self) -> Result<tokio::runtime::Handle> {
        match self {
            RuntimeSource::Handle(h) => Ok(h.clone()),
            RuntimeSource::Provider(f) => f(),
        }
    }
}

struct Inner {
    store: Arc<Store>,
    default_label: String,
    pricing: Arc<PricingTable>,
    project: Option<String>,
    load_diagnostics: Vec<Diagnostic>,
    limits: Limits,
    status: Arc<crate::sync::StatusCell>,
    #[cfg(feature = "sync")]
    sync: std::sync::Mutex<Option<crate::sync::Syncer>>,
    #[cfg(not(feature = "sync"))]
    sync: std::sync::Mutex<Option<()>>,
    sync_cfg: SyncConfig,
    engine: Arc<crate::route::client::Engine>,
    #[cfg(feature = "export")]
    exporter: std::sync::Mutex<Option<crate::export::Exporter>>,
    /// Kept to restart the exporter in a forked child.
    #[cfg(feature = "export")]
    export_opts: crate::export::ExportOptions,
}

/// The in-process SDK client. Cheap to clone (shares one store).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("project", &self.inner.project)
            .field("store", &self.inner.store)
            .finish()
    }
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Routing and telemetry state (see `crate::route`).
    pub(crate) fn engine(&self) -> &crate::route::client::Engine {
        &self.inner.engine
    }

    /// The project, once known.
    pub fn project(&self) -> Option<&str> {
        self.inner.project.as_deref()
    }

    /// The store sources push into.
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Push a snapshot or delta (the entry point live sources use).
    pub fn apply(&self, update: Update, source: Source) -> Result<ApplyOutcome> {
        self.inner.store.apply(update, source)
    }

    /// The current snapshot, if any data has arrived.
    pub fn snapshot(&self) -> Option<Arc<CompiledSnapshot>> {
        self.inner.store.current()
    }

    /// Problems found while loading: those of the build-time sources and of
    /// the current snapshot.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = self.inner.load_diagnostics.clone();
        if let Some(s) = self.inner.store.current() {
            for d in s.diagnostics() {
                if !out.iter().any(|o| o.to_string() == d.to_string()) {
                    out.push(d.clone());
                }
            }
        }
        out
    }

    /// The client's own price table: the built-in one with the builder's
    /// overrides. See [`effective_pricing`](Self::effective_pricing) for the
    /// table with the registry's model catalogue laid over it.
    pub fn pricing(&self) -> &PricingTable {
        &self.inner.pricing
    }

    /// The price table cost estimates and routing use: the built-in table,
    /// the builder's overrides, then the current snapshot's model catalogue
    /// (which wins). Computed once per snapshot.
    pub fn effective_pricing(&self) -> Arc<PricingTable> {
        match self.inner.store.current() {
            Some(s) => s.catalogue.pricing(&self.inner.pricing),
            None => self.inner.pricing.clone(),
        }
    }

    /// The model catalogue of the current snapshot (empty without one).
    pub fn models(&self) -> Vec<crate::catalogue::ModelEntry> {
        self.inner
            .store
            .current()
            .map(|s| s.catalogue.entries().to_vec())
            .unwrap_or_default()
    }

    /// Called after every update that changes what some label serves.
    pub fn on_change(&self, f: impl Fn(&[Change]) + Send + Sync + 'static) {
        self.inner.store.on_change(f)
    }

    /// Live delivery status: `initializing`, `valid`, `interrupted` (serving
    /// last-known-good data; see `data_age`), or `off`, with the last error.
    /// A client without live sources reports `valid` once data is loaded
    /// and `off` before.
    pub fn status(&self) -> crate::sync::SyncStatus {
        let mut s = self.inner.status.snapshot();
        if s.sources.is_empty() && self.inner.store.current().is_some() {
            s.status = crate::sync::Status::Valid;
        }
        s
    }

    /// Wait up to `timeout` for a live source to deliver data (what
    /// `startup_wait` does at `build`). Returns whether live data arrived;
    /// `false` at once for a client without live sources, or once every
    /// live source stopped (e.g. a rejected API key) or the client closed.
    pub fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let cfg = &self.inner.sync_cfg;
        if cfg.server.is_none() && cfg.redis.is_none() {
            return false;
        }
        self.inner.status.wait_for_live_data(timeout)
    }

    /// Called whenever the overall status changes.
    pub fn on_status(&self, f: impl Fn(&crate::sync::SyncStatus) + Send + Sync + 'static) {
        self.inner.status.on_change(f)
    }

    /// Start (or restart) the live sources. `build` calls this; call it
    /// again in a child process after `fork()`, where the parent's sync
    /// threads do not exist (the telemetry exporter, whose thread does not
    /// exist there either, is restarted too).
    pub fn start_sync(&self) -> Result<()> {
        #[cfg(feature = "export")]
        self.restart_exporter_if_inherited()?;
        #[cfg(feature = "sync")]
        {
            let cfg = &self.inner.sync_cfg;
            let mut opts = cfg
                .tuning
                .clone()
                .unwrap_or_else(|| crate::sync::SyncOptions::new(cfg.project.clone()));
            opts.project.clone_from(&cfg.project);
            opts.server.clone_from(&cfg.server);
            opts.api_key.clone_from(&cfg.api_key);
            opts.redis_url.clone_from(&cfg.redis);
            opts.cache_dir.clone_from(&cfg.cache_dir);
            if !opts.is_live() {
                return Ok(());
            }
            let mut slot = self.inner.sync.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = slot.take() {
                old.abandon_after_fork();
            }
            let handle = cfg
                .runtime
                .as_ref()
                .map(RuntimeSource::handle)
                .transpose()?;
            *slot = Some(crate::sync::Syncer::start(
                self.inner.store.clone(),
                self.inner.status.clone(),
                opts,
                handle,
            )?);
            Ok(())
        }
        #[cfg(not(feature = "sync"))]
        {
            let cfg = &self.inner.sync_cfg;
            if cfg.server.is_some() || cfg.redis.is_some() {
                return Err(Error::Config(
                    "live sync needs promptops-core built with the `sync` feature".into(),
                ));
            }
            Ok(())
        }
    }

    /// In a forked child, replace the parent's exporter (whose thread is
    /// gone) by a new one, so that what the child records is exported.
    #[cfg(feature = "export")]
    fn restart_exporter_if_inherited(&self) -> Result<()> {
        let mut slot = self
            .inner
            .exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|e| e.is_inherited()) {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            old.abandon_after_fork();
        }
        if let Some(tel) = &self.inner.engine.telemetry {
            *slot = Some(crate::export::Exporter::start(
                tel.clone(),
                self.inner.sync_cfg.server.as_deref(),
                self.inner.sync_cfg.api_key.as_deref(),
                &self.inner.export_opts,
            )?);
        }
        Ok(())
    }

    /// Export telemetry now (upload and OTLP, when configured) and wait at
    /// most `timeout`. Returns whether a round finished in time (`false`
    /// without a background exporter). Blocks the calling thread.
    pub fn flush_telemetry(&self, timeout: std::time::Duration) -> bool {
        #[cfg(feature = "export")]
        {
            let slot = self
                .inner
                .exporter
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(e) = slot.as_ref() {
                return e.flush(timeout);
            }
        }
        let _ = timeout;
        false
    }

    /// The counters of the OTLP exporter (spans exported, dropped and
    /// failed, metric exports; feature `otlp`). `None` without OTLP export
    /// (or after `close`).
    #[cfg(feature = "otlp")]
    pub fn otlp_stats(&self) -> Option<crate::export::otlp::OtlpStats> {
        self.inner
            .exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|e| e.otlp_stats())
    }

    /// Stop live sync and telemetry export (idempotent; a last export round
    /// runs first). Lookups keep serving what is loaded.
    pub fn close(&self) {
        #[cfg(feature = "export")]
        {
            let taken = self
                .inner
                .exporter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(mut e) = taken {
                e.close();
            }
        }
        let mut slot = self.inner.sync.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(feature = "sync")]
        if let Some(mut s) = slot.take() {
            s.close();
        }
        #[cfg(not(feature = "sync"))]
        slot.take();
        self.inner.status.close();
    }

    /// The prompt under the default label (`production`).
    pub fn get(&self, name: &str) -> Result<Prompt> {
        self.get_with(name, &GetOptions::default())
    }

    /// The prompt under a label or at a pinned version, with an optional
    /// inline fallback.
    pub fn get_with(&self, name: &str, opts: &GetOptions) -> Result<Prompt> {
        match self.lookup(name, opts) {
            Ok(p) => Ok(p),
            Err(e) => match &opts.fallback {
                Some(f) => {
                    tracing::debug!(target: "promptops", "serving inline fallback for {name}: {e}");
                    self.fallback_prompt(name, opts, f)
                }
                None => Err(e),
            },
        }
    }

    fn lookup(&self, name: &str, opts: &GetOptions) -> Result<Prompt> {
        let label = opts
            .label
            .as_deref()
            .unwrap_or(self.inner.default_label.as_str());
        let not_found = |selector: String| Error::PromptNotFound {
            name: name.to_string(),
            selector,
        };
        let Some(snap) = self.inner.store.current() else {
            let st = self.inner.status.snapshot();
            if !st.sources.is_empty() {
                return Err(Error::RegistryUnavailable(match st.last_error {
                    Some(e) => format!("no data for `{name}` yet: {e}"),
                    None => format!("no data for `{name}` yet: the registry has not answered"),
                }));
            }
            return Err(not_found("no prompts loaded yet".into()));
        };
        let Some(p) = snap.prompts.get(name) else {
            return Err(not_found(format!("not in project `{}`", snap.data.project)));
        };
        let (version, label_out, label_id) = match opts.version {
            Some(v) => {
                // Includes of a pinned version resolve through the default label.
                let id = snap
                    .label_id(&self.inner.default_label)
                    .unwrap_or(DEFAULT_LABEL_ID);
                (v, None, id)
            }
            None => {
                let v = p
                    .resolve(label)
                    .ok_or_else(|| not_found(format!("no label `{label}`")))?;
                if !p.broken.is_empty()
                    && let Some(e) = p.broken.get(label)
                {
                    return Err(e.clone());
                }
                let id = if label == LATEST_LABEL {
                    LATEST_LABEL_ID
                } else {
                    snap.label_id(label).unwrap_or(DEFAULT_LABEL_ID)
                };
                // Interned: the snapshot hands out a shared copy of the name.
                (v, Some(snap.label_names[id].clone()), id)
            }
        };
        let cv = p
            .versions
            .get(&version)
            .ok_or_else(|| not_found(format!("version {version} is not in the snapshot")))?
            .clone();
        if let Err(e) = &cv.body {
            return Err(e.clone());
        }
        let revision = snap.data.revision;
        let pricing = snap.catalogue.pricing(&self.inner.pricing);
        Ok(Prompt {
            source: snap.source,
            env_owner: EnvOwner::Snapshot(snap),
            version: cv,
            label: label_out,
            label_id,
            variant: None,
            pricing,
            revision,
            telemetry: self.inner.engine.telemetry.clone(),
        })
    }

    fn fallback_prompt(&self, name: &str, opts: &GetOptions, f: &Fallback) -> Result<Prompt> {
        let body = match f {
            Fallback::Text(t) => Body::Text {
                template: t.clone(),
            },
            Fallback::Chat(ms) => Body::Chat {
                messages: ms
                    .iter()
                    .map(|(r, c)| MessageTemplate {
                        role: r.clone(),
                        content: c.clone(),
                        name: None,
                    })
                    .collect(),
            },
        };
        let mut env = new_environment(self.inner.limits);
        let mut v = PromptVersion::with_body(0, body);
        v.description = Some("inline fallback".into());
        let cv = compile_version(&mut env, name, &v, &format!("{name}@fallback"));
        if let Err(e) = &cv.body {
            return Err(e.clone());
        }
        Ok(Prompt {
            env_owner: EnvOwner::Fallback(Arc::new((env, self.inner.limits))),
            version: Arc::new(cv),
            label: opts
                .label
                .as_deref()
                .or_else(|| {
                    opts.version
                        .is_none()
                        .then_some(self.inner.default_label.as_str())
                })
                .map(Arc::from),
            label_id: DEFAULT_LABEL_ID,
            source: Source::Fallback,
            variant: None,
            pricing: self.effective_pricing(),
            revision: 0,
            telemetry: self.inner.engine.telemetry.clone(),
        })
    }
}
