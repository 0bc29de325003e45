//! Every conformance case, as an async function, grouped by the store trait it checks.
//!
//! Each module is a group of [the suite](super) and each case takes the store as the trait
//! object its group needs (`Arc<dyn EventStore>` for [`events`], and so on), so a store that
//! implements only some traits can still run the cases of those. Each case expects a fresh,
//! empty store and panics (failing the test) on a violation, with a message saying which rule
//! was broken.

pub mod checkpoints;
pub mod dcb;
pub mod events;
pub mod message_log;
pub mod processes;
pub mod repository;
pub mod schedule;
pub mod snapshots;
