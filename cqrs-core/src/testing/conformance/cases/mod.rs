//! Every conformance case, as an async function over `Arc<dyn Storage>`.
//!
//! Each case expects a fresh, empty store and panics (failing the test) on a violation, with a
//! message saying which rule was broken.

mod events;
mod log;
mod model;
mod schedule;
mod state;
mod stress;
mod subscriptions;

pub use self::events::*;
pub use self::log::*;
pub use self::model::*;
pub use self::schedule::*;
pub use self::state::*;
pub use self::stress::*;
pub use self::subscriptions::*;
