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
mod throttle;

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

/// Orders one client may place at once, and how often it gets one more.
const ORDER_BURST: u32 = 20;
const ORDER_REFILL: StdDuration = StdDuration::from_secs(3);

/// The most a request body may hold.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebState {
    app: ConferenceApp,
    operator_token: Option<Arc<str>>,
    cookie_key: Key,
    throttle: Arc<throttle::Throttle>,
    orders: Arc<throttle::Throttle>,
    secure_cookies: bool,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Throughput and lag over the last minutes, for the explorer's live chart.
    samples: Arc<crate::telemetry::Samples>,
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
            throttle: Arc::default(),
            orders: Arc::new(throttle::Throttle::new(ORDER_BURST, ORDER_REFILL)),
            secure_cookies: false,
            metrics: None,
            samples: Arc::default(),
        }
    }

    /// Serves `GET /metrics` (the operator's) from `handle`, in Prometheus' text format
    /// ([`crate::telemetry::prometheus`]); without one it answers 404.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use conference_example::app::{AppConfig, ConferenceApp};
    /// # use conference_example::web::WebState;
    /// # use cqrs_core::{InMemoryEventStore, SystemClock};
    /// # let app = ConferenceApp::new(Arc::new(InMemoryEventStore::new()), Arc::new(SystemClock), AppConfig::default());
    /// let state = WebState::new(app, Some("operator-token".into()))
    ///     .with_metrics(conference_example::telemetry::prometheus());
    /// ```
    #[must_use]
    pub fn with_metrics(
        mut self,
        handle: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        self.metrics = handle;
        self
    }

    pub(crate) fn metrics(&self) -> Option<&metrics_exporter_prometheus::PrometheusHandle> {
        self.metrics.as_ref()
    }

    /// Marks the portal's cookies `Secure` always: the server is reached over HTTPS only
    /// (behind a proxy that terminates TLS). Without it they are `Secure` when the proxy says
    /// the request came over HTTPS (`X-Forwarded-Proto: https`).
    #[must_use]
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    pub(crate) fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// Lets one client (an address) place `burst` orders at once, then one every `every`
    /// (by default 20, then one every 3 s); more get `429` with `Retry-After`. Changing an
    /// order's seats counts as placing it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use conference_example::app::{AppConfig, ConferenceApp};
    /// # use conference_example::web::WebState;
    /// # use cqrs_core::{InMemoryEventStore, SystemClock};
    /// # let app = ConferenceApp::new(Arc::new(InMemoryEventStore::new()), Arc::new(SystemClock), AppConfig::default());
    /// let state = WebState::new(app, None).with_orders_per_client(5, Duration::from_secs(10));
    /// ```
    #[must_use]
    pub fn with_orders_per_client(mut self, burst: u32, every: StdDuration) -> Self {
        self.orders = Arc::new(throttle::Throttle::new(burst, every));
        self
    }

    /// Takes one order from `client`'s allowance (a client of unknown address, in a router
    /// served without [`serve_with`], is not limited).
    fn order_allowed(&self, client: throttle::Client) -> Result<(), ApiError> {
        let Some(ip) = client.0 else {
            return Ok(());
        };
        self.orders
            .spend(&[format!("client:{ip}")])
            .map_err(|wait| {
                metrics::counter!(crate::telemetry::ORDERS_TURNED_AWAY, "reason" => "too_many_orders")
                    .increment(1);
                ApiError::too_many_orders(wait)
            })
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
    /// as it is then): a client long-polls for its order's next step. An order the store
    /// does not hold is a 404 at once, not after the wait.
    async fn draft_at_least(&self, order: OrderId, version: u64) -> Result<DraftOrder, ApiError> {
        let deadline = tokio::time::Instant::now() + api::CATCH_UP;
        let mut checked = false;
        loop {
            let draft = self.app.draft_order(order);
            if matches!(draft, Err(AppError::NotFound(_))) && version > 0 && !checked {
                checked = true;
                if self.app.order_version(order).await? == 0 {
                    return Err(ApiError::not_found(format!("order {order} not found")));
                }
            }
            match draft {
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
        .layer(axum::middleware::from_fn(refuse_cross_site))
        .layer(axum::middleware::from_fn(log_server_errors))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(trace_requests))
        .with_state(state)
}

/// Runs every request in an `http.request` span that continues the caller's W3C trace context
/// (`traceparent`): with the `otel` feature, the commands the request sends, their events,
/// and everything that follows from them carry the caller's trace id. Counts it, by method
/// and status, with its duration (`crate::telemetry`).
async fn trace_requests(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use cqrs_core::trace::{TRACEPARENT, TRACESTATE};
    use tracing::Instrument;
    let span = tracing::info_span!(
        "http.request",
        "otel.kind" = "server",
        "otel.name" = %request.method(),
        "http.request.method" = %request.method(),
        "url.path" = request.uri().path(),
        "http.response.status_code" = tracing::field::Empty,
    );
    let mut caller = cqrs_core::Headers::new();
    for name in [TRACEPARENT, TRACESTATE] {
        if let Some(value) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
            caller.insert(name.to_owned(), value.to_owned());
        }
    }
    cqrs_core::trace::continue_from(&span, &caller);
    // Methods outside HTTP's own are one label: a client cannot grow the metrics at will.
    let method: &'static str = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    };
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    metrics::counter!(crate::telemetry::HTTP_REQUESTS, "method" => method, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(crate::telemetry::HTTP_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Refuses (403) a request that changes something when the browser says another site sent
/// it: an `Origin` other than this server's (or `null`), or `Sec-Fetch-Site: cross-site`.
/// Clients that are no browsers send neither and pass; the portal's forms also carry their
/// session's form token.
async fn refuse_cross_site(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{Method, header};
    use axum::response::IntoResponse;
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes {
        let headers = request.headers();
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = headers.get(header::ORIGIN).map(|o| {
            o.to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .map(|(_, authority)| authority)
        });
        let cross_origin = match origin {
            None => false,
            Some(authority) => authority.is_none() || authority != host,
        };
        let cross_fetch = headers
            .get("sec-fetch-site")
            .is_some_and(|site| site.as_bytes() == b"cross-site");
        if cross_origin || cross_fetch {
            return ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "cross_site",
                "a request from another site was refused",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Headers every answer carries: no content sniffing, no framing (clickjacking), no referrer
/// beyond the site, and a content policy that allows the site's own files only (the pages
/// have no inline script or style).
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
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
    // A 503 with a `Retry-After` is load turned away on purpose; the application logs those
    // in summary (a line per request would let a burst flood the log).
    let shed = status == axum::http::StatusCode::SERVICE_UNAVAILABLE
        && response
            .headers()
            .contains_key(axum::http::header::RETRY_AFTER);
    if status.is_server_error() && !shed {
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

/// How the server holds up against slow or greedy clients, and how long it takes to stop.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use conference_example::web::ServeLimits;
///
/// let limits = ServeLimits { shutdown_timeout: Duration::from_secs(3), ..ServeLimits::default() };
/// assert_eq!(limits.max_connections, 1_024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A client sends a request's headers within this, or its connection is closed; an idle
    /// keep-alive connection is closed after it too. Default 10 s.
    pub header_read_timeout: StdDuration,
    /// A request's body arrives within this, or the request is answered `408`. Default 10 s.
    pub body_read_timeout: StdDuration,
    /// A request is answered within this, or it is answered `503` (every wait of the
    /// application is shorter). Default 30 s.
    pub request_timeout: StdDuration,
    /// At most this many connections at once: more wait in the listener's queue until one
    /// closes. Default 1,024.
    pub max_connections: usize,
    /// Once the shutdown signal came, requests in flight get this long to be answered; then
    /// every connection still open is closed, whatever its client does. Default 10 s.
    pub shutdown_timeout: StdDuration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: StdDuration::from_secs(10),
            body_read_timeout: StdDuration::from_secs(10),
            request_timeout: StdDuration::from_secs(30),
            max_connections: 1_024,
            shutdown_timeout: StdDuration::from_secs(10),
        }
    }
}

/// Serves `state` on `listener` until `shutdown` completes, with the default
/// [`ServeLimits`]; see [`serve_with`].
///
/// # Errors
///
/// As [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    state: WebState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeLimits::default()).await
}

/// Serves `state` on `listener` until `shutdown` completes: then it stops accepting (the port
/// closes), lets the requests in flight be answered for up to
/// [`shutdown_timeout`](ServeLimits::shutdown_timeout), and closes every connection left. It
/// returns within that bound whatever clients do (one that sent half its headers, or keeps
/// its connection idle, holds nothing up). The caller starts and stops the application's
/// engine around it.
///
/// # Errors
///
/// Never yet: a failed accept (too many open files, say) is logged and retried.
pub async fn serve_with(
    listener: TcpListener,
    state: WebState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ServeLimits,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

    let app = router(state)
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let (closing, close) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, address) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, say: the connection is lost, the server is not.
                    tracing::error!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(StdDuration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        // Handlers see the client's address (to throttle guesses by it).
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            app.clone(),
            axum::extract::ConnectInfo(address),
        ));
        let mut close = close.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                // A client gone or too slow ends its connection: nothing for the operator.
                _ = connection.as_mut() => return,
                _ = close.wait_for(|closing| *closing) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout_ms = limits.shutdown_timeout.as_millis(),
            "connections still open at the shutdown deadline were closed"
        );
        connections.shutdown().await;
    }
    Ok(())
}
