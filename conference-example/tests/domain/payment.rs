use conference_example::domain::{
    ConferenceId, OrderId, PaymentCommand as C, PaymentError, PaymentEvent as E, PaymentId,
    PaymentState, ThirdPartyProcessorPayment,
};
use cqrs_core::testing::Scenario;
use rust_decimal::Decimal;

fn initiated(order: OrderId) -> E {
    E::PaymentInitiated {
        order,
        conference: ConferenceId(uuid::Uuid::nil()),
        description: "3 seats".into(),
        total: Decimal::new(300, 0),
    }
}

#[test]
fn a_payment_is_initiated_then_completed_or_cancelled_once() {
    let order = OrderId::new();
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .when(C::Initiate {
            order,
            conference: ConferenceId(uuid::Uuid::nil()),
            description: "3 seats".into(),
            total: Decimal::new(300, 0),
        })
        .then_events([initiated(order)]);
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .given([initiated(order)])
        .when(C::Complete)
        .then_events([E::PaymentCompleted { order }])
        .then_state(|p| assert_eq!(p.state, PaymentState::Completed));
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .given([initiated(order)])
        .when(C::Cancel)
        .then_events([E::PaymentRejected { order }])
        .then_state(|p| assert_eq!(p.state, PaymentState::Rejected));
}

#[test]
fn a_finished_payment_cannot_finish_again() {
    let order = OrderId::new();
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .given([initiated(order), E::PaymentCompleted { order }])
        .when(C::Cancel)
        .then_error(PaymentError::NotInitiated(PaymentState::Completed));
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .given([initiated(order), E::PaymentRejected { order }])
        .when(C::Complete)
        .then_error(PaymentError::NotInitiated(PaymentState::Rejected));
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .given([initiated(order)])
        .when(C::Initiate {
            order,
            conference: ConferenceId::new(),
            description: "again".into(),
            total: Decimal::ONE,
        })
        .then_error(PaymentError::AlreadyInitiated);
    Scenario::<ThirdPartyProcessorPayment>::new(PaymentId::new())
        .when(C::Complete)
        .then_error(PaymentError::NotFound);
}
