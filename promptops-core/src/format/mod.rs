//! Prompt files: the native `.prompt` format (YAML frontmatter + minijinja
//! body), and imports of Google's dotprompt (`.prompt` with Handlebars) and
//! Microsoft Prompty (`.prompty`). A prompt directory is a tree of
//! `module/name.prompt` files.

mod dotprompt;
mod native;
mod prompty;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compile::Diagnostic;
use crate::error::{Error, Result};
use crate::model::{DEFAULT_LABEL, ModelConfig, PromptData, PromptVersion, validate_name};
use crate::snapshot::SnapshotData;

pub use dotprompt::handlebars_to_jinja;
pub use schema::compact_schema;

/// A prompt parsed from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFile {
    pub version: PromptVersion,
    /// Labels the file's version carries (default `[production]`).
    pub labels: Vec<String>,
    pub policy: Option<serde_json::Value>,
}

/// Which dialect a file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Native,
    Dotprompt,
    Prompty,
}

/// Parse the text of a prompt file. `path` names the file in errors and
/// picks the dialect (`.prompty` is Prompty; a `.prompt` is dotprompt when
/// its frontmatter or body uses dotprompt features, else native). `module`
/// is the prompt's module (used to resolve dotprompt partials).
pub fn parse_prompt_file(path: &Path, text: &str, module: &str) -> Result<PromptFile> {
    let doc = split_frontmatter(path, text)?;
    let dialect = detect_dialect(path, &doc);
    match dialect {
        Dialect::Native => native::parse(path, &doc),
        Dialect::Dotprompt => dotprompt::parse(path, &doc, module),
        Dialect::Prompty => prompty::parse(path, &doc),
    }
}

/// Read and parse one prompt file.
pub fn read_prompt_file(path: &Path, module: &str) -> Result<PromptFile> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_prompt_file(path, &text, module)
}

/// A prompt directory loaded into a snapshot, plus what could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub snapshot: SnapshotData,
    pub diagnostics: Vec<Diagnostic>,
}

/// The project name a directory stands for when none is given.
pub fn dir_project_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "default".into())
}

/// Load every `*.prompt` and `*.prompty` file under `dir` as one snapshot
/// (revision 0). A file that cannot be parsed becomes a diagnostic; the
/// rest still load. A missing directory is an error.
pub fn load_dir(dir: &Path, project: &str) -> Result<LoadReport> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| Error::io(dir, e))?;
    files.sort();
    let mut prompts: BTreeMap<String, PromptData> = BTreeMap::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut diagnostics = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let name = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let diag = |error: Error| Diagnostic {
            prompt: name.clone(),
            version: None,
            label: None,
            error,
        };
        if let Err(m) = validate_name(&name) {
            diagnostics.push(diag(Error::parse(&path, None, m)));
            continue;
        }
        if let Some(first) = origin.get(&name) {
            diagnostics.push(diag(Error::parse(
                &path,
                None,
                format!("prompt `{name}` is also defined by {}", first.display()),
            )));
            continue;
        }
        let module = name.rsplit_once('/').map(|(m, _)| m).unwrap_or("");
        match read_prompt_file(&path, module) {
            Ok(pf) => {
                let mut labels = BTreeMap::new();
                for l in &pf.labels {
                    labels.insert(l.clone(), pf.version.version);
                }
                origin.insert(name.clone(), path.clone());
                prompts.insert(
                    name.clone(),
                    PromptData {
                        name: name.clone(),
                        versions: vec![pf.version],
                        labels,
                        policy: pf.policy,
                    },
                );
            }
            Err(e) => diagnostics.push(diag(e)),
        }
    }
    let snapshot = SnapshotData::new(project, 0, prompts.into_values().collect());
    snapshot.validate()?;
    Ok(LoadReport {
        snapshot,
        diagnostics,
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("prompt") | Some("prompty")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// A file split into its YAML frontmatter and body.
pub(crate) struct Document<'a> {
    /// The YAML text (without the `---` lines); empty when there is none.
    pub front: &'a str,
    /// The body (template) text.
    pub body: &'a str,
    /// 1-based file line of the first frontmatter line.
    pub front_line: usize,
    /// 1-based file line of the first body line.
    pub body_line: usize,
}

fn split_frontmatter<'a>(path: &Path, text: &'a str) -> Result<Document<'a>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first_line_end = text.find('\n').unwrap_or(text.len());
    if text[..first_line_end].trim_end() != "---" {
        return Ok(Document {
            front: "",
            body: text,
            front_line: 1,
            body_line: 1,
        });
    }
    let after = first_line_end + 1;
    if after > text.len() {
        return Err(Error::parse(
            path,
            Some(1),
            "frontmatter opened with `---` is never closed".into(),
        ));
    }
    let mut pos = after;
    let mut line = 2;
    loop {
        if pos >= text.len() {
            return Err(Error::parse(
                path,
                Some(1),
                "frontmatter opened with `---` is never closed".into(),
            ));
        }
        let end = text[pos..]
            .find('\n')
            .map(|i| pos + i)
            .unwrap_or(text.len());
        if text[pos..end].trim_end() == "---" {
            let body_start = (end + 1).min(text.len());
            return Ok(Document {
                front: &text[after..pos],
                body: &text[body_start..],
                front_line: 2,
                body_line: line + 1,
            });
        }
        pos = end + 1;
        line += 1;
    }
}

fn detect_dialect(path: &Path, doc: &Document<'_>) -> Dialect {
    if path.extension().and_then(|e| e.to_str()) == Some("prompty") {
        return Dialect::Prompty;
    }
    let has_key = |k: &str| {
        doc.front.lines().any(|l| {
            l.strip_prefix(k)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
    };
    if doc.front.lines().any(|l| l.trim() == "dialect: dotprompt")
        || ["input", "output", "tools", "metadata", "ext"]
            .iter()
            .any(|k| has_key(k))
    {
        return Dialect::Dotprompt;
    }
    if ["{{#", "{{/", "{{role", "{{>", "{{@", "{{{", "{{!"]
        .iter()
        .any(|m| doc.body.contains(m))
    {
        return Dialect::Dotprompt;
    }
    Dialect::Native
}

/// Parse YAML frontmatter into `T`, with errors naming the file line.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    path: &Path,
    doc: &Document<'_>,
) -> Result<T> {
    let src = if doc.front.trim().is_empty() {
        "{}"
    } else {
        doc.front
    };
    serde_yaml_ng::from_str(src).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line() + doc.front_line - 1, l.column()))
            .unwrap_or((doc.front_line, 1));
        Error::Parse {
            file: path.to_path_buf(),
            position: Some(crate::error::Position { line, column }),
            message: format!(
                "invalid frontmatter: {}",
                strip_yaml_location(&e.to_string())
            ),
        }
    })
}

fn strip_yaml_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The file line of a top-level frontmatter key (for error messages).
pub(crate) fn key_line(doc: &Document<'_>, key: &str) -> Option<usize> {
    doc.front.lines().enumerate().find_map(|(i, l)| {
        l.strip_prefix(key)
            .filter(|rest| rest.trim_start().starts_with(':'))
            .map(|_| doc.front_line + i)
    })
}

/// `provider/model` or a bare model id (provider inferred from the name).
pub(crate) fn model_shorthand(spec: &str) -> ModelConfig {
    let (provider, model) = match spec.split_once('/') {
        Some((p, m)) => (Some(normalise_provider(p)), m.to_string()),
        None => (infer_provider(spec), spec.to_string()),
    };
    ModelConfig {
        provider,
        model: Some(model),
        ..Default::default()
    }
}

fn normalise_provider(p: &str) -> String {
    match p {
        "googleai" | "vertexai" | "gemini" => "google".into(),
        "azure" | "azure_openai" => "azure_openai".into(),
        other => other.to_string(),
    }
}

pub(crate) fn infer_provider(model: &str) -> Option<String> {
    let m = model.to_ascii_lowercase();
    let o_series = m.len() > 1 && m.starts_with('o') && m.as_bytes()[1].is_ascii_digit();
    let p =
        if m.starts_with("gpt") || m.starts_with("chatgpt") || m.starts_with("text-") || o_series {
            "openai"
        } else if m.starts_with("claude") {
            "anthropic"
        } else if m.starts_with("gemini") {
            "google"
        } else if m.starts_with("llama") {
            "meta"
        } else if m.starts_with("qwen") {
            "qwen"
        } else {
            return None;
        };
    Some(p.to_string())
}

/// Split a chat body on role lines (`system:`, `user:`, `assistant:`,
/// `developer:`, `tool:` alone on a line, case-insensitive). Text before the
/// first role line must be blank. Returns (role, content, first content line
/// offset within the body).
pub(crate) fn split_role_lines(
    path: &Path,
    body: &str,
    body_line: usize,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for (i, line) in body.split('\n').enumerate() {
        let t = line.trim_end_matches('\r').trim();
        let role = t.strip_suffix(':').map(|r| r.trim().to_ascii_lowercase());
        match role {
            Some(r)
                if ["system", "user", "assistant", "developer", "tool"].contains(&r.as_str()) =>
            {
                if let Some((role, lines)) = current.take() {
                    out.push((role, trim_blank_edges(&lines)));
                }
                current = Some((r, Vec::new()));
            }
            _ => match &mut current {
                Some((_, lines)) => lines.push(line.trim_end_matches('\r')),
                None if t.is_empty() => {}
                None => {
                    return Err(Error::parse(
                        path,
                        Some(body_line + i),
                        "text before the first role line (`system:`, `user:`, `assistant:`) in a chat prompt".into(),
                    ));
                }
            },
        }
    }
    if let Some((role, lines)) = current.take() {
        out.push((role, trim_blank_edges(&lines)));
    }
    if out.is_empty() {
        return Err(Error::parse(
            path,
            Some(body_line),
            "a chat prompt needs at least one role line (`system:`, `user:` or `assistant:`)"
                .into(),
        ));
    }
    Ok(out)
}

fn trim_blank_edges(lines: &[&str]) -> String {
    let start = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map(|i| i + 1)
        .unwrap_or(start);
    lines[start..end.max(start)].join("\n")
}

pub(crate) fn default_labels() -> Vec<String> {
    vec![DEFAULT_LABEL.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_split() {
        let p = Path::new("x.prompt");
        let d = split_frontmatter(p, "---\na: 1\n---\nbody\n").unwrap();
        assert_eq!(d.front, "a: 1\n");
        assert_eq!(d.body, "body\n");
        assert_eq!(d.body_line, 4);
        let d = split_frontmatter(p, "just text").unwrap();
        assert_eq!(d.body, "just text");
        assert!(split_frontmatter(p, "---\na: 1\n").is_err());
    }

    #[test]
    fn role_lines() {
        let p = Path::new("x.prompt");
        let m = split_role_lines(p, "system:\nBe nice.\n\nuser:\n{{ q }}\n", 1).unwrap();
        assert_eq!(
            m,
            vec![
                ("system".to_string(), "Be nice.".to_string()),
                ("user".to_string(), "{{ q }}".to_string())
            ]
        );
        let e = split_role_lines(p, "oops\nuser:\nhi", 5).unwrap_err();
        assert!(matches!(e, Error::Parse { position: Some(pos), .. } if pos.line == 5));
    }

    #[test]
    fn shorthand() {
        let c = model_shorthand("openai/gpt-4o-mini");
        assert_eq!(c.provider.as_deref(), Some("openai"));
        assert_eq!(c.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            model_shorthand("claude-haiku-4-5").provider.as_deref(),
            Some("anthropic")
        );
        assert_eq!(
            model_shorthand("googleai/gemini-2.5-flash")
                .provider
                .as_deref(),
            Some("google")
        );
    }
}
