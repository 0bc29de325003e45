//! The PostgreSQL event store for `cqrs-core`: for services that run as several processes.
//!
//! [`PostgresEventStore`] implements every storage trait of [`cqrs_core`] and passes the whole
//! conformance suite against a real server.
//!
//! # How it works
//!
//! - **One statement per append:** a multi-row insert (`unnest`) that checks the command id,
//!   then the expected version, inserts the events and the command's record, and sends a
//!   `NOTIFY`. A concurrent writer that takes the same version fails on the unique
//!   `(stream, version)` constraint (SQLSTATE 23505, recognised by constraint name, never by
//!   message text) and gets [`StoreError::Conflict`](cqrs_core::StoreError::Conflict).
//! - **Gap safety without a global lock:** an event's position is its transaction id shifted
//!   left 16 bits, plus its index in the transaction. Readers deliver only positions below
//!   `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//!   transaction below it has ended, and any later commit gets a higher position.
//! - **Live subscriptions** are woken by `LISTEN`/`NOTIFY`, and poll when the listening
//!   connection is down.
//! - **Versioned migrations** run on connect under an advisory lock, so processes starting
//!   together migrate once. The schema name is configurable.
//! - **Transactional read models:** a [`PostgresProjection`] changes its tables and its
//!   checkpoint in one transaction, and only one process at a time runs it (a session
//!   advisory lock that PostgreSQL frees when its holder dies).
//!
//! # Crate features
//!
//! - `testing`: [`testing`], a throwaway PostgreSQL cluster for tests.

mod batch;
mod error;
mod projection;
mod reads;
mod rows;
mod schema;
mod sql;
mod store;

#[cfg(feature = "testing")]
pub mod testing;

pub use sqlx;

pub use crate::projection::{PostgresProjection, Transactional};
pub use crate::store::{MAX_EVENTS_PER_TRANSACTION, PostgresEventStore, PostgresOptions};
