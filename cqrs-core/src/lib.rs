//! Building blocks for CQRS and event sourcing: aggregates, event stores, upcasting,
//! projections, process managers, and the kit to test them.
//!
//! This crate holds the contracts and the in-memory reference store; durable stores live in
//! `cqrs-store-sqlite` (embedded) and `cqrs-store-postgres` (servers), and both pass the same
//! [conformance suite](crate::testing::conformance).
//!
//! # Example
//!
//! An aggregate decides and evolves, purely; a [`Repository`] does the rest.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{Aggregate, ApplyError, DomainEvent, InMemoryEventStore, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone)]
//! struct Seats { available: u32 }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum SeatsCommand {
//!     #[serde(rename = "seats.add")]
//!     Add { quantity: u32 },
//!     #[serde(rename = "seats.reserve")]
//!     Reserve { quantity: u32 },
//! }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum SeatsEvent {
//!     #[serde(rename = "seats.added")]
//!     Added { quantity: u32 },
//!     #[serde(rename = "seats.reserved")]
//!     Reserved { quantity: u32 },
//! }
//! impl DomainEvent for SeatsEvent {}
//!
//! #[derive(Debug, PartialEq, thiserror::Error, Serialize, Deserialize)]
//! enum SeatsError {
//!     #[error("only {available} seats left")]
//!     NotEnough { available: u32 },
//! }
//!
//! impl Aggregate for Seats {
//!     const TYPE: &'static str = "seats";
//!     type Id = String;
//!     type Command = SeatsCommand;
//!     type Event = SeatsEvent;
//!     type Error = SeatsError;
//!
//!     fn handle(state: Option<&Self>, _id: &String, command: SeatsCommand) -> Result<Vec<SeatsEvent>, SeatsError> {
//!         let available = state.map_or(0, |s| s.available);
//!         match command {
//!             SeatsCommand::Add { quantity } => Ok(vec![SeatsEvent::Added { quantity }]),
//!             SeatsCommand::Reserve { quantity } if quantity > available => Err(SeatsError::NotEnough { available }),
//!             SeatsCommand::Reserve { quantity } => Ok(vec![SeatsEvent::Reserved { quantity }]),
//!         }
//!     }
//!
//!     fn apply(state: Option<Self>, event: &SeatsEvent) -> Result<Self, ApplyError> {
//!         let available = state.map_or(0, |s| s.available);
//!         Ok(match event {
//!             SeatsEvent::Added { quantity } => Seats { available: available + quantity },
//!             SeatsEvent::Reserved { quantity } => Seats { available: available - quantity },
//!         })
//!     }
//! }
//!
//! # tokio_test::block_on(async {
//! let seats = Repository::<Seats>::new(Arc::new(InMemoryEventStore::new()));
//! let conference = "devconf".to_owned();
//! seats.handle(&conference, SeatsCommand::Add { quantity: 3 }).await?;
//! seats.handle(&conference, SeatsCommand::Reserve { quantity: 2 }).await?;
//! let err = seats.handle(&conference, SeatsCommand::Reserve { quantity: 2 }).await.unwrap_err();
//! assert_eq!(err.rejection(), Some(&SeatsError::NotEnough { available: 1 }));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! Test the same aggregate without a store, given/when/then, with
//! [`testing::Scenario`] (feature `testing`).
//!
//! # API themes
//!
//! - **Write side:** [`Aggregate`] (pure `handle` + `apply`), [`Repository`] (load, decide,
//!   append, retry, idempotency, snapshots), [`CommandContext`] for ids and lineage.
//! - **Messages:** events and commands are enums whose serde variant names are their stable
//!   type names ([`DomainEvent`], [`encode_message`], [`decode_message`]).
//! - **Storage contracts:** [`EventReader`] and [`EventStore`] (global log, optimistic
//!   concurrency, subscriptions), [`SnapshotStore`], [`CheckpointStore`], [`MessageLog`],
//!   [`ScheduleStore`], [`ProcessStore`]; [`Storage`] is all of them. Stores see
//!   [`NewEvent`] and [`RecordedEvent`], never domain types.
//! - **Writing a store:** the [`store`] module holds the contracts and what every store needs
//!   beside them (subscriptions over its own reads, the limits every store enforces as typed
//!   errors, checked integer conversions, microsecond timestamps); the
//!   [conformance suite](testing::conformance) proves a store, group by trait.
//! - **Versioning:** [`Upcasters`] turn old stored shapes into current ones on read;
//!   [`migrate::Migration`] copies a store into another in today's shapes, resumably, and
//!   verifies the copy.
//! - **Read side:** [`Projection`], [`ProjectionRunner`] (catch up, follow live, rebuild),
//!   [`MemoryProjection`], [`Checkpointed`]; [`BlueGreen`] replaces a read model's version
//!   with no pause for readers.
//! - **Processes:** [`ProcessManager`], [`ProcessManagerRunner`], [`CommandDispatcher`] for
//!   durable timeouts and outboxes, [`CommandRouter`]; time comes from a [`Clock`].
//! - **Wiring:** a [`System`] is given the storage, the clock and the upcasters once and hands
//!   out repositories, process managers and read models already wired and routed; it
//!   [settles](System::settle) them step by step or [spawns](System::spawn) them, with
//!   read-your-writes through [`Running::wait_for`].
//! - **Observability:** command handling, loads, projection batches and deliveries run in
//!   `tracing` spans (`cqrs.command`, `cqrs.load`, `cqrs.store.read_stream`,
//!   `cqrs.store.load_snapshot`, `cqrs.store.read_then_commit`, `cqrs.projection`, `cqrs.process`,
//!   `cqrs.dispatch`) with stream, command type, versions and durations.
//!
//! Fallible constructors return `Result`; `try_` is not used because there is no panicking
//! twin.
//!
//! # Crate features
//!
//! - `testing`: [`testing`], the given/when/then kit and the store conformance suite.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
mod bluegreen;
mod chain;
mod clock;
mod command;
mod dcb;
mod decision;
mod event;
mod message;
pub mod metric;
pub mod migrate;
mod process;
mod projection;
mod repository;
pub mod store;
mod subscription;
mod system;
mod task;
pub mod trace;
mod upcast;
mod version;

#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use crate::aggregate::{Aggregate, AggregateId, ApplyError, replay};
pub use crate::bluegreen::{BlueGreen, BlueGreenStatus};
pub use crate::chain::ErrorChain;
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::command::{CommandContext, CommandEnvelope, CommandRecord, EnvelopeError, Outcome};
pub use crate::dcb::{
    AppendCondition, ConditionalCommit, DcbStore, EventQuery, InvalidTag, MAX_TAG_LEN, QueryItem,
    StreamAppend, Tag,
};
pub use crate::decision::{Decided, Decider, Decision, Emit};
pub use crate::event::{
    EventFilter, EventView, Headers, InvalidStreamId, Json, MAX_STREAM_ID_LEN, MAX_TYPE_NAME_LEN,
    Metadata, NewEvent, RecordedEvent, StreamId,
};
pub use crate::message::{
    DomainEvent, Message, MessageError, decode_message, decode_message_value, encode_message,
    message_type, message_types,
};
pub use crate::process::{
    Cause, CommandDispatcher, CommandHandler, CommandRouter, Delivery, DispatchError,
    DispatchWaker, DispatcherHandle, EventContext, Outgoing, ProcessError, ProcessManager,
    ProcessManagerRunner, Reaction, TimeoutContext, cancel_command, discard_parked,
    schedule_command,
};
pub use crate::projection::{
    BoxError, Checkpointed, EventHandler, MemoryProjection, Namespace, Projection, ProjectionError,
    ProjectionHandle, ProjectionRunner, ProjectionStatus, ReadModelSpec, RunnerStopped,
};
pub use crate::repository::{
    CommandError, Handled, LoadError, Loaded, Repository, SnapshotError, SnapshotPolicy,
};
pub use crate::store::memory::InMemoryEventStore;
pub use crate::store::{
    Appended, BatchStream, CheckpointStore, Commit, EventReader, EventStore, EventStream,
    LogCursor, LogEntry, LogQuery, LoggedMessage, MessageKind, MessageLog, ParkedCommand,
    ProcessSave, ProcessState, ProcessStore, ReadBatch, ScheduleStore, ScheduledCommand, Snapshot,
    SnapshotStore, Storage, StoreError, StreamSummary,
};
pub use crate::system::{Running, SettleError, System, SystemBuilder};
pub use crate::upcast::{
    DecodeError, DecodeErrorKind, Decoded, UpcastError, Upcasted, Upcaster, Upcasters,
};
pub use crate::version::{ExpectedVersion, Position, Version};

// What public signatures expose, so that a user needs no version-matched dependency of their
// own to name it.
pub use async_trait::async_trait;
pub use chrono;
pub use uuid;

/// Re-exports for the macros of [`testing`]; not part of the API.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod __private {
    pub use tokio;
}
