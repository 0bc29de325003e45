//! Errors as the API answers them: a status and `{error: {code, message}}`, never a panic.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{AppError, Rejection};
use crate::domain::{
    ConferenceError, ConferenceSlugError, OrderError, PaymentError, SeatAssignmentsError,
    SeatsAvailabilityError,
};

/// An error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What a person should read.
    pub message: String,
    /// For a `429` or a `503`: how many seconds to wait (the `Retry-After` header).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    #[must_use]
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: too many failed attempts from this client or at this account; try again after
    /// `wait`.
    #[must_use]
    pub fn too_many_attempts(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + 1;
        Self {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed attempts: try again in {seconds} s"),
            )
        }
    }

    /// 429: this client placed too many orders lately; try again after `wait`.
    #[must_use]
    pub fn too_many_orders(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + 1;
        Self {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_orders",
                format!("too many orders from this client: try again in {seconds} s"),
            )
        }
    }

    /// 400: the request is malformed or invalid.
    #[must_use]
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 404.
    #[must_use]
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the state of things.
    #[must_use]
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        if let Some(seconds) = self.retry_after {
            return (
                self.status,
                [(header::RETRY_AFTER, seconds.to_string())],
                body,
            )
                .into_response();
        }
        if self.status == StatusCode::UNAUTHORIZED {
            return (
                self.status,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"conference owner\"")],
                body,
            )
                .into_response();
        }
        (self.status, body).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::NotFound(what) => Self::not_found(format!("{what} not found")),
            AppError::Invalid(message) => Self::invalid(message),
            AppError::NotReady(message) => Self::conflict("not_ready", message),
            AppError::Busy(message) => Self::conflict("busy", message),
            AppError::Overloaded {
                message,
                retry_after,
            } => Self {
                retry_after: Some(retry_after.as_secs().max(1)),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
            },
            AppError::Rejected(rejection) => rejection.into(),
            other => {
                tracing::error!(error = %cqrs_core::ErrorChain(&other), "request failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the system cannot answer now; try again",
                )
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.to_string();
        match rejection {
            Rejection::Slug(ConferenceSlugError::Taken) => Self::conflict("slug_taken", message),
            Rejection::Slug(ConferenceSlugError::Refused(err)) => Rejection::Conference(err).into(),
            Rejection::Conference(ConferenceError::NotFound) => Self::not_found(message),
            Rejection::Conference(ConferenceError::UnknownSeatType(_)) => Self::not_found(message),
            Rejection::Conference(ConferenceError::Invalid(_)) => Self::invalid(message),
            Rejection::Conference(_) => Self::conflict("conflict", message),
            Rejection::Order(
                OrderError::NoSeats | OrderError::Pricing(_) | OrderError::InvalidRegistrant(_),
            ) => Self::invalid(message),
            Rejection::Order(OrderError::NotFound) => Self::not_found(message),
            Rejection::Registrant(_) => Self::conflict("registrant_has_open_order", message),
            Rejection::Order(_) => Self::conflict("conflict", message),
            Rejection::Seats(SeatsAvailabilityError::UnknownSeatType(_)) => Self::invalid(message),
            Rejection::Assignments(SeatAssignmentsError::InvalidEmail(_)) => Self::invalid(message),
            Rejection::Assignments(
                SeatAssignmentsError::NotFound | SeatAssignmentsError::UnknownPosition(_),
            ) => Self::not_found(message),
            Rejection::Payment(PaymentError::NotFound) => Self::not_found(message),
            Rejection::Payment(PaymentError::NegativeAmount) => Self::invalid(message),
            Rejection::Assignments(SeatAssignmentsError::NoSeats) | Rejection::Payment(_) => {
                Self::conflict("conflict", message)
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "too_large",
                "the body is over 64 KiB",
            );
        }
        if body_timed_out(&rejection) {
            return Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request's body did not arrive in time",
            );
        }
        Self::invalid(rejection.body_text())
    }
}

/// Whether a body was refused because it did not arrive within the server's body timeout
/// ([`ServeLimits::body_read_timeout`](crate::web::ServeLimits::body_read_timeout)).
pub(crate) fn body_timed_out(rejection: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(rejection);
    while let Some(err) = cause {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}
