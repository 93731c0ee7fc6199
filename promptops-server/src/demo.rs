//! `promptops serve --demo`: the example prompts loaded into project
//! `demo`, an admin key and an SDK key.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::auth::Role;
use crate::registry::{Actor, Registry};

/// The example prompts of the repository (examples/prompts), built in so
/// the demo works from any directory.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "support/reply.prompt",
        include_str!("../../examples/prompts/support/reply.prompt"),
    ),
    (
        "shared/signature.prompt",
        include_str!("../../examples/prompts/shared/signature.prompt"),
    ),
    (
        "rag/answer.prompt",
        include_str!("../../examples/prompts/rag/answer.prompt"),
    ),
];

pub fn write_examples(dir: &Path) -> anyhow::Result<()> {
    for (rel, text) in EXAMPLES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

pub struct DemoKeys {
    pub admin: String,
    pub sdk: String,
    pub prompts: usize,
}

/// Load `dir` (or the built-in examples) into project `demo` of
/// organisation `demo` and create the two keys.
pub async fn load_demo(registry: &Registry, dir: Option<&Path>) -> anyhow::Result<DemoKeys> {
    let actor = Actor::system("demo-loader");
    let tmp;
    let dir: PathBuf = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            tmp = tempfile::tempdir()?;
            write_examples(tmp.path())?;
            tmp.path().to_path_buf()
        }
    };
    let report = promptops_core::format::load_dir(&dir, "demo")?;
    if let Some(d) = report.diagnostics.first() {
        anyhow::bail!("demo prompts: {d}");
    }
    let org = registry
        .create_org("demo", &actor)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if registry
        .project("demo")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_none()
    {
        registry
            .create_project(org, "demo", None, false, &actor)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let prompts = report.snapshot.prompts.len();
    registry
        .import_snapshot("demo", &report.snapshot, &actor)
        .await
        .map_err(|e| anyhow::anyhow!("loading the demo prompts: {e}"))?;
    let admin = registry
        .create_key(
            org,
            None,
            Role::Admin,
            "demo-admin",
            "demo admin key",
            &actor,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sdk = registry
        .create_key(
            org,
            Some("demo"),
            Role::Sdk,
            "demo-app",
            "demo SDK key",
            &actor,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(DemoKeys {
        admin: admin.key,
        sdk: sdk.key,
        prompts,
    })
}
