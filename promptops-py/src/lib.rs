//! Python bindings of promptops. Skeleton until the Python package issue
//! lands: it only proves the core links into this crate.

pub use promptops_core as core;
