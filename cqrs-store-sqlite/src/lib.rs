//! The embedded event store for `cqrs-core`: one SQLite file, no server.
//!
//! [`SqliteEventStore`] implements every storage trait of [`cqrs_core`] (events, snapshots,
//! checkpoints, the message log, scheduled commands, process state) and passes the whole
//! conformance suite.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{Repository, Storage};
//! use cqrs_store_sqlite::SqliteEventStore;
//!
//! # tokio_test::block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store: Arc<dyn Storage> = Arc::new(SqliteEventStore::open(dir.path().join("app.db")).await?);
//! // Hand `store` to repositories, projection runners, process managers…
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # How it works
//!
//! - **WAL mode**, with durability as a setting ([`Durability::Full`] by default, `Normal` opt-in).
//! - **Group commit:** one writer thread owns the write connection. It takes every write
//!   waiting in its channel, runs each in its own savepoint inside one transaction — checking
//!   each append's expected version and command id — and commits once, so N concurrent appends
//!   cost one sync of the log. A conflicting append fails alone; the others commit.
//! - **Reads** use their own connections on tokio's blocking pool; nothing blocks the executor.
//! - **Global positions** are the event table's row ids, handed out by the single writer in
//!   commit order: gap-free and gap-safe by construction.
//! - **Schema migrations** are versioned and recorded in the file; a file written by a newer
//!   version is refused with [`StoreError::SchemaTooNew`](cqrs_core::StoreError::SchemaTooNew).
//! - **Transactional read models:** a [`SqliteProjection`] keeps its tables in the same file and
//!   commits its changes and its checkpoint in one transaction.
//!
//! # Crate features
//!
//! None; SQLite is compiled in (`rusqlite` with `bundled`), and [`rusqlite`] is re-exported so
//! read models use the same version.

mod dcb;
mod error;
mod events;
mod log;
mod process;
mod projection;
mod reads;
mod rows;
mod schedule;
mod schema;
mod state;
mod store;
mod writer;

pub use rusqlite;

pub use crate::projection::{SqliteProjection, Transactional};
pub use crate::store::{Durability, SqliteEventStore, SqliteOptions};
pub use crate::writer::WriterStats;
