//! The `promptops` command line: the server (`serve`), registry client
//! commands (`push`, `pull`, `publish`, `rollback`, `approve`, `render`,
//! `audit`, `keys`), and the offline commands (`check`, `bundle`, `render`
//! on a directory or bundle).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use promptops_core::{Client, GetOptions, Source, Update, format};
use serde_json::{Value, json};

use crate::client::{ApiClient, RemoteError, seg};
use crate::registry::normalized_content;

#[derive(Parser)]
#[command(
    name = "promptops",
    version,
    about = "promptops registry, sync server and CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Remote {
    /// Registry URL.
    #[arg(
        long,
        env = "PROMPTOPS_SERVER",
        default_value = "http://127.0.0.1:8700"
    )]
    pub server: String,
    /// API key (`po_…`).
    #[arg(long = "api-key", env = "PROMPTOPS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl Remote {
    fn client(&self) -> anyhow::Result<ApiClient> {
        if self.api_key.is_none() {
            bail!("no API key: pass --api-key or set PROMPTOPS_API_KEY");
        }
        ApiClient::new(&self.server, self.api_key.clone())
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the registry and sync server.
    Serve(ServeArgs),
    /// Sync a prompt directory to the registry: a new version for every
    /// changed prompt; unprotected labels named in the files follow.
    Push {
        dir: PathBuf,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Download a project's snapshot as a bundle file.
    Pull {
        project: String,
        #[arg(short, long)]
        out: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move `production` (or --label) to an approved version.
    Publish {
        prompt: String,
        #[arg(long)]
        version: u32,
        #[arg(long, default_value = "production")]
        label: String,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move a label back (default: to the version it pointed at before).
    Rollback {
        prompt: String,
        #[arg(long, default_value = "production")]
        label: String,
        #[arg(long)]
        to: Option<u32>,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a version (as an approver other than its author).
    Approve {
        prompt: String,
        #[arg(long)]
        version: u32,
        #[arg(long)]
        note: Option<String>,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check every prompt file under a directory; exit 1 on any problem.
    Check { dir: PathBuf },
    /// Compile a prompt directory into a snapshot bundle (JSON with a content hash).
    Bundle {
        dir: PathBuf,
        /// Output file.
        #[arg(short, long)]
        out: PathBuf,
        /// Project name (default: the directory's name).
        #[arg(long)]
        project: Option<String>,
    },
    /// Render a prompt from a directory, a bundle, or the registry
    /// (`--server`/`PROMPTOPS_SERVER` with `--project`).
    Render {
        /// `module/name`
        prompt: String,
        /// Prompt directory.
        #[arg(long, conflicts_with = "bundle")]
        prompts: Option<PathBuf>,
        /// Snapshot bundle.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// JSON file with the variables.
        #[arg(long)]
        vars: Option<PathBuf>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        version: Option<u32>,
        /// Print JSON (text or messages, config, tokens, cost).
        #[arg(long)]
        json: bool,
        /// Registry project (rendering from the registry).
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[arg(long, env = "PROMPTOPS_SERVER")]
        server: Option<String>,
        #[arg(long = "api-key", env = "PROMPTOPS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Audit log: export or verify.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The project's model catalogue (prices, context windows, enabled,
    /// health).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Re-encrypt every stored row with the current key (after a rotation).
    Rekey {
        #[arg(long, env = "PROMPTOPS_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub addr: SocketAddr,
    /// `postgres://…`, or a SQLite file (default ./promptops.db).
    #[arg(long, env = "PROMPTOPS_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "PROMPTOPS_REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, default_value = "promptops")]
    pub redis_prefix: String,
    /// Encryption key file (default: `<db>.key` next to an embedded database).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Load the example prompts into project `demo` and print keys.
    #[arg(long)]
    pub demo: bool,
    /// Prompt directory for --demo (default: the built-in examples).
    #[arg(long, requires = "demo")]
    pub demo_dir: Option<PathBuf>,
    /// Events kept per project for stream replay.
    #[arg(long, default_value_t = 10_000)]
    pub event_retention: i64,
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_template_bytes: usize,
    /// Check projects with clients against the database this often (ms; 0 = off).
    #[arg(long, default_value_t = 2000)]
    pub poll_interval_ms: u64,
    /// Check catalogue models whose provider key the project stores as a
    /// secret (`OPENAI_API_KEY`, …) this often (seconds; 0 = off).
    #[arg(long, default_value_t = 300)]
    pub health_interval: u64,
    /// Timeout of one health-check request (seconds).
    #[arg(long, default_value_t = 10)]
    pub health_timeout: u64,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Export entries as JSON or CSV (from the registry, or straight from a database).
    Export {
        #[arg(long, default_value = "json")]
        format: String,
        #[arg(short, long)]
        out: Option<PathBuf>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// Read the database directly instead of asking the registry.
        #[arg(long)]
        database_url: Option<String>,
        /// Organisation to export (direct database access).
        #[arg(long, default_value = "default")]
        org: String,
        #[arg(
            long,
            env = "PROMPTOPS_SERVER",
            default_value = "http://127.0.0.1:8700"
        )]
        server: String,
        #[arg(long = "api-key", env = "PROMPTOPS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Verify the hash chain; exit 1 when an entry was edited or removed.
    Verify {
        /// Read the database directly (detects edits made behind the server's back).
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(
            long,
            env = "PROMPTOPS_SERVER",
            default_value = "http://127.0.0.1:8700"
        )]
        server: String,
        #[arg(long = "api-key", env = "PROMPTOPS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List the catalogue with each model's health.
    List {
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        /// Print the JSON the registry returned.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add or replace a model (prices default to the built-in table's for
    /// a model it lists).
    Set {
        model: String,
        #[arg(long)]
        provider: String,
        #[arg(long)]
        input_per_mtok: Option<f64>,
        #[arg(long)]
        output_per_mtok: Option<f64>,
        #[arg(long)]
        cached_input_per_mtok: Option<f64>,
        #[arg(long)]
        context_window: Option<u64>,
        #[arg(long)]
        max_output_tokens: Option<u64>,
        /// OpenAI-compatible API base (`http://host:8000/v1`).
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        disabled: bool,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a model.
    Rm {
        model: String,
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run the health check of the project's models now.
    Check {
        #[arg(long, env = "PROMPTOPS_PROJECT")]
        project: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key (printed once). Through the registry with an admin
    /// key, or straight in a database with --database-url (bootstrap).
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Direct database access (bootstrap): the organisation to use.
        #[arg(long, default_value = "default")]
        org: String,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(
            long,
            env = "PROMPTOPS_SERVER",
            default_value = "http://127.0.0.1:8700"
        )]
        server: String,
        #[arg(long = "api-key", env = "PROMPTOPS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMPTOPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Open a registry database directly (for bootstrap and audit commands).
async fn open_registry(
    database_url: Option<&str>,
    key_file: Option<&PathBuf>,
) -> anyhow::Result<crate::registry::Registry> {
    open_registry_with(database_url, key_file, false).await
}

async fn open_registry_with(
    database_url: Option<&str>,
    key_file: Option<&PathBuf>,
    create_key: bool,
) -> anyhow::Result<crate::registry::Registry> {
    use std::sync::Arc;
    let target = crate::db::DbTarget::parse(database_url);
    let keys = crate::server::load_keyring(&target, None, key_file, create_key)
        .context("loading the encryption key")?;
    let db = Arc::new(crate::db::Db::open(target, keys).await?);
    let metrics = Arc::new(crate::metrics::Metrics::new()?);
    let hub = Arc::new(crate::hub::Hub::new(
        db.clone(),
        metrics,
        Default::default(),
    ));
    Ok(crate::registry::Registry::new(db, hub, Default::default()))
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Push {
            dir,
            project,
            remote,
        } => push(&dir, project, &remote).await,
        Command::Pull {
            project,
            out,
            remote,
        } => {
            let c = remote.client()?;
            let snap = c.snapshot(&project).await?;
            snap.write_bundle(&out)?;
            println!(
                "wrote {} ({} prompts, revision {}, {})",
                out.display(),
                snap.prompts.len(),
                snap.revision,
                snap.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            prompt,
            version,
            label,
            project,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let out = c
                .post(
                    &format!(
                        "/v1/projects/{}/prompts/{}/publish",
                        seg(&project),
                        seg(&prompt)
                    ),
                    &json!({"version": version, "label": label}),
                )
                .await?;
            print_label_change(&out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            prompt,
            label,
            to,
            project,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let mut body = json!({"label": label});
            if let Some(t) = to {
                body["to"] = json!(t);
            }
            let out = c
                .post(
                    &format!(
                        "/v1/projects/{}/prompts/{}/rollback",
                        seg(&project),
                        seg(&prompt)
                    ),
                    &body,
                )
                .await?;
            print_label_change(&out);
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            prompt,
            version,
            note,
            project,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            c.post(
                &format!(
                    "/v1/projects/{}/prompts/{}/versions/{version}/reviews",
                    seg(&project),
                    seg(&prompt)
                ),
                &json!({"decision": "approve", "note": note}),
            )
            .await?;
            println!("approved {prompt} version {version}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir } => {
            let report = format::load_dir(&dir, &format::dir_project_name(&dir))?;
            let compiled = promptops_core::CompiledSnapshot::compile(
                report.snapshot.clone(),
                Default::default(),
                Source::Disk,
            );
            let mut problems = 0;
            for d in report.diagnostics.iter().chain(compiled.diagnostics()) {
                eprintln!("{d}");
                problems += 1;
            }
            println!(
                "{} prompts, {problems} problems, hash {}",
                report.snapshot.prompts.len(),
                report.snapshot.hash
            );
            Ok(if problems == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bundle { dir, out, project } => {
            let project = project.unwrap_or_else(|| format::dir_project_name(&dir));
            let report = format::load_dir(&dir, &project)?;
            for d in &report.diagnostics {
                eprintln!("{d}");
            }
            if !report.diagnostics.is_empty() {
                bail!(
                    "{} prompt files could not be read",
                    report.diagnostics.len()
                );
            }
            report.snapshot.write_bundle(&out)?;
            println!(
                "wrote {} ({} prompts, {})",
                out.display(),
                report.snapshot.prompts.len(),
                report.snapshot.hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Render {
            prompt,
            prompts,
            bundle,
            vars,
            label,
            version,
            json,
            project,
            server,
            api_key,
        } => {
            let client = if prompts.is_some() || bundle.is_some() {
                let mut b = Client::builder();
                if let Some(d) = prompts {
                    b = b.prompts_dir(d);
                }
                if let Some(f) = bundle {
                    b = b.bundle(f);
                }
                b.build()?
            } else if let Some(server) = server {
                let c = ApiClient::new(&server, api_key)?;
                let project = c.project(project).await?;
                let snap = c.snapshot(&project).await?;
                let client = Client::builder().project(project).build()?;
                client.apply(Update::Snapshot(snap), Source::Memory)?;
                client
            } else {
                bail!(
                    "render needs --prompts DIR, --bundle FILE, or --server URL (PROMPTOPS_SERVER)"
                );
            };
            render(&client, &prompt, vars, label, version, json)
        }
        Command::Audit { command } => audit(command).await,
        Command::Keys { command } => keys(command).await,
        Command::Models { command } => models(command).await,
        Command::Rekey {
            database_url,
            key_file,
        } => {
            let reg = open_registry(database_url.as_deref(), key_file.as_ref()).await?;
            let n = crate::rekey::rekey(&reg.db)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "re-encrypted {n} rows with key {}",
                reg.db.keys.current_id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_label_change(v: &Value) {
    let prompt = v.get("prompt").and_then(Value::as_str).unwrap_or("?");
    let label = v.get("label").and_then(Value::as_str).unwrap_or("?");
    let from = v.get("from").and_then(Value::as_u64);
    let to = v.get("to").and_then(Value::as_u64);
    if v.get("changed").and_then(Value::as_bool) == Some(false) {
        println!("{prompt}: `{label}` already at version {}", to.unwrap_or(0));
    } else {
        println!(
            "{prompt}: `{label}` {} -> {} (revision {})",
            from.map_or("unset".to_string(), |v| v.to_string()),
            to.map_or("unset".to_string(), |v| v.to_string()),
            v.get("revision").and_then(Value::as_u64).unwrap_or(0)
        );
    }
}

fn render(
    client: &Client,
    prompt: &str,
    vars: Option<PathBuf>,
    label: Option<String>,
    version: Option<u32>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let vars: Value = match vars {
        Some(f) => serde_json::from_slice(
            &std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("parsing {}", f.display()))?,
        None => json!({}),
    };
    let opts = GetOptions {
        label,
        version,
        fallback: None,
    };
    let p = client.get_with(prompt, &opts)?;
    let r = p.render(&promptops_core::to_value(&vars))?;
    if json_out {
        let tokens = r.input_tokens();
        let out = json!({
            "prompt": p.name(),
            "version": p.version(),
            "label": p.label(),
            "source": p.source(),
            "text": r.text,
            "messages": r.messages,
            "config": &*r.config,
            "input_tokens": tokens.count,
            "tokens_exact": tokens.exact,
            "estimated_cost_usd": r.estimated_cost_usd(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", r.as_text());
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    let demo_tmp = if a.demo && a.database_url.is_none() {
        Some(
            tempfile::Builder::new()
                .prefix("promptops-demo-")
                .tempdir()?,
        )
    } else {
        None
    };
    let database_url = match (&demo_tmp, &a.database_url) {
        (Some(t), _) => Some(t.path().join("promptops.db").display().to_string()),
        (None, u) => u.clone(),
    };
    let cfg = crate::server::ServerConfig {
        addr: a.addr,
        database_url: database_url.clone(),
        redis_url: a.redis_url.clone(),
        redis_prefix: a.redis_prefix.clone(),
        master_key: None,
        key_file: a.key_file.clone(),
        event_retention: a.event_retention,
        max_body_bytes: a.max_body_bytes,
        max_template_bytes: a.max_template_bytes,
        poll_interval: Duration::from_millis(a.poll_interval_ms),
        heartbeat: Duration::from_secs(15),
        bootstrap: !a.demo,
        health: crate::health::HealthOptions {
            interval: Duration::from_secs(a.health_interval),
            timeout: Duration::from_secs(a.health_timeout.max(1)),
        },
    };
    let server = crate::server::Server::start(cfg).await?;
    let target = crate::db::DbTarget::parse(database_url.as_deref());
    if let Some(k) = &server.bootstrap_key {
        match &target {
            crate::db::DbTarget::Sqlite(p) => {
                let mut path = p.as_os_str().to_owned();
                path.push(".admin-key");
                let path = PathBuf::from(path);
                crate::crypto::write_private_file(&path, format!("{k}\n").as_bytes())?;
                println!(
                    "new registry: organisation `default`, admin key written to {} (mode 0600)",
                    path.display()
                );
            }
            crate::db::DbTarget::Postgres(_) => {
                println!("new registry: organisation `default`, admin key (shown once): {k}");
            }
        }
    }
    println!(
        "promptops registry on {} ({})",
        server.url(),
        target.describe()
    );
    if a.demo {
        let keys = crate::demo::load_demo(&server.registry, a.demo_dir.as_deref()).await?;
        let dir = demo_tmp
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."));
        let file = dir.join("promptops-demo.env");
        let env = format!(
            "PROMPTOPS_SERVER={}\nPROMPTOPS_PROJECT=demo\nPROMPTOPS_API_KEY={}\nPROMPTOPS_SDK_KEY={}\n",
            server.url(),
            keys.admin,
            keys.sdk
        );
        crate::crypto::write_private_file(&file, env.as_bytes())?;
        println!("demo project `demo`: {} prompts loaded", keys.prompts);
        println!("  admin key: {}", keys.admin);
        println!("  SDK key:   {}", keys.sdk);
        println!("  keys written to {}", file.display());
        println!(
            "  try: curl -H 'Authorization: Bearer {}' {}/v1/projects/demo/snapshot",
            keys.sdk,
            server.url()
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    eprintln!("shutting down");
    server.stop(Duration::from_secs(5)).await;
    drop(demo_tmp);
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `push`: one request per changed prompt. Prompts whose includes are not
/// in the registry yet are retried after the others.
async fn push(
    dir: &std::path::Path,
    project: Option<String>,
    remote: &Remote,
) -> anyhow::Result<ExitCode> {
    let c = remote.client()?;
    let project = c.project(project).await?;
    let report = format::load_dir(dir, &project)?;
    if !report.diagnostics.is_empty() {
        for d in &report.diagnostics {
            eprintln!("{d}");
        }
        bail!(
            "{} prompt files could not be read; nothing pushed",
            report.diagnostics.len()
        );
    }
    let info = c.get(&format!("/v1/projects/{}", seg(&project))).await?;
    let protected: BTreeSet<String> = info
        .get("protected_labels")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let server = c.snapshot(&project).await?;
    let all = c
        .get(&format!(
            "/v1/projects/{}/prompts?archived=true",
            seg(&project)
        ))
        .await?;
    let archived: BTreeSet<String> = all
        .get("prompts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("archived").and_then(Value::as_bool) == Some(true))
        .filter_map(|p| p.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let mut pending = Vec::new();
    let mut unchanged = 0;
    let mut held_back: BTreeSet<String> = BTreeSet::new();
    for p in &report.snapshot.prompts {
        let Some(local) = p.versions.first() else {
            continue;
        };
        let labels: Vec<String> = p
            .labels
            .keys()
            .filter(|l| !protected.contains(*l))
            .cloned()
            .collect();
        for l in p.labels.keys().filter(|l| protected.contains(*l)) {
            held_back.insert(l.clone());
        }
        if archived.contains(&p.name) {
            eprintln!("{}: archived in the registry; skipped", p.name);
            continue;
        }
        let remote_p = server.prompt(&p.name);
        if let Some(rp) = remote_p
            && let Some(newest) = rp.latest().and_then(|v| rp.version(v))
            && normalized_content(newest) == normalized_content(local)
            && rp.policy == p.policy
            && labels
                .iter()
                .all(|l| rp.labels.get(l) == Some(&newest.version))
        {
            unchanged += 1;
            continue;
        }
        let mut body = serde_json::to_value(local)?;
        if let Value::Object(m) = &mut body {
            m.remove("version");
            m.remove("author");
            m.remove("created_at");
            m.insert("labels".into(), json!(labels));
            if let Some(pol) = &p.policy {
                m.insert("policy".into(), pol.clone());
            }
            if remote_p.is_none() {
                m.insert("name".into(), json!(p.name));
            }
        }
        pending.push((p.name.clone(), remote_p.is_none(), body));
    }
    let mut created = 0;
    let mut failures: Vec<(String, anyhow::Error)> = Vec::new();
    while !pending.is_empty() {
        let mut next = Vec::new();
        failures.clear();
        let before = pending.len();
        for (name, is_new, body) in pending {
            let path = if is_new {
                format!("/v1/projects/{}/prompts", seg(&project))
            } else {
                format!(
                    "/v1/projects/{}/prompts/{}/versions",
                    seg(&project),
                    seg(&name)
                )
            };
            match c.post(&path, &body).await {
                Ok(out) => {
                    created += 1;
                    println!(
                        "{name}: version {} (revision {})",
                        out.get("version").and_then(Value::as_u64).unwrap_or(0),
                        out.get("revision").and_then(Value::as_u64).unwrap_or(0)
                    );
                }
                Err(e) => {
                    let retry = e
                        .downcast_ref::<RemoteError>()
                        .is_some_and(|r| r.status == 422);
                    if retry {
                        next.push((name.clone(), is_new, body));
                    }
                    failures.push((name, e));
                }
            }
        }
        if next.is_empty() || next.len() == before {
            break;
        }
        pending = next;
    }
    for (name, e) in &failures {
        eprintln!("{name}: {e:#}");
    }
    println!(
        "pushed to `{project}`: {created} new versions, {unchanged} unchanged, {} failed",
        failures.len()
    );
    if !held_back.is_empty() {
        println!(
            "note: protected labels ({}) are not moved by push; approve, then `promptops publish`",
            held_back.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Export {
            format,
            out,
            from,
            to,
            actor,
            action,
            project,
            database_url,
            org,
            server,
            api_key,
        } => {
            if format != "json" && format != "csv" {
                bail!("--format must be json or csv");
            }
            let text = if let Some(url) = database_url {
                let reg = open_registry(Some(&url), None).await?;
                let f = crate::registry::AuditFilter {
                    from,
                    to,
                    actor,
                    action,
                    project,
                    prompt: None,
                    limit: Some(1_000_000),
                };
                let rows = reg
                    .audit_query(&org, None, &f)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if format == "csv" {
                    crate::audit::to_csv(&rows)
                } else {
                    serde_json::to_string_pretty(&json!({"entries": rows}))?
                }
            } else {
                let c = ApiClient::new(&server, api_key)?;
                let mut q = vec![format!("format={format}"), "limit=1000000".to_string()];
                for (k, v) in [
                    ("from", from),
                    ("to", to),
                    ("actor", actor),
                    ("action", action),
                    ("project", project),
                ] {
                    if let Some(v) = v {
                        q.push(format!("{k}={}", seg(&v)));
                    }
                }
                c.text(&format!("/v1/audit?{}", q.join("&"))).await?
            };
            match out {
                Some(p) => {
                    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
                    println!("wrote {}", p.display());
                }
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            database_url,
            key_file,
            server,
            api_key,
        } => {
            let report = if database_url.is_some() || api_key.is_none() {
                let reg = open_registry(database_url.as_deref(), key_file.as_ref()).await?;
                serde_json::to_value(
                    reg.audit_verify()
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                )?
            } else {
                let c = ApiClient::new(&server, api_key)?;
                c.get("/v1/audit/verify").await?
            };
            let ok = report.get("ok").and_then(Value::as_bool) == Some(true);
            let n = report.get("entries").and_then(Value::as_i64).unwrap_or(0);
            if ok {
                println!(
                    "audit log OK: {n} entries, head {}",
                    report.get("head").and_then(Value::as_str).unwrap_or("-")
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("audit log BROKEN ({n} entries):");
                for p in report
                    .get("problems")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    println!("  {}", p.as_str().unwrap_or(""));
                }
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            role,
            project,
            user,
            name,
            org,
            database_url,
            key_file,
            server,
            api_key,
        } => {
            let out: Value = if let Some(url) = database_url {
                let r = crate::auth::Role::parse(&role)
                    .ok_or_else(|| anyhow::anyhow!("unknown role `{role}`"))?;
                let reg = open_registry_with(Some(&url), key_file.as_ref(), true).await?;
                let actor = crate::registry::Actor::system("cli");
                let org_id = reg
                    .create_org(&org, &actor)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let user = user.unwrap_or_else(|| "admin".into());
                let name = name.unwrap_or_else(|| format!("{role} key for {user}"));
                let k = reg
                    .create_key(org_id, project.as_deref(), r, &user, &name, &actor)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                serde_json::to_value(k)?
            } else {
                let c = ApiClient::new(&server, api_key)?;
                let mut body = json!({"role": role});
                if let Some(p) = project {
                    body["project"] = json!(p);
                }
                if let Some(u) = user {
                    body["user"] = json!(u);
                }
                if let Some(n) = name {
                    body["name"] = json!(n);
                }
                c.post("/v1/keys", &body).await?
            };
            println!("{}", out.get("key").and_then(Value::as_str).unwrap_or(""));
            eprintln!(
                "key {} ({} for {}{}) — shown once, store it now",
                out.get("prefix").and_then(Value::as_str).unwrap_or(""),
                out.get("role").and_then(Value::as_str).unwrap_or(""),
                out.get("user").and_then(Value::as_str).unwrap_or(""),
                out.get("project")
                    .and_then(Value::as_str)
                    .map(|p| format!(", project {p}"))
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn models(cmd: ModelsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCommand::List {
            project,
            json,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let v = c
                .get(&format!("/v1/projects/{}/models", seg(&project)))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let fmt_opt = |x: &Value| match x {
                Value::Null => "-".to_string(),
                other => other.to_string(),
            };
            println!(
                "{:<32} {:<10} {:>9} {:>9} {:>9} {:<8} {:<11} error",
                "model", "provider", "ctx", "in/Mtok", "out/Mtok", "enabled", "health"
            );
            for m in v["models"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<10} {:>9} {:>9} {:>9} {:<8} {:<11} {}",
                    m["model"].as_str().unwrap_or(""),
                    m["provider"].as_str().unwrap_or(""),
                    fmt_opt(&m["context_window"]),
                    fmt_opt(&m["input_per_mtok"]),
                    fmt_opt(&m["output_per_mtok"]),
                    m.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                    m["health"]["status"].as_str().unwrap_or("unknown"),
                    m["health"]["error"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Set {
            model,
            provider,
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok,
            context_window,
            max_output_tokens,
            base_url,
            disabled,
            project,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let mut body = json!({"provider": provider, "enabled": !disabled});
            for (k, v) in [
                ("input_per_mtok", input_per_mtok.map(|x| json!(x))),
                ("output_per_mtok", output_per_mtok.map(|x| json!(x))),
                (
                    "cached_input_per_mtok",
                    cached_input_per_mtok.map(|x| json!(x)),
                ),
                ("context_window", context_window.map(|x| json!(x))),
                ("max_output_tokens", max_output_tokens.map(|x| json!(x))),
                ("base_url", base_url.map(|x| json!(x))),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let v = c
                .json(
                    reqwest::Method::PUT,
                    &format!("/v1/projects/{}/models/{}", seg(&project), seg(&model)),
                    Some(&body),
                )
                .await?;
            println!(
                "{model}: {} (revision {})",
                if v["changed"] == json!(true) {
                    "saved"
                } else {
                    "unchanged"
                },
                v["revision"]
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Rm {
            model,
            project,
            remote,
        } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let v = c
                .json(
                    reqwest::Method::DELETE,
                    &format!("/v1/projects/{}/models/{}", seg(&project), seg(&model)),
                    None,
                )
                .await?;
            println!("{model}: removed (revision {})", v["revision"]);
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Check { project, remote } => {
            let c = remote.client()?;
            let project = c.project(project).await?;
            let v = c
                .post(
                    &format!("/v1/projects/{}/model-health", seg(&project)),
                    &json!({}),
                )
                .await?;
            for r in v["checked"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<11} {}",
                    r["model"].as_str().unwrap_or(""),
                    r["status"].as_str().unwrap_or(""),
                    r["error"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
