//! Redis: after every change the replica that committed it stores the
//! snapshot under `{prefix}:{project}:snapshot` (only when it is newer than
//! what is there, tracked in `{prefix}:{project}:revision`) and publishes the
//! delta on `{prefix}:{project}:events`, atomically (one Lua script). Every
//! replica subscribes to `{prefix}:*:events` and hands deltas to its hub,
//! which drops the ones it has already forwarded (by revision).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::hub::Hub;

const PUBLISH_SCRIPT: &str = r#"
local cur = redis.call('GET', KEYS[2])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
return redis.call('PUBLISH', KEYS[3], ARGV[3])
"#;

pub struct RedisBus {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisBus {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisBus> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3);
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to Redis"))??;
        Ok(RedisBus {
            client,
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(PUBLISH_SCRIPT),
        })
    }

    pub fn snapshot_key(&self, project: &str) -> String {
        format!("{}:{project}:snapshot", self.prefix)
    }

    pub fn channel(&self, project: &str) -> String {
        format!("{}:{project}:events", self.prefix)
    }

    pub async fn publish(
        &self,
        project: &str,
        snapshot_revision: u64,
        snapshot_json: &[u8],
        delta_json: &[u8],
    ) -> redis::RedisResult<i64> {
        let mut conn = self.conn.clone();
        self.script
            .key(self.snapshot_key(project))
            .key(format!("{}:{project}:revision", self.prefix))
            .key(self.channel(project))
            .arg(snapshot_json)
            .arg(snapshot_revision)
            .arg(delta_json)
            .invoke_async(&mut conn)
            .await
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Subscribe to every project's events and feed them to the hub, for
    /// as long as the hub lives; reconnects with backoff, and after every
    /// (re)connect asks the hub to catch up from the database.
    pub fn spawn_subscriber(self: &Arc<Self>, hub: Weak<Hub>) -> tokio::task::JoinHandle<()> {
        let bus = self.clone();
        tokio::spawn(async move {
            let pattern = format!("{}:*:events", bus.prefix);
            let mut backoff = Duration::from_millis(200);
            loop {
                if hub.upgrade().is_none() {
                    break;
                }
                match bus.client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(e) = pubsub.psubscribe(&pattern).await {
                            tracing::warn!(error = %e, "Redis psubscribe failed");
                        } else {
                            backoff = Duration::from_millis(200);
                            if let Some(h) = hub.upgrade() {
                                h.poll_once().await;
                            }
                            let mut stream = pubsub.into_on_message();
                            while let Some(msg) = stream.next().await {
                                let Some(h) = hub.upgrade() else { return };
                                let channel = msg.get_channel_name();
                                let Some(project) = channel
                                    .strip_prefix(&format!("{}:", bus.prefix))
                                    .and_then(|r| r.strip_suffix(":events"))
                                else {
                                    continue;
                                };
                                h.ingest_remote(project, msg.get_payload_bytes()).await;
                            }
                            tracing::warn!("Redis subscription ended; reconnecting");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "Redis subscribe connection failed"),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })
    }
}
