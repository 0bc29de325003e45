//! Extractors whose rejections are API errors (JSON, status 400), and the owner's
//! credentials.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum_extra::TypedHeader;
use axum_extra::headers::Authorization;
use axum_extra::headers::authorization::{Basic, Bearer};
use serde::de::DeserializeOwned;

use crate::web::error::ApiError;

/// A JSON body; malformed, wrongly shaped or too large ones are 400s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(value)| Self(value))
            .map_err(ApiError::from)
    }
}

/// Path parameters; unparsable ones (a malformed id) are 400s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(ApiError::from)
    }
}

/// Query parameters; unparsable ones are 400s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(ApiError::from)
    }
}

/// Who is asking, from the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// HTTP Basic: a conference owner's email and access code.
    Owner {
        /// The email.
        email: String,
        /// The access code, as given.
        access_code: String,
    },
    /// A bearer token: the operator.
    Operator(String),
}

/// The request's credentials, if it has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MaybeCredentials(pub Option<Credentials>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCredentials {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(TypedHeader(Authorization(basic))) =
            TypedHeader::<Authorization<Basic>>::from_request_parts(parts, state).await
        {
            return Ok(Self(Some(Credentials::Owner {
                email: basic.username().to_owned(),
                access_code: basic.password().to_owned(),
            })));
        }
        if let Ok(TypedHeader(Authorization(bearer))) =
            TypedHeader::<Authorization<Bearer>>::from_request_parts(parts, state).await
        {
            return Ok(Self(Some(Credentials::Operator(bearer.token().to_owned()))));
        }
        Ok(Self(None))
    }
}

/// 401: credentials are needed.
pub(crate) fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this needs the conference owner's email and access code (HTTP Basic)",
    )
}

/// 403: the credentials do not open this.
pub(crate) fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "these credentials do not open this conference",
    )
}
