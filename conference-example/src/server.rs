//! `serve`: the web server with the application's engine running inside, until SIGTERM or
//! Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use cqrs_core::SystemClock;
use rust_decimal::Decimal;

use crate::app::{AppConfig, ConferenceApp, NewConference, open_storage};
use crate::domain::{ConferenceCommand, SeatType};
use crate::web::{ServeLimits, WebState, serve_with};

/// The slug of the demo conference `--seed-demo` creates.
pub const DEMO_SLUG: &str = "devconf";

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where events live: `sqlite://PATH`, `postgres://…`, `nats://HOST:PORT,…` or `memory:`.
    pub database: String,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The reservation window and release buffer.
    pub config: AppConfig,
    /// Create the published demo conference if it is missing.
    pub seed_demo: bool,
    /// The bearer token that opens the whole message log.
    pub operator_token: Option<String>,
    /// The secret owners' sessions are signed with (at least 64 bytes); random if `None`.
    pub cookie_secret: Option<String>,
    /// Timeouts, the connection cap and the shutdown's bound.
    pub limits: ServeLimits,
    /// Orders one client may place at once, and how often it gets one more
    /// ([`WebState::with_orders_per_client`]).
    pub orders_per_client: (u32, std::time::Duration),
    /// Portal cookies always `Secure` ([`WebState::with_secure_cookies`]).
    pub secure_cookies: bool,
}

/// Opens the storage, catches the read models and processes up with its log, then serves
/// until SIGTERM or Ctrl-C, and stops the engine once the last request has been answered (or
/// [`ServeLimits::shutdown_timeout`] has passed): nothing accepted is lost, and the work the
/// engine had not done yet is in the store for the next start.
///
/// # Errors
///
/// If the storage cannot be opened, the address cannot be bound, the cookie secret is too
/// short, or the store fails while catching up.
pub async fn run(options: ServeOptions, out: &mut impl Write) -> anyhow::Result<()> {
    let ServeOptions {
        database,
        listen,
        config,
        seed_demo,
        operator_token,
        cookie_secret,
        limits,
        orders_per_client: (order_burst, order_refill),
        secure_cookies,
    } = options;
    let storage = open_storage(&database)
        .await
        .with_context(|| format!("cannot open the store at {database}"))?;
    let app = ConferenceApp::new(storage, Arc::new(SystemClock), config);
    let mut state = WebState::new(app.clone(), operator_token)
        .with_orders_per_client(order_burst, order_refill)
        .with_secure_cookies(secure_cookies)
        .with_metrics(crate::telemetry::prometheus());
    if let Some(secret) = cookie_secret {
        state = state
            .with_cookie_secret(&secret)
            .map_err(anyhow::Error::msg)?;
    }
    // Everything stored so far, before taking requests: the read models start complete.
    app.settle().await?;
    if seed_demo {
        seed(&app).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen}; choose another address with --listen")
        })?;
    let address = listener.local_addr()?;
    let engine = app.start();
    writeln!(out, "conference app on {database}: http://{address}/")?;
    if let Some(demo) = app.conference_by_slug(DEMO_SLUG) {
        writeln!(
            out,
            "  demo conference: http://{address}/{DEMO_SLUG}/ \
             (owner portal http://{address}/admin: {} with access code {})",
            demo.owner.email, demo.access_code
        )?;
    }
    writeln!(out, "  stop with Ctrl-C")?;
    out.flush()?;
    let served = serve_with(listener, state, shutdown_signal(), limits).await;
    // The engine stops between messages; what it had not handled yet is in the store, and
    // the next start handles it.
    engine.stop().await;
    served?;
    writeln!(out, "stopped")?;
    Ok(())
}

/// Creates and publishes the demo conference, unless it exists.
///
/// # Errors
///
/// The application's error.
pub async fn seed(app: &ConferenceApp) -> anyhow::Result<()> {
    if app.conference_by_slug(DEMO_SLUG).is_some() {
        return Ok(());
    }
    let (conference, _) = app
        .create_conference(NewConference::example(DEMO_SLUG))
        .await?;
    for (name, description, quantity, price) in [
        (
            "Full pass",
            "Every talk, both days",
            100,
            Decimal::new(19_900, 2),
        ),
        (
            "Workshop",
            "Event sourcing, hands on",
            20,
            Decimal::new(9_950, 2),
        ),
        ("Party", "The evening party", 150, Decimal::ZERO),
    ] {
        app.add_seat_type(
            conference,
            SeatType {
                name: name.into(),
                description: description.into(),
                quantity,
                price,
            },
        )
        .await?;
    }
    app.manage(conference, ConferenceCommand::Publish).await?;
    app.settle().await?;
    tracing::info!(slug = DEMO_SLUG, "seeded the demo conference");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
