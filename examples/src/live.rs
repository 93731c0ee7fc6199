//! The live demo app: an application process that renders prompts served by
//! a running registry (`promptops serve --demo`), follows changes over SSE,
//! keeps a last-known-good copy on disk, and shows a publish and a rollback
//! reaching it in milliseconds. It plays the operator too: it publishes
//! through the registry's REST API with the admin key.
//!
//! PROMPTOPS_SERVER, PROMPTOPS_API_KEY (admin) and PROMPTOPS_SDK_KEY come from
//! the `promptops-demo.env` file `serve --demo` writes (scripts/demo.sh
//! passes them on).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use promptops_core::{Client, context};

fn env(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run scripts/demo.sh)").into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = env("PROMPTOPS_SERVER")?;
    let admin = env("PROMPTOPS_API_KEY")?;
    let sdk = env("PROMPTOPS_SDK_KEY")?;
    let cache = std::env::temp_dir().join("promptops-demo-cache");

    // The app: follows the `staging` label of project `demo`.
    let t = Instant::now();
    let client = Client::builder()
        .project("demo")
        .server(&server)
        .api_key(&sdk)
        .cache_dir(&cache)
        .default_label("staging")
        .startup_wait(Duration::from_secs(5))
        .build()?;
    let status = client.status();
    println!(
        "connected to {server} in {:?}: status {}",
        t.elapsed(),
        status.status.as_str()
    );
    let vars = context! { user_name => "Dana", company => "Acme Tools", order_id => "A-20931" };
    let show = |client: &Client| -> Result<(), Box<dyn std::error::Error>> {
        let p = client.get("support/reply")?;
        let out = p.render(&vars)?;
        let system = &out.messages.as_ref().ok_or("chat prompt expected")?[0].content;
        println!(
            "  support/reply v{} (label {}, source {}, revision {}): {}",
            p.version(),
            p.label().unwrap_or("-"),
            p.source().as_str(),
            p.revision(),
            system.lines().next().unwrap_or("")
        );
        Ok(())
    };
    show(&client)?;

    let (tx, rx) = mpsc::channel();
    client.on_change(move |changes| {
        for c in changes {
            if c.prompt == "support/reply" && c.label == "staging" {
                let _ = tx.send((Instant::now(), c.old, c.new));
            }
        }
    });

    // The operator: publish a new version to `staging` through the API.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let post = |path: &str,
                body: serde_json::Value|
     -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        rt.block_on(async {
            let r = http
                .post(format!("{server}/v1/projects/demo/prompts/{path}"))
                .header("authorization", format!("Bearer {admin}"))
                .json(&body)
                .send()
                .await?;
            let status = r.status();
            let v: serde_json::Value = r.json().await?;
            if !status.is_success() {
                return Err(format!("{status}: {v}").into());
            }
            Ok(v)
        })
    };
    let current = client.get("support/reply")?;
    let mut next = current.data().clone();
    if let promptops_core::Body::Chat { messages } = &mut next.body {
        messages[0].content =
            messages[0]
                .content
                .replacen("support agent", "support agent (new wording)", 1);
    }
    let mut body = serde_json::to_value(&next)?;
    let obj = body.as_object_mut().ok_or("version JSON")?;
    for k in ["version", "created_at", "author"] {
        obj.remove(k);
    }
    obj.insert("labels".into(), serde_json::json!(["staging"]));
    println!("publishing a new version of support/reply to staging ...");
    let sent = Instant::now();
    post("support%2Freply/versions", body)?;
    let (at, old, new) = rx.recv_timeout(Duration::from_secs(10))?;
    println!(
        "  the app switched v{} -> v{} {:?} after the publish call was sent",
        old.unwrap_or(0),
        new.unwrap_or(0),
        at.saturating_duration_since(sent)
    );
    show(&client)?;

    println!("rolling staging back ...");
    let sent = Instant::now();
    post(
        "support%2Freply/rollback",
        serde_json::json!({"label": "staging"}),
    )?;
    let (at, old, new) = rx.recv_timeout(Duration::from_secs(10))?;
    println!(
        "  the app switched v{} -> v{} {:?} after the rollback call was sent",
        old.unwrap_or(0),
        new.unwrap_or(0),
        at.saturating_duration_since(sent)
    );
    show(&client)?;
    println!(
        "last-known-good copy on disk: {}",
        cache.join("demo.snapshot.json").display()
    );
    client.close();
    Ok(())
}
