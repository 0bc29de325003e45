//! The order views: the draft order a registrant edits, the priced order they pay, the seats
//! of a confirmed order, and each conference's list of orders for its owner.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_core::{ProjectionError, RecordedEvent};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::{
    AccessCode, Conference, ConferenceEvent, ConferenceId, Order, OrderEvent, OrderId,
    PersonalInfo, SeatAssignments, SeatAssignmentsEvent, SeatQuantity, SeatTypeId,
};
use crate::read::decode;

/// Where a draft order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DraftOrderState {
    /// Its seats are being reserved.
    PendingReservation,
    /// Some seats are held.
    PartiallyReserved,
    /// Every seat is held.
    ReservationCompleted,
    /// Confirmed.
    Confirmed,
    /// Expired (the CQRS Journey never showed this; here a registrant sees it).
    Expired,
}

/// Seats of one type in a draft order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DraftOrderItem {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// Seats asked for.
    pub requested: u32,
    /// Seats held.
    pub reserved: u32,
}

/// An order as its registrant edits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DraftOrder {
    /// The order.
    pub order: OrderId,
    /// The conference.
    pub conference: ConferenceId,
    /// Where it stands.
    pub state: DraftOrderState,
    /// Seats per type.
    pub items: Vec<DraftOrderItem>,
    /// When the reservation runs out.
    pub reservation_expires_at: DateTime<Utc>,
    /// The registrant's email, once given.
    pub registrant_email: Option<String>,
    /// The registrant, once given.
    pub registrant: Option<PersonalInfo>,
    /// The access code.
    #[serde(skip)]
    pub access_code: AccessCode,
    /// The version of the order's stream last applied.
    pub version: u64,
}

/// One line of a priced order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedOrderLine {
    /// Its position (0, 1, …).
    pub position: u32,
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// The seat type's name.
    pub description: String,
    /// The price of one seat.
    pub unit_price: Decimal,
    /// How many.
    pub quantity: u32,
    /// The line's total.
    pub line_total: Decimal,
}

/// An order as its registrant pays for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PricedOrder {
    /// The order.
    pub order: OrderId,
    /// The conference.
    pub conference: ConferenceId,
    /// Its lines.
    pub lines: Vec<PricedOrderLine>,
    /// Its total.
    pub total: Decimal,
    /// Whether it costs nothing (`None` in the V1 read model, which had no such column).
    pub is_free_of_charge: Option<bool>,
    /// When the reservation runs out (`None` once confirmed).
    pub reservation_expires_at: Option<DateTime<Utc>>,
    /// Whether its seats can be assigned (it was confirmed and its assignments created).
    pub has_assignments: bool,
    /// The version of the order's stream last applied.
    pub version: u64,
}

/// A seat of a confirmed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderSeat {
    /// Its position.
    pub position: u32,
    /// Its type.
    pub seat_type: SeatTypeId,
    /// The type's name.
    pub seat_name: String,
    /// Who sits there.
    pub attendee: Option<PersonalInfo>,
}

/// Whether an order in the owner's list is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PaymentStatus {
    /// Not confirmed yet.
    Pending,
    /// Confirmed.
    Paid,
}

/// An order in its conference owner's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderSummary {
    /// The order.
    pub order: OrderId,
    /// Its access code.
    pub access_code: AccessCode,
    /// "Last, First", once known.
    pub registrant_name: Option<String>,
    /// The registrant's email, once known.
    pub registrant_email: Option<String>,
    /// Its total.
    pub total: Decimal,
    /// Whether it is paid.
    pub status: PaymentStatus,
    /// Its seats and attendees, once confirmed.
    pub seats: Vec<OrderSeat>,
}

/// Every order view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderViews {
    /// Whether priced orders carry `is_free_of_charge` (the V2 read model; V1 had no column).
    free_of_charge_column: bool,
    drafts: BTreeMap<OrderId, DraftOrder>,
    priced: BTreeMap<OrderId, PricedOrder>,
    seats: BTreeMap<OrderId, Vec<OrderSeat>>,
    by_conference: BTreeMap<ConferenceId, BTreeMap<OrderId, OrderSummary>>,
    /// Every order ever placed for each conference, expired ones too.
    placed: BTreeMap<ConferenceId, BTreeSet<OrderId>>,
    seat_names: BTreeMap<SeatTypeId, String>,
    /// How many orders of each conference wait for their seats to be reserved.
    awaiting: BTreeMap<ConferenceId, u32>,
}

impl Default for OrderViews {
    /// Today's order views.
    fn default() -> Self {
        Self {
            free_of_charge_column: true,
            drafts: BTreeMap::new(),
            priced: BTreeMap::new(),
            seats: BTreeMap::new(),
            by_conference: BTreeMap::new(),
            placed: BTreeMap::new(),
            seat_names: BTreeMap::new(),
            awaiting: BTreeMap::new(),
        }
    }
}

impl OrderViews {
    /// The order views as V1 built them: priced orders without `is_free_of_charge`.
    #[must_use]
    pub fn v1() -> Self {
        Self {
            free_of_charge_column: false,
            ..Self::default()
        }
    }

    /// The draft order `order`.
    #[must_use]
    pub fn draft(&self, order: OrderId) -> Option<&DraftOrder> {
        self.drafts.get(&order)
    }

    /// The order placed with `access_code` by the registrant with `email`.
    #[must_use]
    pub fn locate(&self, email: &str, access_code: &AccessCode) -> Option<&DraftOrder> {
        self.drafts.values().find(|d| {
            d.access_code == *access_code
                && d.registrant_email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }

    /// The priced order `order` (none once it expired).
    #[must_use]
    pub fn priced(&self, order: OrderId) -> Option<&PricedOrder> {
        self.priced.get(&order)
    }

    /// The seats of the confirmed order `order`.
    #[must_use]
    pub fn seats(&self, order: OrderId) -> Option<&[OrderSeat]> {
        self.seats.get(&order).map(Vec::as_slice)
    }

    /// Every order ever placed for `conference`, expired ones too (whose messages an owner
    /// still sees).
    pub fn placed_in(&self, conference: ConferenceId) -> impl Iterator<Item = OrderId> + '_ {
        self.placed
            .get(&conference)
            .into_iter()
            .flat_map(|orders| orders.iter().copied())
    }

    /// The orders of `conference` after the order `after`, in the order of their ids.
    pub fn of_conference_after(
        &self,
        conference: ConferenceId,
        after: Option<OrderId>,
    ) -> impl Iterator<Item = &OrderSummary> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.by_conference
            .get(&conference)
            .into_iter()
            .flat_map(move |orders| orders.range((from, Unbounded)).map(|(_, o)| o))
    }

    /// The orders of `conference` (expired ones leave the list).
    pub fn of_conference(&self, conference: ConferenceId) -> impl Iterator<Item = &OrderSummary> {
        self.by_conference
            .get(&conference)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// How many orders of `conference` wait for their seats to be reserved: the registration
    /// work queued for it.
    #[must_use]
    pub fn awaiting_reservation(&self, conference: ConferenceId) -> u32 {
        self.awaiting.get(&conference).copied().unwrap_or(0)
    }

    /// How many orders of every conference wait for their seats to be reserved.
    #[must_use]
    pub fn awaiting_reservation_in_all(&self) -> u64 {
        self.awaiting.values().map(|&n| u64::from(n)).sum()
    }

    fn count_awaiting(&mut self, conference: ConferenceId, before: bool, after: bool) {
        match (before, after) {
            (false, true) => *self.awaiting.entry(conference).or_default() += 1,
            (true, false) => {
                if let Some(n) = self.awaiting.get_mut(&conference) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.awaiting.remove(&conference);
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies one recorded event of a conference, an order or a set of seat assignments.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the event does not decode.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let category = event.stream.category();
        let local = event.stream.local_id().unwrap_or_default();
        if category == <Conference as cqrs_core::Aggregate>::TYPE {
            match decode(event)? {
                ConferenceEvent::SeatTypeAdded { seat_type, seats }
                | ConferenceEvent::SeatTypeUpdated { seat_type, seats }
                | ConferenceEvent::SeatCreated { seat_type, seats }
                | ConferenceEvent::SeatUpdated { seat_type, seats } => {
                    self.fill_names(seat_type, &seats.name);
                    self.seat_names.insert(seat_type, seats.name);
                }
                _ => {}
            }
        } else if let Ok(order) = local.parse::<OrderId>() {
            if category == <Order as cqrs_core::Aggregate>::TYPE {
                self.apply_order(order, event.version.get(), decode(event)?);
            } else if category == <SeatAssignments as cqrs_core::Aggregate>::TYPE {
                self.apply_assignments(order, &decode(event)?);
            }
        }
        Ok(())
    }

    fn apply_order(&mut self, order: OrderId, version: u64, event: OrderEvent) {
        use OrderEvent as E;
        if let E::OrderPlaced {
            conference,
            seats,
            reservation_expires_at,
            access_code,
            ..
        } = &event
        {
            if self.drafts.contains_key(&order) {
                return; // a duplicate
            }
            self.drafts.insert(
                order,
                DraftOrder {
                    order,
                    conference: *conference,
                    state: DraftOrderState::PendingReservation,
                    items: requested(seats),
                    reservation_expires_at: *reservation_expires_at,
                    registrant_email: None,
                    registrant: None,
                    access_code: access_code.clone(),
                    version,
                },
            );
            self.priced.insert(
                order,
                PricedOrder {
                    order,
                    conference: *conference,
                    lines: Vec::new(),
                    total: Decimal::ZERO,
                    is_free_of_charge: self.free_of_charge_column.then_some(false),
                    reservation_expires_at: Some(*reservation_expires_at),
                    has_assignments: false,
                    version,
                },
            );
            self.placed.entry(*conference).or_default().insert(order);
            self.count_awaiting(*conference, false, true);
            self.by_conference.entry(*conference).or_default().insert(
                order,
                OrderSummary {
                    order,
                    access_code: access_code.clone(),
                    registrant_name: None,
                    registrant_email: None,
                    total: Decimal::ZERO,
                    status: PaymentStatus::Pending,
                    seats: Vec::new(),
                },
            );
            return;
        }
        let Some(draft) = self.drafts.get_mut(&order) else {
            return;
        };
        // Versions of one stream come in order; anything not newer was applied already.
        if version <= draft.version {
            return;
        }
        draft.version = version;
        let conference = draft.conference;
        let was_awaiting = draft.state == DraftOrderState::PendingReservation;
        self.apply_to_placed(order, conference, version, event);
        let is_awaiting = self
            .drafts
            .get(&order)
            .is_some_and(|d| d.state == DraftOrderState::PendingReservation);
        self.count_awaiting(conference, was_awaiting, is_awaiting);
    }

    fn apply_to_placed(
        &mut self,
        order: OrderId,
        conference: ConferenceId,
        version: u64,
        event: OrderEvent,
    ) {
        use OrderEvent as E;
        let Some(draft) = self.drafts.get_mut(&order) else {
            return;
        };
        match event {
            E::OrderPlaced { .. } | E::OrderLockedForPayment | E::OrderUnlocked => {}
            E::OrderUpdated { seats } => {
                draft.items = requested(&seats);
                draft.state = DraftOrderState::PendingReservation;
            }
            E::OrderPartiallyReserved {
                reservation_expires_at,
                seats,
            }
            | E::OrderReservationCompleted {
                reservation_expires_at,
                seats,
            } => {
                let partial = draft.items.iter().any(|item| {
                    item.requested > 0
                        && !seats.contains(&SeatQuantity::new(item.seat_type, item.requested))
                });
                for item in &mut draft.items {
                    item.reserved = seats
                        .iter()
                        .filter(|s| s.seat_type == item.seat_type)
                        .map(|s| s.quantity)
                        .sum();
                }
                draft.reservation_expires_at = reservation_expires_at;
                draft.state = if partial {
                    DraftOrderState::PartiallyReserved
                } else {
                    DraftOrderState::ReservationCompleted
                };
                if let Some(priced) = self.priced.get_mut(&order) {
                    priced.reservation_expires_at = Some(reservation_expires_at);
                }
            }
            E::OrderTotalsCalculated {
                lines,
                total,
                is_free_of_charge,
            } => {
                if let Some(priced) = self.priced.get_mut(&order) {
                    priced.lines = (0..)
                        .zip(lines)
                        .map(|(position, line)| PricedOrderLine {
                            position,
                            seat_type: line.seat_type,
                            description: self
                                .seat_names
                                .get(&line.seat_type)
                                .cloned()
                                .unwrap_or_default(),
                            unit_price: line.unit_price,
                            quantity: line.quantity,
                            line_total: line.line_total,
                        })
                        .collect();
                    priced.total = total;
                    priced.is_free_of_charge =
                        self.free_of_charge_column.then_some(is_free_of_charge);
                    priced.version = version;
                }
                if let Some(summary) = self.summary(conference, order) {
                    summary.total = total;
                }
            }
            E::OrderRegistrantAssigned { registrant, .. } => {
                draft.registrant_email = Some(registrant.email.clone());
                draft.registrant = Some(registrant.clone());
                if let Some(summary) = self.summary(conference, order) {
                    summary.registrant_name = Some(format!(
                        "{}, {}",
                        registrant.last_name, registrant.first_name
                    ));
                    summary.registrant_email = Some(registrant.email);
                }
            }
            E::OrderConfirmed(_) => {
                draft.state = DraftOrderState::Confirmed;
                if let Some(priced) = self.priced.get_mut(&order) {
                    priced.reservation_expires_at = None;
                    priced.version = version;
                }
                if let Some(summary) = self.summary(conference, order) {
                    summary.status = PaymentStatus::Paid;
                }
            }
            E::OrderExpired(_) => {
                draft.state = DraftOrderState::Expired;
                self.priced.remove(&order);
                if let Some(orders) = self.by_conference.get_mut(&conference) {
                    orders.remove(&order);
                }
            }
        }
    }

    fn apply_assignments(&mut self, order: OrderId, event: &SeatAssignmentsEvent) {
        use SeatAssignmentsEvent as E;
        match event {
            E::SeatAssignmentsCreated { seats } => {
                if self.seats.contains_key(&order) {
                    return; // a duplicate
                }
                let seats: Vec<OrderSeat> = seats
                    .iter()
                    .map(|s| OrderSeat {
                        position: s.position,
                        seat_type: s.seat_type,
                        seat_name: self
                            .seat_names
                            .get(&s.seat_type)
                            .cloned()
                            .unwrap_or_default(),
                        attendee: None,
                    })
                    .collect();
                if let Some(priced) = self.priced.get_mut(&order) {
                    priced.has_assignments = true;
                }
                self.seats.insert(order, seats);
            }
            E::SeatAssigned {
                position, attendee, ..
            }
            | E::SeatAssignmentUpdated { position, attendee } => {
                self.set_attendee(order, *position, Some(attendee.clone()));
            }
            E::SeatUnassigned { position } => self.set_attendee(order, *position, None),
        }
        // The owner's list shows the seats too.
        let conference = self.drafts.get(&order).map(|d| d.conference);
        let seats = self.seats.get(&order).cloned().unwrap_or_default();
        if let Some(summary) = conference.and_then(|c| self.summary(c, order)) {
            summary.seats = seats;
        }
    }

    /// Names a seat type in the orders that came before its name did (a store upgraded in
    /// place gets its conference events after the orders that use them).
    fn fill_names(&mut self, seat_type: SeatTypeId, name: &str) {
        if self.seat_names.contains_key(&seat_type) {
            return;
        }
        for line in self.priced.values_mut().flat_map(|p| p.lines.iter_mut()) {
            if line.seat_type == seat_type && line.description.is_empty() {
                line.description = name.to_owned();
            }
        }
        let seats = self.seats.values_mut().flatten().chain(
            self.by_conference
                .values_mut()
                .flat_map(|o| o.values_mut())
                .flat_map(|s| s.seats.iter_mut()),
        );
        for seat in seats {
            if seat.seat_type == seat_type && seat.seat_name.is_empty() {
                seat.seat_name = name.to_owned();
            }
        }
    }

    fn set_attendee(&mut self, order: OrderId, position: u32, attendee: Option<PersonalInfo>) {
        if let Some(seat) = self
            .seats
            .get_mut(&order)
            .and_then(|seats| seats.iter_mut().find(|s| s.position == position))
        {
            seat.attendee = attendee;
        }
    }

    fn summary(&mut self, conference: ConferenceId, order: OrderId) -> Option<&mut OrderSummary> {
        self.by_conference.get_mut(&conference)?.get_mut(&order)
    }
}

fn requested(seats: &[SeatQuantity]) -> Vec<DraftOrderItem> {
    seats
        .iter()
        .map(|s| DraftOrderItem {
            seat_type: s.seat_type,
            requested: s.quantity,
            reserved: 0,
        })
        .collect()
}
