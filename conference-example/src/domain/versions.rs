//! Event versions: what a V1 deployment of this application stored, and the upcasters that
//! read it as today's events.
//!
//! V1 is the CQRS Journey's first release, as this application would have written it
//! (MIGRATION.md §1.1):
//!
//! | V1 | Today | Upcaster |
//! |---|---|---|
//! | `registration.order_payment_confirmed` | `registration.order_confirmed` (zero-cost orders confirm without a payment) | a rename |
//! | `registration.order_totals_calculated` v1, without `is_free_of_charge` | v2 | `is_free_of_charge` = the total is zero and the order holds seats (no V1 order was free) |
//! | `registration.order_placed` v1, without `seats_released_at` | v2 | the reservation deadline plus the 14-minute release buffer V1 hard-coded |
//! | `registration.order_confirmed` and `registration.order_expired` v1, with no payload | v2, naming the order, its conference and its registrant (and tagged with the registrant) | an empty object: a v1 event cannot tell which order it closes |
//!
//! Stored rows are never rewritten: every reader (repositories, process managers, read
//! models) decodes through [`upcasters`], so a V1 store runs as it is, and the store migration
//! writes the same chain's output.
//!
//! # Examples
//!
//! ```
//! use conference_example::domain::{OrderClosed, OrderEvent, versions};
//! use cqrs_core::{Json, NewEvent, Position, RecordedEvent, StreamId, Version};
//!
//! let stored = RecordedEvent::from_new(
//!     NewEvent::new(versions::V1_ORDER_PAYMENT_CONFIRMED, Json::parse("null")?),
//!     StreamId::new("order-0190a5d2-0000-7000-8000-000000000001")?,
//!     Version::new(5),
//!     Position::new(42),
//! );
//! let events: Vec<OrderEvent> = versions::upcasters().decode(&stored)?.collect();
//! assert_eq!(events, [OrderEvent::OrderConfirmed(OrderClosed::default())]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{DateTime, Duration, Utc};
use cqrs_core::{UpcastError, Upcasters};
use rust_decimal::Decimal;
use serde_json::Value;

/// V1's name for [`OrderConfirmed`](crate::domain::OrderEvent::OrderConfirmed).
pub const V1_ORDER_PAYMENT_CONFIRMED: &str = "registration.order_payment_confirmed";

/// The current name of a confirmed order's event.
pub const ORDER_CONFIRMED: &str = "registration.order_confirmed";

/// The event whose v2 gained `is_free_of_charge`.
pub const ORDER_TOTALS_CALCULATED: &str = "registration.order_totals_calculated";

/// The event whose v2 gained `seats_released_at`.
pub const ORDER_PLACED: &str = "registration.order_placed";

/// An expired order's event.
pub const ORDER_EXPIRED: &str = "registration.order_expired";

/// A named registrant's event, which gained (without a new version: they are optional) the
/// order, its conference and the registrant it replaces.
pub const ORDER_REGISTRANT_ASSIGNED: &str = "registration.order_registrant_assigned";

/// The release buffer V1 hard-coded in its process manager: unpaid seats stayed held this
/// long after the reservation deadline.
pub const V1_RELEASE_BUFFER: Duration = Duration::minutes(14);

/// The schema versions events are written with today (types not listed: 1).
#[must_use]
pub fn current_schema_version(event_type: &str) -> u16 {
    match event_type {
        ORDER_TOTALS_CALCULATED | ORDER_PLACED | ORDER_CONFIRMED | ORDER_EXPIRED => 2,
        _ => 1,
    }
}

/// The application's upcaster chain, built once.
#[must_use]
pub fn upcasters() -> Upcasters {
    static CHAIN: OnceLock<Upcasters> = OnceLock::new();
    CHAIN
        .get_or_init(|| {
            Upcasters::new()
                .rename(V1_ORDER_PAYMENT_CONFIRMED, 1, ORDER_CONFIRMED, 1)
                .map(ORDER_TOTALS_CALCULATED, 1, totals_v1_to_v2)
                .map(ORDER_PLACED, 1, placed_v1_to_v2)
                .map(ORDER_CONFIRMED, 1, closed_v1_to_v2)
                .map(ORDER_EXPIRED, 1, closed_v1_to_v2)
        })
        .clone()
}

fn object(payload: &mut Value) -> Result<&mut serde_json::Map<String, Value>, UpcastError> {
    payload
        .as_object_mut()
        .ok_or_else(|| UpcastError::new("expected an object"))
}

fn totals_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let map = object(&mut payload)?;
    let total = match map.get("total") {
        Some(Value::String(s)) => Decimal::from_str(s).ok(),
        Some(Value::Number(n)) => Decimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
    .ok_or_else(|| UpcastError::new("`total` is missing or not a decimal"))?;
    // Free as today's orders are: seats held, all at no cost (an empty order is not free).
    let has_seats = map
        .get("lines")
        .and_then(Value::as_array)
        .is_some_and(|lines| {
            lines
                .iter()
                .any(|l| l.get("quantity").and_then(Value::as_u64).unwrap_or(0) > 0)
        });
    // Rows labelled v1 that already carry the field (written before versioning) keep it.
    map.entry("is_free_of_charge")
        .or_insert(Value::Bool(total.is_zero() && has_seats));
    Ok(payload)
}

fn placed_v1_to_v2(mut payload: Value) -> Result<Value, UpcastError> {
    let map = object(&mut payload)?;
    if map.contains_key("seats_released_at") {
        return Ok(payload);
    }
    let expires = map
        .get("reservation_expires_at")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .ok_or_else(|| UpcastError::new("`reservation_expires_at` is missing or not a time"))?
        .with_timezone(&Utc);
    let released = serde_json::to_value(expires + V1_RELEASE_BUFFER)?;
    map.insert("seats_released_at".into(), released);
    Ok(payload)
}

/// A v1 confirmation or expiry had no payload (`null`); v2 names the order it closes, which
/// a v1 event cannot tell: it reads as closing an unnamed order, with no registrant's tag.
fn closed_v1_to_v2(payload: Value) -> Result<Value, UpcastError> {
    match payload {
        Value::Null => Ok(Value::Object(serde_json::Map::new())),
        // Rows labelled v1 that already carry an object keep it.
        Value::Object(_) => Ok(payload),
        _ => Err(UpcastError::new("expected no payload or an object")),
    }
}

/// Writes `event` the way V1 stored it: the inverse of [`upcasters`], for the V1 fixture
/// generator and the tests. Returns the V1 type name, schema version and payload.
///
/// # Errors
///
/// If `payload` is not the current shape of `event_type`.
pub fn to_v1(event_type: &str, mut payload: Value) -> Result<(String, u16, Value), UpcastError> {
    match event_type {
        ORDER_CONFIRMED => Ok((V1_ORDER_PAYMENT_CONFIRMED.to_owned(), 1, Value::Null)),
        ORDER_EXPIRED => Ok((event_type.to_owned(), 1, Value::Null)),
        ORDER_REGISTRANT_ASSIGNED => {
            let map = object(&mut payload)?;
            for field in ["order", "conference", "replaces"] {
                map.remove(field);
            }
            Ok((event_type.to_owned(), 1, payload))
        }
        ORDER_TOTALS_CALCULATED => {
            object(&mut payload)?.remove("is_free_of_charge");
            Ok((event_type.to_owned(), 1, payload))
        }
        ORDER_PLACED => {
            object(&mut payload)?.remove("seats_released_at");
            Ok((event_type.to_owned(), 1, payload))
        }
        _ => Ok((event_type.to_owned(), 1, payload)),
    }
}
