//! The SDK against real registry processes: `promptops serve` started as a
//! child process, killed with SIGKILL and restarted, two replicas on one
//! database (and Redis when `PROMPTOPS_TEST_REDIS_URL` is set), while SDK
//! clients keep reading. No read may fail; clients converge after every
//! outage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use promptops_core::sync::{Backoff, Status, SyncOptions};
use promptops_core::{Client, Source, context};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_promptops");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

struct Registry {
    child: Option<Child>,
    db: PathBuf,
    port: u16,
    master_key: String,
    extra: Vec<String>,
}

impl Registry {
    fn start(db: &Path, master_key: &str, extra: &[String]) -> Registry {
        let mut r = Registry {
            child: None,
            db: db.to_path_buf(),
            port: free_port(),
            master_key: master_key.to_string(),
            extra: extra.to_vec(),
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        self.kill9();
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{}", self.port),
                "--database-url",
            ])
            .arg(&self.db)
            .args(&self.extra)
            .env("PROMPTOPS_MASTER_KEY", &self.master_key)
            .env("PROMPTOPS_LOG", "warn")
            .env_remove("PROMPTOPS_REDIS_URL")
            .env_remove("PROMPTOPS_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::{BufRead, BufReader};
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let l = lines.next().expect("server output").unwrap();
            if l.starts_with("promptops registry on") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no goodbye to the clients.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn admin_key(&self) -> String {
        let mut f = self.db.as_os_str().to_owned();
        f.push(".admin-key");
        std::fs::read_to_string(PathBuf::from(f))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn call(http: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    let r = http
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// Project `shop` (production not protected, so publishes need no review),
/// an SDK key, and `support/reply` v1 on production.
async fn setup(reg: &Registry) -> (String, String) {
    promptops_server::client::install_crypto_provider();
    let http = reqwest::Client::new();
    let admin = reg.admin_key();
    call(
        &http,
        format!("{}/v1/projects", reg.url()),
        &admin,
        json!({"name": "shop", "protected_labels": []}),
    )
    .await;
    let sdk = call(
        &http,
        format!("{}/v1/keys", reg.url()),
        &admin,
        json!({"role": "sdk", "project": "shop", "name": "app"}),
    )
    .await;
    let sdk = sdk["key"].as_str().unwrap().to_string();
    call(
        &http,
        format!("{}/v1/projects/shop/prompts", reg.url()),
        &admin,
        json!({"name": "support/reply", "type": "text", "template": "v1 {{ name }}", "labels": ["production"]}),
    )
    .await;
    (admin, sdk)
}

async fn new_version(url: &str, admin: &str, template: &str) {
    let http = reqwest::Client::new();
    call(
        &http,
        format!("{url}/v1/projects/shop/prompts/support%2Freply/versions"),
        admin,
        json!({"type": "text", "template": template, "labels": ["production"]}),
    )
    .await;
}

async fn rollback(url: &str, admin: &str) {
    let http = reqwest::Client::new();
    call(
        &http,
        format!("{url}/v1/projects/shop/prompts/support%2Freply/rollback"),
        admin,
        json!({}),
    )
    .await;
}

fn sync_options() -> SyncOptions {
    let mut o = SyncOptions::new("shop");
    o.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        jitter: 0.5,
        reset_after: Duration::from_secs(60),
    };
    o.idle_timeout = Duration::from_secs(20);
    o
}

fn rendered(c: &Client) -> String {
    c.get("support/reply")
        .and_then(|p| p.render(&context! { name => "Ann" }))
        .map(|r| r.text.unwrap_or_default())
        .unwrap_or_else(|e| format!("ERROR {e}"))
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Readers {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn readers(c: &Client) -> Readers {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let c = c.clone();
    let (s, f, r) = (stop.clone(), failures.clone(), reads.clone());
    let t = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if rendered(&c).starts_with("ERROR") {
                f.fetch_add(1, Ordering::Relaxed);
            }
            r.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    Readers {
        stop,
        failures,
        reads,
        threads: vec![t],
    }
}

impl Readers {
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.reads.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_follows_a_real_registry_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let mut reg = Registry::start(&db, &random_hex(32), &[]);
    let (admin, sdk) = setup(&reg).await;
    let cache = dir.path().join("cache");
    let client = Client::builder()
        .project("shop")
        .server(reg.url())
        .api_key(&sdk)
        .cache_dir(&cache)
        .sync_options(sync_options())
        .startup_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(rendered(&client), "v1 Ann");
    assert_eq!(
        client.get("support/reply").unwrap().source(),
        Source::Memory
    );
    let reads = readers(&client);

    // A publish through the API reaches the client.
    new_version(&reg.url(), &admin, "v2 {{ name }}").await;
    wait_until("v2", Duration::from_secs(10), || {
        rendered(&client) == "v2 Ann"
    })
    .await;

    // kill -9: the client keeps serving, reports interrupted.
    reg.kill9();
    wait_until("interrupted", Duration::from_secs(10), || {
        client.status().status == Status::Interrupted
    })
    .await;
    assert_eq!(rendered(&client), "v2 Ann");

    // Back on the same port and database; a rollback is published.
    reg.restart();
    rollback(&reg.url(), &admin).await;
    wait_until("rollback to v1", Duration::from_secs(15), || {
        rendered(&client) == "v1 Ann"
    })
    .await;
    wait_until("valid", Duration::from_secs(10), || {
        client.status().status == Status::Valid
    })
    .await;
    let (n, failures) = reads.finish();
    assert!(n >= 10, "the readers ran ({n} reads)");
    assert_eq!(failures, 0, "no read may fail");
    client.close();

    // The registry down at start: the last-known-good file serves at once.
    reg.kill9();
    let t = Instant::now();
    let offline = Client::builder()
        .project("shop")
        .server(reg.url())
        .api_key(&sdk)
        .cache_dir(&cache)
        .sync_options(sync_options())
        .build()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(offline.get("support/reply").unwrap().source(), Source::Disk);
    assert_eq!(rendered(&offline), "v1 Ann");
    reg.restart();
    new_version(&reg.url(), &admin, "v3 {{ name }}").await;
    wait_until("v3 after start-up outage", Duration::from_secs(15), || {
        rendered(&offline) == "v3 Ann"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_through_one_replica_reaches_clients_of_the_other() {
    // Two registry processes on one database (SQLite file; with Redis when
    // PROMPTOPS_TEST_REDIS_URL is set, the fan-out goes through it).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let key = random_hex(32);
    let mut extra = vec!["--poll-interval-ms".to_string(), "200".to_string()];
    if let Ok(r) = std::env::var("PROMPTOPS_TEST_REDIS_URL") {
        extra.extend([
            "--redis-url".to_string(),
            r,
            "--redis-prefix".to_string(),
            format!("sdk{}", random_hex(4)),
        ]);
    }
    let a = Registry::start(&db, &key, &extra);
    let (admin, sdk) = setup(&a).await;
    let b = Registry::start(&db, &key, &extra);
    let client = Client::builder()
        .project("shop")
        .server(b.url())
        .api_key(&sdk)
        .sync_options(sync_options())
        .startup_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(rendered(&client), "v1 Ann");
    let t = Instant::now();
    new_version(&a.url(), &admin, "v2 {{ name }}").await;
    wait_until("v2 via the other replica", Duration::from_secs(10), || {
        rendered(&client) == "v2 Ann"
    })
    .await;
    eprintln!("replica A -> replica B -> SDK in {:?}", t.elapsed());
}
