//! The command line: `demo`, a scripted walk through the whole registration flow; `log`, a
//! query of the message log; `migrate`, the V1 → V2 upgrade.

mod demo;
mod log;
mod migrate;

pub use crate::cli::demo::{DemoOptions, run_demo};
pub use crate::cli::log::{LogOptions, print_log};
pub use crate::cli::migrate::{MigrateAction, migrate};
