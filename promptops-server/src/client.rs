//! The HTTP client the CLI's registry commands use.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::Value;

pub struct ApiClient {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// Percent-encode a path segment (prompt names carry `/`).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error response of the registry, as the CLI prints it.
#[derive(Debug)]
pub struct RemoteError {
    pub status: u16,
    pub body: Value,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self
            .body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("ERROR");
        let msg = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        write!(f, "{} {code}: {msg}", self.status)?;
        if let Some(field) = self.body.get("field").and_then(Value::as_str) {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

impl ApiClient {
    pub fn new(server: &str, key: Option<String>) -> anyhow::Result<ApiClient> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient {
            base: server.trim_end_matches('/').to_string(),
            key,
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send()
            .await
            .with_context(|| format!("cannot reach the registry at {}", self.base))
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(RemoteError {
                status: status.as_u16(),
                body,
            }
            .into());
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("the registry sent invalid JSON")
    }

    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.send(Method::GET, path, None).await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            return Err(RemoteError {
                status: status.as_u16(),
                body,
            }
            .into());
        }
        Ok(text)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// The project to act on: the flag, else the key's own project.
    pub async fn project(&self, flag: Option<String>) -> anyhow::Result<String> {
        if let Some(p) = flag {
            return Ok(p);
        }
        let me = self.get("/v1/whoami").await?;
        match me.get("project").and_then(Value::as_str) {
            Some(p) => Ok(p.to_string()),
            None => bail!("this key is not scoped to one project; pass --project"),
        }
    }

    pub async fn snapshot(&self, project: &str) -> anyhow::Result<promptops_core::SnapshotData> {
        let text = self
            .text(&format!("/v1/projects/{}/snapshot", seg(project)))
            .await?;
        Ok(promptops_core::SnapshotData::from_json(text.as_bytes())?)
    }
}
