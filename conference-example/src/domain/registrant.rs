//! `OneOpenOrderPerRegistrant`: a rule across an order and its registrant's other orders.

use std::collections::{BTreeMap, BTreeSet};

use cqrs_core::{Aggregate, ApplyError, Decision, Emit, EventQuery, QueryItem, StreamId, Tag};
use serde::{Deserialize, Serialize};

use crate::domain::order::{Order, OrderCommand, OrderError, OrderEvent, registrant_tag};
use crate::domain::values::{ConferenceId, OrderId, PersonalInfo};
use crate::domain::versions::{ORDER_CONFIRMED, ORDER_EXPIRED, ORDER_REGISTRANT_ASSIGNED};

/// A registrant has one open order per conference: naming the registrant of an order is
/// refused while another order of the same registrant (the same email, ignoring case) for the
/// same conference is neither confirmed nor expired. It keeps one person from holding seats
/// through several orders at once, and a registrant from paying twice by mistake.
///
/// A [`Decision`] that [reads its target](Decision::READS_TARGET): the order itself, from its
/// stream, so that its own rules stay in [`Order`]; and the registrant's other orders, from
/// the events tagged with the registrant (`registrant:ana@example.com`): their assignments,
/// confirmations and expiries. Two orders naming one registrant at once: one is refused,
/// whichever commits second. Orders for other registrants never wait on each other.
///
/// Orders named before these events were tagged carry no tag: the rule does not see them, and
/// holds from the first assignment recorded since.
///
/// # Examples
///
/// ```
/// use conference_example::domain::{
///     OneOpenOrderPerRegistrant, Order, OrderEvent, RegistrantAssignment, RegistrantError,
/// };
/// # use conference_example::domain::{AccessCode, ConferenceId, OrderClosed, OrderId, PersonalInfo};
/// # use cqrs_core::Aggregate;
/// use cqrs_core::testing::DecisionScenario;
///
/// # let conference = ConferenceId::new();
/// # let (first, second) = (OrderId::new(), OrderId::new());
/// # let at = chrono::DateTime::UNIX_EPOCH;
/// # let placed = || OrderEvent::OrderPlaced {
/// #     conference, seats: vec![], reservation_expires_at: at, seats_released_at: at,
/// #     access_code: AccessCode::generate(),
/// # };
/// let ana = PersonalInfo {
///     first_name: "Ana".into(),
///     last_name: "Alves".into(),
///     email: "ana@example.com".into(),
/// };
/// let named = |order| OrderEvent::OrderRegistrantAssigned {
///     registrant: ana.clone(),
///     order: Some(order),
///     conference: Some(conference),
///     replaces: None,
/// };
/// let stream = |order: &OrderId| Order::stream_id(order).unwrap();
/// let assign = RegistrantAssignment::Assign { order: second, registrant: ana.clone() };
///
/// // Ana's first order is still open: she cannot start a second one.
/// DecisionScenario::<OneOpenOrderPerRegistrant>::new()
///     .given(stream(&first), [placed(), named(first)])
///     .given(stream(&second), [placed()])
///     .when(assign.clone())
///     .then_error(RegistrantError::AnotherOrderOpen);
///
/// // Once it is confirmed, she can.
/// let confirmed = OrderEvent::OrderConfirmed(OrderClosed {
///     order: Some(first),
///     conference: Some(conference),
///     registrant: Some(ana.email.clone()),
/// });
/// DecisionScenario::<OneOpenOrderPerRegistrant>::new()
///     .given(stream(&first), [placed(), named(first), confirmed])
///     .given(stream(&second), [placed()])
///     .when(assign)
///     .then_emitted([(stream(&second), named(second))]);
/// ```
#[derive(Debug)]
pub struct OneOpenOrderPerRegistrant;

/// Naming an order's registrant, under [`OneOpenOrderPerRegistrant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistrantAssignment {
    /// Name `registrant` on `order` (as [`OrderCommand::AssignRegistrantDetails`]).
    #[serde(rename = "registration.assign_registrant")]
    Assign {
        /// The order.
        order: OrderId,
        /// Who is registering.
        registrant: PersonalInfo,
    },
}

/// Why an order's registrant cannot be named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistrantError {
    /// The registrant has another order for the conference that is neither confirmed nor
    /// expired.
    #[error(
        "this registrant already has an order in progress for this conference: complete it, \
         or let it expire, before starting another"
    )]
    AnotherOrderOpen,
    /// The order itself refuses (it expired, or a field is wrong).
    #[error(transparent)]
    Order(OrderError),
}

/// The order, as its stream says, and the registrant's orders, as their tagged events say.
#[derive(Debug)]
pub struct RegistrantOrders {
    email: String,
    order: Option<Order>,
    open: BTreeMap<OrderId, ConferenceId>,
    closed: BTreeSet<OrderId>,
}

impl Decision for OneOpenOrderPerRegistrant {
    const NAME: &'static str = "registration.one_open_order_per_registrant";
    const READS_TARGET: bool = true;
    type Command = RegistrantAssignment;
    type Event = OrderEvent;
    type Error = RegistrantError;
    type State = RegistrantOrders;

    fn target(RegistrantAssignment::Assign { order, .. }: &RegistrantAssignment) -> StreamId {
        Order::stream_id(order).expect("an order id makes a stream id")
    }

    fn query(RegistrantAssignment::Assign { registrant, .. }: &RegistrantAssignment) -> EventQuery {
        // An email that makes no tag is no email either: `decide` refuses it. It reads
        // `registrant:-`, which no email makes, rather than have no query.
        let tag = registrant_tag(&registrant.email)
            .unwrap_or_else(|| Tag::new("registrant", "-").expect("a valid tag"));
        EventQuery::items([QueryItem::types([
            ORDER_REGISTRANT_ASSIGNED,
            ORDER_CONFIRMED,
            ORDER_EXPIRED,
        ])
        .with_tag(tag)])
    }

    fn initial(
        RegistrantAssignment::Assign { registrant, .. }: &RegistrantAssignment,
    ) -> RegistrantOrders {
        RegistrantOrders {
            email: registrant.email.clone(),
            order: None,
            open: BTreeMap::new(),
            closed: BTreeSet::new(),
        }
    }

    fn apply_target(state: &mut RegistrantOrders, event: &OrderEvent) -> Result<(), ApplyError> {
        state.order = Some(Order::apply(state.order.take(), event)?);
        Ok(())
    }

    fn apply(state: &mut RegistrantOrders, event: &OrderEvent) {
        match event {
            OrderEvent::OrderRegistrantAssigned {
                registrant,
                order: Some(order),
                conference: Some(conference),
                ..
            } => {
                // Tagged with this registrant, it names them, or names another in their place.
                if registrant.same_email(&state.email) && !state.closed.contains(order) {
                    state.open.insert(*order, *conference);
                } else {
                    state.open.remove(order);
                }
            }
            OrderEvent::OrderConfirmed(closed) | OrderEvent::OrderExpired(closed) => {
                if let Some(order) = closed.order {
                    state.open.remove(&order);
                    state.closed.insert(order);
                }
            }
            _ => {}
        }
    }

    fn decide(
        state: &RegistrantOrders,
        command: &RegistrantAssignment,
    ) -> Result<Vec<Emit<OrderEvent>>, RegistrantError> {
        let RegistrantAssignment::Assign { order, registrant } = command;
        // The order's own rules first: an expired order is expired, whoever asks.
        let events = Order::handle(
            state.order.as_ref(),
            order,
            OrderCommand::AssignRegistrantDetails {
                registrant: registrant.clone(),
            },
        )
        .map_err(RegistrantError::Order)?;
        let conference = state
            .order
            .as_ref()
            .map(|o| o.conference)
            .ok_or(RegistrantError::Order(OrderError::NotFound))?;
        if state
            .open
            .iter()
            .any(|(other, c)| other != order && *c == conference)
        {
            return Err(RegistrantError::AnotherOrderOpen);
        }
        let stream = Self::target(command);
        Ok(events
            .into_iter()
            .map(|event| Emit::to(stream.clone(), event))
            .collect())
    }
}
