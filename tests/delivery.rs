//! Live delivery through the public client API: the HTTP+SSE source against
//! a registry that can be broken on demand (and a TCP proxy that can kill or
//! blackhole it), the Redis source against a real redis-server, the disk
//! cache, status, and start-up. Every outage test runs readers the whole
//! time and asserts that not one read failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use promptops_core::sync::{Backoff, Status, SyncOptions};
use promptops_core::{Client, GetOptions, PromptData, PromptVersion, Source, context};
use promptops_tests::fake_registry::{FakeRegistry, Fault, Net, Proxy, Running};

const PROJECT: &str = "shop";
const KEY: &str = "po_test_key";

fn prompt(name: &str, versions: &[(u32, &str)], production: u32) -> PromptData {
    PromptData {
        name: name.into(),
        versions: versions
            .iter()
            .map(|(v, t)| PromptVersion::text(*v, *t))
            .collect(),
        labels: [("production".to_string(), production)]
            .into_iter()
            .collect(),
        policy: None,
    }
}

/// Version `v` of `support/reply` (which includes `shared/sig`).
fn state(v: u32, sig: u32) -> Vec<PromptData> {
    let versions: Vec<(u32, String)> = (1..=v.max(3))
        .map(|i| {
            (
                i,
                format!("reply v{i} {{{{ name }}}} {{% include \"shared/sig\" %}}"),
            )
        })
        .collect();
    let refs: Vec<(u32, &str)> = versions.iter().map(|(i, t)| (*i, t.as_str())).collect();
    let sigs: Vec<(u32, String)> = (1..=sig.max(3)).map(|i| (i, format!("sig{i}"))).collect();
    let srefs: Vec<(u32, &str)> = sigs.iter().map(|(i, t)| (*i, t.as_str())).collect();
    vec![
        prompt("support/reply", &refs, v),
        prompt("shared/sig", &srefs, sig),
    ]
}

fn fast_sync() -> SyncOptions {
    let mut o = SyncOptions::new(PROJECT);
    o.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        jitter: 0.5,
        reset_after: Duration::from_secs(60),
    };
    o.poll_interval = Duration::from_millis(200);
    o.request_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(1);
    o.idle_timeout = Duration::from_secs(1);
    o
}

fn builder(url: &str) -> promptops_core::ClientBuilder {
    Client::builder()
        .project(PROJECT)
        .server(url)
        .api_key(KEY)
        .sync_options(fast_sync())
}

fn rendered(client: &Client) -> String {
    client
        .get("support/reply")
        .and_then(|p| p.render(&context! { name => "Ann" }))
        .map(|r| r.text.unwrap_or_default())
        .unwrap_or_else(|e| format!("ERROR {e}"))
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Threads reading and rendering in a loop; counts failures.
struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(client: &Client) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let threads = (0..2)
            .map(|_| {
                let (c, stop, reads, failures) = (
                    client.clone(),
                    stop.clone(),
                    reads.clone(),
                    failures.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if rendered(&c).starts_with("ERROR") {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        Readers {
            stop,
            reads,
            failures,
            threads,
        }
    }

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

async fn setup() -> (Running, Proxy) {
    let reg = FakeRegistry::new(PROJECT, state(1, 1));
    let running = Running::start(reg).await;
    let proxy = Proxy::start(running.addr).await;
    (running, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_and_rollbacks_reach_the_client() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(client.status().status, Status::Valid);
    assert_eq!(rendered(&client), "reply v1 Ann sig1");
    let p = client.get("support/reply").unwrap();
    assert_eq!((p.source(), p.revision()), (Source::Memory, 1));

    let changes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = changes.clone();
    client.on_change(move |c| sink.lock().unwrap().extend_from_slice(c));

    // Publish v2 of both: arrives over the stream.
    let t = Instant::now();
    reg.publish(state(2, 2));
    wait_until("v2", Duration::from_secs(5), || {
        rendered(&client) == "reply v2 Ann sig2"
    })
    .await;
    eprintln!("publish reached the client in {:?}", t.elapsed());
    // Roll both back to v1, including the included prompt.
    reg.publish(state(1, 1));
    wait_until("rollback", Duration::from_secs(5), || {
        rendered(&client) == "reply v1 Ann sig1"
    })
    .await;
    let c = changes.lock().unwrap();
    assert!(c.iter().any(|c| c.prompt == "support/reply"
        && c.label == "production"
        && c.old == Some(2)
        && c.new == Some(1)));
    // The stream delivered deltas, not a new snapshot each time.
    let g = reg.inner.lock().unwrap();
    assert_eq!(g.stream_requests, 1, "one stream connection");
    drop(g);
    client.close();
    assert_eq!(client.status().status, Status::Off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_until("stream connected", Duration::from_secs(5), || {
        reg.inner.lock().unwrap().stream_requests == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let readers = Readers::start(&client);
    proxy.set(Net::Down);
    wait_until("interrupted", Duration::from_secs(5), || {
        client.status().status == Status::Interrupted
    })
    .await;
    assert!(client.status().last_error.is_some());
    // While it is down: a publish happens; reads are served from memory.
    reg.publish(state(3, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rendered(&client), "reply v1 Ann sig1");
    proxy.set(Net::Up);
    wait_until("converged", Duration::from_secs(5), || {
        rendered(&client) == "reply v3 Ann sig1"
    })
    .await;
    wait_until("valid", Duration::from_secs(5), || {
        client.status().status == Status::Valid
    })
    .await;
    let (reads, failures) = readers.finish();
    assert!(reads > 100);
    assert_eq!(failures, 0, "no read may fail during an outage");
    // Every reconnect resumed from a revision (Last-Event-ID), never from
    // scratch. (Convergence may come from the snapshot request first; the
    // stream reconnects right after.)
    wait_until("stream reconnected", Duration::from_secs(5), || {
        reg.inner.lock().unwrap().stream_requests >= 2
    })
    .await;
    let g = reg.inner.lock().unwrap();
    assert!(g.last_event_ids.len() >= 2, "{:?}", g.last_event_ids);
    assert!(
        g.last_event_ids.iter().all(|id| id.is_some()),
        "{:?}",
        g.last_event_ids
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replays_missed_deltas() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_until("stream connected", Duration::from_secs(5), || {
        reg.inner.lock().unwrap().stream_requests == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A short drop: the publish happens while the connection is gone.
    proxy.set(Net::Down);
    reg.publish(state(2, 1));
    proxy.set(Net::Up);
    wait_until("v2", Duration::from_secs(5), || {
        rendered(&client) == "reply v2 Ann sig1"
    })
    .await;
    let g = reg.inner.lock().unwrap();
    // Resumed at revision 1 and got the missed delta replayed: no second
    // snapshot download.
    assert_eq!(
        g.last_event_ids[..2],
        [Some("1".to_string()), Some("1".to_string())],
        "{:?}",
        g.last_event_ids
    );
    assert_eq!(g.snapshot_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_and_bad_payloads() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let readers = Readers::start(&client);
    let mut expected = 1;
    for fault in [
        Fault::Status(500, None),
        Fault::Status(503, None),
        Fault::Status(429, Some(1)),
        Fault::Garbage,
        Fault::Truncated,
    ] {
        reg.set_fault(fault.clone());
        // Force reconnects so the fault is seen: drop connections.
        proxy.set(Net::Down);
        tokio::time::sleep(Duration::from_millis(50)).await;
        proxy.set(Net::Up);
        expected += 1;
        reg.publish(state(expected, 1));
        wait_until(
            &format!("error reported for {fault:?}"),
            Duration::from_secs(5),
            || client.status().status == Status::Interrupted,
        )
        .await;
        // The old data keeps being served.
        assert!(rendered(&client).starts_with("reply v"));
        reg.set_fault(Fault::None);
        let want = format!("reply v{expected} Ann sig1");
        wait_until(
            &format!("recovery after {fault:?}"),
            Duration::from_secs(8),
            || rendered(&client) == want,
        )
        .await;
    }
    // A snapshot whose new version has a broken template: the last good
    // version keeps serving, the rest of the update applies.
    let mut broken = state(expected, 2);
    broken[0]
        .versions
        .push(PromptVersion::text(expected + 1, "{% if %}"));
    broken[0].labels.insert("production".into(), expected + 1);
    reg.publish(broken);
    wait_until("sig2 applied", Duration::from_secs(5), || {
        rendered(&client) == format!("reply v{expected} Ann sig2")
    })
    .await;
    let (reads, failures) = readers.finish();
    assert!(reads > 100);
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_network_mid_stream() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let readers = Readers::start(&client);
    proxy.set(Net::Blackhole);
    // No FIN arrives: only the missing heartbeats (idle timeout) tell.
    wait_until(
        "interrupted by idle timeout",
        Duration::from_secs(5),
        || client.status().status == Status::Interrupted,
    )
    .await;
    let err = client.status().last_error.unwrap();
    assert!(
        err.contains("silent") || err.contains("no response"),
        "{err}"
    );
    reg.publish(state(2, 1));
    proxy.set(Net::Up);
    wait_until("converged", Duration::from_secs(8), || {
        rendered(&client) == "reply v2 Ann sig1"
    })
    .await;
    let (_, failures) = readers.finish();
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_is_detected() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    reg.set_fault(Fault::Silent);
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    wait_until("idle timeout", Duration::from_secs(5), || {
        client
            .status()
            .last_error
            .is_some_and(|e| e.contains("silent"))
    })
    .await;
    reg.set_fault(Fault::None);
    reg.publish(state(2, 1));
    wait_until("converged", Duration::from_secs(8), || {
        rendered(&client) == "reply v2 Ann sig1"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_serves_when_the_registry_is_down_at_start() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    let cache = tempfile::tempdir().unwrap();
    // First run: live data lands in the cache.
    let first = builder(&proxy.url())
        .cache_dir(cache.path())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    reg.publish(state(2, 2));
    wait_until("v2", Duration::from_secs(5), || {
        rendered(&first) == "reply v2 Ann sig2"
    })
    .await;
    first.close();
    let file = cache.path().join("shop.snapshot.json");
    wait_until("cache written", Duration::from_secs(2), || file.exists()).await;

    // Second run with the registry down: served from disk at once.
    proxy.set(Net::Down);
    let t = Instant::now();
    let second = builder(&proxy.url())
        .cache_dir(cache.path())
        .build()
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "start-up must not wait"
    );
    let p = second.get("support/reply").unwrap();
    assert_eq!(p.source(), Source::Disk);
    assert_eq!(rendered(&second), "reply v2 Ann sig2");
    wait_until("interrupted", Duration::from_secs(5), || {
        second.status().status == Status::Interrupted
    })
    .await;
    // Registry back, with newer data: newer wins.
    reg.publish(state(3, 2));
    proxy.set(Net::Up);
    wait_until("v3", Duration::from_secs(8), || {
        rendered(&second) == "reply v3 Ann sig2"
    })
    .await;
    assert_eq!(
        second.get("support/reply").unwrap().source(),
        Source::Memory
    );

    // A corrupt or old-format cache file is ignored, never served. (Give
    // the closed client's sync thread a moment: a save it had begun may
    // still land.)
    second.close();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&file, b"{\"cache_format\": 1, \"snapshot\": {\"trunc").unwrap();
    proxy.set(Net::Down);
    let third = builder(&proxy.url())
        .cache_dir(cache.path())
        .build()
        .unwrap();
    assert_eq!(
        third.get("support/reply").unwrap_err().kind(),
        "REGISTRY_UNAVAILABLE"
    );
    std::fs::write(&file, b"{\"cache_format\": 0, \"snapshot\": {}}").unwrap();
    let fourth = builder(&proxy.url())
        .cache_dir(cache.path())
        .build()
        .unwrap();
    assert_eq!(
        fourth.get("support/reply").unwrap_err().kind(),
        "REGISTRY_UNAVAILABLE"
    );
    // ... and replaced by good data once the registry answers.
    proxy.set(Net::Up);
    wait_until("recovered", Duration::from_secs(8), || {
        rendered(&fourth) == "reply v3 Ann sig2"
    })
    .await;
    // The good data replaced the bad file (written right after the swap).
    let disk = promptops_core::sync::DiskCache::new(cache.path(), PROJECT);
    wait_until("cache rewritten", Duration::from_secs(5), || {
        disk.load()
            .is_some_and(|(s, _)| s.revision == reg.revision())
    })
    .await;
    fourth.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_anywhere_gives_a_clear_error_or_the_fallback() {
    // Nothing listens on this port.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client = builder(&format!("http://{addr}"))
        .startup_wait(Duration::from_millis(300))
        .build()
        .unwrap();
    let e = client.get("support/reply").unwrap_err();
    assert_eq!(e.kind(), "REGISTRY_UNAVAILABLE");
    assert!(e.to_string().contains("support/reply"), "{e}");
    let fb = client
        .get_with(
            "support/reply",
            &GetOptions::default().with_fallback("Hi {{ name }}"),
        )
        .unwrap();
    assert_eq!(fb.source(), Source::Fallback);
    assert_eq!(
        fb.render(&context! { name => "Ann" })
            .unwrap()
            .text
            .unwrap(),
        "Hi Ann"
    );
    assert_eq!(client.status().status, Status::Interrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_sync() {
    let (running, proxy) = setup().await;
    let _keep = running;
    let client = Client::builder()
        .project(PROJECT)
        .server(proxy.url())
        .api_key("po_wrong")
        .sync_options(fast_sync())
        .startup_wait(Duration::from_secs(3))
        .build()
        .unwrap();
    let st = client.status();
    assert_eq!(st.status, Status::Off);
    assert!(st.last_error.unwrap().contains("401"));
    assert_eq!(
        client.get("support/reply").unwrap_err().kind(),
        "REGISTRY_UNAVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_when_there_is_no_stream() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    reg.set_fault(Fault::NoStream);
    let client = builder(&proxy.url())
        .startup_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(rendered(&client), "reply v1 Ann sig1");
    reg.publish(state(2, 1));
    wait_until("polled v2", Duration::from_secs(5), || {
        rendered(&client) == "reply v2 Ann sig1"
    })
    .await;
    // Polls are conditional: unchanged data costs a 304, not a download.
    let before = reg.inner.lock().unwrap().snapshot_requests;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(reg.inner.lock().unwrap().snapshot_requests > before);
    assert_eq!(client.status().status, Status::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_fetches_are_coalesced() {
    let (running, proxy) = setup().await;
    let reg = running.registry.clone();
    reg.inner.lock().unwrap().snapshot_delay = Duration::from_millis(400);
    let url = proxy.url();
    let clients: Vec<Client> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    builder(&url)
                        .startup_wait(Duration::from_secs(5))
                        .build()
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for c in &clients {
        assert_eq!(rendered(c), "reply v1 Ann sig1");
    }
    let n = reg.inner.lock().unwrap().snapshot_requests;
    assert!(
        n < 4,
        "4 clients started together made {n} snapshot requests"
    );
}

// ------------------------------------------------------------------ redis

mod redis_tests {
    use super::*;
    use promptops_core::SnapshotData;
    use promptops_tests::redis_server::RedisServer;

    fn publish(url: &str, snap: &SnapshotData, delta: Option<&promptops_core::Delta>) {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_connection().unwrap();
        let _: () = redis::cmd("SET")
            .arg(format!("promptops:{PROJECT}:snapshot"))
            .arg(snap.to_json())
            .query(&mut c)
            .unwrap();
        if let Some(d) = delta {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(format!("promptops:{PROJECT}:events"))
                .arg(serde_json::to_vec(d).unwrap())
                .query(&mut c)
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_only_client_follows_and_survives_restarts() {
        let mut server = RedisServer::start();
        let url = server.url();
        let reg = FakeRegistry::new(PROJECT, state(1, 1));
        let snap1 = reg.inner.lock().unwrap().snapshot.clone();
        publish(&url, &snap1, None);
        let client = Client::builder()
            .project(PROJECT)
            .redis(&url)
            .sync_options(fast_sync())
            .startup_wait(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(client.status().sources.get("redis"), Some(&Status::Valid));
        assert_eq!(rendered(&client), "reply v1 Ann sig1");
        let readers = Readers::start(&client);
        // A publish: the registry writes the key and the channel.
        reg.publish(state(2, 2));
        let (snap2, delta2) = {
            let g = reg.inner.lock().unwrap();
            (g.snapshot.clone(), g.events.last().unwrap().1.clone())
        };
        publish(&url, &snap2, Some(&delta2));
        wait_until("v2 via pub/sub", Duration::from_secs(5), || {
            rendered(&client) == "reply v2 Ann sig2"
        })
        .await;
        // Redis dies; a publish happens meanwhile; Redis comes back.
        server.kill();
        wait_until("interrupted", Duration::from_secs(5), || {
            client.status().status == Status::Interrupted
        })
        .await;
        // The registry's next publish writes the key and the channel again
        // (a restarted Redis starts empty).
        server.restart();
        reg.publish(state(3, 2));
        let (snap3, delta3) = {
            let g = reg.inner.lock().unwrap();
            (g.snapshot.clone(), g.events.last().unwrap().1.clone())
        };
        publish(&url, &snap3, Some(&delta3));
        wait_until("converged from the key", Duration::from_secs(8), || {
            rendered(&client) == "reply v3 Ann sig2"
        })
        .await;
        let (_, failures) = readers.finish();
        assert_eq!(failures, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_beside_http() {
        let server = RedisServer::start();
        let (running, proxy) = setup().await;
        let reg = running.registry.clone();
        let client = builder(&proxy.url())
            .redis(server.url())
            .startup_wait(Duration::from_secs(5))
            .build()
            .unwrap();
        // HTTP down: Redis alone carries the update.
        proxy.set(Net::Down);
        reg.publish(state(2, 1));
        let (snap, delta) = {
            let g = reg.inner.lock().unwrap();
            (g.snapshot.clone(), g.events.last().unwrap().1.clone())
        };
        publish(&server.url(), &snap, Some(&delta));
        wait_until("v2 via redis", Duration::from_secs(5), || {
            rendered(&client) == "reply v2 Ann sig1"
        })
        .await;
        assert_eq!(client.status().status, Status::Valid);
    }
}
