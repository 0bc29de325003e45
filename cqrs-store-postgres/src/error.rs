//! Conversions between sqlx's errors and the core's.

use cqrs_core::StoreError;

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
