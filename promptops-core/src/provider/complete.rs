//! `Client::complete`: render, route, call, fail over, record.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use minijinja::Value;
use serde::Serialize;

use super::CallOptions;
use super::http::{CallError, CallRequest, CallResult, call};
use crate::client::{Client, GetOptions};
use crate::error::{Error, Result};
use crate::prompt::{Prompt, Rendered};
use crate::route::client::{CallDetail, messages_of};
use crate::route::{Decision, Outcome, RouteOptions, Target};
use crate::tokens;

/// A callback for streamed text deltas.
pub type ChunkFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Options of [`Client::complete_with`].
#[derive(Clone, Default)]
pub struct CompleteOptions {
    pub route: RouteOptions,
    /// Per-call settings (default: the client's `call_options`).
    pub call: Option<CallOptions>,
    /// Called with each streamed text delta (streaming calls only).
    pub on_chunk: Option<ChunkFn>,
}

impl std::fmt::Debug for CompleteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompleteOptions")
            .field("route", &self.route)
            .field("call", &self.call)
            .field("on_chunk", &self.on_chunk.is_some())
            .finish()
    }
}

impl CompleteOptions {
    pub fn key(key: impl Into<String>) -> Self {
        CompleteOptions {
            route: RouteOptions::key(key),
            ..Default::default()
        }
    }

    pub fn call(mut self, call: CallOptions) -> Self {
        self.call = Some(call);
        self
    }

    pub fn on_chunk(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.on_chunk = Some(Arc::new(f));
        self
    }
}

/// Token usage of a call: as the provider reported it, or counted here
/// (`reported == false`) when it did not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reported: bool,
}

/// One attempt of a `complete`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub target: String,
    pub provider: String,
    pub model: String,
    pub ok: bool,
    /// Not called: its circuit was open.
    pub skipped: bool,
    pub error_type: Option<String>,
    pub status: Option<u16>,
    pub message: Option<String>,
    pub retry_after_ms: Option<u64>,
    pub latency_ms: f64,
}

/// The result of [`Client::complete`].
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    /// From the usage and the price table (`None` for an unpriced model).
    pub cost_usd: Option<f64>,
    /// Of the successful attempt.
    pub latency_ms: f64,
    /// Streams only.
    pub ttft_ms: Option<f64>,
    pub finish_reason: Option<String>,
    /// The model the provider says answered.
    pub response_model: Option<String>,
    /// The target that answered.
    pub target: Target,
    /// The prompt that was sent (differs from the one asked for after a
    /// `fallback_prompt`), its version and variant.
    pub prompt: String,
    pub version: u32,
    pub variant: Option<String>,
    /// The routing decision (of the prompt that answered).
    pub decision: Decision,
    /// Every attempt, in order, including those of fallback prompts.
    pub attempts: Vec<Attempt>,
}

/// Most `fallback_prompt` hops one `complete` follows (cycles are rejected
/// at load; this bounds chains).
const MAX_PROMPT_HOPS: usize = 8;

impl Client {
    /// Render `name` under the default label, route it for caller `key`,
    /// call the chosen provider and fail over on connection errors,
    /// timeouts, 429 and 5xx (per the policy's `failover.on`).
    pub async fn complete(
        &self,
        name: &str,
        vars: &Value,
        key: Option<&str>,
    ) -> Result<Completion> {
        let opts = CompleteOptions {
            route: RouteOptions {
                key: key.map(String::from),
                ..Default::default()
            },
            ..Default::default()
        };
        self.complete_with(name, vars, &opts).await
    }

    /// [`complete`](Self::complete) with options (label, key, streaming,
    /// timeouts, a chunk callback).
    pub async fn complete_with(
        &self,
        name: &str,
        vars: &Value,
        opts: &CompleteOptions,
    ) -> Result<Completion> {
        let mut attempts = Vec::new();
        let base = self.get_with(
            name,
            &GetOptions {
                label: opts.route.label.clone(),
                ..Default::default()
            },
        )?;
        self.complete_prompt(base, vars, opts, 0, &mut attempts)
            .await
    }

    fn complete_prompt<'a>(
        &'a self,
        base: Prompt,
        vars: &'a Value,
        opts: &'a CompleteOptions,
        hop: usize,
        attempts: &'a mut Vec<Attempt>,
    ) -> Pin<Box<dyn Future<Output = Result<Completion>> + Send + 'a>> {
        Box::pin(async move {
            let routed = self.route_prompt(&base, vars, &opts.route)?;
            let decision = routed.decision;
            let policy = decision.policy.clone();
            let providers = &self.engine().providers;
            let call_opts = opts.call.as_ref().unwrap_or(&providers.defaults);
            let failover_on = call_opts
                .failover_on
                .as_ref()
                .unwrap_or(&policy.failover.on);
            let max_attempts = call_opts
                .max_attempts
                .or(policy.failover.max_attempts)
                .map(|m| m as usize)
                .unwrap_or(decision.order.len());
            let http = providers.http()?;
            let mut first = Some((routed.prompt, routed.rendered));
            let mut last_err: Option<Error> = None;
            for (n, &ti) in decision.order.iter().enumerate().take(max_attempts) {
                let t = &policy.targets[ti];
                let (prompt, rendered): (Prompt, Rendered) = match first.take() {
                    Some(pr) if n == 0 => pr,
                    _ => {
                        let p = self.prompt_for_target(&base, t, ti)?;
                        let r = p.render(vars)?;
                        (p, r)
                    }
                };
                let mut d = decision.clone();
                d.target = ti;
                d.version = Some(prompt.version());
                d.variant = prompt.variant_name().map(String::from);
                if n > 0 && !self.router().try_acquire(t) {
                    attempts.push(Attempt {
                        target: t.id.clone(),
                        provider: t.provider.clone(),
                        model: t.model.clone(),
                        ok: false,
                        skipped: true,
                        error_type: Some("circuit_open".into()),
                        status: None,
                        message: Some("circuit open: not called".into()),
                        retry_after_ms: None,
                        latency_ms: 0.0,
                    });
                    continue;
                }
                let Some(ep) = providers.endpoint(&t.provider) else {
                    let msg = format!(
                        "no endpoint for provider `{}` (configure one with ClientBuilder::provider)",
                        t.provider
                    );
                    attempts.push(Attempt {
                        target: t.id.clone(),
                        provider: t.provider.clone(),
                        model: t.model.clone(),
                        ok: false,
                        skipped: false,
                        error_type: Some("unsupported_provider".into()),
                        status: None,
                        message: Some(msg.clone()),
                        retry_after_ms: None,
                        latency_ms: 0.0,
                    });
                    last_err = Some(Error::Provider {
                        provider: t.provider.clone(),
                        model: t.model.clone(),
                        error_type: "unsupported_provider".into(),
                        status: None,
                        message: msg,
                        attempts: attempts.len() as u32,
                    });
                    continue;
                };
                let messages = messages_of(&rendered);
                let req = CallRequest {
                    model: &t.model,
                    messages: &messages,
                    config: &rendered.config,
                    stream: call_opts.stream,
                };
                let started = Instant::now();
                let res = call(&http, ep, &req, call_opts, opts.on_chunk.as_deref()).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                match res {
                    Ok(cr) => {
                        let usage = usage_of(&cr, &rendered, &t.model);
                        let cost = self.effective_pricing().get(&t.model).map(|p| {
                            p.cost(
                                usage.input_tokens,
                                usage.output_tokens,
                                usage.cached_input_tokens,
                            )
                        });
                        let ttft_ms = if call_opts.stream {
                            cr.ttft.map(|d| d.as_secs_f64() * 1000.0)
                        } else {
                            None
                        };
                        let outcome = Outcome {
                            latency_ms: Some(latency_ms),
                            ttft_ms,
                            input_tokens: Some(usage.input_tokens),
                            output_tokens: Some(usage.output_tokens),
                            cost_usd: cost,
                            ..Default::default()
                        };
                        self.record_attempt(
                            &d,
                            ti,
                            &outcome,
                            Some(attempts.len() as u32 + 1),
                            CallDetail {
                                error: None,
                                stream: Some(call_opts.stream),
                                response_model: cr.response_model.as_deref(),
                            },
                        );
                        attempts.push(Attempt {
                            target: t.id.clone(),
                            provider: t.provider.clone(),
                            model: t.model.clone(),
                            ok: true,
                            skipped: false,
                            error_type: None,
                            status: None,
                            message: None,
                            retry_after_ms: None,
                            latency_ms,
                        });
                        return Ok(Completion {
                            text: cr.text,
                            usage,
                            cost_usd: cost,
                            latency_ms,
                            ttft_ms,
                            finish_reason: cr.finish_reason,
                            response_model: cr.response_model,
                            target: t.clone(),
                            prompt: prompt.name().to_string(),
                            version: prompt.version(),
                            variant: prompt.variant_name().map(String::from),
                            decision: d,
                            attempts: std::mem::take(attempts),
                        });
                    }
                    Err(ce) => {
                        let outcome = Outcome {
                            error: Some(ce.class),
                            status: ce.status,
                            retry_after_ms: ce.retry_after_ms,
                            latency_ms: Some(latency_ms),
                            ..Default::default()
                        };
                        self.record_attempt(
                            &d,
                            ti,
                            &outcome,
                            Some(attempts.len() as u32 + 1),
                            CallDetail {
                                error: Some((ce.error_type, &ce.message)),
                                stream: Some(call_opts.stream),
                                response_model: None,
                            },
                        );
                        attempts.push(attempt_failed(t, &ce, latency_ms));
                        let err = provider_error(t, &ce, attempts.len() as u32);
                        if ce.after_first_token {
                            // Tokens reached the caller: surface, never retry.
                            return Err(err);
                        }
                        if !failover_on.contains(&ce.class) {
                            return Err(err);
                        }
                        last_err = Some(err);
                    }
                }
            }
            // Every target failed (or was skipped).
            if let Some(fp) = &policy.fallback_prompt
                && hop < MAX_PROMPT_HOPS
            {
                let fb = self.get_with(
                    fp,
                    &GetOptions {
                        label: opts.route.label.clone(),
                        ..Default::default()
                    },
                )?;
                return self
                    .complete_prompt(fb, vars, opts, hop + 1, attempts)
                    .await;
            }
            Err(match last_err {
                Some(Error::Provider {
                    provider,
                    model,
                    error_type,
                    status,
                    message,
                    ..
                }) => Error::Provider {
                    provider,
                    model,
                    error_type,
                    status,
                    message,
                    attempts: attempts.len() as u32,
                },
                Some(e) => e,
                None => Error::NoRoute {
                    prompt: base.name().to_string(),
                    message: "every target's circuit is open".into(),
                },
            })
        })
    }
}

fn usage_of(cr: &CallResult, rendered: &Rendered, model: &str) -> Usage {
    match (cr.input_tokens, cr.output_tokens) {
        (Some(i), Some(o)) => Usage {
            input_tokens: i,
            output_tokens: o,
            cached_input_tokens: cr.cached_input_tokens.unwrap_or(0),
            reported: true,
        },
        (i, o) => Usage {
            input_tokens: i.unwrap_or_else(|| {
                tokens::count_input(
                    rendered.text.as_deref(),
                    rendered.messages.as_deref(),
                    Some(model),
                )
                .count as u64
            }),
            output_tokens: o.unwrap_or_else(|| tokens::count_text(&cr.text, model).count as u64),
            cached_input_tokens: cr.cached_input_tokens.unwrap_or(0),
            reported: false,
        },
    }
}

fn attempt_failed(t: &Target, ce: &CallError, latency_ms: f64) -> Attempt {
    Attempt {
        target: t.id.clone(),
        provider: t.provider.clone(),
        model: t.model.clone(),
        ok: false,
        skipped: false,
        error_type: Some(ce.error_type.to_string()),
        status: ce.status,
        message: Some(ce.message.clone()),
        retry_after_ms: ce.retry_after_ms,
        latency_ms,
    }
}

fn provider_error(t: &Target, ce: &CallError, attempts: u32) -> Error {
    Error::Provider {
        provider: t.provider.clone(),
        model: t.model.clone(),
        error_type: ce.error_type.to_string(),
        status: ce.status,
        message: ce.message.clone(),
        attempts,
    }
}
