//! The conference domain of the CQRS Journey: pure aggregates, with no I/O.
//!
//! - Conference management (the owner's side): [`Conference`], and [`UniqueSlug`], a decision
//!   across streams that keeps one conference per slug.
//! - Orders and registrations: [`Order`], [`SeatsAvailability`] and [`SeatAssignments`],
//!   priced by [`price_order`]; and [`OneOpenOrderPerRegistrant`], a decision across an order
//!   and its registrant's other orders.
//! - Payments: [`ThirdPartyProcessorPayment`].
//! - The owners' portal sessions: [`OwnerSession`].
//! - The process that steers one order from placement to confirmation or expiry:
//!   [`RegistrationProcess`]; and the bridge that puts seat types on sale: [`SeatQuotas`].
//!
//! Time, ids and access codes come in through commands, so every decision is a pure function
//! of the stream and the command.

mod assignments;
mod conference;
mod order;
mod payment;
mod pricing;
mod quotas;
mod registrant;
mod registration;
mod seats;
mod session;
mod values;
pub mod versions;

pub use crate::domain::assignments::{
    AssignedSeat, SeatAssignments, SeatAssignmentsCommand, SeatAssignmentsError,
    SeatAssignmentsEvent, SeatPosition,
};
pub use crate::domain::conference::{
    Conference, ConferenceCommand, ConferenceCreation, ConferenceDetails, ConferenceError,
    ConferenceEvent, ConferenceSlugError, Owner, RESERVED_SLUGS, SeatType, UniqueSlug,
    is_valid_slug,
};
pub use crate::domain::order::{
    Order, OrderClosed, OrderCommand, OrderError, OrderEvent, OrderStatus, registrant_tag,
};
pub use crate::domain::payment::{
    PaymentCommand, PaymentError, PaymentEvent, PaymentState, ThirdPartyProcessorPayment,
};
pub use crate::domain::pricing::{OrderLine, OrderTotals, PricingError, SeatPrice, price_order};
pub use crate::domain::quotas::{NoTimeout, SeatQuotaError, SeatQuotaInput, SeatQuotas};
pub use crate::domain::registrant::{
    OneOpenOrderPerRegistrant, RegistrantAssignment, RegistrantError, RegistrantOrders,
};
pub use crate::domain::registration::{
    RegistrationError, RegistrationInput, RegistrationProcess, RegistrationState,
    RegistrationTimeout,
};
pub use crate::domain::seats::{
    SeatDelta, SeatsAvailability, SeatsAvailabilityCommand, SeatsAvailabilityError,
    SeatsAvailabilityEvent,
};
pub use crate::domain::session::{
    OwnerSession, OwnerSessionCommand, OwnerSessionError, OwnerSessionEvent,
};
pub use crate::domain::values::{
    AccessCode, ConferenceId, OrderId, PaymentId, PersonalInfo, SeatQuantity, SeatTypeId, is_email,
};
