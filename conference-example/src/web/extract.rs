//! Extractors whose rejections are API errors (JSON, status 400), and the owner's
//! credentials.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum_extra::TypedHeader;
use axum_extra::headers::Authorization;
use axum_extra::headers::authorization::{Basic, Bearer};
use serde::de::DeserializeOwned;

use crate::web::WebState;
use crate::web::error::ApiError;
use crate::web::throttle::{self, Client};

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

/// Who is asking, from the `Authorization` header, and from where.
#[derive(Debug, Clone)]
pub(crate) enum Credentials {
    /// HTTP Basic: a conference owner's email and access code.
    Owner {
        /// The email.
        email: String,
        /// The access code, as given.
        access_code: String,
        /// Who sent them.
        client: Client,
    },
    /// A bearer token: the operator.
    Operator {
        /// The token, as given.
        token: String,
        /// Who sent it.
        client: Client,
    },
}

impl Credentials {
    /// The throttle's keys of these credentials: their client, and their account.
    pub(crate) fn keys(&self) -> [String; 2] {
        match self {
            Self::Owner { email, client, .. } => throttle::keys("owner", email, *client),
            Self::Operator { client, .. } => throttle::keys("operator", "operator", *client),
        }
    }
}

/// The request's credentials, if it has any. Credentials whose client or account has used up
/// its failed attempts are refused (`429`) before anything checks them.
#[derive(Debug, Clone)]
pub(crate) struct MaybeCredentials(pub Option<Credentials>);

impl FromRequestParts<WebState> for MaybeCredentials {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(client) = Client::from_request_parts(parts, state).await;
        let credentials = if let Ok(TypedHeader(Authorization(basic))) =
            TypedHeader::<Authorization<Basic>>::from_request_parts(parts, state).await
        {
            Credentials::Owner {
                email: basic.username().to_owned(),
                access_code: basic.password().to_owned(),
                client,
            }
        } else if let Ok(TypedHeader(Authorization(bearer))) =
            TypedHeader::<Authorization<Bearer>>::from_request_parts(parts, state).await
        {
            Credentials::Operator {
                token: bearer.token().to_owned(),
                client,
            }
        } else {
            return Ok(Self(None));
        };
        if let Some(wait) = state.throttle.wait(&credentials.keys()) {
            return Err(ApiError::too_many_attempts(wait));
        }
        Ok(Self(Some(credentials)))
    }
}

/// 403 for credentials that were checked and are wrong: the attempt counts against their
/// client and account.
pub(crate) fn refused(state: &WebState, credentials: &Credentials) -> ApiError {
    state.throttle.failed(&credentials.keys());
    forbidden()
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
