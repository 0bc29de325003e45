//! `SeatsAvailability`: how many seats of each type a conference has left, and which orders
//! hold which seats. One per conference; it never oversells.

use std::collections::BTreeMap;

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::domain::values::{ConferenceId, OrderId, SeatQuantity, SeatTypeId};

/// A signed change in the seats left of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatDelta {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// Seats added (positive) or taken (negative).
    pub delta: i64,
}

/// The seats of one conference.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeatsAvailability {
    /// Seats left per type. Negative after seats were removed while held.
    pub remaining: BTreeMap<SeatTypeId, i64>,
    /// Seats held per reservation (an order's id), until committed or cancelled.
    pub pending: BTreeMap<OrderId, Vec<SeatQuantity>>,
}

/// What the seats of a conference can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatsAvailabilityCommand {
    /// Make more seats of a type available (the first one creates the conference's seats).
    #[serde(rename = "registration.add_seats")]
    AddSeats {
        /// The seat type.
        seat_type: SeatTypeId,
        /// How many.
        quantity: u32,
    },
    /// Make fewer seats of a type available.
    #[serde(rename = "registration.remove_seats")]
    RemoveSeats {
        /// The seat type.
        seat_type: SeatTypeId,
        /// How many.
        quantity: u32,
    },
    /// Hold seats for a reservation, replacing what it held before: it can grow, shrink or
    /// change seat types. Holds what is left when not enough is.
    #[serde(rename = "registration.make_seat_reservation")]
    MakeReservation {
        /// The reservation (the order's id).
        reservation: OrderId,
        /// The seats wanted.
        seats: Vec<SeatQuantity>,
    },
    /// Give a reservation's seats back. Unknown reservations are ignored.
    #[serde(rename = "registration.cancel_seat_reservation")]
    CancelReservation {
        /// The reservation.
        reservation: OrderId,
    },
    /// Make a reservation's seats sold for good. Unknown reservations are ignored.
    #[serde(rename = "registration.commit_seat_reservation")]
    CommitReservation {
        /// The reservation.
        reservation: OrderId,
    },
}

/// What happened to the seats of a conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatsAvailabilityEvent {
    /// Seats were added or removed.
    #[serde(rename = "registration.available_seats_changed")]
    AvailableSeatsChanged {
        /// The changes.
        seats: Vec<SeatDelta>,
    },
    /// A reservation now holds `details` (which may be less than it asked for).
    #[serde(rename = "registration.seats_reserved")]
    SeatsReserved {
        /// The reservation.
        reservation: OrderId,
        /// What it holds now, in full (none: it holds nothing).
        details: Vec<SeatQuantity>,
        /// How the seats left changed.
        changes: Vec<SeatDelta>,
    },
    /// A reservation's seats are sold.
    #[serde(rename = "registration.seats_reservation_committed")]
    SeatsReservationCommitted {
        /// The reservation.
        reservation: OrderId,
    },
    /// A reservation's seats went back to the pool.
    #[serde(rename = "registration.seats_reservation_cancelled")]
    SeatsReservationCancelled {
        /// The reservation.
        reservation: OrderId,
        /// The seats given back.
        changes: Vec<SeatDelta>,
    },
}

impl DomainEvent for SeatsAvailabilityEvent {}

/// Why the seats refuse a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SeatsAvailabilityError {
    /// The conference has no seats of this type.
    #[error("seat type {0} is not on sale")]
    UnknownSeatType(SeatTypeId),
}

impl Aggregate for SeatsAvailability {
    const TYPE: &'static str = "seats";
    type Id = ConferenceId;
    type Command = SeatsAvailabilityCommand;
    type Event = SeatsAvailabilityEvent;
    type Error = SeatsAvailabilityError;

    fn handle(
        state: Option<&Self>,
        _id: &ConferenceId,
        command: SeatsAvailabilityCommand,
    ) -> Result<Vec<SeatsAvailabilityEvent>, SeatsAvailabilityError> {
        use SeatsAvailabilityCommand as C;
        use SeatsAvailabilityEvent as E;
        let empty = Self::default();
        let state = state.unwrap_or(&empty);
        Ok(match command {
            C::AddSeats {
                seat_type,
                quantity,
            } => vec![E::AvailableSeatsChanged {
                seats: vec![SeatDelta {
                    seat_type,
                    delta: i64::from(quantity),
                }],
            }],
            C::RemoveSeats {
                seat_type,
                quantity,
            } => vec![E::AvailableSeatsChanged {
                seats: vec![SeatDelta {
                    seat_type,
                    delta: -i64::from(quantity),
                }],
            }],
            C::MakeReservation { reservation, seats } => vec![state.reserve(reservation, &seats)?],
            C::CancelReservation { reservation } => state
                .pending
                .get(&reservation)
                .map(|held| E::SeatsReservationCancelled {
                    reservation,
                    changes: held
                        .iter()
                        .map(|s| SeatDelta {
                            seat_type: s.seat_type,
                            delta: i64::from(s.quantity),
                        })
                        .collect(),
                })
                .into_iter()
                .collect(),
            C::CommitReservation { reservation } => state
                .pending
                .contains_key(&reservation)
                .then_some(E::SeatsReservationCommitted { reservation })
                .into_iter()
                .collect(),
        })
    }

    fn apply(state: Option<Self>, event: &SeatsAvailabilityEvent) -> Result<Self, ApplyError> {
        use SeatsAvailabilityEvent as E;
        let mut state = state.unwrap_or_default();
        match event {
            E::AvailableSeatsChanged { seats } => state.change(seats),
            E::SeatsReserved {
                reservation,
                details,
                changes,
            } => {
                if details.is_empty() {
                    state.pending.remove(reservation);
                } else {
                    state.pending.insert(*reservation, details.clone());
                }
                state.change(changes);
            }
            E::SeatsReservationCommitted { reservation } => {
                state.pending.remove(reservation);
            }
            E::SeatsReservationCancelled {
                reservation,
                changes,
            } => {
                state.pending.remove(reservation);
                state.change(changes);
            }
        }
        Ok(state)
    }
}

impl SeatsAvailability {
    fn change(&mut self, deltas: &[SeatDelta]) {
        for d in deltas {
            *self.remaining.entry(d.seat_type).or_default() += d.delta;
        }
    }

    /// The CQRS Journey's algorithm: for every type wanted or already held, hold
    /// `min(wanted, max(left, 0) + held)`.
    fn reserve(
        &self,
        reservation: OrderId,
        seats: &[SeatQuantity],
    ) -> Result<SeatsAvailabilityEvent, SeatsAvailabilityError> {
        let mut wanted: BTreeMap<SeatTypeId, i64> = BTreeMap::new();
        for seat in seats {
            if !self.remaining.contains_key(&seat.seat_type) {
                return Err(SeatsAvailabilityError::UnknownSeatType(seat.seat_type));
            }
            *wanted.entry(seat.seat_type).or_default() += i64::from(seat.quantity);
        }
        let held: BTreeMap<SeatTypeId, i64> = self
            .pending
            .get(&reservation)
            .into_iter()
            .flatten()
            .map(|s| (s.seat_type, i64::from(s.quantity)))
            .collect();
        for seat_type in held.keys() {
            wanted.entry(*seat_type).or_default();
        }
        let (mut details, mut changes) = (Vec::new(), Vec::new());
        for (seat_type, want) in wanted {
            let existing = held.get(&seat_type).copied().unwrap_or(0);
            let left = self.remaining.get(&seat_type).copied().unwrap_or(0);
            let actual = want.min(left.max(0) + existing);
            if actual != 0 {
                details.push(SeatQuantity::new(
                    seat_type,
                    u32::try_from(actual).unwrap_or(u32::MAX),
                ));
            }
            let delta = actual - existing;
            if delta != 0 {
                changes.push(SeatDelta {
                    seat_type,
                    delta: -delta,
                });
            }
        }
        Ok(SeatsAvailabilityEvent::SeatsReserved {
            reservation,
            details,
            changes,
        })
    }
}
