//! What the application layer answers when a request cannot be served.

use cqrs_core::{CommandError, LoadError, StoreError};

use crate::domain::{
    ConferenceError, ConferenceSlugError, OrderError, PaymentError, RegistrantError,
    SeatAssignmentsError, SeatsAvailabilityError,
};

/// A business rule said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A conference's rule.
    #[error(transparent)]
    Conference(#[from] ConferenceError),
    /// The slug is taken.
    #[error(transparent)]
    Slug(ConferenceSlugError),
    /// An order's rule.
    #[error(transparent)]
    Order(#[from] OrderError),
    /// The registrant has another open order for the conference.
    #[error(transparent)]
    Registrant(RegistrantError),
    /// A rule of the conference's seats.
    #[error(transparent)]
    Seats(#[from] SeatsAvailabilityError),
    /// A seat assignment's rule.
    #[error(transparent)]
    Assignments(#[from] SeatAssignmentsError),
    /// A payment's rule.
    #[error(transparent)]
    Payment(#[from] PaymentError),
}

/// Why the application could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No such thing (a conference, an order, a payment…).
    #[error("{0} not found")]
    NotFound(String),
    /// The request itself is wrong (a field out of range, a malformed value).
    #[error("{0}")]
    Invalid(String),
    /// The thing is not in the state the request needs yet (an order whose seats are still
    /// being reserved): the same request may succeed a little later.
    #[error("{0}")]
    NotReady(String),
    /// Another operation that excludes this one is under way (a read-model upgrade).
    #[error("{0}")]
    Busy(String),
    /// Too much work is queued (orders waiting for their seats): the request was turned away
    /// before it added more, and may be tried again after `retry_after`.
    #[error("{message}")]
    Overloaded {
        /// What is overloaded.
        message: String,
        /// How long to wait before trying again.
        retry_after: std::time::Duration,
    },
    /// A business rule refused it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed, or the system is not able to answer now; trying again may help.
    #[error("the system cannot answer now")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// Whether trying again later may help.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        Self::Unavailable(Box::new(err))
    }
}

impl From<LoadError> for AppError {
    fn from(err: LoadError) -> Self {
        Self::Unavailable(Box::new(err))
    }
}

impl From<ConferenceSlugError> for Rejection {
    fn from(err: ConferenceSlugError) -> Self {
        match err {
            // The conference's own rule, as if it had been asked alone.
            ConferenceSlugError::Refused(err) => Self::Conference(err),
            err => Self::Slug(err),
        }
    }
}

impl From<RegistrantError> for Rejection {
    fn from(err: RegistrantError) -> Self {
        match err {
            // The order's own rule, as if it had been asked alone.
            RegistrantError::Order(err) => Self::Order(err),
            err => Self::Registrant(err),
        }
    }
}

impl<E> From<CommandError<E>> for AppError
where
    E: Into<Rejection> + std::error::Error + Send + Sync + 'static,
{
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Rejected(rejection) => Self::Rejected(rejection.into()),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}
