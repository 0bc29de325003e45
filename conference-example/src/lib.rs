//! The reference application of the `cqrs` workspace: the Contoso conference management
//! system of the CQRS Journey, built on [`cqrs_core`].
//!
//! - [`domain`]: the aggregates (conference, order, seats, seat assignments, payment), the
//!   registration process manager with its durable expiry timeout, and pricing.
//! - [`read`]: the read models (conferences with remaining seats, draft and priced orders,
//!   order seats, owners' order lists), as projections.
//! - [`app`]: the application layer the CLI and the web app share, on the in-memory, SQLite
//!   or PostgreSQL store.
//! - [`cli`]: `demo` and `log`; `cargo run -p conference-example` runs the demo.
//! - [`web`] and [`server`]: the server: the JSON API over the application layer, with the
//!   engine running inside.
//! - [`migrate`]: the V1 → V2 upgrade: a V1 store as data, its migration and its proof.
//! - [`walkthrough`]: a small tour of the framework on the in-memory store.

pub mod app;
pub mod cli;
pub mod domain;
pub mod migrate;
pub mod read;
pub mod server;
pub mod walkthrough;
pub mod web;

/// The README's code compiles and runs as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
