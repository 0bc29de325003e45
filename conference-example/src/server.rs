//! `serve`: the web server with the application's engine running inside, until SIGTERM or
//! Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use cqrs_core::SystemClock;
use rust_decimal::Decimal;

use crate::app::{AppConfig, ConferenceApp, NewConference, open_storage};
use crate::domain::{ConferenceCommand, SeatType};
use crate::web::{WebState, serve};

/// The slug of the demo conference `--seed-demo` creates.
pub const DEMO_SLUG: &str = "devconf";

/// Opens the storage at `database`, catches the read models and processes up with its log,
/// then serves on `listen` until SIGTERM or Ctrl-C, and stops the engine once the last
/// request has been answered: nothing accepted is lost.
///
/// # Errors
///
/// If the storage cannot be opened, the address cannot be bound, or the store fails while
/// catching up.
pub async fn run(
    database: &str,
    listen: SocketAddr,
    config: AppConfig,
    seed_demo: bool,
    operator_token: Option<String>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let storage = open_storage(database).await?;
    let app = ConferenceApp::new(storage, Arc::new(SystemClock), config);
    // Everything stored so far, before taking requests: the read models start complete.
    app.settle().await?;
    if seed_demo {
        seed(&app).await?;
    }
    let engine = app.start();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    writeln!(out, "conference app on {database}: http://{address}/")?;
    out.flush()?;
    let served = serve(
        listener,
        WebState::new(app, operator_token),
        shutdown_signal(),
    )
    .await;
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
    let (conference, code) = app
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
    tracing::info!(slug = DEMO_SLUG, access_code = %code, "seeded the demo conference");
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
