//! Shared helpers for the benchmarks: locating and loading the common
//! workload in `../shared/bench-workload` (or `$PROMPTOPS_WORKLOAD`).

use std::path::PathBuf;

use promptops_core::{PromptData, PromptVersion, SnapshotData};

/// The workload directory.
pub fn workload_dir() -> PathBuf {
    if let Ok(p) = std::env::var("PROMPTOPS_WORKLOAD") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench-workload")
}

pub fn read(name: &str) -> String {
    let p = workload_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A snapshot holding the workload's T1 (`bench/t1`) and T2 (`bench/t2`)
/// as text prompts under `production`.
pub fn workload_snapshot() -> SnapshotData {
    let p = |name: &str, template: String| PromptData {
        name: name.into(),
        versions: vec![PromptVersion::text(1, template)],
        labels: [("production".to_string(), 1)].into_iter().collect(),
        policy: None,
    };
    SnapshotData::new(
        "bench",
        1,
        vec![
            p("bench/t1", read("t1.txt")),
            p("bench/t2", read("t2.jinja")),
        ],
    )
}

/// A snapshot of `n` prompts shaped like real ones (a chat prompt with a
/// schema, a loop, an include, two labels).
pub fn large_snapshot(n: usize) -> SnapshotData {
    let mut prompts = Vec::with_capacity(n + 1);
    prompts.push(PromptData {
        name: "shared/footer".into(),
        versions: vec![PromptVersion::text(1, "Kind regards, {{ company }}.")],
        labels: [("production".to_string(), 1)].into_iter().collect(),
        policy: None,
    });
    for i in 0..n {
        let mut v1 = PromptVersion::chat(
            1,
            [
                (
                    "system",
                    "You are {{ assistant }} for {{ company }}. Prompt number {{ n }}.\n{% include \"shared/footer\" %}",
                ),
                (
                    "user",
                    "{% for item in items %}- {{ item.name }}: {{ item.qty }}\n{% endfor %}{% if vip %}Priority.{% endif %}\n{{ question }}",
                ),
            ],
        );
        v1.config.model = Some("gpt-4o-mini".into());
        v1.schema = Some(
            serde_json::from_value(serde_json::json!({
                "type": "object",
                "properties": {"company": {"type": "string"}, "question": {"type": "string"}, "vip": {"type": "boolean", "default": false}},
                "required": ["company", "question"]
            }))
            .expect("schema"),
        );
        let mut v2 = v1.clone();
        v2.version = 2;
        prompts.push(PromptData {
            name: format!("module{}/prompt{i}", i % 20),
            versions: vec![v1, v2],
            labels: [("production".to_string(), 1), ("staging".to_string(), 2)]
                .into_iter()
                .collect(),
            policy: None,
        });
    }
    SnapshotData::new("large", 1, prompts)
}
