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
//! - `testing`: [`testing`], a file store in a temporary directory that goes with its last
//!   handle.
//!
//! SQLite is compiled in (`rusqlite` with `bundled`), and [`rusqlite`] is re-exported so read
//! models use the same version.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod dcb;
mod error;
mod events;
mod log;
mod process;
mod projection;
mod readahead;
mod reads;
mod rows;
mod schedule;
mod schema;
mod state;
mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod writer;

pub use rusqlite;

pub use crate::projection::{SqliteProjection, Transactional};
pub use crate::store::{Durability, FileInUse, SqliteEventStore, SqliteOptions};
pub use crate::writer::WriterStats;

/// Every `LIMIT` is written `LIMIT ?n + 0`, never `LIMIT ?n`: SQLite re-prepares a statement
/// whose `ORDER BY … LIMIT` is a bare parameter at every execution (the bound value may change
/// its plan), which cost 3–13 µs per read on this machine, more than a small read itself.
#[cfg(test)]
mod limits {
    use rusqlite::{Connection, StatementStatus};

    const SOURCES: [(&str, &str); 5] = [
        ("dcb.rs", include_str!("dcb.rs")),
        ("process.rs", include_str!("process.rs")),
        ("reads.rs", include_str!("reads.rs")),
        ("schedule.rs", include_str!("schedule.rs")),
        ("log.rs", include_str!("log.rs")),
    ];

    #[test]
    fn no_limit_is_a_bare_parameter() {
        for (file, source) in SOURCES {
            for (n, line) in source.lines().enumerate() {
                for (at, _) in line.match_indices("LIMIT ?") {
                    let rest = line[at + "LIMIT ?".len()..]
                        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '{' || c == '}');
                    assert!(
                        rest.starts_with(" + 0"),
                        "{file}:{}: write `LIMIT ? + 0`: {line}",
                        n + 1
                    );
                }
            }
        }
    }

    /// Why: the bare form is re-prepared at each new binding, the other is not.
    #[test]
    fn a_bare_limit_parameter_is_prepared_again_at_every_binding() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE t (k TEXT, p INTEGER, PRIMARY KEY (k, p)) WITHOUT ROWID;
             INSERT INTO t VALUES ('a', 1), ('a', 2), ('b', 3);",
        )
        .expect("schema");
        let reprepares = |sql: &str| {
            let mut select = conn.prepare(sql).expect("prepare");
            for limit in 1..=3_i64 {
                let rows: Vec<i64> = select
                    .query_map(rusqlite::params!["a", limit], |r| r.get(0))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                assert_eq!(rows.len(), usize::try_from(limit.min(2)).expect("small"));
            }
            select.get_status(StatementStatus::RePrepare)
        };
        let bare = reprepares("SELECT p FROM t WHERE k = ?1 ORDER BY p LIMIT ?2");
        let kept = reprepares("SELECT p FROM t WHERE k = ?1 ORDER BY p LIMIT ?2 + 0");
        assert_eq!(kept, 0);
        // If a future SQLite stops doing this, the `+ 0` is harmless; this says so.
        assert!(
            bare > 0,
            "SQLite no longer re-prepares a bare LIMIT parameter"
        );
    }
}
