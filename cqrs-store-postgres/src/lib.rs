//! The PostgreSQL event store for `cqrs-core` (work in progress).
//!
//! This crate will hold `PostgresEventStore`: a sqlx-based store for services that run as
//! several processes, with one-statement appends, gap-safe global reads without a global
//! write lock (transaction-id visibility horizons), `LISTEN`/`NOTIFY` subscriptions,
//! transactional and single-leader projections, and versioned migrations. It will implement
//! every storage trait of [`cqrs_core`] and pass the whole conformance suite against a real
//! PostgreSQL. Until then it only re-exports the core so that the workspace layout is in place.

pub use cqrs_core;
