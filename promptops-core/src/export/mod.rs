//! Telemetry export (feature `export`, implied by `sync`, `providers` and
//! `otlp`): the batch [`Uploader`] to the registry (`POST /v1/telemetry`),
//! the OTLP/HTTP JSON exporter ([`otlp`], feature `otlp`), and the
//! background [`Exporter`] a [`Client`](crate::Client) runs them on.
//!
//! Nothing here runs on the caller's thread: recording stays a bounded,
//! non-blocking queue push. The exporter thread drains the queue every
//! interval, masks events (the client installs [`BasicPiiMasker`] when
//! telemetry leaves the process and no masker was given), uploads and
//! exports, and does a last round on `close`.
//!
//! [`BasicPiiMasker`]: crate::telemetry::BasicPiiMasker

#[cfg(feature = "otlp")]
pub mod otlp;
mod upload;

use std::sync::Arc;
use std::time::Duration;

pub use upload::Uploader;

use crate::error::{Error, Result};
use crate::telemetry::Telemetry;

/// A secret string (API key, header value). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself (only for putting it in a request header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Install rustls' `ring` provider (once per process; a provider installed
/// by someone else is kept) and build a reqwest client.
pub(crate) fn build_http(
    connect_timeout: Duration,
) -> std::result::Result<reqwest::Client, String> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| e.to_string())
}

/// How a client exports telemetry in the background.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Upload batches to the client's `server` (default true; needs
    /// telemetry on and a server).
    pub upload: bool,
    /// Upload here instead of the client's `server` (a telemetry gateway;
    /// `/v1/telemetry` is appended). Also turns uploading on for a client
    /// without a server.
    pub upload_url: Option<String>,
    /// Time between export rounds (default 10 s).
    pub interval: Duration,
    /// Events per upload request (default 1000).
    pub max_batch: usize,
    /// Longest `close` waits for the last round (default 5 s).
    pub flush_timeout: Duration,
    /// OTLP/HTTP JSON export (feature `otlp`).
    #[cfg(feature = "otlp")]
    pub otlp: Option<otlp::OtlpConfig>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            upload: true,
            upload_url: None,
            interval: Duration::from_secs(10),
            max_batch: 1000,
            flush_timeout: Duration::from_secs(5),
            #[cfg(feature = "otlp")]
            otlp: None,
        }
    }
}

/// Check an endpoint URL given in the options: `http://` or `https://`,
/// with a host, without credentials (they would end up in logs: send them
/// as headers). `what` names the option in the error.
pub(crate) fn check_endpoint(what: &str, url: &str) -> Result<()> {
    let bad = |why: String| Err(Error::Config(format!("{what}: {why}")));
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return bad(format!("`{url}` is not a valid URL ({e})")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return bad(format!("`{url}` must start with http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return bad(format!("`{url}` has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad("the URL must not carry credentials (send them in a header)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return bad(format!(
            "`{url}` must not have a query or fragment (paths are appended to it)"
        ));
    }
    Ok(())
}

impl ExportOptions {
    /// Check the options (`build` does): URLs, a non-zero interval, batch
    /// size and flush timeout, and the OTLP settings. Errors are
    /// [`Error::Config`] naming the option.
    pub fn check(&self) -> Result<()> {
        if let Some(u) = &self.upload_url {
            check_endpoint("telemetry upload_url", u)?;
        }
        if self.interval.is_zero() {
            return Err(Error::Config(
                "telemetry export interval must be greater than 0".into(),
            ));
        }
        if self.max_batch == 0 {
            return Err(Error::Config(
                "telemetry export max_batch must be at least 1".into(),
            ));
        }
        if self.flush_timeout.is_zero() {
            return Err(Error::Config(
                "telemetry export flush_timeout must be greater than 0".into(),
            ));
        }
        #[cfg(feature = "otlp")]
        if let Some(o) = &self.otlp {
            o.check()?;
        }
        Ok(())
    }

    /// Whether anything would leave the process with a server configured
    /// (`has_server`).
    pub(crate) fn active(&self, has_server: bool) -> bool {
        #[cfg(feature = "otlp")]
        if self.otlp.is_some() {
            return true;
        }
        self.upload && (has_server || self.upload_url.is_some())
    }
}

enum Cmd {
    Flush(std::sync::mpsc::SyncSender<()>),
    Stop,
}

/// The background exporter of one client: a thread with a one-thread tokio
/// runtime that uploads and exports every interval, on demand
/// ([`flush`](Self::flush)) and one last time on [`close`](Self::close).
pub struct Exporter {
    tx: tokio::sync::mpsc::UnboundedSender<Cmd>,
    done: std::sync::mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
    flush_timeout: Duration,
    closed: bool,
    /// The process that started the thread (a forked child has none).
    pid: u32,
    #[cfg(feature = "otlp")]
    otlp: Option<Arc<otlp::OtlpExporter>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("closed", &self.closed)
            .finish()
    }
}

impl Exporter {
    /// Start exporting `tel`: batches to `registry` (with `api_key`) when
    /// `opts.upload`, OTLP when configured.
    pub fn start(
        tel: Arc<Telemetry>,
        registry: Option<&str>,
        api_key: Option<&str>,
        opts: &ExportOptions,
    ) -> Result<Exporter> {
        let uploader = match opts.upload_url.as_deref().or(registry) {
            Some(r) if opts.upload => Some(Uploader::new(r, api_key)?.max_batch(opts.max_batch)),
            _ => None,
        };
        #[cfg(feature = "otlp")]
        let otlp = match &opts.otlp {
            Some(cfg) => Some(Arc::new(otlp::OtlpExporter::new(cfg.clone(), &tel)?)),
            None => None,
        };
        #[cfg(feature = "otlp")]
        let otlp_handle = otlp.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let (done_tx, done) = std::sync::mpsc::sync_channel::<()>(1);
        let interval = opts.interval.max(Duration::from_millis(10));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the telemetry runtime: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("promptops-telemetry".into())
            .spawn(move || {
                rt.block_on(async move {
                    let round = || async {
                        if let Some(u) = &uploader
                            && let Err(e) = u.upload_once(&tel).await
                        {
                            tracing::warn!(target: "promptops::telemetry", "{e}");
                        }
                        #[cfg(feature = "otlp")]
                        if let Some(o) = &otlp
                            && let Err(e) = o.export_once(&tel).await
                        {
                            tracing::warn!(target: "promptops::telemetry", "{e}");
                        }
                        if uploader.is_none() {
                            // Nothing else drains the queue: keep the
                            // aggregates current.
                            tel.flush();
                        }
                    };
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(interval) => round().await,
                            cmd = rx.recv() => match cmd {
                                Some(Cmd::Flush(reply)) => {
                                    round().await;
                                    let _ = reply.try_send(());
                                }
                                Some(Cmd::Stop) | None => {
                                    round().await;
                                    break;
                                }
                            },
                        }
                    }
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| Error::Config(format!("cannot start the telemetry thread: {e}")))?;
        Ok(Exporter {
            tx,
            done,
            thread: Some(thread),
            flush_timeout: opts.flush_timeout,
            closed: false,
            pid: std::process::id(),
            #[cfg(feature = "otlp")]
            otlp: otlp_handle,
        })
    }

    /// The OTLP exporter's counters (`None` without OTLP export).
    #[cfg(feature = "otlp")]
    pub fn otlp_stats(&self) -> Option<otlp::OtlpStats> {
        self.otlp.as_ref().map(|o| o.stats())
    }

    /// Run an export round now and wait for it (at most `timeout`). Returns
    /// whether it finished in time. Blocks: call it from a plain thread, not
    /// from inside an async task.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (reply, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send(Cmd::Flush(reply)).is_err() {
            return false;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    /// Stop after a last round (waits at most the flush timeout; a round
    /// still running then finishes on its own thread). Idempotent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.tx.send(Cmd::Stop);
        match self.done.recv_timeout(self.flush_timeout) {
            Ok(()) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(_) => {
                tracing::warn!(target: "promptops::telemetry",
                    "telemetry export did not finish within {:?}; leaving it to finish in the background",
                    self.flush_timeout);
                self.thread.take();
            }
        }
    }

    /// Whether this exporter's thread belongs to another process (this is a
    /// child forked after the exporter started).
    pub fn is_inherited(&self) -> bool {
        self.pid != std::process::id()
    }

    /// After `fork()`: the parent's exporter thread does not exist in the
    /// child. Forget it without joining.
    pub fn abandon_after_fork(mut self) {
        self.closed = true;
        if let Some(t) = self.thread.take() {
            std::mem::forget(t);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(r: Result<()>) -> String {
        match r {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(check_endpoint("x", "http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("x", "https://collector.example/otlp/").is_ok());
        for (url, why) in [
            ("collector:4318", "must start with http:// or https://"),
            ("ftp://host", "must start with http:// or https://"),
            ("not a url", "not a valid URL"),
            ("http://user:pw@host", "must not carry credentials"),
            ("http://host/?a=1", "must not have a query"),
        ] {
            let m = config_error(check_endpoint("otlp endpoint", url));
            assert!(
                m.starts_with("otlp endpoint: ") && m.contains(why),
                "{url}: {m}"
            );
            assert!(!m.contains("pw"), "{m}");
        }
    }

    #[test]
    fn export_options_are_checked() {
        assert!(ExportOptions::default().check().is_ok());
        let bad = |o: ExportOptions| config_error(o.check());
        assert!(
            bad(ExportOptions {
                interval: Duration::ZERO,
                ..Default::default()
            })
            .contains("interval")
        );
        assert!(
            bad(ExportOptions {
                max_batch: 0,
                ..Default::default()
            })
            .contains("max_batch")
        );
        assert!(
            bad(ExportOptions {
                flush_timeout: Duration::ZERO,
                ..Default::default()
            })
            .contains("flush_timeout")
        );
        assert!(
            bad(ExportOptions {
                upload_url: Some("localhost:8700".into()),
                ..Default::default()
            })
            .contains("upload_url")
        );
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn otlp_config_is_checked() {
        use otlp::OtlpConfig;
        let ok = OtlpConfig::new("http://127.0.0.1:4318").header("x-api-key", "s3cret");
        assert!(ok.check().is_ok());
        let m = config_error(
            OtlpConfig::new("http://h")
                .header("bad header", "v")
                .check(),
        );
        assert!(m.contains("`bad header`"), "{m}");
        let m = config_error(
            OtlpConfig::new("http://h")
                .header("k", "line\nbreak-s3cret")
                .check(),
        );
        assert!(m.contains("`k`") && !m.contains("s3cret"), "{m}");
        let m = config_error(OtlpConfig::new("http://h").service_name(" ").check());
        assert!(m.contains("service_name"), "{m}");
        let mut c = OtlpConfig::new("http://h");
        c.max_spans = 0;
        assert!(config_error(c.check()).contains("max_spans"));
        let mut c = OtlpConfig::new("http://h");
        c.metrics = false;
        c.traces = false;
        assert!(config_error(c.check()).contains("exports nothing"));
    }
}
