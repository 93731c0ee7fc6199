//! The native `.prompt` format:
//!
//! ```text
//! ---
//! type: chat                      # text (default) or chat
//! model: openai/gpt-4o-mini       # shorthand for config.provider/model
//! config: { temperature: 0.2, max_tokens: 400 }
//! schema: { user_name: string, order_id?: string }
//! variants:
//!   claude:
//!     config: { provider: anthropic, model: claude-haiku-4-5 }
//!     compatibility: { claude-haiku-4-5: works }
//! compliance: { intent: …, owner: …, fairness_notes: …, data_classification: internal }
//! tags: [support]
//! labels: [production, staging]   # default [production]
//! version: 3                      # default 1
//! ---
//! system:
//! You are a support agent for {{ company }}.
//! user:
//! {{ question }}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{
    Document, PromptFile, compact_schema, default_labels, key_line, model_shorthand, parse_yaml,
    split_role_lines,
};
use crate::error::{Error, Result};
use crate::model::{
    Body, Compatibility, Compliance, MessageTemplate, ModelConfig, PromptKind, PromptVersion,
    Variant, validate_label,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Front {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default, rename = "type")]
    kind: Option<PromptKind>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    config: ModelConfig,
    #[serde(default)]
    schema: Option<serde_json::Value>,
    #[serde(default)]
    variants: BTreeMap<String, Variant>,
    #[serde(default)]
    compatibility: BTreeMap<String, Compatibility>,
    #[serde(default)]
    compliance: Compliance,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    messages: Option<Vec<MessageTemplate>>,
    #[serde(default)]
    policy: Option<serde_json::Value>,
    #[serde(default)]
    author: Option<String>,
}

pub(super) fn parse(path: &Path, doc: &Document<'_>) -> Result<PromptFile> {
    let front: Front = parse_yaml(path, doc)?;
    let at = |key: &str, message: String| Error::parse(path, key_line(doc, key), message);
    let version = front.version.unwrap_or(1);
    if version == 0 {
        return Err(at("version", "versions start at 1".into()));
    }
    let mut config = front.config;
    if let Some(m) = &front.model {
        let short = model_shorthand(m);
        if config.model.is_some() && config.model != short.model {
            return Err(at(
                "model",
                format!("`model: {m}` disagrees with `config.model`"),
            ));
        }
        config = short.overlay(&config);
        config.model = short.model;
        if config.provider.is_none() {
            config.provider = short.provider;
        }
    } else if config.provider.is_none()
        && let Some(m) = &config.model
    {
        config.provider = super::infer_provider(m);
    }
    let kind = front.kind.unwrap_or(if front.messages.is_some() {
        PromptKind::Chat
    } else {
        PromptKind::Text
    });
    let body = match (kind, front.messages) {
        (PromptKind::Chat, Some(messages)) => {
            if !doc.body.trim().is_empty() {
                return Err(Error::parse(
                    path,
                    Some(doc.body_line),
                    "`messages` is set in the frontmatter and the body is not empty; use one"
                        .into(),
                ));
            }
            Body::Chat { messages }
        }
        (PromptKind::Chat, None) => Body::Chat {
            messages: split_role_lines(path, doc.body, doc.body_line)?
                .into_iter()
                .map(|(role, content)| MessageTemplate {
                    role,
                    content,
                    name: None,
                })
                .collect(),
        },
        (PromptKind::Text, Some(_)) => {
            return Err(at("messages", "`messages` needs `type: chat`".into()));
        }
        (PromptKind::Text, None) => Body::Text {
            template: doc.body.to_string(),
        },
    };
    for (name, v) in &front.variants {
        if v.template.is_some() && kind == PromptKind::Chat {
            return Err(at(
                "variants",
                format!("variant `{name}` has a text `template` but the prompt is a chat prompt"),
            ));
        }
        if v.messages.is_some() && kind == PromptKind::Text {
            return Err(at(
                "variants",
                format!("variant `{name}` has `messages` but the prompt is a text prompt"),
            ));
        }
    }
    let schema = match &front.schema {
        Some(s) => Some(compact_schema(s).map_err(|m| at("schema", format!("schema: {m}")))?),
        None => None,
    };
    let labels = front.labels.unwrap_or_else(default_labels);
    for l in &labels {
        validate_label(l).map_err(|m| at("labels", m))?;
        if l == crate::model::LATEST_LABEL {
            return Err(at("labels", "`latest` is implicit; do not list it".into()));
        }
    }
    Ok(PromptFile {
        version: PromptVersion {
            version,
            body,
            config,
            variants: front.variants,
            compatibility: front.compatibility,
            schema,
            compliance: front.compliance,
            tags: front.tags,
            description: front.description,
            created_at: None,
            author: front.author,
        },
        labels,
        policy: front.policy,
    })
}
