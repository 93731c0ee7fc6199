//! The store: holds the current compiled snapshot and swaps it atomically.
//! Readers never wait on writers (`arc-swap`); every source (local files,
//! bundles, and later HTTP, SSE and Redis) feeds it through [`Store::apply`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::compile::{CompiledSnapshot, Diagnostic, Limits, Source};
use crate::error::{Error, Result};
use crate::model::LATEST_LABEL;
use crate::snapshot::{Delta, SnapshotData};

/// What a source pushes into the store.
#[derive(Debug, Clone)]
pub enum Update {
    Snapshot(SnapshotData),
    Delta(Delta),
}

/// One effective change: `prompt` under `label` moved from `old` to `new`
/// (`None` = not served under that label before / any more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub prompt: String,
    pub label: String,
    pub old: Option<u32>,
    pub new: Option<u32>,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone)]
pub struct ApplyOutcome {
    /// `false` when the update was older than (or the same as) what the
    /// store holds and was ignored.
    pub applied: bool,
    pub changes: Vec<Change>,
    pub diagnostics: Vec<Diagnostic>,
    pub revision: u64,
    /// The snapshot the store holds after the update.
    snapshot: Arc<CompiledSnapshot>,
}

impl ApplyOutcome {
    /// The content hash of the snapshot the store holds after the update
    /// (computed on first use when the update was a delta).
    pub fn hash(&self) -> &str {
        self.snapshot.hash()
    }
}

type Listener = Box<dyn Fn(&[Change]) + Send + Sync>;

/// The store of one project.
pub struct Store {
    project: Option<String>,
    limits: Limits,
    current: ArcSwapOption<CompiledSnapshot>,
    write: Mutex<()>,
    listeners: Mutex<Vec<Arc<Listener>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("project", &self.project)
            .field(
                "current",
                &self.current.load().as_ref().map(|s| s.data().revision),
            )
            .finish()
    }
}

impl Store {
    /// A store for `project` (`None` accepts the first snapshot's project).
    pub fn new(project: Option<String>, limits: Limits) -> Self {
        Store {
            project,
            limits,
            current: ArcSwapOption::empty(),
            write: Mutex::new(()),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// The current compiled snapshot (lock-free).
    pub fn current(&self) -> Option<Arc<CompiledSnapshot>> {
        self.current.load_full()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Register a listener called after every applied update that changed
    /// what some label serves.
    pub fn on_change(&self, f: impl Fn(&[Change]) + Send + Sync + 'static) {
        if let Ok(mut l) = self.listeners.lock() {
            l.push(Arc::new(Box::new(f)));
        }
    }

    /// The one entry point for new data. Newer data wins: a snapshot with a
    /// lower revision than the current one is ignored (equal revisions are
    /// accepted when the content differs, which is how local data at
    /// revision 0 reloads), except that a live snapshot from the registry
    /// (`Source::Memory`) always replaces data that came from disk or a
    /// bundle, and such files never replace live data. A delta must start
    /// at the current revision.
    ///
    /// A prompt whose new version cannot be served (broken template, bad
    /// include) keeps serving the version the label had before, when that
    /// one was good; a diagnostic says so.
    pub fn apply(&self, update: Update, source: Source) -> Result<ApplyOutcome> {
        let _w = self
            .write
            .lock()
            .map_err(|_| Error::Config("store lock poisoned".into()))?;
        let old = self.current.load_full();
        // For a delta, the prompts it names are the only ones that changed.
        let mut changed: Option<std::collections::HashSet<String>> = None;
        let data = match update {
            Update::Snapshot(s) => {
                s.validate()?;
                s
            }
            Update::Delta(d) => {
                let Some(old) = &old else {
                    return Err(Error::Snapshot(
                        "a delta arrived before any snapshot".into(),
                    ));
                };
                if d.revision <= old.raw.revision {
                    return Ok(self.ignored(old));
                }
                changed = Some(
                    d.upserts
                        .iter()
                        .map(|p| p.name.clone())
                        .chain(d.removed.iter().cloned())
                        .collect(),
                );
                old.raw.apply_delta(&d)?
            }
        };
        if let Some(p) = &self.project
            && &data.project != p
        {
            return Err(Error::Snapshot(format!(
                "snapshot is for project `{}`, this client is for `{p}`",
                data.project
            )));
        }
        if let Some(old) = &old {
            let od = &old.raw;
            // The registry is the system of record: its answer replaces
            // data read from disk or a bundle even at a lower revision (the
            // registry was reset or restored, and the file is from another
            // lineage). Between live updates, and between files, newer wins.
            let registry_over_file = source == Source::Memory && old.source != Source::Memory;
            let file_over_registry = source != Source::Memory && old.source == Source::Memory;
            let older = data.revision < od.revision && !registry_over_file;
            let same = data.revision == od.revision && *data.content_hash() == *old.hash();
            if older || file_over_registry || same {
                return Ok(self.ignored(old));
            }
        }
        let mut compiled = CompiledSnapshot::compile_from_changed(
            data,
            self.limits,
            source,
            old.as_deref(),
            changed.as_ref(),
        );
        if let Some(old) = &old
            && let Some(patched) = keep_last_good(&compiled, old)
        {
            let diags = compiled.diagnostics.clone();
            let mut recompiled = CompiledSnapshot::compile(patched.0, self.limits, source);
            // Served data is patched; the registry's data and hash are kept
            // as they arrived (deltas build on them, the disk cache stores them).
            recompiled.raw = compiled.raw.clone();
            recompiled.hash = compiled.hash.clone();
            recompiled.diagnostics = diags;
            recompiled.diagnostics.extend(patched.1);
            compiled = recompiled;
        }
        for d in &compiled.diagnostics {
            tracing::warn!(target: "promptops", "{d}");
        }
        let held_back = !Arc::ptr_eq(&compiled.data, &compiled.raw);
        let changes = match (&old, &changed) {
            // A delta changes only the prompts it names (unless a version
            // was held back, which may touch others): compare just those.
            (Some(old), Some(names)) if !held_back => diff_named(old, &compiled, names),
            (Some(old), _) => diff(old, &compiled),
            (None, _) => diff_from_empty(&compiled),
        };
        let compiled = Arc::new(compiled);
        let outcome = ApplyOutcome {
            applied: true,
            changes: changes.clone(),
            diagnostics: compiled.diagnostics.clone(),
            revision: compiled.raw.revision,
            snapshot: compiled.clone(),
        };
        self.current.store(Some(compiled));
        if !changes.is_empty() {
            let listeners: Vec<Arc<Listener>> =
                self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
            for l in listeners {
                // A panicking listener must not poison the store.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l(&changes)));
            }
        }
        Ok(outcome)
    }

    fn ignored(&self, current: &Arc<CompiledSnapshot>) -> ApplyOutcome {
        ApplyOutcome {
            applied: false,
            changes: Vec::new(),
            diagnostics: Vec::new(),
            revision: current.raw.revision,
            snapshot: current.clone(),
        }
    }
}

/// For each (prompt, label) the new snapshot cannot serve but the old one
/// could, patch the data so the label keeps pointing at the old version.
fn keep_last_good(
    new: &CompiledSnapshot,
    old: &CompiledSnapshot,
) -> Option<(SnapshotData, Vec<Diagnostic>)> {
    let any_bad = new
        .prompts
        .values()
        .any(|p| !p.broken.is_empty() || p.versions.values().any(|v| v.first_error().is_some()));
    if !any_bad {
        return None;
    }
    let mut data = (*new.data).clone();
    let mut diags = Vec::new();
    for p in data.prompts.iter_mut() {
        let Some(np) = new.prompts.get(&p.name) else {
            continue;
        };
        let Some(op) = old.prompts.get(&p.name) else {
            continue;
        };
        let labels: Vec<String> = p.labels.keys().cloned().collect();
        for label in labels {
            let Some(nv) = np.resolve(&label) else {
                continue;
            };
            let new_bad = np.broken.contains_key(&label)
                || np
                    .versions
                    .get(&nv)
                    .is_some_and(|v| v.first_error().is_some());
            if !new_bad {
                continue;
            }
            let Some(ov) = op.resolve(&label) else {
                continue;
            };
            let Some(ocv) = op.versions.get(&ov) else {
                continue;
            };
            if op.broken.contains_key(&label) || ocv.first_error().is_some() || ov == nv {
                continue;
            }
            let pm = Arc::make_mut(p);
            if pm.version(ov).is_none() {
                pm.versions.push(ocv.data.clone());
            }
            pm.labels.insert(label.clone(), ov);
            diags.push(Diagnostic {
                prompt: p.name.clone(),
                version: Some(nv),
                label: Some(label.clone()),
                error: Error::Snapshot(format!(
                    "version {nv} cannot be served; label `{label}` keeps serving version {ov}"
                )),
            });
        }
    }
    if diags.is_empty() {
        None
    } else {
        Some((data, diags))
    }
}

fn resolutions(s: &CompiledSnapshot) -> BTreeSet<(String, String, u32)> {
    let mut out = BTreeSet::new();
    for (name, p) in &s.prompts {
        for (l, v) in &p.labels {
            out.insert((name.clone(), l.clone(), *v));
        }
        out.insert((name.clone(), LATEST_LABEL.to_string(), p.latest));
    }
    out
}

/// [`diff`] restricted to the prompts in `names`.
fn diff_named(
    old: &CompiledSnapshot,
    new: &CompiledSnapshot,
    names: &std::collections::HashSet<String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    for name in names {
        let index = |s: &CompiledSnapshot| -> BTreeMap<String, u32> {
            let Some(p) = s.prompts.get(name) else {
                return BTreeMap::new();
            };
            let mut m: BTreeMap<String, u32> =
                p.labels.iter().map(|(l, v)| (l.clone(), *v)).collect();
            m.insert(LATEST_LABEL.to_string(), p.latest);
            m
        };
        let (o, n) = (index(old), index(new));
        for (label, nv) in &n {
            let ov = o.get(label).copied();
            let content_changed = ov == Some(*nv) && {
                let a = old.prompts.get(name).and_then(|p| p.versions.get(nv));
                let b = new.prompts.get(name).and_then(|p| p.versions.get(nv));
                match (a, b) {
                    (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a.data != b.data,
                    _ => false,
                }
            };
            if ov != Some(*nv) || content_changed {
                out.push(Change {
                    prompt: name.clone(),
                    label: label.clone(),
                    old: ov,
                    new: Some(*nv),
                });
            }
        }
        for (label, ov) in &o {
            if !n.contains_key(label) {
                out.push(Change {
                    prompt: name.clone(),
                    label: label.clone(),
                    old: Some(*ov),
                    new: None,
                });
            }
        }
    }
    out
}

fn diff_from_empty(new: &CompiledSnapshot) -> Vec<Change> {
    resolutions(new)
        .into_iter()
        .map(|(prompt, label, v)| Change {
            prompt,
            label,
            old: None,
            new: Some(v),
        })
        .collect()
}

fn diff(old: &CompiledSnapshot, new: &CompiledSnapshot) -> Vec<Change> {
    let index = |s: &CompiledSnapshot| -> BTreeMap<(String, String), u32> {
        resolutions(s)
            .into_iter()
            .map(|(p, l, v)| ((p, l), v))
            .collect()
    };
    let (o, n) = (index(old), index(new));
    let mut out = Vec::new();
    for (k, nv) in &n {
        let ov = o.get(k).copied();
        let content_changed = ov == Some(*nv) && {
            let a = old.prompts.get(&k.0).and_then(|p| p.versions.get(nv));
            let b = new.prompts.get(&k.0).and_then(|p| p.versions.get(nv));
            match (a, b) {
                // The same compiled version (reused across the update) is
                // unchanged without comparing its data.
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a.data != b.data,
                _ => false,
            }
        };
        if ov != Some(*nv) || content_changed {
            out.push(Change {
                prompt: k.0.clone(),
                label: k.1.clone(),
                old: ov,
                new: Some(*nv),
            });
        }
    }
    for (k, ov) in &o {
        if !n.contains_key(k) {
            out.push(Change {
                prompt: k.0.clone(),
                label: k.1.clone(),
                old: Some(*ov),
                new: None,
            });
        }
    }
    out
}
