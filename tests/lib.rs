//! Helpers shared by the integration tests.

use std::path::PathBuf;

use promptops_core::Client;
use serde_json::Value;

/// `tests/vectors/NAME`, parsed.
pub fn load_vector(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client over the render vectors' snapshot, loaded as a bundle file.
pub fn render_vector_client(doc: &Value) -> (tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, serde_json::to_vec(&doc["snapshot"]).expect("json")).expect("write");
    let client = Client::builder().bundle(&path).build().expect("client");
    (dir, client)
}

/// The shared benchmark workload directory (`../shared/bench-workload`
/// beside the clone), if present.
pub fn bench_workload() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench-workload");
    p.is_dir().then_some(p)
}

/// The root README's Rust snippets, run as doc tests.
#[doc = include_str!("../README.md")]
pub mod readme {}
