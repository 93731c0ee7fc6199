//! Import of Microsoft Prompty (`.prompty`) files: YAML frontmatter
//! (`name`, `description`, `authors`, `tags`, `model.api`,
//! `model.configuration`, `model.parameters`, `inputs`, `sample`,
//! `template`) and a Jinja2 body with `system:` / `user:` / `assistant:`
//! role lines. Features that do not map (non-Jinja template formats, file
//! inputs, tools) are errors naming the file and line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{Document, PromptFile, default_labels, key_line, split_role_lines};
use crate::error::{Error, Result};
use crate::model::{Body, Compliance, MessageTemplate, ModelConfig, PromptVersion};
use crate::schema::{InputSchema, JsonType, PropertySchema, TypeSet};

#[derive(Debug, Deserialize)]
struct Front {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    model: Option<Model>,
    #[serde(default)]
    inputs: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    outputs: Option<serde_json::Value>,
    #[serde(default)]
    sample: Option<serde_json::Value>,
    #[serde(default)]
    template: Option<serde_json::Value>,
    #[serde(default)]
    tools: Option<serde_json::Value>,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Model {
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    configuration: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    response: Option<serde_json::Value>,
}

pub(super) fn parse(path: &Path, doc: &Document<'_>) -> Result<PromptFile> {
    let front: Front = super::parse_yaml(path, doc)?;
    let at = |key: &str, message: String| Error::parse(path, key_line(doc, key), message);
    if front.tools.is_some() {
        return Err(at(
            "tools",
            "Prompty `tools` are not supported by promptops".into(),
        ));
    }
    if let Some(t) = &front.template {
        let format = match t {
            serde_json::Value::String(s) => Some(s.as_str()),
            serde_json::Value::Object(m) => m.get("format").and_then(|f| f.as_str()),
            _ => None,
        };
        if let Some(f) = format
            && f != "jinja2"
        {
            return Err(at(
                "template",
                format!(
                    "Prompty template format `{f}` is not supported (promptops renders jinja2)"
                ),
            ));
        }
    }
    let version = match &front.version {
        None => 1,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.split('.').next()?.parse().ok()))
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| at("version", format!("cannot read a version number from {v}")))?,
    };
    let mut config = ModelConfig::default();
    let mut chat = true;
    if let Some(m) = front.model {
        match m.api.as_deref() {
            None | Some("chat") => {}
            Some("completion") => chat = false,
            Some(other) => {
                return Err(at(
                    "model",
                    format!("Prompty model.api `{other}` is not supported"),
                ));
            }
        }
        let get = |k: &str| {
            m.configuration
                .get(k)
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        config.provider = match get("type").as_deref() {
            Some("azure_openai") | Some("azure") => Some("azure_openai".into()),
            Some("openai") => Some("openai".into()),
            Some("serverless") => Some("azure_ai".into()),
            Some(other) => Some(other.to_string()),
            None => None,
        };
        config.model = get("name")
            .or_else(|| get("model"))
            .or_else(|| get("azure_deployment"));
        if config.provider.is_none()
            && let Some(m) = &config.model
        {
            config.provider = super::infer_provider(m);
        }
        for (k, v) in &m.configuration {
            if matches!(
                k.as_str(),
                "azure_endpoint" | "endpoint" | "api_version" | "azure_deployment"
            ) {
                config.extra.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in m.parameters {
            match k.as_str() {
                "temperature" => config.temperature = v.as_f64(),
                "max_tokens" => config.max_tokens = v.as_u64().and_then(|n| u32::try_from(n).ok()),
                "top_p" => config.top_p = v.as_f64(),
                "stop" => {
                    config.stop = match &v {
                        serde_json::Value::String(s) => vec![s.clone()],
                        serde_json::Value::Array(a) => a
                            .iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect(),
                        _ => Vec::new(),
                    }
                }
                _ => {
                    config.extra.insert(k, v);
                }
            }
        }
        if let Some(r) = m.response {
            config.extra.insert("response".into(), r);
        }
    }
    if let Some(o) = front.outputs {
        config.extra.insert("outputs".into(), o);
    }
    let schema = match &front.inputs {
        Some(inputs) => Some(inputs_schema(inputs).map_err(|m| at("inputs", m))?),
        None => None,
    };
    let body = if chat {
        Body::Chat {
            messages: split_role_lines(path, doc.body, doc.body_line)?
                .into_iter()
                .map(|(role, content)| MessageTemplate {
                    role,
                    content,
                    name: None,
                })
                .collect(),
        }
    } else {
        Body::Text {
            template: doc.body.to_string(),
        }
    };
    let mut v = PromptVersion::with_body(version, body);
    v.config = config;
    v.schema = schema;
    v.description = front.description;
    v.tags = front.tags;
    v.author = front.authors.first().cloned();
    let mut compliance = Compliance::default();
    if front.authors.len() > 1 {
        compliance
            .extra
            .insert("authors".into(), serde_json::json!(front.authors));
    }
    if let Some(n) = front.name {
        compliance.extra.insert("prompty_name".into(), n.into());
    }
    if let Some(s) = front.sample {
        compliance.extra.insert("sample".into(), s);
    }
    v.compliance = compliance;
    Ok(PromptFile {
        version: v,
        labels: front.labels.unwrap_or_else(default_labels),
        policy: None,
    })
}

fn inputs_schema(
    inputs: &BTreeMap<String, serde_json::Value>,
) -> std::result::Result<InputSchema, String> {
    let mut s = InputSchema {
        ty: Some(JsonType::Object),
        ..Default::default()
    };
    for (name, spec) in inputs {
        let mut p = PropertySchema::default();
        let mut required = true;
        match spec {
            serde_json::Value::Object(m) => {
                if let Some(t) = m.get("type").and_then(|t| t.as_str()) {
                    p.ty = Some(TypeSet::One(match t {
                        "string" => JsonType::String,
                        "number" | "float" => JsonType::Number,
                        "integer" | "int" => JsonType::Integer,
                        "boolean" | "bool" => JsonType::Boolean,
                        "array" | "list" => JsonType::Array,
                        "object" | "dict" => JsonType::Object,
                        other => {
                            return Err(format!(
                                "input `{name}`: Prompty type `{other}` is not supported"
                            ));
                        }
                    }));
                }
                p.description = m
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(String::from);
                if let Some(d) = m.get("default") {
                    p.default = Some(d.clone());
                    required = false;
                }
                if m.get("required").and_then(|r| r.as_bool()) == Some(false) {
                    required = false;
                }
            }
            // Older Prompty files give a sample value directly.
            other => {
                p.default = Some(other.clone());
                required = false;
            }
        }
        if required {
            s.required.push(name.clone());
        }
        s.properties.insert(name.clone(), p);
    }
    s.check()?;
    Ok(s)
}
