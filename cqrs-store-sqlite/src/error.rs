//! Conversions between SQLite's errors and values and the core's.

use chrono::{DateTime, Utc};
use cqrs_core::{Position, StoreError};
use uuid::Uuid;

/// Wraps any backend error.
pub(crate) fn backend(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(err)
}

/// Whether `err` is a UNIQUE constraint violation (the extended result code, never the text).
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// A timestamp as stored: microseconds since the Unix epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored timestamp back.
pub(crate) fn from_micros(
    us: i64,
    position: Option<Position>,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StoreError::Corrupt {
        position,
        what: format!("timestamp {us} is out of range"),
    })
}

/// A stored UUID back (16 bytes).
pub(crate) fn uuid(bytes: &[u8], position: Option<Position>) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt {
        position,
        what: format!("a {}-byte id", bytes.len()),
    })
}

/// An optional stored UUID back.
pub(crate) fn opt_uuid(
    bytes: Option<Vec<u8>>,
    position: Option<Position>,
) -> Result<Option<Uuid>, StoreError> {
    bytes.map(|b| uuid(&b, position)).transpose()
}
