//! The embedded SQLite event store for `cqrs-core` (work in progress).
//!
//! This crate will hold `SqliteEventStore`: a single-file, server-less store on rusqlite with
//! WAL, configurable durability, a group-committing writer thread, versioned schema
//! migrations and transactional projections. It will implement every storage trait of
//! [`cqrs_core`] and pass the whole conformance suite. Until then it only re-exports the core
//! so that the workspace layout is in place.

pub use cqrs_core;
