use std::error::Error;
use std::fmt;

/// Shows an error with its causes, `outer: inner: innermost`, for logs and messages.
///
/// The framework's errors follow the standard convention: each shows only its own part and
/// hands its cause over through [`Error::source`], so that no cause is printed twice. Logging
/// `%err` alone would then drop the causes; log `%ErrorChain(&err)` instead.
///
/// # Examples
///
/// ```
/// use cqrs_core::{ErrorChain, StoreError};
///
/// let err = StoreError::backend(std::io::Error::other("disk full"));
/// assert_eq!(err.to_string(), "storage backend failed");
/// assert_eq!(ErrorChain(&err).to_string(), "storage backend failed: disk full");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
