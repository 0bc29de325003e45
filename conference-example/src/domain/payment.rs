//! `ThirdPartyProcessorPayment`: a payment through a simulated outside processor, which the
//! registrant accepts or cancels.

use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::values::{ConferenceId, OrderId, PaymentId};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    /// Sent to the processor, not answered yet.
    Initiated,
    /// The processor took the money.
    Completed,
    /// The registrant cancelled it.
    Rejected,
}

/// A payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThirdPartyProcessorPayment {
    /// The order it pays for.
    pub order: OrderId,
    /// The conference.
    pub conference: ConferenceId,
    /// What it is for, as the processor shows it.
    pub description: String,
    /// How much.
    pub total: Decimal,
    /// Where it stands.
    pub state: PaymentState,
}

/// What a payment can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentCommand {
    /// Start paying for an order.
    #[serde(rename = "payments.initiate_third_party_processor_payment")]
    Initiate {
        /// The order.
        order: OrderId,
        /// The conference.
        conference: ConferenceId,
        /// What it is for.
        description: String,
        /// How much.
        total: Decimal,
    },
    /// The processor took the money.
    #[serde(rename = "payments.complete_third_party_processor_payment")]
    Complete,
    /// The registrant cancelled.
    #[serde(rename = "payments.cancel_third_party_processor_payment")]
    Cancel,
}

/// What happened to a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    /// A payment was started.
    #[serde(rename = "payments.payment_initiated")]
    PaymentInitiated {
        /// The order.
        order: OrderId,
        /// The conference.
        conference: ConferenceId,
        /// What it is for.
        description: String,
        /// How much.
        total: Decimal,
    },
    /// The money was taken.
    #[serde(rename = "payments.payment_completed")]
    PaymentCompleted {
        /// The order.
        order: OrderId,
    },
    /// The payment was cancelled.
    #[serde(rename = "payments.payment_rejected")]
    PaymentRejected {
        /// The order.
        order: OrderId,
    },
}

impl DomainEvent for PaymentEvent {}

/// Why a payment refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PaymentError {
    /// No such payment.
    #[error("no such payment")]
    NotFound,
    /// The payment was started already.
    #[error("the payment was started already")]
    AlreadyInitiated,
    /// The payment was completed or cancelled already.
    #[error("the payment is {0:?}, not waiting for the processor")]
    NotInitiated(PaymentState),
    /// A payment cannot be negative.
    #[error("a payment cannot be negative")]
    NegativeAmount,
}

impl Aggregate for ThirdPartyProcessorPayment {
    const TYPE: &'static str = "payment";
    type Id = PaymentId;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn handle(
        state: Option<&Self>,
        _id: &PaymentId,
        command: PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        match (state, command) {
            (
                None,
                PaymentCommand::Initiate {
                    order,
                    conference,
                    description,
                    total,
                },
            ) => {
                if total.is_sign_negative() && !total.is_zero() {
                    return Err(PaymentError::NegativeAmount);
                }
                Ok(vec![PaymentEvent::PaymentInitiated {
                    order,
                    conference,
                    description,
                    total,
                }])
            }
            (Some(_), PaymentCommand::Initiate { .. }) => Err(PaymentError::AlreadyInitiated),
            (None, _) => Err(PaymentError::NotFound),
            (Some(payment), command) => {
                if payment.state != PaymentState::Initiated {
                    return Err(PaymentError::NotInitiated(payment.state));
                }
                let order = payment.order;
                Ok(vec![match command {
                    PaymentCommand::Cancel => PaymentEvent::PaymentRejected { order },
                    _ => PaymentEvent::PaymentCompleted { order },
                }])
            }
        }
    }

    fn apply(state: Option<Self>, event: &PaymentEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (
                None,
                PaymentEvent::PaymentInitiated {
                    order,
                    conference,
                    description,
                    total,
                },
            ) => Ok(Self {
                order: *order,
                conference: *conference,
                description: description.clone(),
                total: *total,
                state: PaymentState::Initiated,
            }),
            (Some(mut payment), PaymentEvent::PaymentCompleted { .. }) => {
                payment.state = PaymentState::Completed;
                Ok(payment)
            }
            (Some(mut payment), PaymentEvent::PaymentRejected { .. }) => {
                payment.state = PaymentState::Rejected;
                Ok(payment)
            }
            (Some(_), PaymentEvent::PaymentInitiated { .. }) => {
                Err(ApplyError::new("the payment was initiated twice"))
            }
            (None, _) => Err(ApplyError::new("the payment was never initiated")),
        }
    }
}
