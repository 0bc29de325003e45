//! The NATS JetStream event store for `cqrs-core`: the log replicated by Raft over a NATS
//! cluster, for when one machine is not enough or its loss must not lose the log.
//!
//! **Status: complete, young.** The store landed in steps (`docs/adr/0012-nats-jetstream-layout.md`
//! gives the layout and the steps). What is here now:
//!
//! - [`NatsEventStore`]: every store trait of `cqrs-core`, so a whole
//!   [`Storage`](cqrs_core::Storage): events and live subscriptions, the message log,
//!   snapshots, checkpoints, process managers' state saved with their outbox, the schedule
//!   (claims with leases, dead letters) and DCB (reads by query, conditional commits). It
//!   passes the whole conformance suite on a 3-node cluster with three replicas
//!   (`tests/conformance.rs`);
//! - [`testing`] (feature `testing`): throwaway 1-node and 3-node JetStream clusters on
//!   loopback from the `nats-server` binary, to kill, pause and restart node by node, and
//!   fresh stores on them;
//! - `tests/engine.rs`: the behaviour of JetStream the store's design relies on, pinned on a
//!   3-node cluster with three replicas; `tests/store.rs`: what the store guarantees beyond
//!   the suite (reads through a restarted or lagging replica, other processes' commits waking
//!   subscribers, stream names that are no subject tokens); `tests/faults.rs`: nothing
//!   acknowledged lost or doubled, and subscribers and projections exact, while the log's
//!   leader is killed, a node hangs and the whole cluster restarts.
//!
//! The conference example runs on it (`serve --database nats://HOST:PORT,…`), and
//! `benches/benches/nats.rs` measures it beside raw async-nats.
//!
//! # How it works
//!
//! - **An event's position is its sequence in the log stream**, assigned by the stream's
//!   leader in commit order: positions increase strictly and have gaps (command records
//!   take sequences too), and no event ever appears below one a reader has seen.
//! - **A commit is one atomic batch** (server 2.12+): its events on the stream's subject, the
//!   first expecting the subject's last sequence as read just before, then its command
//!   record on the command's own subject, expecting none, so a command id is recorded once.
//! - **Reads** learn from the leader where the data ends, then read in batches from any
//!   replica up to there, waiting for a replica that is behind: they never miss an
//!   acknowledged write.
//! - **Processes and the schedule** are rows of a stream that keeps one message per subject,
//!   changed by compare-and-set; a process save is one atomic batch of its state, outbox,
//!   cancellations and handled command.
//! - **DCB:** a tagged event is followed by a marker per tag on the tag's subject; a condition
//!   is read, then held by the batch expecting each tag subject's last sequence.
//! - **Durability** is what the cluster gives: see the ADR for `sync_interval` and replicas.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod conn;
mod dcb;
mod log;
mod process;
mod schedule;
mod state;
mod store;
mod subject;

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use crate::store::{NatsEventStore, NatsOptions};
