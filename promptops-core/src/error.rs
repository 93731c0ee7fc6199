//! The one error type of the engine. Every binding maps these variants to its
//! own exception or error classes (see `Error::kind`), so the variant set and
//! the `kind` strings are part of the public contract.

use std::fmt;
use std::path::PathBuf;

/// Where in a source text something went wrong (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A prompt identity used in error messages: `module/name` plus the version
/// (when one was resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRef {
    pub name: String,
    pub version: Option<u32>,
}

impl PromptRef {
    pub fn new(name: impl Into<String>, version: Option<u32>) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for PromptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{} version {}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The prompt (or the label/version asked for) is in no source.
    #[error("prompt not found: {name} ({selector})")]
    PromptNotFound { name: String, selector: String },

    /// A template failed to parse or compile, or failed while rendering for a
    /// reason other than a missing variable.
    #[error("template error in {prompt}{}: {message}", fmt_pos(*.position))]
    Template {
        prompt: PromptRef,
        /// Which part of the prompt: `template`, `messages[2]`, `variant claude`…
        part: String,
        position: Option<Position>,
        message: String,
    },

    /// A variable the template uses was not given (strict undefined).
    #[error("missing variable `{variable}` in {prompt}{}", fmt_line(*.line))]
    Variable {
        prompt: PromptRef,
        variable: String,
        line: Option<usize>,
    },

    /// Variables did not satisfy the prompt's input schema, or a caller value
    /// is out of range.
    #[error("invalid input for {prompt}: field `{field}`: {message}")]
    Validation {
        prompt: String,
        field: String,
        message: String,
    },

    /// `{% include %}` targets form a cycle.
    #[error("include cycle under label `{label}`: {}", .cycle.join(" -> "))]
    IncludeCycle { label: String, cycle: Vec<String> },

    /// A prompt file could not be read as a prompt (YAML, frontmatter, an
    /// unsupported feature of an imported format).
    #[error("{}{}: {message}", .file.display(), fmt_pos(*.position))]
    Parse {
        file: PathBuf,
        position: Option<Position>,
        message: String,
    },

    /// A snapshot or delta is malformed (bad JSON, hash mismatch, wrong
    /// project, unknown format version).
    #[error("invalid snapshot: {0}")]
    Snapshot(String),

    /// The model is not in the pricing table / catalogue.
    #[error("unknown model `{0}`: not in the pricing table; add it with a pricing override")]
    UnknownModel(String),

    /// Rendering exceeded the output size limit.
    #[error("rendered output of {prompt} exceeds the limit of {limit} bytes")]
    OutputLimit { prompt: String, limit: usize },

    /// Rendering exceeded the step (fuel) limit.
    #[error("rendering {prompt} exceeded the step limit of {limit} (runaway template?)")]
    FuelExhausted { prompt: String, limit: u64 },

    /// Bad configuration given by the caller (builder options, overrides).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// No source could provide data and no fallback was given.
    #[error("registry unavailable: {0}")]
    RegistryUnavailable(String),

    #[error("I/O error on {}: {message}", .path.display())]
    Io { path: PathBuf, message: String },

    /// A routing policy is invalid: `field` names the offending part
    /// (`strategy`, `targets[2].weight`, `fallback_prompt`, …).
    #[error("invalid routing policy{}: field `{field}`: {message}", fmt_prompt(.prompt))]
    Policy {
        prompt: Option<String>,
        field: String,
        message: String,
    },

    /// A valid policy found no target it may use (every circuit open, no
    /// target within the budget or the context window).
    #[error("no route for {prompt}: {message}")]
    NoRoute { prompt: String, message: String },

    /// A provider call failed (after every failover attempt, `attempts`
    /// counts them). `error_type` is one of `connect`, `timeout`,
    /// `ttft_timeout`, `rate_limited`, `server_error`, `client_error`,
    /// `malformed_response`, `stream_error`, `auth`, `unsupported_provider`.
    #[error("{provider} call to `{model}` failed ({error_type}{}): {message}{}", fmt_status(*.status), fmt_attempts(*.attempts))]
    Provider {
        provider: String,
        model: String,
        error_type: String,
        status: Option<u16>,
        message: String,
        attempts: u32,
    },
}

fn fmt_prompt(p: &Option<String>) -> String {
    match p {
        Some(p) => format!(" of {p}"),
        None => String::new(),
    }
}

fn fmt_status(s: Option<u16>) -> String {
    match s {
        Some(s) => format!(", HTTP {s}"),
        None => String::new(),
    }
}

fn fmt_attempts(n: u32) -> String {
    if n > 1 {
        format!(" (after {n} attempts)")
    } else {
        String::new()
    }
}

fn fmt_pos(p: Option<Position>) -> String {
    match p {
        Some(p) => format!(" at {p}"),
        None => String::new(),
    }
}

fn fmt_line(l: Option<usize>) -> String {
    match l {
        Some(l) => format!(" at line {l}"),
        None => String::new(),
    }
}

impl Error {
    /// A stable, language-neutral name for the variant. Test vectors and the
    /// bindings use it (`PROMPT_NOT_FOUND`, `TEMPLATE_ERROR`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PromptNotFound { .. } => "PROMPT_NOT_FOUND",
            Error::Template { .. } => "TEMPLATE_ERROR",
            Error::Variable { .. } => "VARIABLE_ERROR",
            Error::Validation { .. } => "VALIDATION_ERROR",
            Error::IncludeCycle { .. } => "INCLUDE_CYCLE",
            Error::Parse { .. } => "PARSE_ERROR",
            Error::Snapshot(_) => "SNAPSHOT_ERROR",
            Error::UnknownModel(_) => "UNKNOWN_MODEL",
            Error::OutputLimit { .. } => "OUTPUT_LIMIT",
            Error::FuelExhausted { .. } => "FUEL_EXHAUSTED",
            Error::Config(_) => "CONFIG_ERROR",
            Error::RegistryUnavailable(_) => "REGISTRY_UNAVAILABLE",
            Error::Io { .. } => "IO_ERROR",
            Error::Policy { .. } => "POLICY_ERROR",
            Error::NoRoute { .. } => "NO_ROUTE",
            Error::Provider { .. } => "PROVIDER_ERROR",
        }
    }

    /// The error's fields as a flat JSON object (`kind`, `message`, and
    /// whichever of `prompt`, `version`, `part`, `line`, `column`,
    /// `variable`, `field`, `file`, `label`, `cycle`, `limit`, `model`,
    /// `provider`, `error_type`, `status`, `attempts` apply). Bindings attach these to their exceptions, so every language
    /// sees the same details.
    pub fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{Value, json};
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), json!(self.kind()));
        m.insert("message".into(), json!(self.to_string()));
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                m.insert(k.into(), v);
            }
        };
        let pos = |p: &Option<Position>| p.map(|p| (p.line, p.column));
        match self {
            Error::PromptNotFound { name, selector } => {
                put("prompt", json!(name));
                put("selector", json!(selector));
            }
            Error::Template {
                prompt,
                part,
                position,
                ..
            } => {
                put("prompt", json!(prompt.name));
                put("version", json!(prompt.version));
                put("part", json!(part));
                if let Some((l, c)) = pos(position) {
                    put("line", json!(l));
                    put("column", json!(c));
                }
            }
            Error::Variable {
                prompt,
                variable,
                line,
            } => {
                put("prompt", json!(prompt.name));
                put("version", json!(prompt.version));
                put("variable", json!(variable));
                put("line", json!(line));
            }
            Error::Validation { prompt, field, .. } => {
                put("prompt", json!(prompt));
                put("field", json!(field));
            }
            Error::IncludeCycle { label, cycle } => {
                put("label", json!(label));
                put("cycle", json!(cycle));
            }
            Error::Parse { file, position, .. } => {
                put("file", json!(file.display().to_string()));
                if let Some((l, c)) = pos(position) {
                    put("line", json!(l));
                    put("column", json!(c));
                }
            }
            Error::UnknownModel(model) => put("model", json!(model)),
            Error::OutputLimit { prompt, limit } => {
                put("prompt", json!(prompt));
                put("limit", json!(limit));
            }
            Error::FuelExhausted { prompt, limit } => {
                put("prompt", json!(prompt));
                put("limit", json!(limit));
            }
            Error::Io { path, .. } => put("file", json!(path.display().to_string())),
            Error::Policy { prompt, field, .. } => {
                put("prompt", json!(prompt));
                put("field", json!(field));
            }
            Error::NoRoute { prompt, .. } => put("prompt", json!(prompt)),
            Error::Provider {
                provider,
                model,
                error_type,
                status,
                attempts,
                ..
            } => {
                put("provider", json!(provider));
                put("model", json!(model));
                put("error_type", json!(error_type));
                put("status", json!(status));
                put("attempts", json!(attempts));
            }
            Error::Snapshot(_) | Error::Config(_) | Error::RegistryUnavailable(_) => {}
        }
        m
    }

    pub(crate) fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn parse(file: impl Into<PathBuf>, line: Option<usize>, message: String) -> Self {
        Error::Parse {
            file: file.into(),
            position: line.map(|line| Position { line, column: 1 }),
            message,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
