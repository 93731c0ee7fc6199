//! What a lookup returns (`Prompt`) and what rendering it gives (`Rendered`).

use std::sync::{Arc, OnceLock};

use minijinja::Value;
use serde::Serialize;

use crate::compile::{
    CompiledBody, CompiledSnapshot, CompiledVersion, LabelScope, Limits, Source, Tmpl,
    map_render_error,
};
use crate::error::{Error, PromptRef, Result};
use crate::fast::RenderPath;
use crate::model::{Compatibility, Compliance, Message, ModelConfig, PromptKind};
use crate::pricing::PricingTable;
use crate::schema::InputSchema;
use crate::tokens::{self, TokenCount};

/// A prompt ready to render: one version of one prompt, from one snapshot
/// (which it keeps alive, so a render never sees a half-swapped store).
#[derive(Clone)]
pub struct Prompt {
    pub(crate) env_owner: EnvOwner,
    pub(crate) version: Arc<CompiledVersion>,
    pub(crate) label: Option<Arc<str>>,
    pub(crate) label_id: usize,
    pub(crate) source: Source,
    pub(crate) variant: Option<String>,
    pub(crate) pricing: Arc<PricingTable>,
    pub(crate) revision: u64,
    /// Where render events go, when telemetry is on.
    pub(crate) telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

/// Who owns the environment the prompt's templates live in: the snapshot,
/// or (for an inline fallback) a private one.
#[derive(Clone)]
pub(crate) enum EnvOwner {
    Snapshot(Arc<CompiledSnapshot>),
    Fallback(Arc<(minijinja::Environment<'static>, Limits)>),
}

impl EnvOwner {
    fn env(&self) -> &minijinja::Environment<'static> {
        match self {
            EnvOwner::Snapshot(s) => &s.env,
            EnvOwner::Fallback(f) => &f.0,
        }
    }

    fn limits(&self) -> Limits {
        match self {
            EnvOwner::Snapshot(s) => s.limits,
            EnvOwner::Fallback(f) => f.1,
        }
    }
}

impl std::fmt::Debug for Prompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prompt")
            .field("name", &self.name())
            .field("version", &self.version())
            .field("label", &self.label)
            .field("variant", &self.variant)
            .field("source", &self.source)
            .finish()
    }
}

impl Prompt {
    /// `module/name`
    pub fn name(&self) -> &str {
        &self.version.prompt
    }

    /// The version number (0 for an inline fallback).
    pub fn version(&self) -> u32 {
        self.version.data.version
    }

    /// The label it was looked up by (`None` for a pinned version).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// Where it came from: memory, disk, bundle or fallback.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The revision of the snapshot it came from (0 for local data).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// When the snapshot it came from was loaded into this process (`None`
    /// for a fallback); with [`revision`](Self::revision), how current it is.
    pub fn snapshot_loaded_at(&self) -> Option<std::time::SystemTime> {
        match &self.env_owner {
            EnvOwner::Snapshot(s) => Some(s.loaded_at),
            EnvOwner::Fallback(_) => None,
        }
    }

    /// The content hash of the snapshot it came from (`None` for a fallback).
    pub fn snapshot_hash(&self) -> Option<&str> {
        match &self.env_owner {
            EnvOwner::Snapshot(s) => Some(s.hash()),
            EnvOwner::Fallback(_) => None,
        }
    }

    pub fn kind(&self) -> PromptKind {
        self.version.data.body.kind()
    }

    /// The selected variant, if any.
    pub fn variant_name(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Names of the version's variants.
    pub fn variants(&self) -> impl Iterator<Item = &str> {
        self.version.variants.keys().map(|k| k.as_str())
    }

    /// The model config that rendering will return (the variant's when one
    /// is selected).
    pub fn config(&self) -> &ModelConfig {
        match &self.variant {
            Some(v) => &self.version.variants[v].config,
            None => &self.version.config,
        }
    }

    pub fn schema(&self) -> Option<&InputSchema> {
        self.version.data.schema.as_ref()
    }

    pub fn compliance(&self) -> &Compliance {
        &self.version.data.compliance
    }

    pub fn tags(&self) -> &[String] {
        &self.version.data.tags
    }

    pub fn description(&self) -> Option<&str> {
        self.version.data.description.as_deref()
    }

    /// The version's data as stored (templates, config, variants, …).
    pub fn data(&self) -> &crate::model::PromptVersion {
        &self.version.data
    }

    /// The routing policy stored with the prompt, if any.
    pub fn policy(&self) -> Option<&serde_json::Value> {
        match &self.env_owner {
            EnvOwner::Snapshot(s) => s.prompts.get(self.name())?.policy.as_ref(),
            EnvOwner::Fallback(_) => None,
        }
    }

    /// The same prompt with variant `name` selected.
    pub fn variant(&self, name: &str) -> Result<Prompt> {
        if !self.version.variants.contains_key(name) {
            return Err(Error::PromptNotFound {
                name: self.name().to_string(),
                selector: format!("variant `{name}` of version {}", self.version()),
            });
        }
        let mut p = self.clone();
        p.variant = Some(name.to_string());
        Ok(p)
    }

    /// The variant meant for `model`: one whose config names that model,
    /// else one marked `works` for it, else the version itself.
    pub fn for_model(&self, model: &str) -> Prompt {
        let bare = |m: &str| m.rsplit('/').next().unwrap_or(m).to_string();
        let want = bare(model);
        let pick = self
            .version
            .variants
            .iter()
            .find(|(_, v)| v.config.model.as_deref().map(bare).as_deref() == Some(&want))
            .or_else(|| {
                self.version.variants.iter().find(|(name, _)| {
                    self.version.data.variants[name.as_str()]
                        .compatibility
                        .get(&want)
                        == Some(&Compatibility::Works)
                })
            })
            .map(|(n, _)| n.clone());
        let mut p = self.clone();
        p.variant = pick;
        p
    }

    /// Render with `vars` (a map; anything serde-serialisable can be turned
    /// into one with [`crate::to_value`]). Variables are validated
    /// against the input schema and its defaults applied first.
    ///
    /// Templates in the fast path's subset render without minijinja's VM
    /// (same output and errors; see [`crate::fast`]);
    /// [`Rendered::render_path`] says which engine served the render.
    pub fn render(&self, vars: &Value) -> Result<Rendered> {
        self.render_timed(vars, crate::fast::fast_render_enabled())
    }

    /// Render through minijinja only, bypassing the fast path (for A/B
    /// measurements and differential checks; the result is the same).
    pub fn render_minijinja(&self, vars: &Value) -> Result<Rendered> {
        self.render_timed(vars, false)
    }

    /// Whether every template of the selected body (or variant) fits the
    /// fast path's subset. A render may still fall back to minijinja for
    /// particular data (see [`Rendered::render_path`]).
    pub fn has_fast_path(&self) -> bool {
        match self.body() {
            Ok(CompiledBody::Text(t)) => t.fast.is_some(),
            Ok(CompiledBody::Chat(ms)) => ms.iter().all(|(_, _, t)| t.fast.is_some()),
            Err(_) => false,
        }
    }

    /// The selected body (or variant) as a portable render plan, for a
    /// binding that renders in its own language (see [`crate::plan`]):
    /// `None` unless every template of the body is in the portable subset
    /// and the prompt has no input schema (validation and defaults are the
    /// core's). Also `None` while the fast path is off, which is the valve
    /// for every render path outside minijinja.
    ///
    /// A render from the plan stands for [`Prompt::render`]: when telemetry
    /// is on ([`Prompt::telemetry_enabled`]) the binding reports it with
    /// [`Prompt::record_plan_render`].
    pub fn portable_plan(&self) -> Option<crate::plan::PortablePlan> {
        use crate::plan::{PLAN_FORMAT, PlanBody, PlanMessage, PortablePlan};
        if self.version.data.schema.is_some() {
            return None;
        }
        let portable = |t: &Tmpl| t.fast.as_ref()?.portable();
        let body = match self.body().ok()? {
            CompiledBody::Text(t) => PlanBody::Text {
                template: portable(t)?,
            },
            CompiledBody::Chat(ms) => PlanBody::Chat {
                messages: ms
                    .iter()
                    .map(|(role, name, t)| {
                        Some(PlanMessage {
                            role: role.clone(),
                            name: name.clone(),
                            template: portable(t)?,
                        })
                    })
                    .collect::<Option<_>>()?,
            },
        };
        let limits = self.env_owner.limits();
        Some(PortablePlan {
            format: PLAN_FORMAT,
            body,
            fuel_budget: crate::fast::plan_fuel_budget(limits.fuel),
            fuel_step: crate::fast::PLAN_STEP_UNITS,
            max_output_bytes: limits.max_output_bytes,
        })
    }

    /// A process-unique id of the selected body (version or variant),
    /// never reused: the same id always stands for the same templates and
    /// config (and, within one client, the same limits), so a binding can
    /// cache what it derives from them ([`portable_plan`](Self::portable_plan)'s
    /// renderer, the config) under it. Two prompts with different ids may
    /// still render alike.
    pub fn body_id(&self) -> u64 {
        match &self.variant {
            Some(v) => self.version.variants[v].body_id,
            None => self.version.body_id,
        }
    }

    /// Whether renders of this prompt are recorded as telemetry events.
    pub fn telemetry_enabled(&self) -> bool {
        self.telemetry.is_some()
    }

    /// Record a successful render done from [`Prompt::portable_plan`]
    /// outside the core, taking `elapsed`, as [`Prompt::render`] records
    /// its own (a no-op when telemetry is off). Failed renders are never
    /// reported this way: a plan renderer gives up and lets the core render
    /// (and record) instead.
    pub fn record_plan_render(&self, elapsed: std::time::Duration) {
        if let Some(t) = &self.telemetry {
            crate::route::client::record_render_ok(t, self, elapsed);
        }
    }

    fn body(&self) -> std::result::Result<&CompiledBody, &Error> {
        match &self.variant {
            Some(v) => self.version.variants[v].body.as_ref(),
            None => self.version.body.as_ref(),
        }
    }

    fn render_timed(&self, vars: &Value, allow_fast: bool) -> Result<Rendered> {
        match &self.telemetry {
            None => self.render_inner(vars, allow_fast),
            Some(t) => {
                let start = std::time::Instant::now();
                let r = self.render_inner(vars, allow_fast);
                crate::route::client::record_render(t, self, &r, start.elapsed());
                r
            }
        }
    }

    fn render_inner(&self, vars: &Value, allow_fast: bool) -> Result<Rendered> {
        let cv = &*self.version;
        let (body, config) = match &self.variant {
            Some(v) => {
                let cvar = &cv.variants[v];
                (&cvar.body, &cvar.config)
            }
            None => (&cv.body, &cv.config),
        };
        let body = body.as_ref().map_err(Clone::clone)?;
        let merged;
        let ctx = match &cv.data.schema {
            Some(schema) => match schema.validate(&cv.prompt, vars)? {
                Some(defaults) => {
                    merged = minijinja::value::merge_maps([defaults, vars.clone()]);
                    &merged
                }
                None => vars,
            },
            None => vars,
        };
        let env = self.env_owner.env();
        let limits = self.env_owner.limits();
        let _scope = LabelScope::enter(self.label_id);
        let (mut fast_parts, mut slow_parts) = (0usize, 0usize);
        let mut render_one = |tmpl: &Tmpl, part: &str| -> Result<String> {
            if allow_fast
                && let Some(f) = &tmpl.fast
                && let Some(out) = f.render(ctx, limits.fuel, limits.max_output_bytes)
            {
                fast_parts += 1;
                return Ok(out);
            }
            slow_parts += 1;
            let t = env
                .get_template(&tmpl.name)
                .map_err(|e| map_render_error(e, env, &cv.prompt, cv.data.version, part, limits))?;
            t.render(ctx.clone())
                .map_err(|e| map_render_error(e, env, &cv.prompt, cv.data.version, part, limits))
        };
        let limit_err = || Error::OutputLimit {
            prompt: cv.prompt.clone(),
            limit: limits.max_output_bytes,
        };
        let (text, messages) = match body {
            CompiledBody::Text(t) => {
                let out = render_one(t, "template")?;
                if out.len() > limits.max_output_bytes {
                    return Err(limit_err());
                }
                (Some(out), None)
            }
            CompiledBody::Chat(msgs) => {
                let mut total = 0usize;
                let mut out = Vec::with_capacity(msgs.len());
                for (i, (role, name, t)) in msgs.iter().enumerate() {
                    let content = render_one(t, &format!("messages[{i}]"))?;
                    total += content.len();
                    if total > limits.max_output_bytes {
                        return Err(limit_err());
                    }
                    out.push(Message {
                        role: role.clone(),
                        content,
                        name: name.clone(),
                    });
                }
                (None, Some(out))
            }
        };
        let render_path = match (fast_parts, slow_parts) {
            (_, 0) => RenderPath::Fast,
            (0, _) => RenderPath::Minijinja,
            _ => RenderPath::Mixed,
        };
        Ok(Rendered {
            text,
            messages,
            config: config.clone(),
            prompt: PromptRef::new(cv.prompt.clone(), Some(cv.data.version)),
            label: self.label.as_deref().map(String::from),
            variant: self.variant.clone(),
            source: self.source,
            pricing: self.pricing.clone(),
            tokens: OnceLock::new(),
            render_path,
        })
    }

    /// Render with variables from anything serde can serialise.
    pub fn render_serialize<S: Serialize>(&self, vars: &S) -> Result<Rendered> {
        self.render(&crate::to_value(vars))
    }
}

/// The result of rendering: text or messages, the model config, and (on
/// demand, computed once) the input token count and estimated cost.
#[derive(Clone)]
pub struct Rendered {
    pub text: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub config: Arc<ModelConfig>,
    pub prompt: PromptRef,
    pub label: Option<String>,
    pub variant: Option<String>,
    pub source: Source,
    pricing: Arc<PricingTable>,
    tokens: OnceLock<TokenCount>,
    render_path: RenderPath,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("prompt", &self.prompt)
            .field("text", &self.text)
            .field("messages", &self.messages)
            .field("config", &self.config)
            .finish()
    }
}

impl Rendered {
    /// Which engine rendered this: the fast path, minijinja, or (chat
    /// prompts) some messages on each.
    pub fn render_path(&self) -> RenderPath {
        self.render_path
    }

    /// The model tokens are counted and priced for: the config's model.
    pub fn model(&self) -> Option<&str> {
        self.config.model.as_deref()
    }

    /// Input tokens of the rendered text or messages for the config's model
    /// (exact for OpenAI models; a flagged estimate otherwise, and when the
    /// config names no model: `o200k_base`, not exact).
    pub fn input_tokens(&self) -> TokenCount {
        *self.tokens.get_or_init(|| {
            tokens::count_input(self.text.as_deref(), self.messages.as_deref(), self.model())
        })
    }

    /// Estimated cost in USD of sending the input (output not included: it
    /// is unknown before the call). `None` when the model is not priced.
    pub fn estimated_cost_usd(&self) -> Option<f64> {
        let model = self.model()?;
        let price = self.pricing.get(model)?;
        Some(price.cost(self.input_tokens().count as u64, 0, 0))
    }

    /// The rendered text, or the messages joined as `role: content` lines.
    pub fn as_text(&self) -> String {
        match (&self.text, &self.messages) {
            (Some(t), _) => t.clone(),
            (None, Some(ms)) => ms
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}
