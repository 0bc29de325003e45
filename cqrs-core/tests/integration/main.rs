//! Integration tests of `cqrs-core` through its public API, on the in-memory store.
//!
//! One test binary; each module is a theme.

/// Decisions across streams: given/when/then, conflicts, the system's wiring.
mod decisions;
/// A small registration domain (orders, seats, a process manager) the other modules drive.
mod domain;
/// Metrics: commands by outcome, a projection's lag while it catches up.
mod metrics;
/// Store migration: copy-transform, prelude, checkpoints, refusal, resume after errors and kills.
mod migrate;
/// The conformance suite against stores with planted bugs: each fails a named case in time.
mod planted;
/// Process managers, the outbox and durable timeouts, across restarts and redeliveries.
mod processes;
/// Projections: catch-up, live following, rebuilds, retries after errors, blue/green keys.
mod projections;
/// Command handling: conflicts under concurrency, upcasting on load, lineage, tracing spans.
mod repository;
/// Given/when/then scenarios, sync and async.
mod scenarios;
/// `System`: wiring given once, settle, spawn, read-your-writes.
mod system;
