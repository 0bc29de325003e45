//! The reference application of the `cqrs` workspace: the Contoso conference management
//! system of the CQRS Journey, built on [`cqrs_core`].
//!
//! **Status.** The full conference domain (conference management, orders, seat reservations
//! with expiry, payments, zero-cost orders, the remaining-seats read model, the web app and
//! the CLI) is being built; see the project's issues. Today this crate holds [`walkthrough`], a
//! small runnable tour of the framework on the in-memory store: a seat-availability aggregate,
//! orders, a registration process manager with a durable expiry timeout, a remaining-seats
//! projection and the message log. `cargo run -p conference-example` runs it.

pub mod app;
pub mod domain;
pub mod read;
pub mod walkthrough;

/// The README's code compiles and runs as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
