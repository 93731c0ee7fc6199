//! Import of Google's dotprompt files: YAML frontmatter (`model`, `config`,
//! `input.schema` in Picoschema or JSON Schema, `input.default`, `output`)
//! and a Handlebars body, translated to minijinja. Supported Handlebars:
//! `{{var}}`, `{{{var}}}`, dotted paths, `{{#if}}`/`{{else}}`, `{{#unless}}`,
//! `{{#each}}` over lists with `this`, `@index`, `@first`, `@last`, `../`,
//! `{{#with}}`, `{{json x}}`, `{{role "…"}}` (splits a chat prompt),
//! `{{>partial}}` (includes `module/_partial`), comments. Anything else
//! (`{{media}}`, `{{history}}`, `{{section}}`, tools, other helpers) is an
//! error naming the file and line.

use std::path::Path;

use serde::Deserialize;

use super::{Document, PromptFile, compact_schema, default_labels, key_line, model_shorthand};
use crate::error::{Error, Result};
use crate::model::{Body, MessageTemplate, ModelConfig, PromptVersion};

#[derive(Debug, Deserialize)]
struct Front {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    config: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    output: Option<serde_json::Value>,
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    ext: Option<serde_json::Value>,
    #[serde(default)]
    dialect: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    schema: Option<serde_json::Value>,
    #[serde(default)]
    default: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(super) fn parse(path: &Path, doc: &Document<'_>, module: &str) -> Result<PromptFile> {
    let front: Front = super::parse_yaml(path, doc)?;
    let at = |key: &str, message: String| Error::parse(path, key_line(doc, key), message);
    if front.tools.is_some() {
        return Err(at(
            "tools",
            "dotprompt `tools` are not supported by promptops (routing and tool calls are configured in the app)".into(),
        ));
    }
    let _ = (
        &front.name,
        &front.variant,
        &front.metadata,
        &front.ext,
        &front.dialect,
    );
    let version = match &front.version {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                at(
                    "version",
                    format!("version must be a positive integer for promptops, got {v}"),
                )
            })?,
    };
    // config: temperature, maxOutputTokens, topP, stopSequences, others kept.
    let mut config = match &front.model {
        Some(m) => model_shorthand(m),
        None => ModelConfig::default(),
    };
    for (k, v) in front.config {
        match k.as_str() {
            "temperature" => config.temperature = v.as_f64(),
            "maxOutputTokens" | "max_tokens" => {
                config.max_tokens = v.as_u64().and_then(|n| u32::try_from(n).ok())
            }
            "topP" => config.top_p = v.as_f64(),
            "stopSequences" => {
                config.stop = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            }
            _ => {
                config.extra.insert(k, v);
            }
        }
    }
    if let Some(o) = front.output {
        config.extra.insert("output".into(), o);
    }
    let mut schema = None;
    if let Some(input) = front.input {
        if let Some(s) = &input.schema {
            schema =
                Some(compact_schema(s).map_err(|m| at("input", format!("input.schema: {m}")))?);
        }
        if let Some(defaults) = input.default {
            let s = schema.get_or_insert_with(Default::default);
            for (k, v) in defaults {
                s.properties.entry(k.clone()).or_default().default = Some(v);
                s.required.retain(|r| r != &k);
            }
        }
    }
    let translated = handlebars_to_jinja(doc.body, module)
        .map_err(|(line, m)| Error::parse(path, Some(doc.body_line + line - 1), m))?;
    let body = match translated {
        Translated::Text(t) => Body::Text { template: t },
        Translated::Chat(ms) => Body::Chat {
            messages: ms
                .into_iter()
                .map(|(role, content)| MessageTemplate {
                    role,
                    content,
                    name: None,
                })
                .collect(),
        },
    };
    let mut v = PromptVersion::with_body(version, body);
    v.config = config;
    v.schema = schema;
    v.description = front.description;
    Ok(PromptFile {
        version: v,
        labels: front.labels.unwrap_or_else(default_labels),
        policy: None,
    })
}

/// The result of translating a Handlebars body.
#[derive(Debug, Clone, PartialEq)]
pub enum Translated {
    Text(String),
    /// (role, template) per `{{role "…"}}` section.
    Chat(Vec<(String, String)>),
}

enum Scope {
    /// `{{#each}}`: the loop variable name, whether iterating a mapping.
    Each {
        var: String,
        keyed: bool,
    },
    With {
        var: String,
    },
    If,
}

/// Translate a dotprompt Handlebars template to minijinja. Errors carry the
/// 1-based line within `src`.
pub fn handlebars_to_jinja(
    src: &str,
    module: &str,
) -> std::result::Result<Translated, (usize, String)> {
    let mut out = String::with_capacity(src.len() + 64);
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut current_role: Option<String> = None;
    let mut scopes: Vec<Scope> = Vec::new();
    let mut counter = 0usize;
    let mut i = 0;
    let line_of = |pos: usize| src[..pos].matches('\n').count() + 1;
    while i < src.len() {
        let Some(off) = src[i..].find("{{") else {
            push_literal(&mut out, &src[i..]);
            break;
        };
        push_literal(&mut out, &src[i..i + off]);
        let start = i + off;
        let line = line_of(start);
        let triple = src[start..].starts_with("{{{");
        let (open_len, close) = if triple { (3, "}}}") } else { (2, "}}") };
        // Comments may contain `}}` when written `{{!-- … --}}`.
        let (inner, end) = if src[start..].starts_with("{{!--") {
            let close_at = src[start..]
                .find("--}}")
                .ok_or((line, "unterminated `{{!--` comment".to_string()))?;
            ("!", start + close_at + 4)
        } else {
            let close_at = src[start + open_len..]
                .find(close)
                .ok_or((line, "unterminated `{{`".to_string()))?;
            (
                src[start + open_len..start + open_len + close_at].trim(),
                start + open_len + close_at + close.len(),
            )
        };
        i = end;
        // Whitespace control `{{~ … ~}}`.
        let inner = inner.trim_start_matches('~').trim_end_matches('~').trim();
        if inner.starts_with('!') {
            continue;
        }
        if let Some(rest) = inner.strip_prefix('#') {
            let (helper, arg) = split_word(rest);
            match helper {
                "if" => {
                    out.push_str(&format!("{{% if {} %}}", expr(arg, &scopes, line)?));
                    scopes.push(Scope::If);
                }
                "unless" => {
                    out.push_str(&format!("{{% if not ({}) %}}", expr(arg, &scopes, line)?));
                    scopes.push(Scope::If);
                }
                "each" => {
                    counter += 1;
                    let var = format!("__it{counter}");
                    let e = expr(arg, &scopes, line)?;
                    out.push_str(&format!("{{% for {var} in {e} %}}"));
                    scopes.push(Scope::Each { var, keyed: false });
                }
                "with" => {
                    counter += 1;
                    let var = format!("__w{counter}");
                    out.push_str(&format!(
                        "{{% with {var} = {} %}}",
                        expr(arg, &scopes, line)?
                    ));
                    scopes.push(Scope::With { var });
                }
                other => {
                    return Err((
                        line,
                        format!("Handlebars block helper `#{other}` is not supported"),
                    ));
                }
            }
            continue;
        }
        if let Some(rest) = inner.strip_prefix('/') {
            let name = rest.trim();
            let scope = scopes
                .pop()
                .ok_or((line, format!("`{{{{/{name}}}}}` closes nothing")))?;
            match (name, scope) {
                ("if" | "unless", Scope::If) => out.push_str("{% endif %}"),
                ("each", Scope::Each { .. }) => out.push_str("{% endfor %}"),
                ("with", Scope::With { .. }) => out.push_str("{% endwith %}"),
                (n, _) => {
                    return Err((
                        line,
                        format!("`{{{{/{n}}}}}` does not match the open block"),
                    ));
                }
            }
            continue;
        }
        if inner == "else" {
            match scopes.last() {
                Some(Scope::If) => out.push_str("{% else %}"),
                Some(Scope::Each { .. }) => out.push_str("{% else %}"),
                _ => return Err((line, "`{{else}}` outside `{{#if}}` or `{{#each}}`".into())),
            }
            continue;
        }
        if let Some(p) = inner.strip_prefix('>') {
            let name = p.trim();
            if name.contains(char::is_whitespace) {
                return Err((
                    line,
                    format!("partial `{name}` with arguments is not supported"),
                ));
            }
            let target = if module.is_empty() {
                format!("_{name}")
            } else {
                format!("{module}/_{name}")
            };
            out.push_str(&format!("{{% include \"{target}\" %}}"));
            continue;
        }
        let (head, arg) = split_word(inner);
        match head {
            "role" => {
                let role = arg.trim().trim_matches('"').trim_matches('\'').to_string();
                if !scopes.is_empty() {
                    return Err((line, "`{{role}}` inside a block is not supported".into()));
                }
                let body = std::mem::take(&mut out);
                match current_role.take() {
                    Some(r) => sections.push((r, body.trim().to_string())),
                    None if !body.trim().is_empty() => {
                        sections.push(("user".into(), body.trim().to_string()))
                    }
                    None => {}
                }
                current_role = Some(role);
            }
            "json" => out.push_str(&format!("{{{{ {} | tojson }}}}", expr(arg, &scopes, line)?)),
            "media" | "history" | "section" => {
                return Err((
                    line,
                    format!("dotprompt `{{{{{head}}}}}` is not supported by promptops"),
                ));
            }
            _ if !arg.is_empty() => {
                return Err((line, format!("Handlebars helper `{head}` is not supported")));
            }
            _ => out.push_str(&format!("{{{{ {} }}}}", expr(inner, &scopes, line)?)),
        }
    }
    if let Some(open) = scopes.last() {
        let what = match open {
            Scope::Each { .. } => "each",
            Scope::With { .. } => "with",
            Scope::If => "if",
        };
        return Err((
            line_of(src.len()),
            format!("`{{{{#{what}}}}}` is never closed"),
        ));
    }
    match current_role {
        Some(r) => {
            sections.push((r, out.trim().to_string()));
            Ok(Translated::Chat(sections))
        }
        None => Ok(Translated::Text(out)),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

/// Literal text: escape anything minijinja would read as syntax.
fn push_literal(out: &mut String, s: &str) {
    if !s.contains("{%") && !s.contains("{#") {
        out.push_str(s);
        return;
    }
    out.push_str(&s.replace("{%", "{{ '{%' }}").replace("{#", "{{ '{#' }}"));
}

/// Translate a Handlebars path expression (`name`, `a.b`, `this`, `this.x`,
/// `../x`, `@index`, `@root.x`, literals) in the current scope.
fn expr(e: &str, scopes: &[Scope], line: usize) -> std::result::Result<String, (usize, String)> {
    let e = e.trim();
    if e.is_empty() {
        return Err((line, "empty expression".into()));
    }
    if e.starts_with('(') {
        return Err((line, format!("sub-expression `{e}` is not supported")));
    }
    if e.contains(char::is_whitespace) {
        return Err((line, format!("helper call `{e}` is not supported")));
    }
    if e.starts_with('"')
        || e.starts_with('\'')
        || e.parse::<f64>().is_ok()
        || e == "true"
        || e == "false"
    {
        return Ok(e.to_string());
    }
    // Which scope the path starts in.
    let mut depth = scopes.iter().filter(|s| !matches!(s, Scope::If)).count();
    let mut path = e;
    if let Some(rest) = path.strip_prefix("@root.") {
        return Ok(rest.to_string());
    }
    while let Some(rest) = path.strip_prefix("../") {
        depth = depth
            .checked_sub(1)
            .ok_or((line, format!("`{e}` goes above the root context")))?;
        path = rest;
    }
    let ctx_scopes: Vec<&Scope> = scopes.iter().filter(|s| !matches!(s, Scope::If)).collect();
    let here = if depth == 0 {
        None
    } else {
        Some(ctx_scopes[depth - 1])
    };
    if let Some(at) = path.strip_prefix('@') {
        let Some(Scope::Each { var, keyed }) = here else {
            return Err((line, format!("`@{at}` outside `{{{{#each}}}}`")));
        };
        let n = var.trim_start_matches("__it");
        return Ok(match at {
            "index" => "loop.index0".into(),
            "first" => "loop.first".into(),
            "last" => "loop.last".into(),
            "key" if *keyed => format!("__key{n}"),
            other => return Err((line, format!("`@{other}` is not supported"))),
        });
    }
    let base = match here {
        None => None,
        Some(Scope::Each { var, .. }) | Some(Scope::With { var }) => Some(var.clone()),
        Some(Scope::If) => None,
    };
    let rest = if path == "this" || path == "." {
        ""
    } else if let Some(r) = path.strip_prefix("this.") {
        r
    } else {
        path
    };
    if rest
        .split('.')
        .any(|seg| seg.is_empty() || !seg.chars().all(|c| c.is_alphanumeric() || c == '_'))
        && !rest.is_empty()
    {
        return Err((line, format!("path `{e}` is not supported")));
    }
    Ok(match (base, rest.is_empty()) {
        (Some(b), true) => b,
        (Some(b), false) => format!("{b}.{rest}"),
        (None, true) => return Err((line, "`this` at the root context is not supported".into())),
        (None, false) => rest.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: Translated) -> String {
        match t {
            Translated::Text(t) => t,
            Translated::Chat(_) => panic!("expected text"),
        }
    }

    #[test]
    fn vars_and_blocks() {
        let t = text(handlebars_to_jinja("Hi {{name}}{{#if vip}}!{{else}}.{{/if}}", "m").unwrap());
        assert_eq!(t, "Hi {{ name }}{% if vip %}!{% else %}.{% endif %}");
        let t = text(
            handlebars_to_jinja(
                "{{#each items}}{{@index}}={{this.a}} {{../x}}{{/each}}",
                "m",
            )
            .unwrap(),
        );
        assert!(t.contains("__it1.a"), "{t}");
        assert!(t.contains("loop.index0"));
        assert!(t.contains("{{ x }}"));
        let t = text(handlebars_to_jinja("{{{raw}}} {{json obj}} {{!note}}{%x", "m").unwrap());
        assert_eq!(t, "{{ raw }} {{ obj | tojson }} {{ '{%' }}x");
        let t = text(handlebars_to_jinja("{{> footer}}", "mail").unwrap());
        assert_eq!(t, "{% include \"mail/_footer\" %}");
    }

    #[test]
    fn roles() {
        let t = handlebars_to_jinja(
            "{{role \"system\"}}\nBe brief.\n{{role \"user\"}}\n{{q}}\n",
            "m",
        )
        .unwrap();
        assert_eq!(
            t,
            Translated::Chat(vec![
                ("system".into(), "Be brief.".into()),
                ("user".into(), "{{ q }}".into())
            ])
        );
    }

    #[test]
    fn unsupported() {
        let e = handlebars_to_jinja("a\n{{media url=x}}", "m").unwrap_err();
        assert_eq!(e.0, 2);
        assert!(handlebars_to_jinja("{{#if a}}x", "m").is_err());
        assert!(handlebars_to_jinja("{{eq a b}}", "m").is_err());
        assert!(handlebars_to_jinja("{{#if (eq a b)}}x{{/if}}", "m").is_err());
    }
}
