//! The web server: the JSON API (and, next, the registrant site and the owner portal) over
//! one [`ConferenceApp`], with its processes and read models running inside.
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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::net::TcpListener;

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
}

impl WebState {
    /// The state for `app`; `operator_token`, if given, opens the operator's endpoints (the
    /// whole message log) as a bearer token.
    #[must_use]
    pub fn new(app: ConferenceApp, operator_token: Option<String>) -> Self {
        Self {
            app,
            operator_token: operator_token.map(Arc::from),
        }
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
        .fallback(|| async { ApiError::not_found("no such page") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
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
