//! SQLite-specific tests: what the conformance suite cannot check from outside.

/// Damaged rows: typed errors that name the position, and the rest of the store still works.
mod bad_rows;
/// Group commit: many writers, one transaction; a conflicting append fails alone.
mod group_commit;
/// Tuning options: cache and memory map on every connection.
mod options;
/// Transactional read models: rows and checkpoint commit together.
mod projections;
/// Opening files: migrations recorded in the file, newer files refused, data kept.
mod schema;
