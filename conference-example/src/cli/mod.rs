//! The command line: `demo`, a scripted walk through the whole registration flow, and `log`,
//! a query of the message log.

mod demo;
mod log;

pub use crate::cli::demo::{DemoOptions, run_demo};
pub use crate::cli::log::{LogOptions, print_log};
