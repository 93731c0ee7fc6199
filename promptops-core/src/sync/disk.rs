//! The last-known-good snapshot on disk: every snapshot a live source
//! accepts is written atomically (write, fsync, rename) to the client's cache
//! directory, and read back at start. A corrupt file, a file of another
//! cache format or another project is ignored with a warning, never served.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::snapshot::{SnapshotData, write_atomic};

/// The cache file format; bump when the wrapper changes.
pub const CACHE_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CacheFile {
    cache_format: u32,
    saved_at: u64,
    /// The ETag the registry sent with this snapshot, if any.
    #[serde(default)]
    etag: Option<String>,
    snapshot: SnapshotData,
}

/// One project's cache file.
#[derive(Debug, Clone)]
pub struct DiskCache {
    path: PathBuf,
    project: String,
}

impl DiskCache {
    /// The cache of `project` in `dir` (`<dir>/<project>.snapshot.json`).
    pub fn new(dir: &Path, project: &str) -> Self {
        let safe: String = project
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        DiskCache {
            path: dir.join(format!("{safe}.snapshot.json")),
            project: project.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached snapshot and its ETag, if a valid one is there. Problems
    /// are warnings: the cache is an optimisation, never a source of errors.
    pub fn load(&self) -> Option<(SnapshotData, Option<String>)> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(target: "promptops::sync", "cannot read {}: {e}", self.path.display());
                return None;
            }
        };
        match self.parse(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(target: "promptops::sync", "ignoring cache file {}: {e}", self.path.display());
                None
            }
        }
    }

    fn parse(&self, bytes: &[u8]) -> Result<(SnapshotData, Option<String>)> {
        #[derive(Deserialize)]
        struct Probe {
            cache_format: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| Error::Snapshot(format!("corrupt cache file: {e}")))?;
        if probe.cache_format != Some(CACHE_FORMAT) {
            return Err(Error::Snapshot(format!(
                "cache format {:?}, this SDK writes {CACHE_FORMAT}",
                probe.cache_format
            )));
        }
        let file: CacheFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::Snapshot(format!("corrupt cache file: {e}")))?;
        // Re-check the snapshot itself (structure and content hash).
        let snap = SnapshotData::from_json(&file.snapshot.to_json())?;
        if snap.project != self.project {
            return Err(Error::Snapshot(format!(
                "cache is for project `{}`, not `{}`",
                snap.project, self.project
            )));
        }
        Ok((snap, file.etag))
    }

    /// Write `snapshot` as the last-known-good copy.
    pub fn save(&self, snapshot: &SnapshotData, etag: Option<&str>) -> Result<()> {
        let file = CacheFile {
            cache_format: CACHE_FORMAT,
            saved_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            etag: etag.map(String::from),
            // With its hash, so a damaged file is caught when it is read.
            snapshot: snapshot.with_hash().into_owned(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| Error::Snapshot(format!("cannot serialise the cache: {e}")))?;
        write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PromptData, PromptVersion};

    fn snap(rev: u64) -> SnapshotData {
        SnapshotData::new(
            "shop",
            rev,
            vec![PromptData {
                name: "m/a".into(),
                versions: vec![PromptVersion::text(1, "hi")],
                labels: [("production".to_string(), 1)].into_iter().collect(),
                policy: None,
            }],
        )
    }

    #[test]
    fn roundtrip_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::new(dir.path(), "shop");
        assert!(cache.load().is_none());
        cache.save(&snap(4), Some("\"sha256:x\"")).unwrap();
        let (s, etag) = cache.load().unwrap();
        assert_eq!(s, snap(4));
        assert_eq!(etag.as_deref(), Some("\"sha256:x\""));
        // Corrupt: truncated.
        let bytes = std::fs::read(cache.path()).unwrap();
        std::fs::write(cache.path(), &bytes[..bytes.len() / 2]).unwrap();
        assert!(cache.load().is_none());
        // Older format.
        std::fs::write(cache.path(), br#"{"cache_format":0,"snapshot":{}}"#).unwrap();
        assert!(cache.load().is_none());
        // A bare snapshot (no wrapper) is not a cache file.
        std::fs::write(cache.path(), snap(4).to_json()).unwrap();
        assert!(cache.load().is_none());
        // Another project's file.
        let other = DiskCache::new(dir.path(), "shop");
        let mut s = snap(5);
        s.project = "other".into();
        s.hash = s.compute_hash();
        other.save(&s, None).unwrap();
        assert!(cache.load().is_none());
    }
}
