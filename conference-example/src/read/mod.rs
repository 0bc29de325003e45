//! The read models: what the registrant's site, the owner's portal and the CLI show, each
//! kept up to date by a projection of the event log.
//!
//! Each read model is a plain struct with an `apply` method over recorded events, so it can
//! be tested by feeding it events, duplicates and out-of-order deliveries included; the
//! functions at the bottom wrap them into [`MemoryProjection`]s that a runner feeds.

mod conferences;
mod orders;

use cqrs_core::{DomainEvent, EventFilter, MemoryProjection, ProjectionError, RecordedEvent};

pub use crate::read::conferences::{ConferenceDirectory, ConferenceView, SeatTypeView};
pub use crate::read::orders::{
    DraftOrder, DraftOrderItem, DraftOrderState, OrderSeat, OrderSummary, OrderViews,
    PaymentStatus, PricedOrder, PricedOrderLine,
};

use crate::domain::{Conference, Order, SeatAssignments, SeatsAvailability};

/// Decodes `event` as one of `E`, through the application's upcasters (so V1 rows read as
/// today's events). The chain never splits an event, so exactly one comes out.
fn decode<E: DomainEvent>(event: &RecordedEvent) -> Result<E, ProjectionError> {
    let mut decoded = crate::domain::versions::upcasters()
        .decode::<E>(event)
        .map_err(|err| ProjectionError::new(err.to_string()))?;
    match (decoded.next(), decoded.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(ProjectionError::new(format!(
            "{} at position {}: the upcasters did not yield exactly one event",
            event.event_type,
            event.position.get()
        ))),
    }
}

/// Which generation of the read models a server starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadModels {
    /// As V1 built them: no seats left, no `is_free_of_charge`.
    V1,
    /// Today's.
    #[default]
    Current,
}

/// The conference directory as a projection (version 2): conferences, their seat types and
/// the seats left of each.
#[must_use]
pub fn conference_directory() -> MemoryProjection<ConferenceDirectory> {
    directory_projection(ConferenceDirectory::default()).with_version(2)
}

/// The conference directory as V1 built it (version 1): no seats left.
#[must_use]
pub fn conference_directory_v1() -> MemoryProjection<ConferenceDirectory> {
    directory_projection(ConferenceDirectory::v1())
}

fn directory_projection(initial: ConferenceDirectory) -> MemoryProjection<ConferenceDirectory> {
    MemoryProjection::new(
        "conference_directory",
        initial,
        |directory: &mut ConferenceDirectory, event: &RecordedEvent| directory.apply(event),
    )
    .with_filter(EventFilter::all().with_categories([
        <Conference as cqrs_core::Aggregate>::TYPE,
        <SeatsAvailability as cqrs_core::Aggregate>::TYPE,
    ]))
}

/// The order views as a projection (version 2): draft and priced orders, their seats, and
/// each conference's order list.
#[must_use]
pub fn order_views() -> MemoryProjection<OrderViews> {
    order_projection(OrderViews::default()).with_version(2)
}

/// The order views as V1 built them (version 1): priced orders without `is_free_of_charge`.
#[must_use]
pub fn order_views_v1() -> MemoryProjection<OrderViews> {
    order_projection(OrderViews::v1())
}

fn order_projection(initial: OrderViews) -> MemoryProjection<OrderViews> {
    MemoryProjection::new(
        "order_views",
        initial,
        |views: &mut OrderViews, event: &RecordedEvent| views.apply(event),
    )
    .with_filter(EventFilter::all().with_categories([
        <Conference as cqrs_core::Aggregate>::TYPE,
        <Order as cqrs_core::Aggregate>::TYPE,
        <SeatAssignments as cqrs_core::Aggregate>::TYPE,
    ]))
}
