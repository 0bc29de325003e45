//! The NATS JetStream event store for `cqrs-core`: the log replicated by Raft over a NATS
//! cluster, for when one machine is not enough or its loss must not lose the log.
//!
//! **Status: in progress.** The store lands in steps (`docs/adr/0012-nats-jetstream-layout.md`
//! gives the layout and the steps). What is here now:
//!
//! - [`testing`] (feature `testing`): throwaway 1-node and 3-node JetStream clusters on
//!   loopback from the `nats-server` binary, to kill, pause and restart node by node;
//! - `tests/engine.rs`: the behaviour of JetStream the store's design relies on, pinned on a
//!   3-node cluster with three replicas: a stale writer is refused by its subject's last
//!   sequence, a message id seen before is acknowledged as a duplicate, an atomic batch over
//!   two subjects is stored whole or not at all (a stale expectation in it refuses all of it),
//!   and killing the stream's leader during concurrent publishes loses no acknowledged message.
//!
//! The store traits (`EventStore`, `MessageLog`, `ProcessStore`, …) come next; until then use
//! `cqrs-store-sqlite` or `cqrs-store-postgres`.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
