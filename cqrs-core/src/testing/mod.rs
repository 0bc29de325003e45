//! The test kit: given/when/then scenarios for aggregates and process managers, and the store
//! conformance suite.
//!
//! **Available with the crate feature `testing`.** Enable it in tests:
//!
//! ```toml
//! [dev-dependencies]
//! cqrs-core = { version = "0.1", features = ["testing"] }
//! ```
//!
//! - [`Scenario`]: given these events, when this command, then these events (or this error).
//!   Pure and synchronous; [`Scenario::when_on`] runs the same through a [`Repository`](crate::Repository)
//!   and a store, for async tests that also want the encoding checked end to end.
//! - [`DecisionScenario`]: given these events in these streams, when this command, then
//!   these events (in these streams) or this error, folding only what the decision's query
//!   selects; [`DecisionScenario::when_on`] runs it through a [`Decider`](crate::Decider) and
//!   a store.
//! - [`ProcessScenario`]: given these events, when this event or timeout, then these commands
//!   are sent, and the instance is (or is not) finished.
//! - [`conformance`]: the suite every store runs; [`conformance_suite!`](crate::conformance_suite)
//!   adopts it in one line.
//! - [`stores`]: checks a store's own tests run with a little help from the store (damaged
//!   rows, a durable read model switching versions under load).

pub mod conformance;
mod decision;
mod process;
mod scenario;
pub mod stores;

pub use crate::testing::decision::{DecisionScenario, DecisionThen};
pub use crate::testing::process::{ProcessScenario, ProcessThen};
pub use crate::testing::scenario::{Scenario, Then};
