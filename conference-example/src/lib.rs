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
pub mod telemetry;
pub mod tutorial;
pub mod walkthrough;
pub mod web;

/// The tutorial's chapters compile and run as doctests, so they cannot rot.
#[cfg(doctest)]
mod tutorial_chapters {
    #[doc = include_str!("../../docs/tutorial/01-first-aggregate.md")]
    struct Chapter01;
    #[doc = include_str!("../../docs/tutorial/02-commands-and-the-repository.md")]
    struct Chapter02;
    #[doc = include_str!("../../docs/tutorial/03-stores.md")]
    struct Chapter03;
    #[doc = include_str!("../../docs/tutorial/04-projections.md")]
    struct Chapter04;
    #[doc = include_str!("../../docs/tutorial/05-process-managers-and-timeouts.md")]
    struct Chapter05;
    #[doc = include_str!("../../docs/tutorial/06-zero-cost-orders.md")]
    struct Chapter06;
    #[doc = include_str!("../../docs/tutorial/07-event-versioning.md")]
    struct Chapter07;
    #[doc = include_str!("../../docs/tutorial/08-zero-downtime-migration.md")]
    struct Chapter08;
}

/// The README's code compiles and runs as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
