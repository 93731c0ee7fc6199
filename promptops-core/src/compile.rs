//! Compiling a snapshot: every template of every version is parsed once,
//! here, into one minijinja environment; includes are resolved per label and
//! checked for cycles. Problems are recorded per prompt (as diagnostics and
//! as the error a lookup of that prompt returns); the rest still loads.

use std::cell::Cell;
use std::collections::BTreeMap;

/// The maps on the lookup path hash short strings (prompt and label names)
/// on every `get`; foldhash does that several times faster than SipHash.
/// Keys come from the registry, not from untrusted request input.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::SystemTime;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;

use crate::error::{Error, Position, PromptRef};
use crate::model::{Body, DEFAULT_LABEL, LATEST_LABEL, ModelConfig, PromptData, PromptVersion};
use crate::snapshot::SnapshotData;

/// Bounds on the work one render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// minijinja fuel (one unit per instruction, plus per byte of data
    /// produced). `None` disables the limit.
    pub fuel: Option<u64>,
    /// Largest rendered output in bytes (text, or all messages together).
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: Some(1_000_000),
            max_output_bytes: 1 << 20,
        }
    }
}

/// Where a served prompt came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Pushed into memory by a live source (HTTP, SSE, Redis).
    Memory,
    /// Read from disk: a local prompt directory or the last-known-good file.
    Disk,
    /// A snapshot bundle shipped with the app.
    Bundle,
    /// The inline fallback the caller passed.
    Fallback,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Disk => "disk",
            Source::Bundle => "bundle",
            Source::Fallback => "fallback",
        }
    }
}

/// A problem found while loading a snapshot or a prompt directory.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub prompt: String,
    pub version: Option<u32>,
    pub label: Option<String>,
    pub error: Error,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(l) => write!(f, "[{} @{l}] {}", self.prompt, self.error),
            None => write!(f, "[{}] {}", self.prompt, self.error),
        }
    }
}

thread_local! {
    /// The label id includes resolve through during the current render.
    static INCLUDE_LABEL: Cell<usize> = const { Cell::new(DEFAULT_LABEL_ID) };
}

pub(crate) const LATEST_LABEL_ID: usize = 0;
pub(crate) const DEFAULT_LABEL_ID: usize = 1;

pub(crate) struct LabelScope(usize);

impl LabelScope {
    pub(crate) fn enter(id: usize) -> LabelScope {
        LabelScope(INCLUDE_LABEL.with(|c| c.replace(id)))
    }
}

impl Drop for LabelScope {
    fn drop(&mut self) {
        INCLUDE_LABEL.with(|c| c.set(self.0));
    }
}

/// One compiled template: its name in the minijinja environment and, when
/// it fits the subset, its fast-path form (see `crate::fast`).
#[derive(Debug, Clone)]
pub(crate) struct Tmpl {
    pub name: String,
    pub fast: Option<Arc<crate::fast::FastTemplate>>,
}

/// The compiled templates of one body.
#[derive(Debug, Clone)]
pub(crate) enum CompiledBody {
    Text(Tmpl),
    /// (role, name, template)
    Chat(Vec<(String, Option<String>, Tmpl)>),
}

/// A variant ready to render: its config (the version's overlaid with the
/// variant's) and compiled body.
pub(crate) struct CompiledVariant {
    pub config: Arc<ModelConfig>,
    pub body: Result<CompiledBody, Error>,
    /// See [`CompiledVersion::body_id`].
    pub body_id: u64,
}

/// One version, compiled.
pub(crate) struct CompiledVersion {
    pub prompt: String,
    pub data: PromptVersion,
    pub config: Arc<ModelConfig>,
    pub body: Result<CompiledBody, Error>,
    pub variants: BTreeMap<String, CompiledVariant>,
    /// Literal include/import/extends targets of every part.
    pub includes: Vec<IncludeRef>,
    /// A process-unique id of the compiled body (each variant has its
    /// own), never reused: what a binding derives from a body (its portable
    /// plan, its config) can be cached under it. See [`next_body_id`].
    pub body_id: u64,
}

/// The next id of a compiled body (ids start at 1 and stay below 2^53,
/// so they are exact as JS numbers for any realistic process lifetime).
pub(crate) fn next_body_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl CompiledVersion {
    /// The first compile error of the body or any variant.
    pub fn first_error(&self) -> Option<&Error> {
        self.body
            .as_ref()
            .err()
            .or_else(|| self.variants.values().find_map(|v| v.body.as_ref().err()))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct IncludeRef {
    pub target: String,
    pub part: String,
    pub position: Position,
}

pub(crate) struct CompiledPrompt {
    pub versions: HashMap<u32, Arc<CompiledVersion>>,
    pub labels: HashMap<String, u32>,
    pub latest: u32,
    /// label → why the prompt cannot be served under it (include problems).
    pub broken: HashMap<String, Error>,
    pub policy: Option<serde_json::Value>,
    /// The parsed policy (or why it is invalid), see `crate::route`.
    pub route_policy: Option<Result<Arc<crate::route::Policy>, Error>>,
}

impl CompiledPrompt {
    pub fn resolve(&self, label: &str) -> Option<u32> {
        if label == LATEST_LABEL {
            Some(self.latest)
        } else {
            self.labels.get(label).copied()
        }
    }
}

/// A compiled snapshot: what the store swaps atomically and readers use.
pub struct CompiledSnapshot {
    /// What is served: the registry's data, except where a broken new
    /// version was replaced by the last good one (see `Store::apply`).
    pub(crate) data: Arc<SnapshotData>,
    /// The registry's data exactly as received (deltas apply to this, the
    /// disk cache stores this, `hash` is its hash).
    pub(crate) raw: Arc<SnapshotData>,
    /// The hash of `raw`: the one it arrived with, or computed on first use
    /// (a snapshot advanced by a delta carries none).
    pub(crate) hash: std::sync::OnceLock<Arc<str>>,
    /// Label names by label id (interned: lookups hand out clones).
    pub(crate) label_names: Vec<Arc<str>>,
    pub(crate) env: Environment<'static>,
    pub(crate) prompts: HashMap<String, CompiledPrompt>,
    pub(crate) label_ids: HashMap<String, usize>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) limits: Limits,
    pub(crate) source: Source,
    pub(crate) loaded_at: SystemTime,
    /// The model catalogue of `data`, indexed (see `crate::catalogue`).
    pub(crate) catalogue: Arc<crate::catalogue::Catalogue>,
}

impl std::fmt::Debug for CompiledSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledSnapshot")
            .field("project", &self.data.project)
            .field("revision", &self.data.revision)
            .field("hash", &self.data.hash)
            .field("prompts", &self.prompts.len())
            .field("source", &self.source)
            .finish()
    }
}

impl CompiledSnapshot {
    /// The data being served.
    pub fn data(&self) -> &SnapshotData {
        &self.data
    }

    /// The registry's data exactly as received: equal to [`data`](Self::data)
    /// unless a broken new version is being held back.
    pub fn registry_data(&self) -> &Arc<SnapshotData> {
        &self.raw
    }

    /// The registry's content hash of this snapshot (computed on first use
    /// when the data arrived as a delta).
    pub fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| Arc::from(self.raw.content_hash().as_ref()))
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn source(&self) -> Source {
        self.source
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    pub fn prompt_names(&self) -> impl Iterator<Item = &str> {
        self.data.prompts.iter().map(|p| p.name.as_str())
    }

    /// Label → version of `prompt` under every label (plus `latest`).
    pub fn labels_of(&self, prompt: &str) -> Option<BTreeMap<String, u32>> {
        let p = self.prompts.get(prompt)?;
        let mut m: BTreeMap<String, u32> = p.labels.iter().map(|(k, v)| (k.clone(), *v)).collect();
        m.insert(LATEST_LABEL.to_string(), p.latest);
        Some(m)
    }

    pub(crate) fn label_id(&self, label: &str) -> Option<usize> {
        self.label_ids.get(label).copied()
    }

    /// Compile a snapshot. Never fails as a whole: problems become
    /// diagnostics and per-prompt errors.
    pub fn compile(data: SnapshotData, limits: Limits, source: Source) -> CompiledSnapshot {
        Self::compile_from(data, limits, source, None)
    }

    /// Compile `data`, reusing what `base` already compiled for prompts
    /// whose records are unchanged: an update that touches one prompt
    /// compiles one prompt. Templates of versions no longer carried are
    /// dropped from the environment.
    pub fn compile_from(
        data: SnapshotData,
        limits: Limits,
        source: Source,
        base: Option<&CompiledSnapshot>,
    ) -> CompiledSnapshot {
        Self::compile_from_changed(data, limits, source, base, None)
    }

    /// [`compile_from`](Self::compile_from) with the names of the prompts
    /// that may have changed (a delta's upserts and removals): the others
    /// are taken from `base` without comparing their records.
    pub(crate) fn compile_from_changed(
        data: SnapshotData,
        limits: Limits,
        source: Source,
        base: Option<&CompiledSnapshot>,
        changed: Option<&std::collections::HashSet<String>>,
    ) -> CompiledSnapshot {
        let base = base.filter(|b| b.limits == limits);
        // The hint is only safe when the base serves the registry's data
        // as is (no version held back by keep-last-good).
        let changed = changed.filter(|_| base.is_some_and(|b| Arc::ptr_eq(&b.data, &b.raw)));
        let data = Arc::new(data);
        // Label ids: latest = 0, production = 1, then the rest sorted.
        let mut label_names: Vec<String> = vec![LATEST_LABEL.into(), DEFAULT_LABEL.into()];
        let mut others: Vec<&String> = data
            .prompts
            .iter()
            .flat_map(|p| p.labels.keys())
            .filter(|l| l.as_str() != DEFAULT_LABEL && l.as_str() != LATEST_LABEL)
            .collect();
        others.sort();
        others.dedup();
        label_names.extend(others.into_iter().cloned());
        let label_ids: HashMap<String, usize> = label_names
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), i))
            .collect();
        // Per label: prompt -> version.
        let mut resolution: Vec<HashMap<String, u32>> = vec![HashMap::default(); label_names.len()];
        for p in &data.prompts {
            if let Some(latest) = p.latest() {
                resolution[LATEST_LABEL_ID].insert(p.name.clone(), latest);
            }
            for (l, v) in &p.labels {
                if let Some(&id) = label_ids.get(l) {
                    resolution[id].insert(p.name.clone(), *v);
                }
            }
        }
        let resolution = Arc::new(resolution);

        let mut env = match base {
            Some(b) => b.env.clone(),
            None => new_environment(limits),
        };
        let res = resolution.clone();
        env.set_path_join_callback(move |name, _parent| {
            if name.contains('@') {
                return name.into();
            }
            let id = INCLUDE_LABEL.with(|c| c.get());
            match res.get(id).and_then(|m| m.get(name)) {
                Some(v) => format!("{name}@{v}").into(),
                None => name.into(),
            }
        });

        let mut diagnostics = Vec::new();
        let mut prompts = HashMap::with_capacity_and_hasher(data.prompts.len(), Default::default());
        let mut dedupe = Dedupe::default();
        for p in &data.prompts {
            let reuse = base.and_then(|b| {
                let same = match changed {
                    Some(c) if !c.contains(&p.name) => b.prompts.contains_key(&p.name),
                    _ => b
                        .data
                        .prompt_arc(&p.name)
                        .is_some_and(|old| Arc::ptr_eq(old, p) || old == p),
                };
                same.then(|| b.prompts.get(&p.name)).flatten()
            });
            let compiled = match reuse {
                Some(old) => {
                    for (v, cv) in &old.versions {
                        if let Some(e) = cv.first_error() {
                            diagnostics.push(Diagnostic {
                                prompt: p.name.clone(),
                                version: Some(*v),
                                label: None,
                                error: e.clone(),
                            });
                        }
                    }
                    CompiledPrompt {
                        versions: old.versions.clone(),
                        labels: old.labels.clone(),
                        latest: old.latest,
                        broken: HashMap::default(),
                        policy: old.policy.clone(),
                        route_policy: None,
                    }
                }
                None => compile_prompt(
                    &mut env,
                    p,
                    &mut diagnostics,
                    &mut dedupe,
                    base.and_then(|b| b.prompts.get(&p.name)),
                ),
            };
            prompts.insert(p.name.clone(), compiled);
        }
        if base.is_some() {
            drop_unused_templates(&mut env, &prompts);
        }

        // Routing policies: parsed once here; a bad one is a diagnostic.
        for (name, res) in crate::route::compile_policies(&data) {
            if let Err(e) = &res {
                diagnostics.push(Diagnostic {
                    prompt: name.clone(),
                    version: None,
                    label: None,
                    error: e.clone(),
                });
            }
            if let Some(p) = prompts.get_mut(&name) {
                p.route_policy = Some(res);
            }
        }

        // Include checks, per label.
        for (id, label) in label_names.iter().enumerate() {
            check_includes(label, &resolution[id], &mut prompts, &mut diagnostics);
        }

        let catalogue = Arc::new(crate::catalogue::Catalogue::new(&data.models));
        CompiledSnapshot {
            catalogue,
            raw: data.clone(),
            hash: {
                let h = std::sync::OnceLock::new();
                if !data.hash.is_empty() {
                    let _ = h.set(Arc::from(data.hash.as_str()));
                }
                h
            },
            label_names: label_names.iter().map(|l| Arc::from(l.as_str())).collect(),
            data,
            env,
            prompts,
            label_ids,
            diagnostics,
            limits,
            source,
            loaded_at: SystemTime::now(),
        }
    }
}

/// The whitespace settings of every promptops template.
pub(crate) fn prompt_syntax() -> minijinja::syntax::SyntaxConfig {
    minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .unwrap_or_default()
}

/// Every promptops template renders with the same settings: strict
/// undefined, no HTML escaping, and prompt-friendly whitespace — a block tag
/// leaves no blank line behind (`trim_blocks` + `lstrip_blocks`) and the
/// template's final newline is kept. The shared benchmark workload's
/// expected outputs are rendered this way too.
pub(crate) fn new_environment(limits: Limits) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(crate::compile::prompt_syntax());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(limits.fuel);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Remove templates no compiled version refers to (left over from versions
/// an update dropped), so a long-lived store does not grow.
fn drop_unused_templates(
    env: &mut Environment<'static>,
    prompts: &HashMap<String, CompiledPrompt>,
) {
    fn add<'a>(used: &mut std::collections::HashSet<&'a str>, b: &'a Result<CompiledBody, Error>) {
        match b {
            Ok(CompiledBody::Text(t)) => {
                used.insert(t.name.as_str());
            }
            Ok(CompiledBody::Chat(ms)) => {
                for (_, _, t) in ms {
                    used.insert(t.name.as_str());
                }
            }
            Err(_) => {}
        }
    }
    let mut used = std::collections::HashSet::new();
    for p in prompts.values() {
        for cv in p.versions.values() {
            add(&mut used, &cv.body);
            for v in cv.variants.values() {
                add(&mut used, &v.body);
            }
        }
    }
    let unused: Vec<String> = env
        .templates()
        .map(|(n, _)| n)
        .filter(|n| !used.contains(n))
        .map(String::from)
        .collect();
    for n in unused {
        env.remove_template(&n);
    }
}

/// Template sources already compiled in this environment → their names.
/// Versions of a prompt usually share most of their text (a new version
/// often changes one message), so identical sources are compiled once.
/// Includes resolve at render time through the label in scope, so a
/// compiled template does not depend on which version it belongs to.
#[derive(Default)]
pub(crate) struct Dedupe {
    by_source: HashMap<String, Tmpl>,
}

fn compile_prompt(
    env: &mut Environment<'static>,
    p: &PromptData,
    diagnostics: &mut Vec<Diagnostic>,
    dedupe: &mut Dedupe,
    previous: Option<&CompiledPrompt>,
) -> CompiledPrompt {
    let mut versions = HashMap::with_capacity_and_hasher(p.versions.len(), Default::default());
    for v in &p.versions {
        // Versions are immutable: one already compiled (same data) is
        // reused, so a label move (publish, rollback) compiles nothing.
        if let Some(old) = previous
            .and_then(|o| o.versions.get(&v.version))
            .filter(|o| o.data == *v)
        {
            if let Some(e) = old.first_error() {
                diagnostics.push(Diagnostic {
                    prompt: p.name.clone(),
                    version: Some(v.version),
                    label: None,
                    error: e.clone(),
                });
            }
            versions.insert(v.version, old.clone());
            continue;
        }
        let cv = compile_version_with(
            env,
            &p.name,
            v,
            &format!("{}@{}", p.name, v.version),
            dedupe,
        );
        if let Some(e) = cv.first_error() {
            diagnostics.push(Diagnostic {
                prompt: p.name.clone(),
                version: Some(v.version),
                label: None,
                error: e.clone(),
            });
        }
        versions.insert(v.version, Arc::new(cv));
    }
    CompiledPrompt {
        versions,
        labels: p.labels.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        latest: p.latest().unwrap_or(0),
        broken: HashMap::default(),
        policy: p.policy.clone(),
        route_policy: None,
    }
}

/// Compile one version into `env` under template names derived from `base`
/// (`module/name@3`, `module/name@3#1`, `module/name@3~claude#0`).
pub(crate) fn compile_version(
    env: &mut Environment<'static>,
    prompt: &str,
    v: &PromptVersion,
    base: &str,
) -> CompiledVersion {
    compile_version_with(env, prompt, v, base, &mut Dedupe::default())
}

fn compile_version_with(
    env: &mut Environment<'static>,
    prompt: &str,
    v: &PromptVersion,
    base: &str,
    dedupe: &mut Dedupe,
) -> CompiledVersion {
    let pref = PromptRef::new(prompt, Some(v.version));
    let mut includes = Vec::new();
    let body = compile_body(env, &pref, &v.body, base, "", &mut includes, dedupe);
    let config = Arc::new(v.config.clone());
    let mut variants = BTreeMap::new();
    for (vname, variant) in &v.variants {
        let vbody = variant.body_or(&v.body);
        let compiled = match (&variant.template, &variant.messages) {
            (None, None) => body.clone(),
            _ => compile_body(
                env,
                &pref,
                &vbody,
                &format!("{base}~{vname}"),
                &format!("variant {vname} "),
                &mut includes,
                dedupe,
            ),
        };
        variants.insert(
            vname.clone(),
            CompiledVariant {
                config: Arc::new(v.config.overlay(&variant.config)),
                body: compiled,
                body_id: next_body_id(),
            },
        );
    }
    CompiledVersion {
        prompt: prompt.to_string(),
        data: v.clone(),
        config,
        body,
        variants,
        includes,
        body_id: next_body_id(),
    }
}

fn compile_body(
    env: &mut Environment<'static>,
    pref: &PromptRef,
    body: &Body,
    base: &str,
    part_prefix: &str,
    includes: &mut Vec<IncludeRef>,
    dedupe: &mut Dedupe,
) -> Result<CompiledBody, Error> {
    match body {
        Body::Text { template } => {
            let part = format!("{part_prefix}template");
            scan_includes(template, &part, includes);
            let name = add_template(env, pref, &part, base.to_string(), template, dedupe)?;
            Ok(CompiledBody::Text(name))
        }
        Body::Chat { messages } => {
            let mut out = Vec::with_capacity(messages.len());
            for (i, m) in messages.iter().enumerate() {
                let part = format!("{part_prefix}messages[{i}]");
                scan_includes(&m.content, &part, includes);
                let name =
                    add_template(env, pref, &part, format!("{base}#{i}"), &m.content, dedupe)?;
                out.push((m.role.clone(), m.name.clone(), name));
            }
            Ok(CompiledBody::Chat(out))
        }
    }
}

fn add_template(
    env: &mut Environment<'static>,
    pref: &PromptRef,
    part: &str,
    name: String,
    source: &str,
    dedupe: &mut Dedupe,
) -> Result<Tmpl, Error> {
    if let Some(existing) = dedupe.by_source.get(source) {
        return Ok(existing.clone());
    }
    env.add_template_owned(name.clone(), source.to_string())
        .map_err(|e| Error::Template {
            prompt: pref.clone(),
            part: part.to_string(),
            position: error_position(&e, Some(source)),
            message: e.detail().unwrap_or(&e.kind().to_string()).to_string(),
        })?;
    // The fast path's form, when the template fits its subset: lowered
    // here, once per snapshot, never on the render path.
    // Not lowered while the fast path is off (no compile work for it).
    let fast = if crate::fast::fast_render_enabled() {
        crate::fast::lower(source, &name, prompt_syntax()).map(Arc::new)
    } else {
        None
    };
    let t = Tmpl { name, fast };
    dedupe.by_source.insert(source.to_string(), t.clone());
    Ok(t)
}

/// Line and column of a minijinja error within `source`.
pub(crate) fn error_position(e: &minijinja::Error, source: Option<&str>) -> Option<Position> {
    let line = e.line()?;
    let column = match (e.range(), source.or(e.template_source())) {
        (Some(r), Some(src)) if r.start <= src.len() && src.is_char_boundary(r.start) => {
            let before = &src[..r.start];
            let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
            before[line_start..].chars().count() + 1
        }
        _ => 1,
    };
    Some(Position { line, column })
}

/// Find literal `{% include "x" %}`, `{% import "x" … %}`,
/// `{% from "x" import … %}` and `{% extends "x" %}` targets.
pub(crate) fn scan_includes(src: &str, part: &str, out: &mut Vec<IncludeRef>) {
    let bytes = src.as_bytes();
    let mut i = 0;
    while let Some(off) = src[i..].find("{%") {
        let start = i + off;
        let mut j = start + 2;
        if j < bytes.len() && (bytes[j] == b'-' || bytes[j] == b'+') {
            j += 1;
        }
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        let rest = &src[j..];
        let kw_len = ["include", "import", "from", "extends"]
            .iter()
            .find(|kw| {
                rest.starts_with(**kw)
                    && rest[kw.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_whitespace())
            })
            .map(|kw| kw.len());
        i = start + 2;
        let Some(kw_len) = kw_len else { continue };
        let mut k = j + kw_len;
        while k < bytes.len() && bytes[k].is_ascii_whitespace() {
            k += 1;
        }
        if k < bytes.len() && (bytes[k] == b'"' || bytes[k] == b'\'') {
            let q = bytes[k];
            if let Some(end) = src[k + 1..].find(q as char) {
                let target = &src[k + 1..k + 1 + end];
                let before = &src[..start];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map(|p| p + 1).unwrap_or(0);
                out.push(IncludeRef {
                    target: target.to_string(),
                    part: part.to_string(),
                    position: Position {
                        line,
                        column: before[line_start..].chars().count() + 1,
                    },
                });
            }
        }
    }
}

fn check_includes(
    label: &str,
    resolution: &HashMap<String, u32>,
    prompts: &mut HashMap<String, CompiledPrompt>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // Edges under this label, and direct problems (missing targets).
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut broken: BTreeMap<String, Error> = BTreeMap::new();
    for (name, v) in resolution {
        let Some(cv) = prompts.get(name).and_then(|p| p.versions.get(v)) else {
            continue;
        };
        let mut targets = Vec::new();
        for inc in &cv.includes {
            let target = inc.target.split('@').next().unwrap_or(&inc.target);
            if let Some(tname) = resolution.get_key_value(target).map(|(k, _)| k.as_str()) {
                targets.push(tname);
            } else if !inc.target.contains('@') {
                broken
                    .entry(name.clone())
                    .or_insert_with(|| Error::Template {
                        prompt: PromptRef::new(name.clone(), Some(*v)),
                        part: inc.part.clone(),
                        position: Some(inc.position),
                        message: if prompts.contains_key(target) {
                            format!("included prompt `{target}` has no label `{label}`")
                        } else {
                            format!("included prompt `{target}` does not exist")
                        },
                    });
            }
        }
        edges.insert(name.as_str(), targets);
    }
    // Cycles (iterative DFS with colours).
    let mut colour: HashMap<&str, u8> = HashMap::default(); // 1 = on stack, 2 = done
    let names: Vec<&str> = edges.keys().copied().collect();
    for &root in &names {
        if colour.contains_key(root) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        colour.insert(root, 1);
        while let Some(&mut (node, ref mut idx)) = stack.last_mut() {
            let next = edges.get(node).and_then(|t| t.get(*idx)).copied();
            *idx += 1;
            match next {
                Some(t) => match colour.get(t) {
                    None => {
                        colour.insert(t, 1);
                        stack.push((t, 0));
                    }
                    Some(1) => {
                        let pos = stack.iter().position(|(n, _)| *n == t).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[pos..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(t.to_string());
                        for (n, _) in &stack[pos..] {
                            broken.insert(
                                n.to_string(),
                                Error::IncludeCycle {
                                    label: label.to_string(),
                                    cycle: cycle.clone(),
                                },
                            );
                        }
                    }
                    _ => {}
                },
                None => {
                    colour.insert(node, 2);
                    stack.pop();
                }
            }
        }
    }
    // A prompt that includes a broken one is broken too (until fixpoint);
    // so is one whose own version failed to compile (for its includers).
    let mut unusable: BTreeMap<String, Error> = broken.clone();
    for (name, v) in resolution {
        if let Some(e) = prompts
            .get(name)
            .and_then(|p| p.versions.get(v))
            .and_then(|cv| cv.first_error())
        {
            unusable.entry(name.clone()).or_insert_with(|| e.clone());
        }
    }
    loop {
        let mut added = false;
        for (name, targets) in &edges {
            if unusable.contains_key(*name) {
                continue;
            }
            if let Some(bad) = targets.iter().find(|t| unusable.contains_key(**t)) {
                let v = resolution.get(*name).copied();
                let e = Error::Template {
                    prompt: PromptRef::new(*name, v),
                    part: "template".into(),
                    position: None,
                    message: format!(
                        "includes `{bad}`, which cannot be served under label `{label}`"
                    ),
                };
                broken.insert(name.to_string(), e.clone());
                unusable.insert(name.to_string(), e);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    for (name, e) in broken {
        diagnostics.push(Diagnostic {
            prompt: name.clone(),
            version: resolution.get(&name).copied(),
            label: Some(label.to_string()),
            error: e.clone(),
        });
        if let Some(p) = prompts.get_mut(&name) {
            p.broken.insert(label.to_string(), e);
        }
    }
}

/// Map a render-time minijinja error to ours.
pub(crate) fn map_render_error(
    e: minijinja::Error,
    env: &Environment<'static>,
    prompt: &str,
    version: u32,
    part: &str,
    limits: Limits,
) -> Error {
    // Errors inside an include arrive wrapped ("could not render include");
    // report the innermost one, where the problem is.
    let mut e: &minijinja::Error = &e;
    while let Some(inner) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        e = inner;
    }
    // The template the error happened in may be an included one.
    let (pname, pversion, ppart) = match e.name().and_then(parse_template_name) {
        // Same prompt name: our own template (possibly shared with another
        // version by the compile-time dedupe; a prompt never includes itself).
        Some((n, v, p)) if n != prompt => (n, v, p),
        _ => (prompt.to_string(), version, part.to_string()),
    };
    let source = e
        .name()
        .and_then(|n| env.get_template(n).ok())
        .map(|t| t.source().to_string());
    match e.kind() {
        ErrorKind::UndefinedError => {
            let variable = match (e.range(), source.as_deref()) {
                (Some(r), Some(src)) if r.end <= src.len() => {
                    src.get(r).map(|s| s.trim().to_string()).unwrap_or_default()
                }
                _ => String::new(),
            };
            Error::Variable {
                prompt: PromptRef::new(pname, Some(pversion)),
                variable: if variable.is_empty() {
                    "(unknown)".into()
                } else {
                    variable
                },
                line: e.line(),
            }
        }
        ErrorKind::OutOfFuel => Error::FuelExhausted {
            prompt: prompt.to_string(),
            limit: limits.fuel.unwrap_or(0),
        },
        _ => Error::Template {
            prompt: PromptRef::new(pname, Some(pversion)),
            part: ppart,
            position: error_position(e, source.as_deref()),
            message: match e.detail() {
                Some(d) => format!("{}: {d}", e.kind()),
                None => e.kind().to_string(),
            },
        },
    }
}

/// `module/name@3~variant#1` → (`module/name`, 3, part description).
fn parse_template_name(n: &str) -> Option<(String, u32, String)> {
    let (name, rest) = n.split_once('@')?;
    let (ver_and_variant, msg) = match rest.split_once('#') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let (ver, variant) = match ver_and_variant.split_once('~') {
        Some((a, b)) => (a, Some(b)),
        None => (ver_and_variant, None),
    };
    let version: u32 = ver.parse().ok()?;
    let mut part = String::new();
    if let Some(v) = variant {
        part.push_str(&format!("variant {v} "));
    }
    match msg {
        Some(i) => part.push_str(&format!("messages[{i}]")),
        None => part.push_str("template"),
    }
    Some((name.to_string(), version, part))
}
