//! The telemetry uploader: takes masked batches from a [`Telemetry`] and
//! `POST`s them as JSON to the registry's `/v1/telemetry`. A batch that
//! cannot be delivered is dropped and counted
//! (`promptops_telemetry_dropped_total{reason="upload_failed"}`): telemetry
//! never grows without bound and never blocks the app.

use std::sync::Arc;
use std::time::Duration;

use super::Secret;
use crate::error::{Error, Result};
use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct Uploader {
    url: String,
    api_key: Option<Secret>,
    http: reqwest::Client,
    timeout: Duration,
    max_batch: usize,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl Uploader {
    /// An uploader to `registry` (`http://host:8700`; the path
    /// `/v1/telemetry` is appended) with an optional API key (sent as
    /// `Authorization: Bearer …`).
    pub fn new(registry: &str, api_key: Option<&str>) -> Result<Uploader> {
        let http = super::build_http(Duration::from_secs(5)).map_err(Error::Config)?;
        Ok(Uploader {
            url: format!("{}/v1/telemetry", registry.trim_end_matches('/')),
            api_key: api_key.map(Secret::new),
            http,
            timeout: Duration::from_secs(10),
            max_batch: 1000,
        })
    }

    /// Events per request (default 1000).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Send what is pending, batch by batch. Returns the events delivered.
    /// On a failed request, that batch is counted as dropped and the error
    /// returned (the rest stays queued for the next run).
    pub async fn upload_once(&self, tel: &Telemetry) -> Result<usize> {
        let mut sent = 0;
        while let Some(batch) = tel.take_batch(self.max_batch) {
            let n = batch.events.len();
            let mut rb = self
                .http
                .post(&self.url)
                .timeout(self.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(batch.to_json());
            if let Some(k) = &self.api_key {
                rb = rb.bearer_auth(k.expose());
            }
            let res = rb.send().await;
            let err = match res {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Some(if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    "connection failed".to_string()
                } else {
                    "request failed".to_string()
                }),
            };
            if let Some(e) = err {
                tel.note_upload_failed(n);
                return Err(Error::RegistryUnavailable(format!(
                    "telemetry upload to {} failed ({e}); {n} events dropped",
                    self.url
                )));
            }
            sent += n;
        }
        Ok(sent)
    }

    /// Upload every `interval` on the current tokio runtime until the
    /// returned handle is aborted (or the telemetry is dropped elsewhere and
    /// only this task holds it).
    pub fn spawn(self, tel: Arc<Telemetry>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.upload_once(&tel).await {
                    tracing::warn!(target: "promptops", "{e}");
                }
                if Arc::strong_count(&tel) == 1 {
                    // Nobody records any more: final flush done above.
                    break;
                }
            }
        })
    }
}
