//! The prompt model: what a prompt version holds. These types are the wire
//! format of snapshots and bundles (JSON) and the target of every file format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::InputSchema;

/// The label a lookup uses when none is given.
pub const DEFAULT_LABEL: &str = "production";
/// The implicit label that always means the newest version.
pub const LATEST_LABEL: &str = "latest";

/// A chat message template (role + templated content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageTemplate {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A rendered chat message, ready for the OpenAI or Anthropic SDKs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The templated part of a version: plain text, or an ordered list of chat
/// messages each templated on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Body {
    Text { template: String },
    Chat { messages: Vec<MessageTemplate> },
}

impl Body {
    pub fn kind(&self) -> PromptKind {
        match self {
            Body::Text { .. } => PromptKind::Text,
            Body::Chat { .. } => PromptKind::Chat,
        }
    }

    /// Every template source with the name of its part (`template`,
    /// `messages[0]`, …), in order.
    pub fn parts(&self) -> Vec<(String, &str)> {
        match self {
            Body::Text { template } => vec![("template".to_string(), template.as_str())],
            Body::Chat { messages } => messages
                .iter()
                .enumerate()
                .map(|(i, m)| (format!("messages[{i}]"), m.content.as_str()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKind {
    Text,
    Chat,
}

impl PromptKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PromptKind::Text => "text",
            PromptKind::Chat => "chat",
        }
    }
}

/// Model configuration: provider, model and call parameters. Unknown keys are
/// kept in `extra` and passed through untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ModelConfig {
    /// `self` with every field that `over` sets replaced.
    pub fn overlay(&self, over: &ModelConfig) -> ModelConfig {
        let mut out = self.clone();
        if over.provider.is_some() {
            out.provider.clone_from(&over.provider);
        }
        if over.model.is_some() {
            out.model.clone_from(&over.model);
        }
        if over.temperature.is_some() {
            out.temperature = over.temperature;
        }
        if over.max_tokens.is_some() {
            out.max_tokens = over.max_tokens;
        }
        if over.top_p.is_some() {
            out.top_p = over.top_p;
        }
        if !over.stop.is_empty() {
            out.stop.clone_from(&over.stop);
        }
        for (k, v) in &over.extra {
            out.extra.insert(k.clone(), v.clone());
        }
        out
    }
}

/// How well a prompt (or variant) is known to work with a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    Works,
    NeedsTuning,
    Untested,
}

/// A per-model alternative inside a version: the same intent tuned for
/// another model. A variant without a body reuses the version's body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Text template of this variant (text prompts); `None` reuses the version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Messages of this variant (chat prompts); `None` reuses the version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageTemplate>>,
    #[serde(default)]
    pub config: ModelConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compatibility: BTreeMap<String, Compatibility>,
}

impl Variant {
    /// The body this variant renders: its own, or the version's.
    pub fn body_or<'a>(&'a self, base: &'a Body) -> std::borrow::Cow<'a, Body> {
        use std::borrow::Cow;
        match (&self.template, &self.messages) {
            (Some(t), _) => Cow::Owned(Body::Text {
                template: t.clone(),
            }),
            (None, Some(m)) => Cow::Owned(Body::Chat {
                messages: m.clone(),
            }),
            (None, None) => Cow::Borrowed(base),
        }
    }
}

/// An approval record (who approved the version for production, when).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// MAS FEAT documentation fields plus anything else a team records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compliance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_classification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Compliance {
    pub fn is_empty(&self) -> bool {
        self == &Compliance::default()
    }
}

/// One immutable version of a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptVersion {
    pub version: u32,
    #[serde(flatten)]
    pub body: Body,
    #[serde(default)]
    pub config: ModelConfig,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, Variant>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub compatibility: BTreeMap<String, Compatibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<InputSchema>,
    #[serde(default, skip_serializing_if = "Compliance::is_empty")]
    pub compliance: Compliance,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

impl PromptVersion {
    /// A text version with everything else empty.
    pub fn text(version: u32, template: impl Into<String>) -> Self {
        Self::with_body(
            version,
            Body::Text {
                template: template.into(),
            },
        )
    }

    /// A chat version from `(role, content)` pairs.
    pub fn chat<R: Into<String>, C: Into<String>>(
        version: u32,
        messages: impl IntoIterator<Item = (R, C)>,
    ) -> Self {
        Self::with_body(
            version,
            Body::Chat {
                messages: messages
                    .into_iter()
                    .map(|(r, c)| MessageTemplate {
                        role: r.into(),
                        content: c.into(),
                        name: None,
                    })
                    .collect(),
            },
        )
    }

    pub fn with_body(version: u32, body: Body) -> Self {
        PromptVersion {
            version,
            body,
            config: ModelConfig::default(),
            variants: BTreeMap::new(),
            compatibility: BTreeMap::new(),
            schema: None,
            compliance: Compliance::default(),
            tags: Vec::new(),
            description: None,
            created_at: None,
            author: None,
        }
    }
}

/// A prompt as a snapshot carries it: the versions some label points at (plus
/// the newest), and the labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptData {
    /// `module/name`
    pub name: String,
    pub versions: Vec<PromptVersion>,
    /// label → version. `latest` is implicit and never stored.
    #[serde(default)]
    pub labels: BTreeMap<String, u32>,
    /// Routing policy (interpreted by the router; kept opaque here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
}

impl PromptData {
    pub fn latest(&self) -> Option<u32> {
        self.versions.iter().map(|v| v.version).max()
    }

    pub fn version(&self, v: u32) -> Option<&PromptVersion> {
        self.versions.iter().find(|pv| pv.version == v)
    }

    /// The version a label resolves to (`latest` is the newest).
    pub fn resolve(&self, label: &str) -> Option<u32> {
        if label == LATEST_LABEL {
            self.latest()
        } else {
            self.labels.get(label).copied()
        }
    }
}

/// Validate a prompt name: `module/name` (a module may be nested:
/// `a/b/name`), made of letters, digits, `-`, `_` and `.`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() < 2 {
        return Err(format!(
            "prompt name `{name}` must be `module/name` (a prompt lives in a module)"
        ));
    }
    for p in &parts {
        if p.is_empty() {
            return Err(format!("prompt name `{name}` has an empty segment"));
        }
        if p.starts_with('.') {
            return Err(format!(
                "prompt name `{name}`: a segment may not start with `.`"
            ));
        }
        if let Some(c) = p
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!(
                "prompt name `{name}` contains `{c}`; use letters, digits, `-`, `_` and `.`"
            ));
        }
    }
    Ok(())
}

/// Validate a label name.
pub fn validate_label(label: &str) -> Result<(), String> {
    if label.is_empty()
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "label `{label}` must be non-empty and use letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}
