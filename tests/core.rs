//! Integration tests of the core engine through its public Rust API: prompt
//! files and imports, snapshots and bundles, the store, rendering rules,
//! fallbacks, tokens and cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use promptops_core::format::{load_dir, parse_prompt_file};
use promptops_core::*;
use serde_json::json;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn text_prompt(name: &str, versions: &[(u32, &str)], labels: &[(&str, u32)]) -> PromptData {
    PromptData {
        name: name.into(),
        versions: versions
            .iter()
            .map(|(v, t)| PromptVersion::text(*v, *t))
            .collect(),
        labels: labels.iter().map(|(l, v)| (l.to_string(), *v)).collect(),
        policy: None,
    }
}

fn render_text(client: &Client, name: &str, opts: &GetOptions, vars: Value) -> Result<String> {
    let p = client.get_with(name, opts)?;
    Ok(p.render(&vars)?.text.unwrap_or_default())
}

fn client_with(prompts: Vec<PromptData>) -> Client {
    let c = Client::builder().project("p").build().unwrap();
    c.apply(
        Update::Snapshot(SnapshotData::new("p", 1, prompts)),
        Source::Memory,
    )
    .unwrap();
    c
}

// ---------------------------------------------------------------- files

#[test]
fn native_text_and_chat_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "mail/welcome.prompt",
        "---\nmodel: openai/gpt-4o-mini\nconfig: {temperature: 0.3, max_tokens: 100, seed: 7}\nschema:\n  name: string\n  plan?(enum): [free, pro]\ntags: [onboarding]\nversion: 4\nlabels: [production, staging]\ncompliance:\n  intent: Welcome new users\n  owner: growth@example.com\n  data_classification: internal\n---\nWelcome, {{ name }}!",
    );
    write(
        dir.path(),
        "support/chat.prompt",
        "---\ntype: chat\nmodel: claude-haiku-4-5\n---\nsystem:\nYou are terse.\n\nuser:\n{{ q }}\nassistant:\nOK.\n",
    );
    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    assert!(
        client.diagnostics().is_empty(),
        "{:?}",
        client.diagnostics()
    );
    let p = client.get("mail/welcome").unwrap();
    assert_eq!(p.version(), 4);
    assert_eq!(p.source(), Source::Disk);
    assert_eq!(p.tags(), &["onboarding".to_string()]);
    assert_eq!(p.compliance().owner.as_deref(), Some("growth@example.com"));
    let cfg = p.config();
    assert_eq!(cfg.provider.as_deref(), Some("openai"));
    assert_eq!(cfg.temperature, Some(0.3));
    assert_eq!(cfg.extra.get("seed"), Some(&json!(7)));
    assert_eq!(
        client
            .get_with("mail/welcome", &GetOptions::label("staging"))
            .unwrap()
            .version(),
        4
    );
    let r = p.render(&context! { name => "Kim" }).unwrap();
    assert_eq!(r.text.as_deref(), Some("Welcome, Kim!"));

    let c = client.get("support/chat").unwrap();
    assert_eq!(c.kind(), PromptKind::Chat);
    assert_eq!(c.config().provider.as_deref(), Some("anthropic"));
    let r = c.render(&context! { q => "Hi?" }).unwrap();
    let msgs = r.messages.unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[0].content, "You are terse.");
    assert_eq!(msgs[1].role, "user");
    assert_eq!(msgs[1].content, "Hi?");
}

#[test]
fn malformed_files_name_file_and_line() {
    let p = Path::new("mod/x.prompt");
    // Bad YAML on file line 3.
    let e = parse_prompt_file(
        p,
        "---\nmodel: gpt-4o\nconfig: {temperature: [\n---\nhi",
        "mod",
    )
    .unwrap_err();
    match &e {
        Error::Parse { file, position, .. } => {
            assert_eq!(file, p);
            let line = position.unwrap().line;
            assert!((3..=4).contains(&line), "line {line}: {e}");
        }
        other => panic!("{other}"),
    }
    // Unknown key (a typo) is an error naming it.
    let e = parse_prompt_file(p, "---\nmodle: gpt-4o\n---\nhi", "mod").unwrap_err();
    assert_eq!(e.kind(), "PARSE_ERROR");
    assert!(e.to_string().contains("modle"), "{e}");
    // Unclosed frontmatter.
    assert!(parse_prompt_file(p, "---\nmodel: x\n", "mod").is_err());
    // Chat body with text before the first role line: line of that text.
    let e = parse_prompt_file(p, "---\ntype: chat\n---\nhello\nuser:\nhi", "mod").unwrap_err();
    assert!(
        matches!(e, Error::Parse { position: Some(pos), .. } if pos.line == 4),
        "{e}"
    );
    // Bad schema type.
    let e = parse_prompt_file(p, "---\nschema:\n  a: strng\n---\nx", "mod").unwrap_err();
    assert!(
        matches!(&e, Error::Parse { position: Some(pos), .. } if pos.line == 2),
        "{e}"
    );
    // `latest` cannot be listed as a label.
    assert!(parse_prompt_file(p, "---\nlabels: [latest]\n---\nx", "mod").is_err());
}

#[test]
fn dotprompt_import() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rag/answer.prompt",
        r#"---
model: googleai/gemini-2.5-flash
config:
  temperature: 0.1
  maxOutputTokens: 256
input:
  schema:
    question: string
    docs(array):
      id: string
      text: string
    style?: string
  default:
    style: short
---
{{role "system"}}
Answer in a {{style}} style.
{{#each docs}}
[{{this.id}}] {{text}} ({{@index}})
{{/each}}
{{> footer}}
{{role "user"}}
{{question}}
"#,
    );
    write(dir.path(), "rag/_footer.prompt", "Be accurate.");
    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    assert!(
        client.diagnostics().is_empty(),
        "{:?}",
        client.diagnostics()
    );
    let p = client.get("rag/answer").unwrap();
    assert_eq!(p.config().provider.as_deref(), Some("google"));
    assert_eq!(p.config().model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(p.config().max_tokens, Some(256));
    let docs = json!([{"id": "a", "text": "A."}, {"id": "b", "text": "B."}]);
    let r = p
        .render(&context! { question => "Q?", docs => to_value(&docs) })
        .unwrap();
    let m = r.messages.unwrap();
    assert_eq!(m[0].role, "system");
    assert!(
        m[0].content.contains("Answer in a short style."),
        "{}",
        m[0].content
    );
    assert!(m[0].content.contains("[a] A. (0)"));
    assert!(m[0].content.contains("[b] B. (1)"));
    assert!(m[0].content.contains("Be accurate."));
    assert_eq!(m[1].content, "Q?");
    // Schema from Picoschema: docs required, items typed.
    let e = p.render(&context! { question => "Q?" }).unwrap_err();
    assert!(
        matches!(&e, Error::Validation { field, .. } if field == "docs"),
        "{e}"
    );

    // Unsupported features name the file and line.
    let path = Path::new("m/x.prompt");
    let e = parse_prompt_file(path, "---\nmodel: a/b\ntools: [search]\n---\nhi", "m").unwrap_err();
    assert!(
        matches!(&e, Error::Parse { position: Some(p), .. } if p.line == 3),
        "{e}"
    );
    let e = parse_prompt_file(
        path,
        "---\ninput: {}\n---\nline one\n{{media url=photo}}\n",
        "m",
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Parse { position: Some(p), .. } if p.line == 5),
        "{e}"
    );
    let e =
        parse_prompt_file(path, "---\ninput: {}\n---\n{{#if (eq a b)}}x{{/if}}", "m").unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn prompty_import() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "shop/basic.prompty",
        r#"---
name: ExamplePrompt
description: A prompt that uses context to ground an incoming question
authors:
  - Seth Juarez
model:
  api: chat
  configuration:
    type: azure_openai
    azure_endpoint: ${env:AZURE_OPENAI_ENDPOINT}
    azure_deployment: gpt-4o-mini
  parameters:
    max_tokens: 3000
    temperature: 0.2
inputs:
  firstName:
    type: string
    default: Jane
  question:
    type: string
sample:
  firstName: Seth
  question: What is the capital of France?
---

system:
You are an AI assistant who helps people find information.
Address the customer as {{firstName}}.

user:
{{question}}
"#,
    );
    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    assert!(
        client.diagnostics().is_empty(),
        "{:?}",
        client.diagnostics()
    );
    let p = client.get("shop/basic").unwrap();
    assert_eq!(p.config().provider.as_deref(), Some("azure_openai"));
    assert_eq!(p.config().model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(p.config().max_tokens, Some(3000));
    assert_eq!(p.data().author.as_deref(), Some("Seth Juarez"));
    let r = p
        .render(&context! { question => "Capital of Peru?" })
        .unwrap();
    let m = r.messages.unwrap();
    assert_eq!(
        m[0].content.lines().last(),
        Some("Address the customer as Jane.")
    );
    assert_eq!(m[1].content, "Capital of Peru?");
    let e = p.render(&context! {}).unwrap_err();
    assert!(matches!(&e, Error::Validation { field, .. } if field == "question"));

    let path = Path::new("m/x.prompty");
    let e = parse_prompt_file(
        path,
        "---\nname: x\ntemplate: mustache\n---\nuser:\nhi",
        "m",
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Parse { position: Some(p), .. } if p.line == 3),
        "{e}"
    );
    let e = parse_prompt_file(
        path,
        "---\ninputs:\n  pic:\n    type: file\n---\nuser:\nhi",
        "m",
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Parse { position: Some(p), .. } if p.line == 2),
        "{e}"
    );
}

#[test]
fn directory_problems_are_reported_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a/good.prompt", "fine {{ x }}");
    write(dir.path(), "a/bad_yaml.prompt", "---\nmodel: [\n---\nx");
    write(
        dir.path(),
        "a/bad_template.prompt",
        "line one\n{% for x in %}\n",
    );
    write(dir.path(), "toplevel.prompt", "no module");
    write(dir.path(), "b/dup.prompt", "one");
    write(dir.path(), "b/dup.prompty", "---\nname: d\n---\nuser:\ntwo");
    write(dir.path(), ".hidden/x.prompt", "ignored");
    write(dir.path(), "a/notes.txt", "ignored");
    let report = load_dir(dir.path(), "proj").unwrap();
    let names: Vec<&str> = report
        .snapshot
        .prompts
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, vec!["a/bad_template", "a/good", "b/dup"]);
    let diag_prompts: Vec<&str> = report
        .diagnostics
        .iter()
        .map(|d| d.prompt.as_str())
        .collect();
    assert!(diag_prompts.contains(&"a/bad_yaml"));
    assert!(diag_prompts.contains(&"toplevel"));
    assert!(diag_prompts.contains(&"b/dup"));

    let client = Client::builder().prompts_dir(dir.path()).build().unwrap();
    assert_eq!(
        render_text(
            &client,
            "a/good",
            &GetOptions::default(),
            context! { x => 1 }
        )
        .unwrap(),
        "fine 1"
    );
    // The broken template is reported with prompt, version, line, column.
    let d = client
        .diagnostics()
        .into_iter()
        .find(|d| d.prompt == "a/bad_template")
        .expect("diagnostic");
    match &d.error {
        Error::Template {
            prompt, position, ..
        } => {
            assert_eq!(prompt.version, Some(1));
            let pos = position.unwrap();
            assert_eq!(pos.line, 2);
            assert!(pos.column > 1, "{pos:?}");
        }
        e => panic!("{e}"),
    }
    // A lookup of it gives that error, not a panic or an empty string.
    let e = client.get("a/bad_template").unwrap_err();
    assert_eq!(e.kind(), "TEMPLATE_ERROR");
    // Strict mode refuses to start with problems.
    assert!(
        Client::builder()
            .prompts_dir(dir.path())
            .strict(true)
            .build()
            .is_err()
    );
    // A missing directory is an error.
    assert!(
        Client::builder()
            .prompts_dir(dir.path().join("nope"))
            .build()
            .is_err()
    );
}

// ---------------------------------------------------------------- snapshots

#[test]
fn bundle_roundtrip_and_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let snap = SnapshotData::new(
        "shop",
        7,
        vec![
            text_prompt(
                "a/x",
                &[(1, "one {{ v }}"), (2, "two {{ v }}")],
                &[("production", 1)],
            ),
            text_prompt("a/y", &[(3, "y")], &[("production", 3), ("staging", 3)]),
        ],
    );
    assert!(snap.hash.starts_with("sha256:"));
    let path = dir.path().join("b.json");
    snap.write_bundle(&path).unwrap();
    let back = SnapshotData::read_bundle(&path).unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.compute_hash(), snap.hash);

    let client = Client::builder().bundle(&path).build().unwrap();
    assert_eq!(client.project(), Some("shop"));
    let p = client.get("a/x").unwrap();
    assert_eq!(
        (p.version(), p.source(), p.revision()),
        (1, Source::Bundle, 7)
    );
    assert_eq!(p.snapshot_hash(), Some(snap.hash.as_str()));
    let latest = client
        .get_with("a/x", &GetOptions::label("latest"))
        .unwrap();
    assert_eq!(latest.version(), 2);

    // Edited content: hash mismatch.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("one {{ v }}", "evil");
    std::fs::write(&path, text).unwrap();
    let e = SnapshotData::read_bundle(&path).unwrap_err();
    assert!(e.to_string().contains("hash mismatch"), "{e}");
    // Truncated file.
    let full = snap.to_json();
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    assert_eq!(
        SnapshotData::read_bundle(&path).unwrap_err().kind(),
        "SNAPSHOT_ERROR"
    );
    // Label pointing at a version the snapshot does not carry.
    let mut bad = snap.clone();
    std::sync::Arc::make_mut(&mut bad.prompts[0])
        .labels
        .insert("production".into(), 9);
    bad.hash = String::new();
    let e = SnapshotData::from_json(&bad.to_json()).unwrap_err();
    assert!(e.to_string().contains("version 9"), "{e}");
    // Unknown format.
    let mut bad = snap.clone();
    bad.format = "promptops.snapshot/99".into();
    bad.hash = String::new();
    assert!(SnapshotData::from_json(&bad.to_json()).is_err());
}

#[test]
fn hash_ignores_revision_but_not_content() {
    let a = SnapshotData::new(
        "p",
        1,
        vec![text_prompt("m/a", &[(1, "x")], &[("production", 1)])],
    );
    let b = SnapshotData::new(
        "p",
        99,
        vec![text_prompt("m/a", &[(1, "x")], &[("production", 1)])],
    );
    assert_eq!(a.hash, b.hash);
    let c = SnapshotData::new(
        "p",
        1,
        vec![text_prompt("m/a", &[(1, "y")], &[("production", 1)])],
    );
    assert_ne!(a.hash, c.hash);
}

// ---------------------------------------------------------------- store

#[test]
fn newer_wins_deltas_and_change_events() {
    let client = Client::builder().project("p").build().unwrap();
    let changes: Arc<Mutex<Vec<Change>>> = Arc::default();
    let sink = changes.clone();
    client.on_change(move |c| sink.lock().unwrap().extend_from_slice(c));
    assert_eq!(client.get("m/a").unwrap_err().kind(), "PROMPT_NOT_FOUND");

    let s5 = SnapshotData::new(
        "p",
        5,
        vec![text_prompt("m/a", &[(1, "v1")], &[("production", 1)])],
    );
    assert!(
        client
            .apply(Update::Snapshot(s5.clone()), Source::Memory)
            .unwrap()
            .applied
    );
    // Older data is ignored.
    let s3 = SnapshotData::new(
        "p",
        3,
        vec![text_prompt("m/a", &[(9, "old")], &[("production", 9)])],
    );
    assert!(
        !client
            .apply(Update::Snapshot(s3), Source::Disk)
            .unwrap()
            .applied
    );
    assert_eq!(client.get("m/a").unwrap().version(), 1);
    // Same revision and content: no-op.
    assert!(
        !client
            .apply(Update::Snapshot(s5), Source::Memory)
            .unwrap()
            .applied
    );

    // A delta: new version 2, production moves to it; new prompt m/b.
    let delta = Delta {
        project: "p".into(),
        base_revision: 5,
        revision: 6,
        upserts: vec![
            text_prompt("m/a", &[(1, "v1"), (2, "v2")], &[("production", 2)]),
            text_prompt("m/b", &[(1, "b")], &[("production", 1)]),
        ],
        removed: vec![],
        models: None,
    };
    let out = client
        .apply(Update::Delta(delta.clone()), Source::Memory)
        .unwrap();
    assert!(out.applied);
    assert_eq!(out.revision, 6);
    assert_eq!(client.get("m/a").unwrap().version(), 2);
    // A replayed (old) delta is ignored; a gap is an error.
    assert!(
        !client
            .apply(Update::Delta(delta), Source::Memory)
            .unwrap()
            .applied
    );
    let gap = Delta {
        project: "p".into(),
        base_revision: 8,
        revision: 9,
        upserts: vec![],
        removed: vec!["m/b".into()],
        models: None,
    };
    assert_eq!(
        client
            .apply(Update::Delta(gap), Source::Memory)
            .unwrap_err()
            .kind(),
        "SNAPSHOT_ERROR"
    );
    // Removal.
    let rm = Delta {
        project: "p".into(),
        base_revision: 6,
        revision: 7,
        upserts: vec![],
        removed: vec!["m/b".into()],
        models: None,
    };
    client.apply(Update::Delta(rm), Source::Memory).unwrap();
    assert_eq!(client.get("m/b").unwrap_err().kind(), "PROMPT_NOT_FOUND");
    // Wrong project.
    let other = SnapshotData::new("q", 50, vec![]);
    assert!(
        client
            .apply(Update::Snapshot(other), Source::Memory)
            .is_err()
    );

    let c = changes.lock().unwrap();
    let prod_a: Vec<(Option<u32>, Option<u32>)> = c
        .iter()
        .filter(|x| x.prompt == "m/a" && x.label == "production")
        .map(|x| (x.old, x.new))
        .collect();
    assert_eq!(prod_a, vec![(None, Some(1)), (Some(1), Some(2))]);
    assert!(c.iter().any(|x| x.prompt == "m/b" && x.new.is_none()));
}

#[test]
fn rollback_serves_old_version_including_includes() {
    // v/outer includes v/inner; production of both moves forward, then back.
    let snap = |rev: u64, outer_v: u32, inner_v: u32| {
        SnapshotData::new(
            "p",
            rev,
            vec![
                text_prompt(
                    "v/outer",
                    &[
                        (1, "outer1 {% include \"v/inner\" %}"),
                        (2, "outer2 {% include \"v/inner\" %}"),
                    ],
                    &[("production", outer_v)],
                ),
                text_prompt(
                    "v/inner",
                    &[(1, "inner1"), (2, "inner2")],
                    &[("production", inner_v)],
                ),
            ],
        )
    };
    let client = Client::builder().project("p").build().unwrap();
    client
        .apply(Update::Snapshot(snap(1, 2, 2)), Source::Memory)
        .unwrap();
    let get = || render_text(&client, "v/outer", &GetOptions::default(), context! {}).unwrap();
    assert_eq!(get(), "outer2 inner2");
    client
        .apply(Update::Snapshot(snap(2, 1, 1)), Source::Memory)
        .unwrap();
    assert_eq!(get(), "outer1 inner1");
    // A prompt fetched before the swap keeps rendering its own snapshot.
    let held = client.get("v/outer").unwrap();
    client
        .apply(Update::Snapshot(snap(3, 2, 2)), Source::Memory)
        .unwrap();
    assert_eq!(
        held.render(&context! {}).unwrap().text.unwrap(),
        "outer1 inner1"
    );
    assert_eq!(get(), "outer2 inner2");
}

#[test]
fn broken_new_version_keeps_serving_the_last_good_one() {
    let client = Client::builder().project("p").build().unwrap();
    let good = SnapshotData::new(
        "p",
        1,
        vec![text_prompt(
            "m/a",
            &[(1, "good {{ x }}")],
            &[("production", 1)],
        )],
    );
    client
        .apply(Update::Snapshot(good), Source::Memory)
        .unwrap();
    let bad = SnapshotData::new(
        "p",
        2,
        vec![
            text_prompt(
                "m/a",
                &[(1, "good {{ x }}"), (2, "bad {% if %}")],
                &[("production", 2)],
            ),
            text_prompt("m/new", &[(1, "new")], &[("production", 1)]),
        ],
    );
    let out = client
        .apply(Update::Snapshot(bad.clone()), Source::Memory)
        .unwrap();
    assert!(out.applied);
    assert!(out.diagnostics.iter().any(|d| d.prompt == "m/a"));
    // Still version 1, and the rest of the new snapshot is in.
    let p = client.get("m/a").unwrap();
    assert_eq!(p.version(), 1);
    assert_eq!(
        p.render(&context! { x => 1 }).unwrap().text.unwrap(),
        "good 1"
    );
    assert_eq!(client.get("m/new").unwrap().version(), 1);
    // The store remembers the registry's hash, not the patched one.
    let snap = client.snapshot().unwrap();
    assert_eq!(snap.hash(), bad.hash);
    assert_eq!(**snap.registry_data(), bad);
    // With no good version to fall back on, the lookup reports the error.
    let fresh = Client::builder().project("p").build().unwrap();
    fresh.apply(Update::Snapshot(bad), Source::Memory).unwrap();
    assert_eq!(fresh.get("m/a").unwrap_err().kind(), "TEMPLATE_ERROR");
}

#[test]
fn include_cycles_and_missing_includes() {
    let client = client_with(vec![
        text_prompt(
            "c/a",
            &[(1, "a{% include \"c/b\" %}")],
            &[("production", 1)],
        ),
        text_prompt("c/b", &[(1, "b{% include 'c/a' %}")], &[("production", 1)]),
        text_prompt(
            "c/self",
            &[(1, "{%- include \"c/self\" %}")],
            &[("production", 1)],
        ),
        text_prompt(
            "c/user",
            &[(1, "u{% include \"c/a\" %}")],
            &[("production", 1)],
        ),
        text_prompt(
            "c/missing",
            &[(1, "x\n  {% include \"c/nowhere\" %}")],
            &[("production", 1)],
        ),
        text_prompt("c/staging_only", &[(1, "s")], &[("staging", 1)]),
        text_prompt(
            "c/needs_prod",
            &[(1, "{% include \"c/staging_only\" %}")],
            &[("production", 1)],
        ),
        text_prompt("c/ok", &[(1, "fine")], &[("production", 1)]),
    ]);
    let kind = |n: &str| client.get(n).unwrap_err().kind();
    assert_eq!(kind("c/a"), "INCLUDE_CYCLE");
    assert_eq!(kind("c/b"), "INCLUDE_CYCLE");
    assert_eq!(kind("c/self"), "INCLUDE_CYCLE");
    assert_eq!(kind("c/user"), "TEMPLATE_ERROR");
    match client.get("c/missing").unwrap_err() {
        Error::Template {
            position, message, ..
        } => {
            assert_eq!(position, Some(Position { line: 2, column: 3 }));
            assert!(message.contains("c/nowhere"), "{message}");
        }
        e => panic!("{e}"),
    }
    let e = client.get("c/needs_prod").unwrap_err();
    assert!(e.to_string().contains("no label `production`"), "{e}");
    assert_eq!(
        render_text(&client, "c/ok", &GetOptions::default(), context! {}).unwrap(),
        "fine"
    );
    let snap = client.snapshot().unwrap();
    let cycle = snap
        .diagnostics()
        .iter()
        .find_map(|d| match &d.error {
            Error::IncludeCycle { cycle, .. } if d.prompt == "c/a" => Some(cycle.clone()),
            _ => None,
        })
        .expect("cycle diagnostic");
    assert_eq!(cycle.first(), cycle.last());
}

#[test]
fn readers_never_wait_and_never_fail_during_swaps() {
    let client = Client::builder().project("p").build().unwrap();
    let snap = |rev: u64| {
        SnapshotData::new(
            "p",
            rev,
            vec![text_prompt(
                "m/a",
                &[(rev as u32, "v{{ n }}")],
                &[("production", rev as u32)],
            )],
        )
    };
    client
        .apply(Update::Snapshot(snap(1)), Source::Memory)
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (client, stop, reads) = (client.clone(), stop.clone(), reads.clone());
        readers.push(std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                let p = client.get("m/a").expect("read must not fail");
                let r = p.render(&context! { n => 1 }).expect("render");
                assert_eq!(r.text.unwrap(), "v1");
                assert!(p.version() >= last, "versions only move forward");
                last = p.version();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Swap only once readers are running (a loaded machine may start the
    // threads late).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reads.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    let before = reads.load(Ordering::Relaxed);
    for rev in 2..=200 {
        client
            .apply(Update::Snapshot(snap(rev)), Source::Memory)
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(before > 0, "readers ran");
    assert_eq!(client.get("m/a").unwrap().version(), 200);
}

// ---------------------------------------------------------------- rendering

#[test]
fn schema_validation_paths_and_additional_properties() {
    let mut v = PromptVersion::text(1, "{{ user.name }} {{ items | length }}");
    v.schema = Some(
        serde_json::from_value(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "user": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}
            },
            "required": ["user"]
        }))
        .unwrap(),
    );
    let client = client_with(vec![PromptData {
        name: "s/x".into(),
        versions: vec![v],
        labels: BTreeMap::from([("production".to_string(), 1)]),
        policy: None,
    }]);
    let p = client.get("s/x").unwrap();
    let field = |vars: serde_json::Value| match p.render(&to_value(&vars)).unwrap_err() {
        Error::Validation { field, .. } => field,
        e => panic!("{e}"),
    };
    assert_eq!(field(json!({"user": {}, "items": []})), "user.name");
    assert_eq!(
        field(json!({"user": {"name": "a"}, "items": [1, "two"]})),
        "items[1]"
    );
    assert_eq!(
        field(json!({"user": {"name": "a"}, "items": [1, 2, 3, 4]})),
        "items"
    );
    assert_eq!(
        field(json!({"user": {"name": "a"}, "items": [], "extra": 1})),
        "extra"
    );
    assert_eq!(
        field(json!({"user": {"name": 5}, "items": []})),
        "user.name"
    );
    let ok = p
        .render(&to_value(&json!({"user": {"name": "a"}, "items": [1, 2]})))
        .unwrap();
    assert_eq!(ok.text.unwrap(), "a 2");
    // Not a mapping at all.
    assert_eq!(field(json!([1, 2])), "$");
}

#[test]
fn missing_variables_name_the_variable_and_line() {
    let client = client_with(vec![
        text_prompt(
            "m/a",
            &[(1, "line one\nline two {{ who }}\n")],
            &[("production", 1)],
        ),
        text_prompt(
            "m/loop",
            &[(1, "{% for c in chunks %}\n{{ c.title }}\n{% endfor %}")],
            &[("production", 1)],
        ),
        text_prompt(
            "m/inc",
            &[(1, "x {% include \"m/a\" %}")],
            &[("production", 1)],
        ),
    ]);
    let var = |name: &str, vars: Value| match client.get(name).unwrap().render(&vars).unwrap_err() {
        Error::Variable {
            variable,
            line,
            prompt,
        } => (variable, line, prompt.name),
        e => panic!("{e}"),
    };
    assert_eq!(
        var("m/a", context! {}),
        ("who".into(), Some(2), "m/a".into())
    );
    assert_eq!(
        var("m/loop", to_value(&json!({"chunks": [{"id": 1}]}))),
        ("c.title".into(), Some(2), "m/loop".into())
    );
    // Inside an include: names the included prompt.
    assert_eq!(
        var("m/inc", context! {}),
        ("who".into(), Some(2), "m/a".into())
    );
    // Never silently empty: an explicit none renders as "none", not "".
    let r = client
        .get("m/a")
        .unwrap()
        .render(&context! { who => "me" })
        .unwrap();
    assert_eq!(r.text.unwrap(), "line one\nline two me\n");
}

#[test]
fn limits_are_configurable_and_clear() {
    let client = Client::builder()
        .project("p")
        .limits(Limits {
            fuel: Some(5_000),
            max_output_bytes: 16,
        })
        .build()
        .unwrap();
    client
        .apply(
            Update::Snapshot(SnapshotData::new(
                "p",
                1,
                vec![
                    text_prompt("m/long", &[(1, "{{ s }}")], &[("production", 1)]),
                    text_prompt("m/spin", &[(1, "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}")], &[("production", 1)]),
                ],
            )),
            Source::Memory,
        )
        .unwrap();
    let p = client.get("m/long").unwrap();
    assert_eq!(
        p.render(&context! { s => "0123456789abcdef" })
            .unwrap()
            .text
            .unwrap()
            .len(),
        16
    );
    let e = p
        .render(&context! { s => "0123456789abcdefg" })
        .unwrap_err();
    assert!(matches!(e, Error::OutputLimit { limit: 16, .. }), "{e}");
    let e = client
        .get("m/spin")
        .unwrap()
        .render(&context! {})
        .unwrap_err();
    assert!(
        matches!(e, Error::FuelExhausted { limit: 5_000, .. }),
        "{e}"
    );
}

#[test]
fn fallbacks() {
    let client = client_with(vec![text_prompt(
        "m/broken",
        &[(1, "{% if %}")],
        &[("production", 1)],
    )]);
    // Chat fallback for a missing prompt.
    let p = client
        .get_with(
            "m/missing",
            &GetOptions::default().with_fallback(Fallback::Chat(vec![
                ("system".into(), "Be kind.".into()),
                ("user".into(), "{{ q }}".into()),
            ])),
        )
        .unwrap();
    assert_eq!(
        (p.source(), p.version(), p.label()),
        (Source::Fallback, 0, Some("production"))
    );
    let r = p.render(&context! { q => "hi" }).unwrap();
    assert_eq!(r.messages.unwrap()[1].content, "hi");
    // A prompt that cannot be served falls back too, and says so.
    let p = client
        .get_with("m/broken", &GetOptions::default().with_fallback("safe"))
        .unwrap();
    assert_eq!(p.source(), Source::Fallback);
    // A broken fallback is itself an error, not a panic.
    let e = client
        .get_with(
            "m/missing",
            &GetOptions::default().with_fallback("{% for %}"),
        )
        .unwrap_err();
    assert_eq!(e.kind(), "TEMPLATE_ERROR");
    // No data at all: a clear not-found, or the fallback.
    let empty = Client::builder().build().unwrap();
    assert_eq!(empty.get("m/x").unwrap_err().kind(), "PROMPT_NOT_FOUND");
    assert_eq!(
        empty
            .get_with("m/x", &GetOptions::default().with_fallback("fb"))
            .unwrap()
            .render(&context! {})
            .unwrap()
            .text
            .unwrap(),
        "fb"
    );
}

// ---------------------------------------------------------------- tokens & cost

#[test]
fn rendered_tokens_and_cost() {
    let mut chat = PromptVersion::chat(
        1,
        [
            ("system", "You are a helpful assistant."),
            ("user", "{{ q }}"),
        ],
    );
    chat.config.model = Some("gpt-4o".into());
    let mut unpriced = PromptVersion::text(1, "hello world");
    unpriced.config.model = Some("my-local-llm".into());
    let mk = |name: &str, v: PromptVersion| PromptData {
        name: name.into(),
        versions: vec![v],
        labels: BTreeMap::from([("production".to_string(), 1)]),
        policy: None,
    };
    let client = client_with(vec![mk("t/chat", chat), mk("t/unpriced", unpriced)]);
    let r = client
        .get("t/chat")
        .unwrap()
        .render(&context! { q => "What is the capital of France?" })
        .unwrap();
    let msgs = r.messages.clone().unwrap();
    let t = r.input_tokens();
    assert_eq!(t, tokens::count_messages(&msgs, "gpt-4o"));
    assert!(t.exact);
    assert_eq!(t.encoding, Encoding::O200kBase);
    let cost = r.estimated_cost_usd().unwrap();
    assert!((cost - t.count as f64 * 2.5 / 1e6).abs() < 1e-12);
    let r = client
        .get("t/unpriced")
        .unwrap()
        .render(&context! {})
        .unwrap();
    assert_eq!(r.input_tokens().count, 2);
    assert!(!r.input_tokens().exact);
    assert_eq!(r.estimated_cost_usd(), None);

    // A price override on the client.
    let client = Client::builder()
        .project("p")
        .price(ModelPrice {
            provider: "local".into(),
            model: "my-local-llm".into(),
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
            context_window: Some(8192),
        })
        .build()
        .unwrap();
    assert_eq!(
        client.pricing().estimate_cost("my-local-llm", 1_000_000, 0),
        Some(1.0)
    );
    let bad = Client::builder()
        .price(ModelPrice {
            provider: "x".into(),
            model: "m".into(),
            input_per_mtok: f64::NAN,
            output_per_mtok: 0.0,
            cached_input_per_mtok: None,
            context_window: None,
        })
        .build();
    assert_eq!(bad.unwrap_err().kind(), "CONFIG_ERROR");
}

#[test]
fn large_snapshot_loads() {
    let prompts: Vec<PromptData> = (0..1000)
        .map(|i| {
            text_prompt(
                &format!("m{}/p{i}", i % 10),
                &[(
                    1,
                    "Hello {{ name }}, order {{ id }}. {% if vip %}VIP{% endif %}",
                )],
                &[("production", 1)],
            )
        })
        .collect();
    let client = client_with(prompts);
    let p = client.get("m7/p997").unwrap();
    assert_eq!(
        p.render(&context! { name => "A", id => 1, vip => true })
            .unwrap()
            .text
            .unwrap(),
        "Hello A, order 1. VIP"
    );
}

#[test]
fn example_prompts_load_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prompts");
    let client = Client::builder()
        .prompts_dir(&dir)
        .strict(true)
        .build()
        .unwrap();
    let p = client.get("support/reply").unwrap();
    assert_eq!(p.variants().collect::<Vec<_>>(), vec!["claude"]);
    let r = p
        .for_model("claude-haiku-4-5")
        .render(&context! { user_name => "Dana", company => "Acme", order_id => "A-1" })
        .unwrap();
    assert_eq!(r.model(), Some("claude-haiku-4-5"));
    assert!(r.messages.unwrap()[0].content.contains("Kind regards"));
}

#[test]
fn readme_prompt_file_parses_and_renders() {
    // The prompt file shown in the README is a valid prompt file.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("```text\n").expect("text block") + "```text\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let pf = parse_prompt_file(
        Path::new("support/reply.prompt"),
        &readme[start..end],
        "support",
    )
    .unwrap();
    assert_eq!(pf.version.body.kind(), PromptKind::Chat);
    assert_eq!(pf.labels, vec!["production", "staging"]);
    assert!(pf.version.variants.contains_key("claude"));
}

#[test]
fn the_registry_replaces_a_file_from_another_lineage() {
    // A last-known-good file at revision 9, then the registry (reset, or
    // restored from a backup) answers at revision 3: the registry wins.
    let client = Client::builder().project("p").build().unwrap();
    let file = SnapshotData::new(
        "p",
        9,
        vec![text_prompt(
            "m/a",
            &[(1, "from file")],
            &[("production", 1)],
        )],
    );
    client
        .apply(Update::Snapshot(file.clone()), Source::Disk)
        .unwrap();
    let live = SnapshotData::new(
        "p",
        3,
        vec![text_prompt(
            "m/a",
            &[(1, "from registry")],
            &[("production", 1)],
        )],
    );
    assert!(
        client
            .apply(Update::Snapshot(live), Source::Memory)
            .unwrap()
            .applied
    );
    assert_eq!(
        render_text(&client, "m/a", &GetOptions::default(), context! {}).unwrap(),
        "from registry"
    );
    // Once live, an older file never goes back in, and older live data
    // does not either.
    assert!(
        !client
            .apply(Update::Snapshot(file), Source::Disk)
            .unwrap()
            .applied
    );
    let older = SnapshotData::new(
        "p",
        2,
        vec![text_prompt("m/a", &[(1, "older")], &[("production", 1)])],
    );
    assert!(
        !client
            .apply(Update::Snapshot(older), Source::Memory)
            .unwrap()
            .applied
    );
}

#[test]
fn a_delta_elsewhere_keeps_a_held_back_version_held_back() {
    let client = Client::builder().project("p").build().unwrap();
    let good = SnapshotData::new(
        "p",
        1,
        vec![
            text_prompt("m/a", &[(1, "good")], &[("production", 1)]),
            text_prompt("m/b", &[(1, "b1")], &[("production", 1)]),
        ],
    );
    client
        .apply(Update::Snapshot(good), Source::Memory)
        .unwrap();
    // m/a v2 is broken: v1 keeps serving.
    let broken = Delta {
        project: "p".into(),
        base_revision: 1,
        revision: 2,
        upserts: vec![text_prompt(
            "m/a",
            &[(1, "good"), (2, "{% if %}")],
            &[("production", 2)],
        )],
        removed: vec![],
        models: None,
    };
    client.apply(Update::Delta(broken), Source::Memory).unwrap();
    assert_eq!(client.get("m/a").unwrap().version(), 1);
    // A later delta that only touches m/b must not un-hold m/a.
    let other = Delta {
        project: "p".into(),
        base_revision: 2,
        revision: 3,
        upserts: vec![text_prompt(
            "m/b",
            &[(1, "b1"), (2, "b2")],
            &[("production", 2)],
        )],
        removed: vec![],
        models: None,
    };
    client.apply(Update::Delta(other), Source::Memory).unwrap();
    assert_eq!(client.get("m/a").unwrap().version(), 1);
    assert_eq!(
        render_text(&client, "m/a", &GetOptions::default(), context! {}).unwrap(),
        "good"
    );
    assert_eq!(client.get("m/b").unwrap().version(), 2);
    assert_eq!(client.snapshot().unwrap().registry_data().revision, 3);
}

#[test]
fn readme_json_blocks_are_valid() {
    // Every JSON block of the README parses; the routing policy shown there
    // is a valid policy; the telemetry batch shown there has its schema tag.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let blocks: Vec<serde_json::Value> = readme
        .split("```json\n")
        .skip(1)
        .map(|rest| {
            let body = &rest[..rest.find("```").expect("closed block")];
            serde_json::from_str(body).unwrap_or_else(|e| panic!("README JSON block: {e}\n{body}"))
        })
        .collect();
    assert!(blocks.len() >= 2, "{} JSON blocks", blocks.len());
    let policy = blocks
        .iter()
        .find(|b| b.get("strategy").is_some())
        .expect("a policy block");
    promptops_core::validate_policy(policy, Some("support/reply"), &PricingTable::builtin())
        .unwrap();
    assert!(
        blocks
            .iter()
            .any(|b| b["schema"] == json!("promptops.telemetry.v1"))
    );
}
