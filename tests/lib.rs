//! Helpers shared by the integration tests.

use std::path::PathBuf;

use promptops_core::Client;
use serde_json::Value;

/// `tests/vectors/NAME`, parsed.
pub fn load_vector(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A client over the render vectors' snapshot, loaded as a bundle file.
pub fn render_vector_client(doc: &Value) -> (tempfile::TempDir, Client) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, serde_json::to_vec(&doc["snapshot"]).expect("json")).expect("write");
    let client = Client::builder().bundle(&path).build().expect("client");
    (dir, client)
}

/// The shared benchmark workload directory (`../shared/bench-workload`
/// beside the clone), if present.
pub fn bench_workload() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench-workload");
    p.is_dir().then_some(p)
}

/// The root README's Rust snippets, run as doc tests.
#[doc = include_str!("../README.md")]
pub mod readme {}

#[path = "fake_registry.rs"]
pub mod fake_registry;

/// A real `redis-server` (Debian package) on a free loopback port, started
/// and stopped by the test: the tests that need Redis use the real thing.
pub mod redis_server {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct RedisServer {
        port: u16,
        dir: tempfile::TempDir,
        child: Option<Child>,
    }

    impl RedisServer {
        pub fn start() -> RedisServer {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
                l.local_addr().expect("addr").port()
            };
            let mut s = RedisServer {
                port,
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
            };
            s.restart();
            s
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        /// Start (again) on the same port and wait until it answers.
        pub fn restart(&mut self) {
            self.kill();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &self.port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                ])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}); install it with `apt-get install -y redis-server` (scripts/test.sh does)"
                    )
                });
            self.child = Some(child);
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Kill -9: connections drop, nothing listens.
        pub fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

/// A mock LLM provider (OpenAI and Anthropic protocols, streaming, failures
/// on demand) for the routing, provider and telemetry tests and benches.
#[path = "mock_provider/mod.rs"]
pub mod mock_provider;
