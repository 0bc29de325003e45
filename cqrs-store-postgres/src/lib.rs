//! The PostgreSQL event store for `cqrs-core`: for services that run as several processes.
//!
//! [`PostgresEventStore`] implements every storage trait of [`cqrs_core`] and passes the whole
//! conformance suite against a real server.
//!
//! # How it works
//!
//! - **One statement per append:** a multi-row insert (`unnest`) that checks the command id,
//!   then the expected version, and inserts the events and the command's record. A concurrent
//!   writer that takes the same version fails on the unique `(stream, version)` constraint
//!   (SQLSTATE 23505, recognised by constraint name, never by message text) and gets
//!   [`StoreError::Conflict`](cqrs_core::StoreError::Conflict).
//! - **Group commit:** appends that arrive while another is being committed go together in
//!   one set-based statement and one transaction (one sync of PostgreSQL's log), each checked
//!   and answered as if alone. Two appends of one stream never share a batch, so each stream's
//!   appends commit in the order they came. Likewise, stream reads that arrive while two are
//!   at the server share one query.
//! - **Gap safety without a global lock:** an event's position is its transaction id shifted
//!   left 16 bits, plus its index in the transaction. Readers deliver only positions below
//!   `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//!   transaction below it has ended, and any later commit gets a higher position.
//! - **Live subscriptions** are woken at once in the committing process, and in others by
//!   `LISTEN`/`NOTIFY` (one `NOTIFY` per millisecond at most, sent after the commits it
//!   announces); they poll when the listening connection is down.
//! - **Versioned migrations** run on connect under an advisory lock, so processes starting
//!   together migrate once. The schema name is configurable.
//! - **Transactional read models:** a [`PostgresProjection`] changes its tables and its
//!   checkpoint in one transaction, and only one process at a time runs it (a session
//!   advisory lock that PostgreSQL frees when its holder dies).
//!
//! # Crate features
//!
//! - `testing`: [`testing`], a throwaway PostgreSQL cluster for tests.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod batch;
mod dcb;
mod error;
mod events;
mod log;
mod process;
mod projection;
mod read_batcher;
mod reads;
mod rows;
mod schedule;
mod schema;
mod sql;
mod state;
mod store;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use sqlx;

pub use crate::batch::MAX_EVENTS_PER_TRANSACTION;
pub use crate::projection::{PostgresProjection, Transactional};
pub use crate::store::{PostgresEventStore, PostgresOptions, SynchronousCommit};
