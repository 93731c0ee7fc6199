//! promptops-core: the in-process engine of promptops.
//!
//! Store, render, route and telemetry take data in and give answers out; no
//! network code and no runtime live here. Sources push snapshots or deltas
//! through one entry point ([`Store::apply`] / [`Client::apply`]).
//!
//! ```
//! use promptops_core::{Client, context};
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::create_dir_all(dir.path().join("support")).unwrap();
//! # std::fs::write(dir.path().join("support/greet.prompt"),
//! #     "---\nmodel: openai/gpt-4o-mini\n---\nHello {{ name }}!").unwrap();
//! let client = Client::builder().prompts_dir(dir.path()).build()?;
//! let prompt = client.get("support/greet")?;
//! let out = prompt.render(&context! { name => "Dana" })?;
//! assert_eq!(out.text.as_deref(), Some("Hello Dana!"));
//! assert_eq!(out.input_tokens().count, 3); // "Hello", " Dana", "!"
//! # Ok::<(), promptops_core::Error>(())
//! ```

pub mod catalogue;
pub mod client;
pub mod compile;
pub mod error;
#[cfg(feature = "export")]
pub mod export;
pub mod fast;
pub mod format;
pub mod model;
pub mod plan;
pub mod pricing;
pub mod prompt;
#[cfg(feature = "providers")]
pub mod provider;
pub mod route;
pub mod schema;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tokens;
pub mod vars;

pub use catalogue::{HealthStatus, ModelEntry, ModelHealth};
pub use client::{Client, ClientBuilder, Fallback, GetOptions};
pub use compile::{CompiledSnapshot, Diagnostic, Limits, Source};
pub use error::{Error, Position, PromptRef, Result};
pub use fast::{RenderPath, fast_render_enabled, set_fast_render};
pub use minijinja::Value;
pub use minijinja::context;
pub use model::{
    Body, Compatibility, Compliance, DEFAULT_LABEL, LATEST_LABEL, Message, MessageTemplate,
    ModelConfig, PromptData, PromptKind, PromptVersion, Variant,
};
pub use plan::PortablePlan;
pub use pricing::{ModelPrice, PricingTable};
pub use prompt::{Prompt, Rendered};
pub use route::{
    Decision, Outcome, Policy, RouteChoice, RouteOptions, Routed, Router, RouterConfig, Strategy,
    Target, validate_policy,
};
pub use schema::InputSchema;
pub use snapshot::{Delta, SNAPSHOT_FORMAT, SnapshotData};
pub use store::{ApplyOutcome, Change, Store, Update};
pub use sync::{Status, SyncStatus};
pub use telemetry::{SdkLanguage, Telemetry, TelemetryConfig};
pub use tokens::{Encoding, TokenCount};

/// Turn anything serde can serialise into a template [`Value`].
pub fn to_value<S: serde::Serialize + ?Sized>(s: &S) -> Value {
    Value::from(minijinja::value::Serde(s))
}
