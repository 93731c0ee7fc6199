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
}

impl ClientBuilder {
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
        let store = Store::new(project.clone(), self.limits);
        let mut load_diags: Vec<Diagnostic> = Vec::new();
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
        Ok(Client {
            inner: Arc::new(Inner {
                store,
                default_label,
                pricing: Arc::new(pricing),
                project,
                load_diagnostics: load_diags,
                limits: self.limits,
            }),
        })
    }
}

struct Inner {
    store: Store,
    default_label: String,
    pricing: Arc<PricingTable>,
    project: Option<String>,
    load_diagnostics: Vec<Diagnostic>,
    limits: Limits,
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

    /// The project, once known.
    pub fn project(&self) -> Option<&str> {
        self.inner.project.as_deref()
    }

    /// The store sources push into.
    pub fn store(&self) -> &Store {
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

    pub fn pricing(&self) -> &PricingTable {
        &self.inner.pricing
    }

    /// Called after every update that changes what some label serves.
    pub fn on_change(&self, f: impl Fn(&[Change]) + Send + Sync + 'static) {
        self.inner.store.on_change(f)
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
        let hash = snap.hash.clone();
        Ok(Prompt {
            source: snap.source,
            env_owner: EnvOwner::Snapshot(snap),
            version: cv,
            label: label_out,
            label_id,
            variant: None,
            pricing: self.inner.pricing.clone(),
            revision,
            snapshot_hash: Some(hash),
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
            pricing: self.inner.pricing.clone(),
            revision: 0,
            snapshot_hash: None,
        })
    }
}
