//! Node.js bindings of promptops. Skeleton until the Node package issue
//! lands: it only proves the core links into this crate.

pub use promptops_core as core;
