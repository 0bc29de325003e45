//! `SeatAssignments`: who sits in each seat of a confirmed order.

use std::collections::BTreeMap;

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::domain::values::{OrderId, PersonalInfo, SeatQuantity, SeatTypeId, is_email};

/// One seat of an order, and its attendee once assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedSeat {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// Who sits there.
    pub attendee: Option<PersonalInfo>,
}

/// The seats of one confirmed order, by position. Its id is the order's id, so an order has
/// one at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAssignments {
    /// Seats by position (0, 1, …).
    pub seats: BTreeMap<u32, AssignedSeat>,
}

/// A seat position and its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatPosition {
    /// The position.
    pub position: u32,
    /// The seat type.
    pub seat_type: SeatTypeId,
}

/// What seat assignments can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatAssignmentsCommand {
    /// Create one position per seat of a confirmed order. Done already: nothing happens.
    #[serde(rename = "registration.create_seat_assignments")]
    Create {
        /// The order's seats.
        seats: Vec<SeatQuantity>,
    },
    /// Put an attendee in a seat.
    #[serde(rename = "registration.assign_seat")]
    AssignSeat {
        /// The position.
        position: u32,
        /// The attendee (an email is required, names are not).
        attendee: PersonalInfo,
    },
    /// Free a seat.
    #[serde(rename = "registration.unassign_seat")]
    UnassignSeat {
        /// The position.
        position: u32,
    },
}

/// What happened to an order's seats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeatAssignmentsEvent {
    /// The order's seats got positions.
    #[serde(rename = "registration.seat_assignments_created")]
    SeatAssignmentsCreated {
        /// The positions.
        seats: Vec<SeatPosition>,
    },
    /// An attendee was put in a seat.
    #[serde(rename = "registration.seat_assigned")]
    SeatAssigned {
        /// The position.
        position: u32,
        /// The seat type.
        seat_type: SeatTypeId,
        /// The attendee.
        attendee: PersonalInfo,
    },
    /// A seat was freed.
    #[serde(rename = "registration.seat_unassigned")]
    SeatUnassigned {
        /// The position.
        position: u32,
    },
    /// A seat's attendee changed their name (the email stays).
    #[serde(rename = "registration.seat_assignment_updated")]
    SeatAssignmentUpdated {
        /// The position.
        position: u32,
        /// The attendee.
        attendee: PersonalInfo,
    },
}

impl DomainEvent for SeatAssignmentsEvent {}

/// Why seat assignments refuse a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SeatAssignmentsError {
    /// The order's seats have no positions yet.
    #[error("no seat assignments for this order")]
    NotFound,
    /// The order has no seats.
    #[error("an order with no seats has nothing to assign")]
    NoSeats,
    /// No such position.
    #[error("the order has no seat at position {0}")]
    UnknownPosition(u32),
    /// The attendee's email is missing or wrong.
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
}

impl Aggregate for SeatAssignments {
    const TYPE: &'static str = "assignments";
    type Id = OrderId;
    type Command = SeatAssignmentsCommand;
    type Event = SeatAssignmentsEvent;
    type Error = SeatAssignmentsError;

    fn handle(
        state: Option<&Self>,
        _id: &OrderId,
        command: SeatAssignmentsCommand,
    ) -> Result<Vec<SeatAssignmentsEvent>, SeatAssignmentsError> {
        use SeatAssignmentsCommand as C;
        use SeatAssignmentsEvent as E;
        let assignments = match (state, command) {
            // Fixed quirk: the CQRS Journey created a second set of assignments when
            // `OrderConfirmed` was delivered twice.
            (Some(_), C::Create { .. }) => return Ok(vec![]),
            (None, C::Create { seats }) => {
                let seats: Vec<SeatPosition> = seats
                    .iter()
                    .flat_map(|s| std::iter::repeat_n(s.seat_type, s.quantity as usize))
                    .zip(0..)
                    .map(|(seat_type, position)| SeatPosition {
                        position,
                        seat_type,
                    })
                    .collect();
                if seats.is_empty() {
                    return Err(SeatAssignmentsError::NoSeats);
                }
                return Ok(vec![E::SeatAssignmentsCreated { seats }]);
            }
            (None, _) => return Err(SeatAssignmentsError::NotFound),
            (Some(assignments), command) => (assignments, command),
        };
        match assignments {
            (state, C::AssignSeat { position, attendee }) => {
                let seat = state.seat(position)?;
                if !is_email(&attendee.email) {
                    return Err(SeatAssignmentsError::InvalidEmail(attendee.email));
                }
                match &seat.attendee {
                    Some(current) if current.same_email(&attendee.email) => {
                        let renamed = !current
                            .first_name
                            .eq_ignore_ascii_case(&attendee.first_name)
                            || !current.last_name.eq_ignore_ascii_case(&attendee.last_name);
                        Ok(if renamed {
                            vec![E::SeatAssignmentUpdated { position, attendee }]
                        } else {
                            vec![]
                        })
                    }
                    current => {
                        let mut events = Vec::with_capacity(2);
                        if current.is_some() {
                            events.push(E::SeatUnassigned { position });
                        }
                        events.push(E::SeatAssigned {
                            position,
                            seat_type: seat.seat_type,
                            attendee,
                        });
                        Ok(events)
                    }
                }
            }
            (state, C::UnassignSeat { position }) => {
                Ok(if state.seat(position)?.attendee.is_some() {
                    vec![E::SeatUnassigned { position }]
                } else {
                    vec![]
                })
            }
            (_, C::Create { .. }) => Ok(vec![]),
        }
    }

    fn apply(state: Option<Self>, event: &SeatAssignmentsEvent) -> Result<Self, ApplyError> {
        use SeatAssignmentsEvent as E;
        let mut state = match (state, event) {
            (None, E::SeatAssignmentsCreated { seats }) => {
                return Ok(Self {
                    seats: seats
                        .iter()
                        .map(|s| {
                            (
                                s.position,
                                AssignedSeat {
                                    seat_type: s.seat_type,
                                    attendee: None,
                                },
                            )
                        })
                        .collect(),
                });
            }
            (Some(_), E::SeatAssignmentsCreated { .. }) => {
                return Err(ApplyError::new("seat assignments were created twice"));
            }
            (None, _) => return Err(ApplyError::new("seat assignments were never created")),
            (Some(state), _) => state,
        };
        match event {
            E::SeatAssignmentsCreated { .. } => {}
            E::SeatAssigned {
                position, attendee, ..
            }
            | E::SeatAssignmentUpdated { position, attendee } => {
                state.seat_mut(*position)?.attendee = Some(attendee.clone());
            }
            E::SeatUnassigned { position } => state.seat_mut(*position)?.attendee = None,
        }
        Ok(state)
    }
}

impl SeatAssignments {
    fn seat_mut(&mut self, position: u32) -> Result<&mut AssignedSeat, ApplyError> {
        self.seats
            .get_mut(&position)
            .ok_or_else(|| ApplyError::new(format!("no seat at position {position}")))
    }

    fn seat(&self, position: u32) -> Result<&AssignedSeat, SeatAssignmentsError> {
        self.seats
            .get(&position)
            .ok_or(SeatAssignmentsError::UnknownPosition(position))
    }
}
