//! Conversions between sqlx's errors and the core's.

use cqrs_core::{Position, StoreError};

/// Wraps any backend error.
pub(crate) fn backend(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend(err)
}

/// The constraint a unique violation (SQLSTATE 23505) broke, if `err` is one. Read from the
/// error's fields, never from its message.
pub(crate) fn unique_violation(err: &sqlx::Error) -> Option<String> {
    let db = err.as_database_error()?;
    (db.code().as_deref() == Some("23505")).then(|| db.constraint().unwrap_or_default().to_owned())
}

/// A stored non-negative integer back.
pub(crate) fn unsigned(
    value: i64,
    what: &str,
    position: Option<Position>,
) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        position,
        what: format!("{what} {value} is negative"),
    })
}

/// An unsigned value to store.
pub(crate) fn signed(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid(format!("{value} does not fit the store")))
}
