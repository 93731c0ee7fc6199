//! The `promptops` binary against a running registry: push, pull, approve,
//! publish, rollback, render (offline and from the registry), keys, audit,
//! check, bundle, and `serve --demo`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::Env;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/prompts"))
}

fn run(env: &Env, key_role: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PROMPTOPS_SERVER", &env.base)
        .env("PROMPTOPS_API_KEY", env.key(key_role))
        .env_remove("PROMPTOPS_PROJECT")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_publish_rollback_render() {
    let env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts");
    for (rel, body) in promptops_server::demo::EXAMPLES {
        let p = prompts.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    let pdir = prompts.to_str().unwrap();
    // First push: three prompts; the key's project is used by default.
    let o = run(&env, "author", &["push", pdir]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("3 new versions, 0 unchanged, 0 failed"), "{t}");
    assert!(
        t.contains("protected labels (production) are not moved"),
        "{t}"
    );
    // Second push: nothing changed.
    let o = run(&env, "author", &["push", pdir, "--project", "shop"]);
    assert!(
        text(&o).contains("0 new versions, 3 unchanged"),
        "{}",
        text(&o)
    );
    // Change one file: one new version.
    let f = prompts.join("shared/signature.prompt");
    let s = std::fs::read_to_string(&f)
        .unwrap()
        .replace("Kind regards", "Best wishes");
    std::fs::write(&f, s).unwrap();
    let o = run(&env, "author", &["push", pdir]);
    assert!(
        text(&o).contains("1 new versions, 2 unchanged"),
        "{}",
        text(&o)
    );
    // Staging followed the new version (unprotected labels move with push).
    let snap = env.snapshot("sdk", "shop").await;
    let sig = snap["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "shared/signature")
        .unwrap();
    assert_eq!(sig["labels"]["staging"], 2);
    assert!(sig["labels"].get("production").is_none());

    // Approve and publish through the CLI.
    let o = run(
        &env,
        "publisher",
        &["publish", "shared/signature", "--version", "2"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("APPROVAL_REQUIRED"), "{}", text(&o));
    for v in ["1", "2"] {
        let o = run(
            &env,
            "approver",
            &["approve", "shared/signature", "--version", v],
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = run(
        &env,
        "publisher",
        &["publish", "shared/signature", "--version", "1"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &env,
        "publisher",
        &["publish", "shared/signature", "--version", "2"],
    );
    assert!(text(&o).contains("`production` 1 -> 2"), "{}", text(&o));
    let o = run(&env, "publisher", &["rollback", "shared/signature"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("`production` 2 -> 1"), "{}", text(&o));

    // Pull a bundle and render from it offline; render from the registry too.
    let bundle = dir.path().join("bundle.json");
    let o = run(
        &env,
        "sdk",
        &["pull", "shop", "-o", bundle.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let b = promptops_core::SnapshotData::read_bundle(&bundle).unwrap();
    assert_eq!(b.hash, snap_hash(&env).await);
    let vars = dir.path().join("vars.json");
    std::fs::write(
        &vars,
        r#"{"user_name": "Dana", "company": "Acme", "order_id": "A-1"}"#,
    )
    .unwrap();
    let o = run(
        &env,
        "sdk",
        &[
            "render",
            "support/reply",
            "--bundle",
            bundle.to_str().unwrap(),
            "--vars",
            vars.to_str().unwrap(),
            "--label",
            "staging",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Best wishes"), "{}", text(&o));
    let o = run(
        &env,
        "sdk",
        &[
            "render",
            "support/reply",
            "--server",
            &env.base,
            "--project",
            "shop",
            "--vars",
            vars.to_str().unwrap(),
            "--label",
            "staging",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["source"], "memory");
    assert!(
        v["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Dana")
    );
    // Offline render from a directory still works.
    let o = run(
        &env,
        "sdk",
        &[
            "render",
            "support/reply",
            "--prompts",
            pdir,
            "--vars",
            vars.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // check and bundle.
    let o = run(&env, "sdk", &["check", examples().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 prompts, 0 problems"));
    let out = dir.path().join("local.json");
    let o = run(&env, "sdk", &["bundle", pdir, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // Audit export through the registry.
    let csv = dir.path().join("audit.csv");
    let o = run(
        &env,
        "auditor",
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "-o",
            csv.to_str().unwrap(),
            "--action",
            "rollback",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let c = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(c.lines().count(), 2, "{c}");
    let o = run(&env, "auditor", &["audit", "verify"]);
    assert!(
        o.status.success() && text(&o).contains("audit log OK"),
        "{}",
        text(&o)
    );
    // Keys through the registry.
    let o = run(
        &env,
        "admin",
        &["keys", "create", "--role", "viewer", "--user", "carol"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let new_key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(new_key.starts_with("po_"));
    let r = env
        .http
        .get(format!("{}/v1/whoami", env.base))
        .bearer_auth(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["user"], "carol");
    // Missing key: a clear error.
    let o = Command::new(BIN)
        .args(["push", pdir])
        .env_remove("PROMPTOPS_API_KEY")
        .env("PROMPTOPS_SERVER", &env.base)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("no API key"), "{}", text(&o));
}

async fn snap_hash(env: &Env) -> String {
    env.snapshot("sdk", "shop").await["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_offline_bootstraps_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("boot.db");
    let o = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--role",
            "admin",
            "--org",
            "acme",
            "--user",
            "root",
            "--database-url",
        ])
        .arg(&db)
        .env_remove("PROMPTOPS_MASTER_KEY")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(key.starts_with("po_"));
    assert!(
        dir.path().join("boot.db.key").exists(),
        "key file created next to the db"
    );
    // The registry started on that database accepts the key (no bootstrap key is made).
    let mut cfg = promptops_server::ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(db.display().to_string()),
        ..Default::default()
    };
    cfg.redis_url = None;
    let server = promptops_server::Server::start(cfg).await.unwrap();
    assert!(server.bootstrap_key.is_none());
    let r = reqwest::Client::new()
        .get(format!("{}/v1/whoami", server.url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["org"].as_str(), v["role"].as_str()),
        (Some("acme"), Some("admin"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_prints_working_keys() {
    use std::io::{BufRead, BufReader};
    promptops_server::client::install_crypto_provider();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--demo", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(cwd.path())
        .env("PROMPTOPS_LOG", "warn")
        .env_remove("PROMPTOPS_DATABASE_URL")
        .env_remove("PROMPTOPS_REDIS_URL")
        .env_remove("PROMPTOPS_MASTER_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut admin, mut sdk, mut file) = (None, None, None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(k) = line.trim().strip_prefix("admin key: ") {
            admin = Some(k.to_string());
        }
        if let Some(k) = line.trim().strip_prefix("SDK key:") {
            sdk = Some(k.trim().to_string());
        }
        if let Some(f) = line.trim().strip_prefix("keys written to ") {
            file = Some(f.to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (admin, sdk, file) = (admin.unwrap(), sdk.unwrap(), file.unwrap());
    let env_file = std::fs::read_to_string(&file).unwrap();
    assert!(
        env_file.contains(&format!("PROMPTOPS_SDK_KEY={sdk}"))
            && env_file.contains("PROMPTOPS_PROJECT=demo")
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let snap: Value = http
        .get(format!("{base}/v1/projects/demo/snapshot"))
        .bearer_auth(&sdk)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = snap["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["rag/answer", "shared/signature", "support/reply"]
    );
    assert_eq!(snap["prompts"][2]["labels"]["production"], 1);
    let r = http
        .get(format!("{base}/v1/projects/demo/prompts"))
        .bearer_auth(&sdk)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the SDK key only reads snapshots");
    let r = http
        .get(format!("{base}/v1/projects/demo/prompts"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The demo leaves nothing in the working directory.
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}
