//! Routing through the [`Client`]: `route` (decision + rendered messages,
//! for callers with their own HTTP client) and `record` (feed outcomes back).

use std::sync::Arc;

use minijinja::Value;

use crate::client::{Client, ClientBuilder, GetOptions};
use crate::error::{Error, Result};
use crate::model::Message;
use crate::pricing::PricingTable;
use crate::prompt::{EnvOwner, Prompt, Rendered};
use crate::telemetry::{Event, EventKind, Telemetry, TelemetryConfig};
use crate::tokens;

use super::policy::{Policy, Target};
use super::router::{Decision, Estimate, Outcome, RouteInput, Router, RouterConfig};

/// Routing, telemetry (and, with `providers`, HTTP) settings of a client.
#[derive(Debug, Default)]
pub struct EngineConfig {
    pub router: Option<RouterConfig>,
    pub telemetry: Option<TelemetryConfig>,
    #[cfg(feature = "providers")]
    pub providers: crate::provider::ProvidersConfig,
}

/// The routing state a client owns.
#[derive(Debug)]
pub struct Engine {
    pub router: Router,
    pub telemetry: Option<Arc<Telemetry>>,
    #[cfg(feature = "providers")]
    pub(crate) providers: crate::provider::Providers,
}

impl Engine {
    pub(crate) fn new(cfg: EngineConfig, project: Option<&str>) -> Engine {
        let telemetry = cfg.telemetry.map(|mut t| {
            if t.project.is_none() {
                t.project = project.map(String::from);
            }
            Arc::new(Telemetry::new(t))
        });
        Engine {
            router: Router::new(cfg.router.unwrap_or_default()),
            telemetry,
            #[cfg(feature = "providers")]
            providers: crate::provider::Providers::new(cfg.providers),
        }
    }
}

impl ClientBuilder {
    /// Router settings: clock, seed, EWMA factor, breaker.
    pub fn router(mut self, cfg: RouterConfig) -> Self {
        self.engine.router = Some(cfg);
        self
    }

    /// Turn telemetry on (renders, decisions and calls are recorded).
    pub fn telemetry(mut self, cfg: TelemetryConfig) -> Self {
        self.engine.telemetry = Some(cfg);
        self
    }
}

/// Options of [`Client::route_with`] (and `complete_with`).
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// The sticky key (user id, session id, …).
    pub key: Option<String>,
    /// The label to look the prompt up under (default: the client's).
    pub label: Option<String>,
    /// Caller attributes attached to telemetry events (masked on export).
    pub attributes: Vec<(String, String)>,
}

impl RouteOptions {
    pub fn key(key: impl Into<String>) -> Self {
        RouteOptions {
            key: Some(key.into()),
            ..Default::default()
        }
    }
}

/// A routing decision with the prompt rendered for the chosen target.
#[derive(Debug, Clone)]
pub struct Routed {
    pub decision: Decision,
    /// The prompt as rendered (pinned version / variant of the target).
    pub prompt: Prompt,
    pub rendered: Rendered,
}

impl Routed {
    pub fn target(&self) -> &Target {
        self.decision.target()
    }

    /// The rendered messages (a text prompt becomes one `user` message).
    pub fn messages(&self) -> Vec<Message> {
        messages_of(&self.rendered)
    }
}

/// A routing decision made before rendering ([`Client::route_decide`]):
/// the decision and the prompt to render for its target.
#[derive(Debug, Clone)]
pub struct RouteChoice {
    /// The decision, with the prompt, version, label and variant served.
    pub decision: Decision,
    /// The prompt the chosen target renders (its pinned version / variant).
    pub prompt: Prompt,
    /// The caller's attributes for the decision event (empty without
    /// telemetry).
    attributes: Vec<(Arc<str>, String)>,
    telemetry: Option<Arc<Telemetry>>,
}

impl RouteChoice {
    /// Render the target's prompt and complete the route: the render event
    /// and then the decision event are recorded, as
    /// [`Client::route_with`] records them. A failed render records no
    /// decision event.
    pub fn render(&self, vars: &Value) -> Result<Rendered> {
        let rendered = self.prompt.render(vars)?;
        self.record_decision();
        Ok(rendered)
    }

    /// The target's prompt was rendered from its portable plan outside the
    /// core, taking `elapsed`: record the render event and the decision
    /// event, as [`render`](Self::render) would have (no-op without
    /// telemetry).
    pub fn record_plan_render(&self, elapsed: std::time::Duration) {
        if self.telemetry.is_some() {
            self.prompt.record_plan_render(elapsed);
            self.record_decision();
        }
    }

    /// Whether completing the route records telemetry events.
    pub fn telemetry_enabled(&self) -> bool {
        self.telemetry.is_some()
    }

    /// The decision with the prompt rendered for it.
    pub fn into_routed(self, rendered: Rendered) -> Routed {
        Routed {
            decision: self.decision,
            prompt: self.prompt,
            rendered,
        }
    }

    fn record_decision(&self) {
        if let Some(t) = &self.telemetry {
            let mut ev = decision_event(&self.decision, EventKind::Decision);
            ev.attributes = self.attributes.clone();
            t.record(ev);
        }
    }
}

pub(crate) fn messages_of(r: &Rendered) -> Vec<Message> {
    match (&r.messages, &r.text) {
        (Some(m), _) => m.clone(),
        (None, Some(t)) => vec![Message {
            role: "user".into(),
            content: t.clone(),
            name: None,
        }],
        (None, None) => Vec::new(),
    }
}

impl Prompt {
    /// The model catalogue of the snapshot this prompt came from.
    pub(crate) fn catalogue(&self) -> Option<&crate::catalogue::Catalogue> {
        match &self.env_owner {
            EnvOwner::Snapshot(s) => Some(&s.catalogue),
            EnvOwner::Fallback(_) => None,
        }
    }

    /// The parsed routing policy stored with this prompt (`None` without
    /// one; `Some(Err)` when it is invalid — the load diagnostics say so too).
    pub fn route_policy(&self) -> Option<Result<Arc<Policy>>> {
        match &self.env_owner {
            EnvOwner::Snapshot(s) => s.prompts.get(self.name())?.route_policy.clone(),
            EnvOwner::Fallback(_) => None,
        }
    }
}

impl Client {
    pub(crate) fn router(&self) -> &Router {
        &self.engine().router
    }

    /// The routing stats and breakers of this client.
    pub fn routing(&self) -> &Router {
        self.router()
    }

    /// The telemetry recorder, when telemetry is on.
    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.engine().telemetry.as_ref()
    }

    /// The policy that routes `base`: its own (when it applies to the
    /// label), else a one-target policy from its config.
    pub(crate) fn policy_for(&self, base: &Prompt) -> Result<Arc<Policy>> {
        if let Some(p) = base.route_policy() {
            let p = p?;
            if p.applies_to(base.label()) {
                p.check_models(&base.pricing, Some(base.name()))?;
                return Ok(p);
            }
        }
        let cfg = base.config();
        let Some(model) = cfg.model.as_deref() else {
            return Err(Error::NoRoute {
                prompt: base.name().to_string(),
                message: "the prompt has no routing policy and its config names no model".into(),
            });
        };
        let (prefix, bare) = match model.split_once('/') {
            Some((p, m)) => (Some(p), m),
            None => (None, model),
        };
        let provider = cfg
            .provider
            .as_deref()
            .or(prefix)
            .map(String::from)
            .or_else(|| base.pricing.get(bare).map(|p| p.provider.clone()))
            .ok_or_else(|| Error::NoRoute {
                prompt: base.name().to_string(),
                message: format!("no provider for model `{model}`: set `provider` in the config"),
            })?;
        Ok(Arc::new(Policy::single(base.name(), &provider, bare)))
    }

    /// The prompt a target renders: its pinned version, its variant (or the
    /// variant meant for its model).
    pub(crate) fn prompt_for_target(&self, base: &Prompt, t: &Target, ti: usize) -> Result<Prompt> {
        let p = match t.version {
            Some(v) if v != base.version() => {
                self.get_with(base.name(), &GetOptions::version(v))?
            }
            _ => base.clone(),
        };
        match &t.variant {
            Some(var) => p.variant(var).map_err(|e| Error::Policy {
                prompt: Some(base.name().to_string()),
                field: format!("targets[{ti}].variant"),
                message: e.to_string(),
            }),
            None => Ok(p.for_model(&t.model)),
        }
    }

    fn estimate(
        pricing: &PricingTable,
        policy: &Policy,
        t: &Target,
        r: &Rendered,
    ) -> Option<Estimate> {
        let price = pricing.get(&t.model)?;
        let count = tokens::count_input(r.text.as_deref(), r.messages.as_deref(), Some(&t.model));
        let input = count.count as u64;
        let output = policy
            .expected_output_tokens
            .or(r.config.max_tokens)
            .unwrap_or(0) as u64;
        let fits = price.context_window.is_none_or(|w| input + output <= w);
        Some(Estimate {
            input_tokens: input,
            exact: count.exact,
            output_tokens: output,
            predicted_cost_usd: price.cost(input, output, 0),
            context_window: price.context_window,
            fits,
        })
    }

    /// Route `name` for caller `key` under the default label: the decision
    /// and the prompt rendered for the chosen target. For callers that make
    /// the provider call themselves; feed the outcome back with
    /// [`record`](Self::record).
    pub fn route(&self, name: &str, vars: &Value, key: Option<&str>) -> Result<Routed> {
        self.route_with(
            name,
            vars,
            &RouteOptions {
                key: key.map(String::from),
                ..Default::default()
            },
        )
    }

    /// [`route`](Self::route) with a label and attributes.
    pub fn route_with(&self, name: &str, vars: &Value, opts: &RouteOptions) -> Result<Routed> {
        let base = self.get_with(
            name,
            &GetOptions {
                label: opts.label.clone(),
                ..Default::default()
            },
        )?;
        self.route_prompt(&base, vars, opts)
    }

    /// Decide how `name` is routed without rendering it: the decision and
    /// the prompt its target renders (pinned version / variant), for a
    /// binding that renders from the prompt's portable plan itself
    /// ([`Prompt::portable_plan`]) or renders later with
    /// [`RouteChoice::render`]. `None` when the policy's strategy
    /// (`cheapest`, `best_quality`) needs the prompt rendered for every
    /// target to decide: use [`route_with`](Self::route_with) then.
    ///
    /// Deciding has the router's side effects of [`route_with`]
    /// (the keyless generator, half-open probes); the decision event is
    /// recorded when the route completes ([`RouteChoice::render`],
    /// [`RouteChoice::record_plan_render`]), after the render, as
    /// `route_with` records it.
    pub fn route_decide(&self, name: &str, opts: &RouteOptions) -> Result<Option<RouteChoice>> {
        let base = self.get_with(
            name,
            &GetOptions {
                label: opts.label.clone(),
                ..Default::default()
            },
        )?;
        let policy = self.policy_for(&base)?;
        if policy.strategy.needs_estimates() {
            return Ok(None);
        }
        self.choose(&base, policy, opts).map(Some)
    }

    /// Targets the model catalogue rules out (disabled, unhealthy).
    fn unavailable(base: &Prompt, policy: &Policy) -> Option<Vec<Option<String>>> {
        base.catalogue().filter(|c| !c.is_empty()).map(|c| {
            policy
                .targets
                .iter()
                .map(|t| c.unavailable(&t.model))
                .collect()
        })
    }

    /// The decision of a strategy that needs no estimates, and the prompt
    /// its target renders.
    fn choose(
        &self,
        base: &Prompt,
        policy: Arc<Policy>,
        opts: &RouteOptions,
    ) -> Result<RouteChoice> {
        let unavailable = Self::unavailable(base, &policy);
        let mut decision = self.router().decide(
            &policy,
            &RouteInput {
                key: opts.key.as_deref(),
                estimates: None,
                unavailable: unavailable.as_deref(),
            },
        )?;
        let prompt = self.prompt_for_target(base, decision.target(), decision.target)?;
        Self::fill(&mut decision, base, &prompt);
        Ok(self.choice(decision, prompt, opts))
    }

    /// What the client fills in a decision: the prompt, version, label and
    /// variant served.
    fn fill(decision: &mut Decision, base: &Prompt, prompt: &Prompt) {
        decision.prompt = Some(base.name().to_string());
        decision.version = Some(prompt.version());
        decision.label = base.label().map(String::from);
        decision.variant = prompt.variant_name().map(String::from);
    }

    fn choice(&self, decision: Decision, prompt: Prompt, opts: &RouteOptions) -> RouteChoice {
        let telemetry = self.telemetry().cloned();
        let attributes = match telemetry {
            Some(_) => {
                crate::telemetry::attributes(opts.attributes.iter().map(|(k, v)| (k, v.clone())))
            }
            None => Vec::new(),
        };
        RouteChoice {
            decision,
            prompt,
            attributes,
            telemetry,
        }
    }

    pub(crate) fn route_prompt(
        &self,
        base: &Prompt,
        vars: &Value,
        opts: &RouteOptions,
    ) -> Result<Routed> {
        let policy = self.policy_for(base)?;
        if !policy.strategy.needs_estimates() {
            let choice = self.choose(base, policy, opts)?;
            let rendered = choice.render(vars)?;
            return Ok(choice.into_routed(rendered));
        }
        let unavailable = Self::unavailable(base, &policy);
        let mut renders: Vec<Option<(Prompt, Rendered)>> = Vec::with_capacity(policy.targets.len());
        let mut est = Vec::with_capacity(policy.targets.len());
        for (i, t) in policy.targets.iter().enumerate() {
            let p = self.prompt_for_target(base, t, i)?;
            let r = p.render(vars)?;
            est.push(Self::estimate(&base.pricing, &policy, t, &r));
            renders.push(Some((p, r)));
        }
        let mut decision = self.router().decide(
            &policy,
            &RouteInput {
                key: opts.key.as_deref(),
                estimates: Some(&est),
                unavailable: unavailable.as_deref(),
            },
        )?;
        let (prompt, rendered) = match renders.get_mut(decision.target).and_then(Option::take) {
            Some(pr) => pr,
            None => {
                let t = decision.target();
                let p = self.prompt_for_target(base, t, decision.target)?;
                let r = p.render(vars)?;
                (p, r)
            }
        };
        Self::fill(&mut decision, base, &prompt);
        let choice = self.choice(decision, prompt, opts);
        choice.record_decision();
        Ok(choice.into_routed(rendered))
    }

    /// Feed the outcome of a call made for `decision` (to its chosen target)
    /// into the stats, the breaker and telemetry. A missing `cost_usd` is
    /// computed from the token counts and the price table.
    pub fn record(&self, decision: &Decision, outcome: &Outcome) {
        self.record_target(decision, decision.target, outcome, None)
    }

    /// Like [`record`](Self::record) for any target of the decision's
    /// policy (a fallback the caller tried), with an attempt number.
    pub fn record_target(
        &self,
        decision: &Decision,
        target: usize,
        outcome: &Outcome,
        attempt: Option<u32>,
    ) {
        self.record_attempt(decision, target, outcome, attempt, CallDetail::default())
    }

    /// `record_target` with the error's finer type and message (telemetry
    /// only) and whether the call streamed.
    pub(crate) fn record_attempt(
        &self,
        decision: &Decision,
        target: usize,
        outcome: &Outcome,
        attempt: Option<u32>,
        detail: CallDetail<'_>,
    ) {
        let CallDetail {
            error,
            stream,
            response_model,
        } = detail;
        let Some(t) = decision.policy.targets.get(target) else {
            return;
        };
        let mut outcome_c;
        let mut outcome = outcome;
        if outcome.cost_usd.is_none()
            && outcome.is_success()
            && let (Some(i), Some(p)) = (
                outcome.input_tokens,
                self.effective_pricing().get(&t.model).cloned(),
            )
        {
            outcome_c = outcome.clone();
            outcome_c.cost_usd = Some(p.cost(i, outcome.output_tokens.unwrap_or(0), 0));
            outcome = &outcome_c;
        }
        self.router().record(t, outcome);
        if let Some(tel) = self.telemetry() {
            let mut ev = decision_event(decision, EventKind::Call);
            ev.provider = Some(Arc::from(t.provider.as_str()));
            ev.model = Some(Arc::from(t.model.as_str()));
            ev.target = Some(Arc::from(t.id.as_str()));
            ev.input_tokens = outcome.input_tokens;
            ev.output_tokens = outcome.output_tokens;
            ev.cost_usd = outcome.cost_usd;
            ev.latency_ms = outcome.latency_ms;
            ev.ttft_ms = outcome.ttft_ms;
            ev.error_type = match error {
                Some((et, _)) => Some(Arc::from(et)),
                None => outcome.error.map(|e| Arc::from(e.as_str())),
            };
            ev.error_message = error.map(|(_, m)| m.to_string());
            ev.attempt = attempt;
            ev.stream = stream;
            ev.response_model = response_model.map(Arc::from);
            tel.record(ev);
        }
    }

    /// Record a quality score in `[0, 1]` for the decision's target (used by
    /// `best_quality` and the adaptive `quality` reward).
    pub fn record_quality(&self, decision: &Decision, score: f64) {
        self.router().record_quality(decision.target(), score);
    }
}

/// What only telemetry records about an attempt: the error's finer type
/// and message, whether it streamed, the model the provider says answered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallDetail<'a> {
    pub error: Option<(&'a str, &'a str)>,
    pub stream: Option<bool>,
    pub response_model: Option<&'a str>,
}

pub(crate) fn decision_event(d: &Decision, kind: EventKind) -> Event {
    let t = d.target();
    let mut ev = Event::new(kind, d.prompt.as_deref().unwrap_or(&d.policy.id));
    ev.version = d.version;
    ev.label = d.label.as_deref().map(Arc::from);
    ev.variant = d.variant.as_deref().map(Arc::from);
    ev.provider = Some(Arc::from(t.provider.as_str()));
    ev.model = Some(Arc::from(t.model.as_str()));
    ev.target = Some(Arc::from(t.id.as_str()));
    ev.route_reason = Some(Arc::from(d.reason.as_str()));
    ev.strategy = Some(d.strategy.as_str());
    ev
}

/// Record a render event (called by `Prompt::render` when telemetry is on).
pub(crate) fn record_render(
    t: &Telemetry,
    p: &Prompt,
    r: &Result<Rendered>,
    elapsed: std::time::Duration,
) {
    let mut ev = render_event(p, elapsed);
    if let Err(e) = r {
        ev.error_type = Some(Arc::from(e.kind()));
    }
    t.record(ev);
}

/// A successful render done outside the core (from a portable plan; see
/// [`Prompt::record_plan_render`]): the same event as [`record_render`].
pub(crate) fn record_render_ok(t: &Telemetry, p: &Prompt, elapsed: std::time::Duration) {
    t.record(render_event(p, elapsed));
}

fn render_event(p: &Prompt, elapsed: std::time::Duration) -> Event {
    let mut ev = Event::new(EventKind::Render, p.name());
    ev.version = Some(p.version());
    ev.label = p.label().map(Arc::from);
    ev.variant = p.variant_name().map(Arc::from);
    if let Some(m) = p.config().model.as_deref() {
        ev.model = Some(Arc::from(m));
    }
    ev.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
    ev
}
