//! Cost of applying a delta (a label move of one prompt) to a client
//! holding the demo prompts: what each SDK pays per publish.
//!
//! cargo run --release -p promptops-benches --example apply_cost
use std::time::Instant;

use promptops_core::*;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/prompts");
    let report = format::load_dir(std::path::Path::new(dir), "demo").unwrap();
    let mut prompts = report.snapshot.prompts.clone();
    let mut p = PromptData {
        name: "bench/prop".into(),
        versions: vec![
            PromptVersion::text(1, "version one"),
            PromptVersion::text(2, "version two"),
        ],
        labels: [("canary".to_string(), 1)].into_iter().collect(),
        policy: None,
    };
    prompts.push(p.clone().into());
    let snap = SnapshotData::from_shared("demo", 1, prompts, Vec::new());
    let client = Client::builder().project("demo").build().unwrap();
    client
        .apply(Update::Snapshot(snap), Source::Memory)
        .unwrap();
    let n = 5000u32;
    let t = Instant::now();
    for i in 0..n {
        p.labels
            .insert("canary".into(), if i % 2 == 0 { 2 } else { 1 });
        let d = Delta {
            project: "demo".into(),
            base_revision: 1 + i as u64,
            revision: 2 + i as u64,
            upserts: vec![p.clone()],
            removed: vec![],
            models: None,
        };
        let json = serde_json::to_vec(&d).unwrap();
        let d: Delta = serde_json::from_slice(&json).unwrap();
        client.apply(Update::Delta(d), Source::Memory).unwrap();
    }
    println!("parse + apply a label-move delta: {:?}", t.elapsed() / n);
}
