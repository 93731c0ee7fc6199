//! Two replicas sharing one database: a change made through one reaches
//! SSE clients and snapshot readers of the other. With
//! PROMPTOPS_TEST_DATABASE_URL and PROMPTOPS_TEST_REDIS_URL set, the replicas
//! share PostgreSQL and Redis and delivery goes through Redis pub/sub (the
//! database poller is switched off); otherwise they share one SQLite file
//! and the database poller delivers.

mod common;

use std::time::{Duration, Instant};

use common::{Env, Options, redis_url};
use promptops_core::{Delta, SnapshotData};

async fn pair() -> (Env, Env, bool) {
    let redis = redis_url().is_some();
    let poll = if redis {
        Duration::ZERO
    } else {
        Duration::from_millis(200)
    };
    let a = Env::start_with(Options {
        poll_interval: poll,
        ..Default::default()
    })
    .await;
    let mut b = Env::start_with(Options {
        database_url: Some(a.database_url.clone()),
        master_key: Some(a.master_key.clone()),
        redis_prefix: Some(a.redis_prefix.clone()),
        poll_interval: poll,
        setup: false,
        ..Default::default()
    })
    .await;
    b.keys = a.keys.clone();
    (a, b, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_through_one_replica_reaches_stream_clients_of_the_other() {
    let (a, b, redis) = pair().await;
    a.create_prompt("author", "r/p", "one").await;
    let mut on_b = b.stream("sdk", "shop", None).await;
    let first = on_b.expect("snapshot").await;
    let mut state =
        SnapshotData::from_json(serde_json::to_string(&first.data).unwrap().as_bytes()).unwrap();
    assert_eq!(state.revision, 1);
    let mut on_a = a.stream("sdk", "shop", None).await;
    on_a.expect("snapshot").await;

    // A burst of changes through A, some through B: B's client gets them
    // all, in order, chained.
    a.new_version("author", "r/p", "two").await;
    a.approve("r/p", 2).await;
    let started = Instant::now();
    assert_eq!(a.publish("r/p", 2).await.0, 200);
    b.new_version("author", "r/p", "three").await;
    a.create_prompt("author", "r/q", "q").await;
    for rev in 2..=5u64 {
        let e = on_b.expect("delta").await;
        assert_eq!(e.id, Some(rev));
        let d: Delta = serde_json::from_value(e.data).unwrap();
        assert_eq!(d.base_revision, state.revision);
        state = state.apply_delta(&d).unwrap();
        if rev == 3 && redis {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "publish reached B through Redis in {:?}",
                started.elapsed()
            );
        }
    }
    assert_eq!(state.prompt("r/p").unwrap().labels["production"], 2);
    // A's own client saw the same chain, including B's change.
    for rev in 2..=5u64 {
        assert_eq!(on_a.expect("delta").await.id, Some(rev));
    }
    // Snapshot readers of either replica converge on the same content.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let sa = a.snapshot("sdk", "shop").await;
    let sb = b.snapshot("sdk", "shop").await;
    assert_eq!(sa["hash"], sb["hash"]);
    assert_eq!(sb["hash"].as_str().unwrap(), state.content_hash());
    assert_eq!(sb["revision"], 5);

    if let Some(url) = redis_url() {
        // The committing replica stored the snapshot in Redis.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let stored: String = redis::cmd("GET")
            .arg(format!("{}:shop:snapshot", a.redis_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        let s = SnapshotData::from_json(stored.as_bytes()).unwrap();
        assert_eq!((s.revision, s.hash.as_str()), (5, &*state.content_hash()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_to_the_other_replica_replays_from_the_shared_log() {
    let (a, b, _) = pair().await;
    a.create_prompt("author", "r/p", "one").await;
    let mut s = a.stream("sdk", "shop", None).await;
    assert_eq!(s.expect("snapshot").await.id, Some(1));
    drop(s);
    a.new_version("author", "r/p", "two").await;
    b.new_version("author", "r/p", "three").await;
    // The client fails over to B with its last event id.
    let mut s = b.stream("sdk", "shop", Some("1")).await;
    assert_eq!(s.expect("delta").await.id, Some(2));
    assert_eq!(s.expect("delta").await.id, Some(3));
}
