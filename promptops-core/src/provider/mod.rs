//! Provider HTTP adapters (feature `providers`): OpenAI Chat Completions
//! (and OpenAI-compatible servers through `base_url`) and Anthropic
//! Messages, streaming (SSE) and not, plus [`Client::complete`] — render,
//! route, call, fail over — and the telemetry [`Uploader`].
//!
//! API keys come from the [`Endpoint`] or, at call time, from the
//! environment (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`). They are held in a
//! [`Secret`], whose `Debug` prints `***`, and are never logged or put in
//! errors.
//!
//! [`Client::complete`]: crate::Client::complete

mod complete;
mod http;
pub mod sse;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use crate::export::build_http;
pub use crate::export::{Secret, Uploader};
pub use complete::{Attempt, CompleteOptions, Completion, Usage};

use crate::client::ClientBuilder;
use crate::error::{Error, Result};
use crate::route::FailureClass;

/// The wire protocol an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `POST {base_url}/chat/completions`.
    OpenAi,
    /// `POST {base_url}/messages`.
    Anthropic,
}

/// Where a provider name (the `provider` of a policy target) is served.
#[derive(Clone)]
pub struct Endpoint {
    pub name: String,
    pub protocol: Protocol,
    /// Base URL including the API version path (`https://api.openai.com/v1`).
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// The environment variable read for the key when `api_key` is unset.
    pub api_key_env: Option<String>,
    /// Extra request headers (values are treated as secrets in `Debug`).
    pub headers: Vec<(String, Secret)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_key_env", &self.api_key_env)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Endpoint {
    /// OpenAI (`openai`), key from `OPENAI_API_KEY`.
    pub fn openai() -> Self {
        Endpoint {
            name: "openai".into(),
            protocol: Protocol::OpenAi,
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            api_key_env: Some("OPENAI_API_KEY".into()),
            headers: Vec::new(),
        }
    }

    /// Anthropic (`anthropic`), key from `ANTHROPIC_API_KEY`.
    pub fn anthropic() -> Self {
        Endpoint {
            name: "anthropic".into(),
            protocol: Protocol::Anthropic,
            base_url: "https://api.anthropic.com/v1".into(),
            api_key: None,
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            headers: Vec::new(),
        }
    }

    /// An OpenAI-compatible server (vLLM, Ollama, a gateway) under `name`.
    pub fn openai_compatible(name: impl Into<String>, base_url: impl Into<String>) -> Self {
        Endpoint {
            name: name.into(),
            protocol: Protocol::OpenAi,
            base_url: base_url.into(),
            api_key: None,
            api_key_env: None,
            headers: Vec::new(),
        }
    }

    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key));
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), Secret::new(value)));
        self
    }

    pub(crate) fn key(&self) -> Option<Secret> {
        self.api_key.clone().or_else(|| {
            self.api_key_env
                .as_ref()
                .and_then(|v| std::env::var(v).ok())
                .filter(|k| !k.is_empty())
                .map(Secret)
        })
    }
}

/// Per-call settings (client defaults, overridable per `complete`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// Stream the response (SSE). Needed for time-to-first-token.
    pub stream: bool,
    /// Longest a whole attempt may take (default 60 s).
    pub total_timeout: Duration,
    /// Streams only: longest wait for the first token (default 20 s).
    pub ttft_timeout: Duration,
    /// Longest a TCP/TLS connect may take (default 5 s; set on the shared
    /// HTTP client, so only the client default counts).
    pub connect_timeout: Duration,
    /// Failure classes failed over on (default: the policy's `failover.on`).
    pub failover_on: Option<BTreeSet<FailureClass>>,
    /// Most attempts (default: the policy's `failover.max_attempts`, else
    /// every target).
    pub max_attempts: Option<u32>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            stream: false,
            total_timeout: Duration::from_secs(60),
            ttft_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
            failover_on: None,
            max_attempts: None,
        }
    }
}

/// Provider settings of a client.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    /// Endpoints by provider name (`openai` and `anthropic` are there by
    /// default; these add or replace).
    pub endpoints: Vec<Endpoint>,
    pub defaults: CallOptions,
}

/// The client's endpoints and its shared HTTP client (built on first use,
/// and again in a child process after `fork()`: the parent's pooled
/// connections and their tasks are not the child's to use).
#[derive(Debug)]
pub(crate) struct Providers {
    endpoints: BTreeMap<String, Arc<Endpoint>>,
    pub(crate) defaults: CallOptions,
    /// The HTTP client and the id of the process that built it.
    http: Mutex<Option<(u32, reqwest::Client)>>,
}

impl Providers {
    pub(crate) fn new(cfg: ProvidersConfig) -> Providers {
        let mut endpoints = BTreeMap::new();
        for e in [Endpoint::openai(), Endpoint::anthropic()]
            .into_iter()
            .chain(cfg.endpoints)
        {
            endpoints.insert(e.name.clone(), Arc::new(e));
        }
        Providers {
            endpoints,
            defaults: cfg.defaults,
            http: Mutex::new(None),
        }
    }

    pub(crate) fn endpoint(&self, name: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(name)
    }

    pub(crate) fn http(&self) -> Result<reqwest::Client> {
        let pid = std::process::id();
        let mut slot = self.http.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some((built_by, c)) if *built_by == pid => Ok(c.clone()),
            _ => {
                let c = build_http(self.defaults.connect_timeout)
                    .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
                if let Some(old) = slot.replace((pid, c.clone())) {
                    // The parent's client (after fork): its connection tasks
                    // do not exist here, so dropping it could wait on them.
                    std::mem::forget(old);
                }
                Ok(c)
            }
        }
    }
}

impl ClientBuilder {
    /// Add or replace a provider endpoint (e.g. an OpenAI-compatible server,
    /// or `Endpoint::openai().base_url(…)` for a proxy).
    pub fn provider(mut self, endpoint: Endpoint) -> Self {
        self.engine.providers.endpoints.push(endpoint);
        self
    }

    /// Default per-call settings of `complete`.
    pub fn call_options(mut self, opts: CallOptions) -> Self {
        self.engine.providers.defaults = opts;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let e = Endpoint::openai()
            .api_key("sk-very-secret")
            .header("x-org", "org-secret");
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(!dbg.contains("org-secret"), "{dbg}");
        assert!(dbg.contains("x-org"));
        assert_eq!(format!("{}", Secret::new("k")), "***");
    }
}
