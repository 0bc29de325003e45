//! `Order`: a registrant's request for seats, from placement through reservation to
//! confirmation or expiry.

use chrono::{DateTime, Utc};
use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::domain::pricing::{OrderLine, OrderTotals, PricingError, SeatPrice, price_order};
use crate::domain::values::{AccessCode, ConferenceId, OrderId, PersonalInfo, SeatQuantity};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed or updated; its seats are being reserved.
    PendingReservation,
    /// Some of the seats asked for are held.
    PartiallyReserved,
    /// Every seat asked for is held.
    ReservationCompleted,
    /// Paid for (or free), and its seats are the registrant's.
    Confirmed,
    /// Its reservation ran out, or it was rejected; it can no longer be confirmed.
    Expired,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The conference.
    pub conference: ConferenceId,
    /// The seats asked for; once reserved, the seats held.
    pub seats: Vec<SeatQuantity>,
    /// The last lines and total.
    pub totals: OrderTotals,
    /// Where it stands.
    pub status: OrderStatus,
    /// The code that, with the registrant's email, finds the order.
    pub access_code: AccessCode,
    /// When the reservation runs out.
    pub reservation_expires_at: DateTime<Utc>,
    /// Who placed it, once known.
    pub registrant: Option<PersonalInfo>,
    /// Whether a payment is under way: its seats cannot change until it is cancelled.
    pub payment_locked: bool,
}

impl Order {
    /// Whether the order's seats are held (partly or fully).
    #[must_use]
    pub fn is_reserved(&self) -> bool {
        matches!(
            self.status,
            OrderStatus::PartiallyReserved | OrderStatus::ReservationCompleted
        )
    }
}

/// What an order can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderCommand {
    /// Place the order, or change the seats of an order placed before (its seats are then
    /// reserved again).
    #[serde(rename = "registration.register_to_conference")]
    RegisterToConference {
        /// The conference.
        conference: ConferenceId,
        /// The seats wanted.
        seats: Vec<SeatQuantity>,
        /// The prices of the conference's seat types, from the registration read model.
        prices: Vec<SeatPrice>,
        /// A fresh access code (kept only when the order is placed).
        access_code: AccessCode,
        /// When a reservation made now would run out for the registrant (kept only when the
        /// order is placed: changing seats does not extend the deadline).
        reservation_expires_at: DateTime<Utc>,
        /// When the seats of an order not confirmed by then go back to the pool: later than
        /// the reservation's end, so that a payment under way can still finish.
        seats_released_at: DateTime<Utc>,
    },
    /// Record the seats the conference holds for the order.
    #[serde(rename = "registration.mark_seats_as_reserved")]
    MarkSeatsAsReserved {
        /// The seats held.
        seats: Vec<SeatQuantity>,
        /// When the reservation runs out.
        reservation_expires_at: DateTime<Utc>,
    },
    /// Record who is registering.
    #[serde(rename = "registration.assign_registrant_details")]
    AssignRegistrantDetails {
        /// The registrant.
        registrant: PersonalInfo,
    },
    /// Freeze the order's seats for a payment (refused unless its seats are held).
    #[serde(rename = "registration.lock_order_for_payment")]
    LockForPayment,
    /// Let the order's seats change again: its payment was cancelled.
    #[serde(rename = "registration.unlock_order")]
    Unlock,
    /// Confirm the order: it was paid for, or costs nothing.
    #[serde(rename = "registration.confirm_order")]
    Confirm,
    /// Expire the order: its reservation ran out.
    #[serde(rename = "registration.reject_order")]
    Reject,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order was placed.
    #[serde(rename = "registration.order_placed")]
    OrderPlaced {
        /// The conference.
        conference: ConferenceId,
        /// The seats asked for.
        seats: Vec<SeatQuantity>,
        /// When its reservation runs out for the registrant.
        reservation_expires_at: DateTime<Utc>,
        /// When its seats go back to the pool if it is not confirmed by then.
        seats_released_at: DateTime<Utc>,
        /// Its access code.
        access_code: AccessCode,
    },
    /// The seats asked for changed.
    #[serde(rename = "registration.order_updated")]
    OrderUpdated {
        /// The seats asked for now.
        seats: Vec<SeatQuantity>,
    },
    /// Only some of the seats could be held.
    #[serde(rename = "registration.order_partially_reserved")]
    OrderPartiallyReserved {
        /// When the reservation runs out.
        reservation_expires_at: DateTime<Utc>,
        /// The seats held.
        seats: Vec<SeatQuantity>,
    },
    /// Every seat asked for is held.
    #[serde(rename = "registration.order_reservation_completed")]
    OrderReservationCompleted {
        /// When the reservation runs out.
        reservation_expires_at: DateTime<Utc>,
        /// The seats held.
        seats: Vec<SeatQuantity>,
    },
    /// The order was priced.
    #[serde(rename = "registration.order_totals_calculated")]
    OrderTotalsCalculated {
        /// One line per seat type.
        lines: Vec<OrderLine>,
        /// The total.
        total: rust_decimal::Decimal,
        /// Whether it costs nothing.
        is_free_of_charge: bool,
    },
    /// The registrant was named.
    #[serde(rename = "registration.order_registrant_assigned")]
    OrderRegistrantAssigned {
        /// The registrant.
        registrant: PersonalInfo,
        /// The order, so that the registrant's orders can be told apart across streams
        /// (absent from events stored before registrants were tagged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<OrderId>,
        /// The order's conference (absent likewise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conference: Option<ConferenceId>,
        /// The email of the registrant this one replaces, if the order had another: the
        /// event is tagged with both, so that it releases the other's claim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
    },
    /// A payment started: the order's seats are frozen.
    #[serde(rename = "registration.order_locked_for_payment")]
    OrderLockedForPayment,
    /// The payment was cancelled: the order's seats can change again.
    #[serde(rename = "registration.order_unlocked")]
    OrderUnlocked,
    /// The order was confirmed (which order, and whose, for its registrant's rule).
    #[serde(rename = "registration.order_confirmed")]
    OrderConfirmed(OrderClosed),
    /// The order expired (which order, and whose, likewise).
    #[serde(rename = "registration.order_expired")]
    OrderExpired(OrderClosed),
}

/// Which order a confirmation or an expiry closes, and whose it was: what
/// [`OneOpenOrderPerRegistrant`](crate::domain::OneOpenOrderPerRegistrant) reads, by the
/// registrant's tag, to know the registrant's order is no longer open. Empty in events stored
/// before these were tagged (v1, read through an upcaster).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderClosed {
    /// The order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderId>,
    /// Its conference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conference: Option<ConferenceId>,
    /// Its registrant's email, if one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrant: Option<String>,
}

impl OrderClosed {
    fn of(id: &OrderId, order: &Order) -> Self {
        Self {
            order: Some(*id),
            conference: Some(order.conference),
            registrant: order.registrant.as_ref().map(|r| r.email.clone()),
        }
    }
}

impl DomainEvent for OrderEvent {
    fn schema_version(event_type: &str) -> u16 {
        crate::domain::versions::current_schema_version(event_type)
    }

    /// An event that names or releases a registrant carries the registrant's tag
    /// (`registrant:ana@example.com`, the email in lower case), which
    /// [`OneOpenOrderPerRegistrant`](crate::domain::OneOpenOrderPerRegistrant) reads by.
    fn tags(&self) -> Vec<cqrs_core::Tag> {
        match self {
            Self::OrderRegistrantAssigned {
                registrant,
                replaces,
                ..
            } => std::iter::once(registrant.email.as_str())
                .chain(replaces.as_deref())
                .filter_map(registrant_tag)
                .collect(),
            Self::OrderConfirmed(closed) | Self::OrderExpired(closed) => closed
                .registrant
                .as_deref()
                .and_then(registrant_tag)
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The tag of a registrant's email, if it makes one (a valid email always does).
#[must_use]
pub fn registrant_tag(email: &str) -> Option<cqrs_core::Tag> {
    cqrs_core::Tag::new("registrant", email.to_ascii_lowercase()).ok()
}

/// Why an order refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OrderError {
    /// No seats were asked for.
    #[error("an order needs at least one seat")]
    NoSeats,
    /// The order is for another conference.
    #[error("the order is for conference {0}")]
    WrongConference(ConferenceId),
    /// The order cannot be priced.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// The registrant's details are incomplete or wrong.
    #[error("registrant: {0}")]
    InvalidRegistrant(String),
    /// The order does not exist.
    #[error("no such order")]
    NotFound,
    /// The order is confirmed: its seats can no longer change, and it cannot expire.
    #[error("the order is confirmed")]
    AlreadyConfirmed,
    /// The order expired: it can no longer change or be confirmed.
    #[error("the order expired")]
    Expired,
    /// The order's seats are not held yet, or none could be.
    #[error("the order holds no seats")]
    NotReserved,
    /// A payment is under way: the order's seats cannot change.
    #[error("a payment for the order is under way")]
    PaymentUnderWay,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Id = OrderId;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(
        state: Option<&Self>,
        id: &OrderId,
        command: OrderCommand,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderCommand as C;
        use OrderEvent as E;
        // One seat type asked for twice is one line.
        let mut command = command;
        if let C::RegisterToConference { seats, .. } = &mut command {
            *seats = SeatQuantity::merged(std::mem::take(seats));
        }
        match (state, command) {
            (
                None,
                C::RegisterToConference {
                    conference,
                    seats,
                    prices,
                    access_code,
                    reservation_expires_at,
                    seats_released_at,
                },
            ) => {
                let totals = priced(&prices, &seats)?;
                Ok(vec![
                    E::OrderPlaced {
                        conference,
                        seats,
                        reservation_expires_at,
                        seats_released_at,
                        access_code,
                    },
                    totals,
                ])
            }
            (
                Some(order),
                C::RegisterToConference {
                    conference,
                    seats,
                    prices,
                    ..
                },
            ) => {
                order.still_open()?;
                if order.payment_locked {
                    return Err(OrderError::PaymentUnderWay);
                }
                if conference != order.conference {
                    return Err(OrderError::WrongConference(order.conference));
                }
                let totals = priced(&prices, &seats)?;
                Ok(vec![E::OrderUpdated { seats }, totals])
            }
            (None, C::Reject) => Ok(vec![]),
            (None, _) => Err(OrderError::NotFound),
            (
                Some(order),
                C::MarkSeatsAsReserved {
                    seats,
                    reservation_expires_at,
                },
            ) => {
                order.still_open()?;
                let complete = order
                    .seats
                    .iter()
                    .filter(|s| s.quantity > 0)
                    .all(|wanted| seats.contains(wanted));
                if complete {
                    return Ok(vec![E::OrderReservationCompleted {
                        reservation_expires_at,
                        seats,
                    }]);
                }
                let prices: Vec<SeatPrice> = order
                    .totals
                    .lines
                    .iter()
                    .map(|l| SeatPrice {
                        seat_type: l.seat_type,
                        price: l.unit_price,
                    })
                    .collect();
                let totals = price_order(&prices, &seats)?;
                Ok(vec![
                    E::OrderPartiallyReserved {
                        reservation_expires_at,
                        seats,
                    },
                    totals_event(totals),
                ])
            }
            (Some(order), C::AssignRegistrantDetails { registrant }) => {
                // A closed order keeps its registrant: the confirmation went to them, and the
                // registrant's rule reads a closure as final.
                order.still_open()?;
                registrant
                    .validate()
                    .map_err(OrderError::InvalidRegistrant)?;
                let replaces = order
                    .registrant
                    .as_ref()
                    .filter(|before| !registrant.same_email(&before.email))
                    .map(|before| before.email.clone());
                Ok(vec![E::OrderRegistrantAssigned {
                    registrant,
                    order: Some(*id),
                    conference: Some(order.conference),
                    replaces,
                }])
            }
            (Some(order), C::LockForPayment) => {
                order.still_open()?;
                if !order.is_reserved() || order.seats.iter().all(|s| s.quantity == 0) {
                    return Err(OrderError::NotReserved);
                }
                Ok(if order.payment_locked {
                    vec![]
                } else {
                    vec![E::OrderLockedForPayment]
                })
            }
            (Some(order), C::Unlock) => Ok(
                if order.payment_locked && order.status != OrderStatus::Confirmed {
                    vec![E::OrderUnlocked]
                } else {
                    vec![]
                },
            ),
            (Some(order), C::Confirm) => match order.status {
                // A redelivered confirmation changes nothing.
                OrderStatus::Confirmed => Ok(vec![]),
                // Fixed quirk: the CQRS Journey confirmed an expired order at the aggregate
                // and left it to the process manager to notice.
                OrderStatus::Expired => Err(OrderError::Expired),
                OrderStatus::PendingReservation => Err(OrderError::NotReserved),
                OrderStatus::PartiallyReserved | OrderStatus::ReservationCompleted => {
                    if order.seats.iter().all(|s| s.quantity == 0) {
                        return Err(OrderError::NotReserved);
                    }
                    Ok(vec![E::OrderConfirmed(OrderClosed::of(id, order))])
                }
            },
            (Some(order), C::Reject) => match order.status {
                OrderStatus::Confirmed => Err(OrderError::AlreadyConfirmed),
                OrderStatus::Expired => Ok(vec![]),
                _ => Ok(vec![E::OrderExpired(OrderClosed::of(id, order))]),
            },
        }
    }

    fn apply(state: Option<Self>, event: &OrderEvent) -> Result<Self, ApplyError> {
        use OrderEvent as E;
        let mut order = match (state, event) {
            (
                None,
                E::OrderPlaced {
                    conference,
                    seats,
                    reservation_expires_at,
                    access_code,
                    ..
                },
            ) => {
                return Ok(Self {
                    conference: *conference,
                    seats: seats.clone(),
                    totals: OrderTotals {
                        lines: Vec::new(),
                        total: rust_decimal::Decimal::ZERO,
                    },
                    status: OrderStatus::PendingReservation,
                    access_code: access_code.clone(),
                    reservation_expires_at: *reservation_expires_at,
                    registrant: None,
                    payment_locked: false,
                });
            }
            (Some(_), E::OrderPlaced { .. }) => {
                return Err(ApplyError::new("the order was placed twice"));
            }
            (None, _) => return Err(ApplyError::new("the order was never placed")),
            (Some(order), _) => order,
        };
        match event {
            E::OrderPlaced { .. } => {}
            E::OrderUpdated { seats } => {
                order.seats.clone_from(seats);
                order.status = OrderStatus::PendingReservation;
            }
            E::OrderPartiallyReserved {
                reservation_expires_at,
                seats,
            } => {
                order.seats.clone_from(seats);
                order.reservation_expires_at = *reservation_expires_at;
                order.status = OrderStatus::PartiallyReserved;
            }
            E::OrderReservationCompleted {
                reservation_expires_at,
                seats,
            } => {
                order.seats.clone_from(seats);
                order.reservation_expires_at = *reservation_expires_at;
                order.status = OrderStatus::ReservationCompleted;
            }
            E::OrderTotalsCalculated { lines, total, .. } => {
                order.totals = OrderTotals {
                    lines: lines.clone(),
                    total: *total,
                };
            }
            E::OrderRegistrantAssigned { registrant, .. } => {
                order.registrant = Some(registrant.clone());
            }
            E::OrderLockedForPayment => order.payment_locked = true,
            E::OrderUnlocked => order.payment_locked = false,
            E::OrderConfirmed(_) => order.status = OrderStatus::Confirmed,
            E::OrderExpired(_) => order.status = OrderStatus::Expired,
        }
        Ok(order)
    }
}

impl Order {
    /// Refuses changes to a confirmed or expired order.
    fn still_open(&self) -> Result<(), OrderError> {
        match self.status {
            OrderStatus::Confirmed => Err(OrderError::AlreadyConfirmed),
            OrderStatus::Expired => Err(OrderError::Expired),
            _ => Ok(()),
        }
    }
}

fn priced(prices: &[SeatPrice], seats: &[SeatQuantity]) -> Result<OrderEvent, OrderError> {
    if !seats.iter().any(|s| s.quantity > 0) {
        return Err(OrderError::NoSeats);
    }
    Ok(totals_event(price_order(prices, seats)?))
}

fn totals_event(totals: OrderTotals) -> OrderEvent {
    OrderEvent::OrderTotalsCalculated {
        is_free_of_charge: totals.is_free_of_charge(),
        lines: totals.lines,
        total: totals.total,
    }
}
