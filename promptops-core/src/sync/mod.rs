//! Live delivery: sources that feed the store from the registry.
//!
//! Always available (std only): the sync [`Status`], the on-disk
//! last-known-good cache ([`DiskCache`]) and the SSE parser. With the `sync`
//! feature: the HTTP source (snapshot with ETag, then the SSE stream of
//! deltas with `Last-Event-ID` resume, conditional polling as a backstop),
//! and with `redis`: the Redis source (snapshot key + pub/sub channel).
//! Sources run on a tokio runtime beside the engine and push into the store
//! through its one entry point; the engine itself stays pure.

mod disk;
pub mod sse;
mod status;

pub use disk::{CACHE_FORMAT, DiskCache};
pub use status::{Status, StatusCell, SyncStatus};

#[cfg(feature = "sync")]
mod http;
#[cfg(feature = "redis")]
mod redis_source;
#[cfg(feature = "sync")]
mod runner;

#[cfg(feature = "sync")]
pub use runner::{Backoff, SyncOptions, Syncer};
