//! Snapshots and deltas: the data a project's SDK needs, as it travels
//! (JSON bundle files, HTTP, SSE, Redis). A snapshot carries a content hash
//! over its canonical JSON so any copy can be checked and compared.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalogue::{ModelEntry, check_models};
use crate::error::{Error, Result};
use crate::model::{PromptData, validate_label, validate_name};

/// The format tag every snapshot carries.
pub const SNAPSHOT_FORMAT: &str = "promptops.snapshot/1";

/// One project's prompts, labelled, as the registry (or a prompt directory)
/// hands them to SDKs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotData {
    pub format: String,
    pub project: String,
    /// Registry event id this snapshot is current at (0 for local data).
    #[serde(default)]
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// `sha256:<hex>` over the canonical JSON of `project` and `prompts`.
    /// Empty when not computed yet: a snapshot built by applying a delta
    /// leaves it empty (hashing every prompt on every delta would cost each
    /// client O(snapshot) per publish); [`content_hash`](Self::content_hash)
    /// computes it when it is needed.
    #[serde(default)]
    pub hash: String,
    /// Prompts sorted by name. Shared: a delta replaces the prompts it names
    /// and keeps the others without copying them.
    pub prompts: Vec<Arc<PromptData>>,
    /// The project's model catalogue, sorted by model id (absent = empty;
    /// see [`crate::catalogue`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelEntry>,
}

/// Changes since an event id: prompts added or changed (their whole record:
/// labelled versions and labels) and prompts removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub project: String,
    /// The revision this delta applies on top of.
    pub base_revision: u64,
    /// The revision after applying it.
    pub revision: u64,
    #[serde(default)]
    pub upserts: Vec<PromptData>,
    #[serde(default)]
    pub removed: Vec<String>,
    /// The whole model catalogue after this change, when the change touched
    /// it (absent: the catalogue is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelEntry>>,
}

impl SnapshotData {
    /// A snapshot of `prompts` (sorted, validated lightly) with its hash.
    pub fn new(project: impl Into<String>, revision: u64, prompts: Vec<PromptData>) -> Self {
        Self::with_catalogue(project, revision, prompts, Vec::new())
    }

    /// A snapshot of `prompts` and the model catalogue `models` (both
    /// sorted) with its hash.
    pub fn with_catalogue(
        project: impl Into<String>,
        revision: u64,
        prompts: Vec<PromptData>,
        models: Vec<ModelEntry>,
    ) -> Self {
        Self::from_shared(
            project,
            revision,
            prompts.into_iter().map(Arc::new).collect(),
            models,
        )
    }

    /// [`with_catalogue`](Self::with_catalogue) over prompts that are
    /// already shared.
    pub fn from_shared(
        project: impl Into<String>,
        revision: u64,
        mut prompts: Vec<Arc<PromptData>>,
        mut models: Vec<ModelEntry>,
    ) -> Self {
        prompts.sort_by(|a, b| a.name.cmp(&b.name));
        models.sort_by(|a, b| a.model.cmp(&b.model));
        let mut s = SnapshotData {
            format: SNAPSHOT_FORMAT.to_string(),
            project: project.into(),
            revision,
            created_at: None,
            hash: String::new(),
            prompts,
            models,
        };
        s.hash = s.compute_hash();
        s
    }

    /// `sha256:<hex>` of the JSON of the project name, the prompts and (when
    /// not empty) the model catalogue, as serde serialises them (fields in declaration order, maps sorted;
    /// free-form JSON values keep their order, which a round trip through
    /// JSON preserves). Revision and timestamps are left out: two snapshots
    /// with the same content have the same hash. Streamed into the hasher,
    /// so a large snapshot is never copied to compute it.
    pub fn compute_hash(&self) -> String {
        #[derive(Serialize)]
        struct Content<'a> {
            project: &'a str,
            prompts: &'a [Arc<PromptData>],
            // Left out when empty: snapshots without a catalogue keep the
            // hashes they had before catalogues existed.
            #[serde(skip_serializing_if = "<[ModelEntry]>::is_empty")]
            models: &'a [ModelEntry],
        }
        struct HashWriter(Sha256);
        impl Write for HashWriter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w = HashWriter(Sha256::new());
        let _ = serde_json::to_writer(
            &mut w,
            &Content {
                project: &self.project,
                prompts: &self.prompts,
                models: &self.models,
            },
        );
        format!("sha256:{}", hex::encode(w.0.finalize()))
    }

    /// Structural checks every snapshot must pass before it is compiled:
    /// format, names, labels pointing at versions it carries, unique names
    /// and versions. Template problems are not checked here (compilation
    /// reports those per prompt).
    pub fn validate(&self) -> Result<()> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(Error::Snapshot(format!(
                "unknown format `{}` (this SDK reads `{SNAPSHOT_FORMAT}`)",
                self.format
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.prompts {
            validate_name(&p.name).map_err(Error::Snapshot)?;
            if !seen.insert(p.name.as_str()) {
                return Err(Error::Snapshot(format!(
                    "prompt `{}` appears twice",
                    p.name
                )));
            }
            validate_prompt(p)?;
        }
        validate_models(&self.models)?;
        Ok(())
    }

    /// Parse a snapshot from JSON and check it (format, structure, and the
    /// hash when one is present).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let s: SnapshotData = serde_json::from_slice(bytes).map_err(|e| {
            Error::Snapshot(format!(
                "not a snapshot: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        s.validate()?;
        if !s.hash.is_empty() {
            let actual = s.compute_hash();
            if actual != s.hash {
                return Err(Error::Snapshot(format!(
                    "content hash mismatch: file says {}, content is {actual}",
                    s.hash
                )));
            }
        }
        Ok(s)
    }

    /// This snapshot with its hash filled in (computed when missing). The
    /// prompts are shared, so the copy is cheap.
    pub fn with_hash(&self) -> std::borrow::Cow<'_, SnapshotData> {
        if self.hash.is_empty() {
            let mut s = self.clone();
            s.hash = s.compute_hash();
            std::borrow::Cow::Owned(s)
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The JSON of this snapshot, always with its hash.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.with_hash()).unwrap_or_default()
    }

    pub fn to_json_pretty(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&*self.with_hash()).unwrap_or_default()
    }

    /// Read a bundle file written by [`write_bundle`](Self::write_bundle)
    /// (or `promptops pull`).
    pub fn read_bundle(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&bytes).map_err(|e| match e {
            Error::Snapshot(m) => Error::Snapshot(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Write the snapshot as a bundle file atomically: a temporary file in
    /// the same directory, fsync, rename, fsync of the directory. A reader
    /// sees the old file or the new one, never a torn one.
    pub fn write_bundle(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_json_pretty())
    }

    pub fn prompt(&self, name: &str) -> Option<&PromptData> {
        self.prompt_arc(name).map(|p| &**p)
    }

    /// The shared record of prompt `name`.
    pub fn prompt_arc(&self, name: &str) -> Option<&Arc<PromptData>> {
        self.prompts
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.prompts[i])
    }

    /// The content hash: the stored one, or computed now when the snapshot
    /// carries none (see [`hash`](Self::hash)).
    pub fn content_hash(&self) -> std::borrow::Cow<'_, str> {
        if self.hash.is_empty() {
            std::borrow::Cow::Owned(self.compute_hash())
        } else {
            std::borrow::Cow::Borrowed(&self.hash)
        }
    }

    /// The snapshot after `delta`. The delta must be for this project and
    /// start at this snapshot's revision.
    pub fn apply_delta(&self, delta: &Delta) -> Result<SnapshotData> {
        if delta.project != self.project {
            return Err(Error::Snapshot(format!(
                "delta for project `{}` applied to `{}`",
                delta.project, self.project
            )));
        }
        if delta.base_revision != self.revision {
            return Err(Error::Snapshot(format!(
                "delta starts at revision {} but the snapshot is at {}",
                delta.base_revision, self.revision
            )));
        }
        let mut map: BTreeMap<&str, Arc<PromptData>> = self
            .prompts
            .iter()
            .map(|p| (p.name.as_str(), p.clone()))
            .collect();
        for name in &delta.removed {
            map.remove(name.as_str());
        }
        for p in &delta.upserts {
            validate_name(&p.name).map_err(Error::Snapshot)?;
            validate_prompt(p)?;
            map.insert(p.name.as_str(), Arc::new(p.clone()));
        }
        let models = match &delta.models {
            Some(m) => {
                validate_models(m)?;
                let mut m = m.clone();
                m.sort_by(|a, b| a.model.cmp(&b.model));
                m
            }
            None => self.models.clone(),
        };
        // Sorted by the map; the hash is left for whoever needs it.
        let mut out = SnapshotData {
            format: SNAPSHOT_FORMAT.to_string(),
            project: self.project.clone(),
            revision: delta.revision,
            created_at: None,
            hash: String::new(),
            prompts: map.into_values().collect(),
            models,
        };
        out.created_at.clone_from(&self.created_at);
        Ok(out)
    }
}

/// The catalogue's checks as a snapshot error naming the field
/// (`model catalogue: models[2].input_per_mtok: …`).
fn validate_models(models: &[ModelEntry]) -> Result<()> {
    check_models(models)
        .map_err(|(field, msg)| Error::Snapshot(format!("model catalogue: {field}: {msg}")))
}

fn validate_prompt(p: &PromptData) -> Result<()> {
    if p.versions.is_empty() {
        return Err(Error::Snapshot(format!(
            "prompt `{}` has no versions",
            p.name
        )));
    }
    let mut vs = std::collections::HashSet::new();
    for v in &p.versions {
        if v.version == 0 {
            return Err(Error::Snapshot(format!(
                "prompt `{}`: versions start at 1",
                p.name
            )));
        }
        if !vs.insert(v.version) {
            return Err(Error::Snapshot(format!(
                "prompt `{}`: version {} appears twice",
                p.name, v.version
            )));
        }
        if let Some(schema) = &v.schema {
            schema.check().map_err(|m| {
                Error::Snapshot(format!(
                    "prompt `{}` version {}: input schema: {m}",
                    p.name, v.version
                ))
            })?;
        }
    }
    for (label, v) in &p.labels {
        validate_label(label).map_err(|m| Error::Snapshot(format!("prompt `{}`: {m}", p.name)))?;
        if label == crate::model::LATEST_LABEL {
            return Err(Error::Snapshot(format!(
                "prompt `{}`: `latest` is implicit and cannot be set",
                p.name
            )));
        }
        if !vs.contains(v) {
            return Err(Error::Snapshot(format!(
                "prompt `{}`: label `{label}` points at version {v}, which the snapshot does not carry",
                p.name
            )));
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically (tmp file, fsync, rename, dir fsync).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}
