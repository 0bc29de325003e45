//! `demo`: a conference with three seat types, a paid order, a zero-cost order, a partial
//! reservation and an expiry, with the seats left after each step.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use cqrs_core::{Clock, LogQuery, LoggedMessage, Storage, SystemClock};
use rust_decimal::Decimal;

use crate::app::{AppConfig, ConferenceApp, NewConference, PaymentStep};
use crate::domain::{
    ConferenceCommand, ConferenceId, OrderId, PersonalInfo, SeatQuantity, SeatType,
};
use crate::read::DraftOrderState;

/// How the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoOptions {
    /// The reservation window and release buffer, short so that an expiry happens while one
    /// watches (2 s and 1 s by default; the real ones are 15 and 14 minutes).
    pub config: AppConfig,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            config: AppConfig {
                reservation_window: Duration::seconds(2),
                release_buffer: Duration::seconds(1),
                ..AppConfig::default()
            },
        }
    }
}

/// Runs the demo on `storage`, writing what happens to `out`, and returns the expired
/// order's id.
///
/// # Errors
///
/// Any error of the application or of `out`.
pub async fn run_demo(
    storage: Arc<dyn Storage>,
    options: DemoOptions,
    out: &mut impl Write,
) -> anyhow::Result<OrderId> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = ConferenceApp::new(storage, clock, options.config);
    // Each run gets its own conference, so the demo can run again on the same database.
    let slug = format!(
        "devconf_{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );

    writeln!(
        out,
        "Contoso conference registration, on the cqrs framework\n"
    )?;
    let (conference, code) = app.create_conference(NewConference::example(&slug)).await?;
    let seat = |name: &str, description: &str, quantity, price| SeatType {
        name: name.into(),
        description: description.into(),
        quantity,
        price,
    };
    let full = app
        .add_seat_type(
            conference,
            seat(
                "Full pass",
                "Every talk, both days",
                10,
                Decimal::new(19_900, 2),
            ),
        )
        .await?;
    let workshop = app
        .add_seat_type(
            conference,
            seat(
                "Workshop",
                "Event sourcing, hands on",
                5,
                Decimal::new(9_950, 2),
            ),
        )
        .await?;
    let party = app
        .add_seat_type(
            conference,
            seat("Party", "The evening party", 20, Decimal::ZERO),
        )
        .await?;
    app.manage(conference, ConferenceCommand::Publish).await?;
    app.settle().await?;
    writeln!(
        out,
        "1. Ana creates and publishes /{slug} (owner access code {code})"
    )?;
    seats_left(&app, conference, out)?;

    let ana = person("Ana", "Lima", "ana@example.com");
    let order = app
        .place_order(
            conference,
            vec![SeatQuantity::new(full, 2), SeatQuantity::new(workshop, 1)],
        )
        .await?;
    app.settle().await?;
    app.assign_registrant(order, ana).await?;
    let total = app.priced_order(order).map(|p| p.total).unwrap_or_default();
    let PaymentStep::Started(payment) = app.start_payment(order).await? else {
        anyhow::bail!("a paid order was confirmed without payment");
    };
    app.complete_payment(payment).await?;
    app.settle().await?;
    writeln!(
        out,
        "2. Ana orders 2 full passes and 1 workshop, pays {total} and is {}",
        state(&app, order)?
    )?;
    seats_left(&app, conference, out)?;

    let bo = app
        .place_order(conference, vec![SeatQuantity::new(party, 2)])
        .await?;
    app.settle().await?;
    app.assign_registrant(bo, person("Bo", "Berg", "bo@example.com"))
        .await?;
    let step = app.start_payment(bo).await?;
    app.settle().await?;
    writeln!(
        out,
        "3. Bo orders 2 party seats: total {}, {} with no payment ({step:?})",
        app.priced_order(bo).map(|p| p.total).unwrap_or_default(),
        state(&app, bo)?
    )?;
    seats_left(&app, conference, out)?;

    let cy = app
        .place_order(conference, vec![SeatQuantity::new(workshop, 6)])
        .await?;
    app.settle().await?;
    let draft = app.draft_order(cy)?;
    let item = draft.items.first().copied();
    writeln!(
        out,
        "4. Cy asks for 6 workshop seats: {} ({} of {} held)",
        state(&app, cy)?,
        item.map_or(0, |i| i.reserved),
        item.map_or(0, |i| i.requested),
    )?;
    seats_left(&app, conference, out)?;

    let wait = (options.config.reservation_window + options.config.release_buffer)
        .to_std()
        .unwrap_or_default()
        + StdDuration::from_millis(300);
    tokio::time::sleep(wait).await;
    app.settle().await?;
    writeln!(
        out,
        "5. Cy never pays; after the reservation window and the release buffer ({} s) the order is {}",
        wait.as_secs(),
        state(&app, cy)?
    )?;
    seats_left(&app, conference, out)?;

    writeln!(
        out,
        "\nCy's order, from the message log (every command and event of its flow):"
    )?;
    let first = app
        .log(
            &LogQuery::new()
                .with_streams([<crate::domain::Order as cqrs_core::Aggregate>::stream_id(
                    &cy,
                )?])
                .with_limit(1),
        )
        .await?;
    let correlation = first.first().and_then(|e| match &e.message {
        LoggedMessage::Command(c) => c.correlation_id.or(Some(c.command_id)),
        LoggedMessage::Event(e) => e.metadata.correlation_id,
    });
    for entry in app
        .log(&LogQuery::new().with_correlation_ids(correlation))
        .await?
    {
        let (kind, target) = match &entry.message {
            LoggedMessage::Command(c) => ("command", c.target.to_string()),
            LoggedMessage::Event(e) => ("event  ", e.stream.to_string()),
        };
        writeln!(
            out,
            "  {} {kind} {:<44} {}",
            entry.cursor.recorded_at.format("%H:%M:%S%.3f"),
            entry.message_type(),
            target.split_once('-').map_or(target.as_str(), |(c, _)| c)
        )?;
    }
    if let Some(correlation) = correlation {
        writeln!(
            out,
            "\n(again with: conference-example log --correlation {correlation})"
        )?;
    }
    Ok(cy)
}

fn person(first: &str, last: &str, email: &str) -> PersonalInfo {
    PersonalInfo {
        first_name: first.into(),
        last_name: last.into(),
        email: email.into(),
    }
}

fn state(app: &ConferenceApp, order: OrderId) -> anyhow::Result<String> {
    let state = app.draft_order(order)?.state;
    Ok(match state {
        DraftOrderState::PendingReservation => "waiting for seats",
        DraftOrderState::PartiallyReserved => "partially reserved",
        DraftOrderState::ReservationCompleted => "reserved",
        DraftOrderState::Confirmed => "confirmed",
        DraftOrderState::Expired => "expired",
    }
    .to_owned())
}

fn seats_left(
    app: &ConferenceApp,
    conference: ConferenceId,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(view) = app.conference(conference) else {
        return Ok(());
    };
    let left: Vec<String> = view
        .seat_types_on_sale()
        .map(|s| {
            let left = s
                .available
                .map_or_else(|| "?".to_owned(), |a| a.to_string());
            format!("{} {left}/{}", s.name, s.quantity)
        })
        .collect();
    writeln!(out, "   remaining seats: {}", left.join(", "))?;
    Ok(())
}
