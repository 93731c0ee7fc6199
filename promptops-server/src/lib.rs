//! promptops registry and sync server: storage (SQLite or PostgreSQL),
//! the REST API, snapshot/SSE delivery, Redis fan-out across replicas,
//! access control, approvals, the audit log and encryption at rest.
//! See PROTOCOL.md and PERMISSIONS.md.

pub mod api;
pub mod audit;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod client;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod health;
pub mod hub;
pub mod metrics;
pub mod openapi;
pub mod redis_bus;
pub mod registry;
pub mod rekey;
pub mod server;
pub mod telemetry;

pub use server::{Server, ServerConfig};
