//! The web server: the registrant's site (`/`), the owner's portal (`/admin`) and the JSON
//! API (`/api`), all over one [`ConferenceApp`], with its processes and read models running
//! inside.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use conference_example::app::{AppConfig, ConferenceApp};
//! use conference_example::web::{WebState, router};
//! use cqrs_core::{InMemoryEventStore, SystemClock};
//!
//! let app = ConferenceApp::new(Arc::new(InMemoryEventStore::new()), Arc::new(SystemClock), AppConfig::default());
//! let routes = router(WebState::new(app, None));
//! # let _ = routes;
//! ```

mod api;
mod error;
mod extract;
mod pages;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum_extra::extract::cookie::Key;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::app::{AppError, ConferenceApp};
use crate::domain::{ConferenceId, OrderId};
use crate::read::DraftOrder;
pub use crate::web::api::status_name;
pub use crate::web::error::ApiError;

/// The most a request body may hold.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebState {
    app: ConferenceApp,
    operator_token: Option<Arc<str>>,
    cookie_key: Key,
}

impl FromRef<WebState> for Key {
    fn from_ref(state: &WebState) -> Self {
        state.cookie_key.clone()
    }
}

impl WebState {
    /// The state for `app`; `operator_token`, if given, opens the operator's endpoints (the
    /// whole message log) as a bearer token. Owners' portal sessions are signed with a
    /// random key, so they end when the server stops; see
    /// [`with_cookie_secret`](Self::with_cookie_secret).
    #[must_use]
    pub fn new(app: ConferenceApp, operator_token: Option<String>) -> Self {
        Self {
            app,
            operator_token: operator_token.map(Arc::from),
            cookie_key: Key::generate(),
        }
    }

    /// Signs owners' sessions with a key derived from `secret`, so that they survive a
    /// restart and several server processes on one database accept each other's sessions.
    ///
    /// # Errors
    ///
    /// If `secret` is shorter than 64 bytes (`openssl rand -hex 32` makes one).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use conference_example::app::{AppConfig, ConferenceApp};
    /// # use conference_example::web::WebState;
    /// # use cqrs_core::{InMemoryEventStore, SystemClock};
    /// # let app = ConferenceApp::new(Arc::new(InMemoryEventStore::new()), Arc::new(SystemClock), AppConfig::default());
    /// let state = WebState::new(app, None);
    /// assert!(state.clone().with_cookie_secret("too short").is_err());
    /// assert!(state.with_cookie_secret(&"3f".repeat(32)).is_ok());
    /// ```
    pub fn with_cookie_secret(mut self, secret: &str) -> Result<Self, String> {
        self.cookie_key = Key::try_from(secret.as_bytes())
            .map_err(|_| "the cookie secret needs at least 64 bytes".to_owned())?;
        Ok(self)
    }

    /// Waits (a bounded time) until the conference directory shows the conference's latest
    /// change, so that an owner's next request sees it.
    async fn wait_for_conference(&self, id: ConferenceId) {
        let deadline = tokio::time::Instant::now() + api::CATCH_UP;
        let wanted = self.app.conference_version(id).await.unwrap_or(0);
        while self.app.conference(id).map_or(0, |c| c.version) < wanted
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }

    /// The draft order, once the read model has reached `version` (or after a bounded wait,
    /// as it is then).
    async fn draft_at_least(&self, order: OrderId, version: u64) -> Result<DraftOrder, ApiError> {
        let deadline = tokio::time::Instant::now() + api::CATCH_UP;
        loop {
            match self.app.draft_order(order) {
                Ok(draft) if draft.version >= version => return Ok(draft),
                Ok(draft) if tokio::time::Instant::now() >= deadline => return Ok(draft),
                Err(AppError::NotFound(_))
                    if tokio::time::Instant::now() >= deadline || version == 0 =>
                {
                    return Err(ApiError::not_found(format!("order {order} not found")));
                }
                Err(AppError::NotFound(_)) | Ok(_) => {}
                Err(other) => return Err(other.into()),
            }
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }
}

/// Every route of the server.
pub fn router(state: WebState) -> Router {
    api::routes()
        .merge(pages::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(log_server_errors))
        .with_state(state)
}

/// Logs every 5xx the server answers, with the request that got it. Its cause is logged
/// where it arose (the store's error chain, or the panic's message).
async fn log_server_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        tracing::error!(%method, path, status = status.as_u16(), "answered a server error");
    }
    response
}

/// A handler that panicked: the panic is logged, the client gets a 500, and the server goes
/// on serving.
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to answer; the operator has been told",
    )
    .into_response()
}

/// An unknown path: a JSON error under `/api`, a page elsewhere.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    if uri.path().starts_with("/api/") {
        ApiError::not_found("no such endpoint").into_response()
    } else {
        let site = if uri.path().starts_with("/admin") {
            pages::Site::Owner
        } else {
            pages::Site::Registrant
        };
        pages::PageError::not_found(site, "There is no such page.").into_response()
    }
}

/// Serves `state` on `listener` until `shutdown` completes, then lets requests in flight
/// finish. The caller starts and stops the application's engine around it.
///
/// # Errors
///
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    state: WebState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
