//! SSE delivery: snapshot on connect, deltas on change, Last-Event-ID
//! replay, stale ids get a snapshot, deltas chain.

mod common;

use std::time::Duration;

use common::{Env, Options};
use promptops_core::{Delta, SnapshotData};
use serde_json::json;

fn snap(e: &common::SseEvent) -> SnapshotData {
    SnapshotData::from_json(serde_json::to_string(&e.data).unwrap().as_bytes()).unwrap()
}

fn delta(e: &common::SseEvent) -> Delta {
    serde_json::from_value(e.data.clone()).unwrap()
}

#[tokio::test]
async fn connect_snapshot_then_deltas_that_chain() {
    let env = Env::start().await;
    env.create_prompt("author", "a/b", "one").await;
    let mut s = env.stream("sdk", "shop", None).await;
    assert_eq!(s.status, 200);
    let e = s.expect("snapshot").await;
    assert_eq!(e.id, Some(1));
    let mut state = snap(&e);
    assert_eq!(state.revision, 1);
    // New version, label move, archive: three deltas.
    env.new_version("author", "a/b", "two").await;
    env.put(
        "author",
        "/v1/projects/shop/prompts/a%2Fb/labels/staging",
        json!({"version": 2}),
    )
    .await;
    env.create_prompt("author", "a/c", "c").await;
    env.post(
        "publisher",
        "/v1/projects/shop/prompts/a%2Fc/archive",
        json!({}),
    )
    .await;
    for expect_rev in 2..=5u64 {
        let e = s.expect("delta").await;
        assert_eq!(e.id, Some(expect_rev));
        let d = delta(&e);
        assert_eq!(d.base_revision, state.revision, "deltas chain");
        state = state.apply_delta(&d).unwrap();
    }
    // Applying the deltas gives exactly the server's snapshot.
    let server = env.snapshot("sdk", "shop").await;
    assert_eq!(state.content_hash(), server["hash"].as_str().unwrap());
    assert_eq!(state.revision, 5);
    assert!(state.prompt("a/c").is_none(), "archived prompt removed");
    assert_eq!(state.prompt("a/b").unwrap().labels["staging"], 2);
}

#[tokio::test]
async fn last_event_id_replays_missed_deltas() {
    let env = Env::start().await;
    env.create_prompt("author", "a/b", "one").await;
    let mut s = env.stream("sdk", "shop", None).await;
    let first = snap(&s.expect("snapshot").await);
    drop(s);
    env.new_version("author", "a/b", "two").await;
    env.new_version("author", "a/b", "three").await;
    // Reconnect from revision 1: the two deltas, no snapshot.
    let mut s = env.stream("sdk", "shop", Some("1")).await;
    let e2 = s.expect("delta").await;
    let e3 = s.expect("delta").await;
    assert_eq!((e2.id, e3.id), (Some(2), Some(3)));
    let state = first
        .apply_delta(&delta(&e2))
        .unwrap()
        .apply_delta(&delta(&e3))
        .unwrap();
    assert_eq!(
        state.content_hash(),
        env.snapshot("sdk", "shop").await["hash"].as_str().unwrap()
    );
    // Live deltas continue the chain.
    env.new_version("author", "a/b", "four").await;
    let e4 = s.expect("delta").await;
    assert_eq!(delta(&e4).base_revision, 3);
    // Up to date: nothing is replayed; the next event is the next change.
    let mut s = env.stream("sdk", "shop", Some("4")).await;
    assert!(s.next(Duration::from_millis(300)).await.is_none());
    env.new_version("author", "a/b", "five").await;
    let e = s.expect("delta").await;
    assert_eq!((e.id, delta(&e).base_revision), (Some(5), 4));
}

#[tokio::test]
async fn stale_unknown_or_future_ids_get_a_snapshot() {
    // Keep only 3 events per project.
    let env = Env::start_with(Options {
        event_retention: 3,
        ..Default::default()
    })
    .await;
    env.create_prompt("author", "a/b", "v1").await;
    for i in 2..=8 {
        env.new_version("author", "a/b", &format!("v{i}")).await;
    }
    // Events 1..=5 are pruned: id 2 is stale.
    let mut s = env.stream("sdk", "shop", Some("2")).await;
    let e = s.expect("snapshot").await;
    assert_eq!(e.id, Some(8));
    // Id 5: events 6, 7, 8 are still there.
    let mut s = env.stream("sdk", "shop", Some("5")).await;
    assert_eq!(s.expect("delta").await.id, Some(6));
    // Ahead of the server, or garbage: snapshot.
    let mut s = env.stream("sdk", "shop", Some("999")).await;
    assert_eq!(s.expect("snapshot").await.id, Some(8));
    let mut s = env.stream("sdk", "shop", Some("not-a-number")).await;
    assert_eq!(s.expect("snapshot").await.id, Some(8));
}

#[tokio::test]
async fn stream_auth_and_many_clients() {
    let env = Env::start().await;
    let s = env.stream("rival-admin", "shop", None).await;
    assert_eq!(s.status, 403);
    let r = env
        .http
        .get(format!("{}/v1/projects/shop/stream", env.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = env.stream("sdk", "shop", None).await;
        c.expect("snapshot").await;
        clients.push(c);
    }
    let metrics = env
        .http
        .get(format!("{}/metrics", env.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("promptops_stream_clients 20"), "{metrics}");
    env.create_prompt("author", "a/b", "x").await;
    for c in &mut clients {
        let e = c.expect("delta").await;
        assert_eq!(e.id, Some(1));
    }
    drop(clients);
    // Disconnected clients are noticed and leave the gauge.
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = env
            .http
            .get(format!("{}/metrics", env.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("promptops_stream_clients 0") {
            gone = true;
            break;
        }
    }
    assert!(gone, "stream clients gauge returns to 0");
}

#[tokio::test]
async fn heartbeats_are_comments() {
    let env = Env::start_with(Options {
        heartbeat: Duration::from_millis(150),
        ..Default::default()
    })
    .await;
    assert_eq!(promptops_server::hub::PING_FRAME, b": ping\n\n");
    let mut s = env.stream("sdk", "shop", None).await;
    s.expect("snapshot").await;
    assert!(
        s.next(Duration::from_millis(700)).await.is_none(),
        "no events, only comments"
    );
    assert!(s.comments >= 2, "got {} pings", s.comments);
    // A change after the pings still arrives.
    env.create_prompt("author", "a/b", "x").await;
    assert_eq!(s.expect("delta").await.id, Some(1));
}
