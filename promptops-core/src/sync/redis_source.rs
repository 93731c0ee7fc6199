//! The Redis source: subscribe to `promptops:{project}:events` (deltas),
//! then read `promptops:{project}:snapshot` (so nothing published in between
//! is missed), and apply deltas as they arrive. A gap resyncs from the key.
//! Usable alone (apps that reach Redis but not the registry) or beside HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::runner::Ctx;
use crate::snapshot::{Delta, SnapshotData};
use crate::store::Update;

const SOURCE: &str = "redis";

pub fn snapshot_key(prefix: &str, project: &str) -> String {
    format!("{prefix}:{project}:snapshot")
}

pub fn events_channel(prefix: &str, project: &str) -> String {
    format!("{prefix}:{project}:events")
}

pub(crate) async fn run(ctx: Arc<Ctx>, url: String) {
    let mut attempt: u32 = 0;
    loop {
        if ctx.is_shutdown() {
            return;
        }
        let started = Instant::now();
        match session(&ctx, &url).await {
            Ok(()) => return,
            Err(msg) => {
                if started.elapsed() >= ctx.opts.backoff.reset_after {
                    attempt = 0;
                }
                ctx.status.error(SOURCE, msg);
                let d = ctx.opts.backoff.delay(attempt);
                attempt = attempt.saturating_add(1);
                if !ctx.sleep(d).await {
                    return;
                }
            }
        }
    }
}

async fn load_snapshot(
    ctx: &Ctx,
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Result<(), String> {
    let raw: Option<Vec<u8>> = tokio::time::timeout(
        ctx.opts.request_timeout,
        redis::cmd("GET").arg(key).query_async(conn),
    )
    .await
    .map_err(|_| "redis: GET timed out".to_string())?
    .map_err(|e| format!("redis: GET {key}: {e}"))?;
    match raw {
        Some(bytes) => {
            let snap = SnapshotData::from_json(&bytes)
                .map_err(|e| format!("redis: snapshot rejected: {e}"))?;
            ctx.apply(Update::Snapshot(snap), SOURCE)
                .map_err(|e| format!("redis: snapshot rejected: {e}"))?;
        }
        None => {
            // Nothing published yet: connected, but no data from here.
            ctx.status.ok(SOURCE);
        }
    }
    Ok(())
}

/// One connected session; Ok on shutdown, Err to reconnect.
async fn session(ctx: &Ctx, url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis: bad URL: {e}"))?;
    let t = ctx.opts.connect_timeout;
    let mut pubsub = tokio::time::timeout(t, client.get_async_pubsub())
        .await
        .map_err(|_| "redis: connect timed out".to_string())?
        .map_err(|e| format!("redis: connect: {e}"))?;
    let channel = events_channel(&ctx.opts.redis_prefix, &ctx.opts.project);
    pubsub
        .subscribe(&channel)
        .await
        .map_err(|e| format!("redis: SUBSCRIBE: {e}"))?;
    let mut conn = tokio::time::timeout(t, client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "redis: connect timed out".to_string())?
        .map_err(|e| format!("redis: connect: {e}"))?;
    let key = snapshot_key(&ctx.opts.redis_prefix, &ctx.opts.project);
    load_snapshot(ctx, &mut conn, &key).await?;
    let mut messages = pubsub.into_on_message();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    loop {
        tokio::select! {
            _ = ctx.stopped() => return Ok(()),
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err("redis: subscription closed".into());
                };
                let payload: Vec<u8> = msg.get_payload().map_err(|e| format!("redis: bad message: {e}"))?;
                let delta: Delta = match serde_json::from_slice(&payload) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(target: "promptops::sync", "redis: ignoring a message that is not a delta: {e}");
                        continue;
                    }
                };
                if ctx.apply(Update::Delta(delta), SOURCE).is_err() {
                    // A gap: resync from the snapshot key.
                    load_snapshot(ctx, &mut conn, &key).await?;
                }
            }
            _ = ping.tick() => {
                // Catches a dead connection that never closes (no FIN).
                let pong: Result<Result<String, _>, _> = tokio::time::timeout(
                    ctx.opts.request_timeout,
                    redis::cmd("PING").query_async(&mut conn),
                ).await;
                match pong {
                    Ok(Ok(_)) => ctx.status.ok(SOURCE),
                    _ => return Err("redis: PING failed".into()),
                }
            }
        }
    }
}
