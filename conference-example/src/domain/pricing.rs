//! Pricing an order: the prices of its seat types times their quantities, each line rounded
//! to cents half-to-even (banker's rounding, as .NET's `Math.Round` in the CQRS Journey).

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::domain::values::{SeatQuantity, SeatTypeId};

/// A seat type's price, as the registration side knows it when an order is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatPrice {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// The price of one seat.
    pub price: Decimal,
}

/// One line of a priced order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// The price of one seat.
    pub unit_price: Decimal,
    /// How many seats.
    pub quantity: u32,
    /// `unit_price × quantity`, rounded to cents half-to-even.
    pub line_total: Decimal,
}

/// An order's lines and total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTotals {
    /// One line per seat type with seats.
    pub lines: Vec<OrderLine>,
    /// The sum of the lines.
    pub total: Decimal,
}

impl OrderTotals {
    /// Whether the order costs nothing (and so is confirmed without a payment): it holds
    /// seats, and all of them are free. An order left with no seat is not free, it is empty.
    #[must_use]
    pub fn is_free_of_charge(&self) -> bool {
        self.total.is_zero() && self.lines.iter().any(|line| line.quantity > 0)
    }
}

/// Why an order cannot be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PricingError {
    /// A seat type has no price: it is not a seat type of the conference.
    #[error("seat type {0} has no price")]
    UnknownSeatType(SeatTypeId),
    /// A price is negative.
    #[error("seat type {0} has a negative price")]
    NegativePrice(SeatTypeId),
}

/// Prices `seats` at `prices`. Seat types with no seats get no line.
///
/// # Errors
///
/// [`PricingError`] if a seat type has no price, or a negative one.
///
/// # Examples
///
/// ```
/// use conference_example::domain::{price_order, SeatPrice, SeatQuantity, SeatTypeId};
/// use rust_decimal::Decimal;
///
/// let workshop = SeatTypeId::new();
/// let prices = [SeatPrice { seat_type: workshop, price: Decimal::new(9_987, 3) }]; // 9.987
/// let totals = price_order(&prices, &[SeatQuantity::new(workshop, 1)])?;
/// assert_eq!(totals.total, Decimal::new(999, 2)); // 9.99
/// assert!(!totals.is_free_of_charge());
/// # Ok::<(), conference_example::domain::PricingError>(())
/// ```
pub fn price_order(
    prices: &[SeatPrice],
    seats: &[SeatQuantity],
) -> Result<OrderTotals, PricingError> {
    let mut lines = Vec::with_capacity(seats.len());
    for seat in seats.iter().filter(|s| s.quantity > 0) {
        let price = prices
            .iter()
            .find(|p| p.seat_type == seat.seat_type)
            .ok_or(PricingError::UnknownSeatType(seat.seat_type))?;
        if price.price.is_sign_negative() && !price.price.is_zero() {
            return Err(PricingError::NegativePrice(seat.seat_type));
        }
        lines.push(OrderLine {
            seat_type: seat.seat_type,
            unit_price: price.price,
            quantity: seat.quantity,
            line_total: (price.price * Decimal::from(seat.quantity))
                .round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven),
        });
    }
    let total = lines.iter().map(|l| l.line_total).sum();
    Ok(OrderTotals { lines, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(price: Decimal, quantity: u32) -> Decimal {
        let seat_type = SeatTypeId::new();
        price_order(
            &[SeatPrice { seat_type, price }],
            &[SeatQuantity::new(seat_type, quantity)],
        )
        .unwrap()
        .total
    }

    #[test]
    fn an_empty_order_is_not_free() {
        let seat_type = SeatTypeId::new();
        let prices = [SeatPrice {
            seat_type,
            price: Decimal::ZERO,
        }];
        let empty = price_order(&prices, &[SeatQuantity::new(seat_type, 0)]).unwrap();
        assert!(empty.total.is_zero());
        assert!(!empty.is_free_of_charge(), "nothing held is not free");
        let free = price_order(&prices, &[SeatQuantity::new(seat_type, 2)]).unwrap();
        assert!(free.is_free_of_charge());
    }

    #[test]
    fn lines_round_half_to_even_to_cents() {
        assert_eq!(priced(Decimal::new(9_987, 3), 1), Decimal::new(999, 2));
        assert_eq!(priced(Decimal::new(1_005, 3), 1), Decimal::new(100, 2));
        assert_eq!(priced(Decimal::new(1_015, 3), 1), Decimal::new(102, 2));
        assert_eq!(priced(Decimal::new(3_335, 4), 3), Decimal::new(100, 2)); // 1.0005 → 1.00
    }

    #[test]
    fn the_total_sums_the_lines_and_zero_is_free_of_charge() {
        let (free, paid) = (SeatTypeId::new(), SeatTypeId::new());
        let prices = [
            SeatPrice {
                seat_type: free,
                price: Decimal::ZERO,
            },
            SeatPrice {
                seat_type: paid,
                price: Decimal::new(100, 0),
            },
        ];
        let mixed = price_order(
            &prices,
            &[SeatQuantity::new(free, 2), SeatQuantity::new(paid, 3)],
        )
        .unwrap();
        assert_eq!(mixed.total, Decimal::new(300, 0));
        assert_eq!(mixed.lines.len(), 2);
        assert!(!mixed.is_free_of_charge());
        let gratis = price_order(
            &prices,
            &[SeatQuantity::new(free, 2), SeatQuantity::new(paid, 0)],
        )
        .unwrap();
        assert!(gratis.is_free_of_charge());
        assert_eq!(gratis.lines.len(), 1);
    }

    #[test]
    fn an_unknown_seat_type_cannot_be_priced() {
        let stranger = SeatTypeId::new();
        assert_eq!(
            price_order(&[], &[SeatQuantity::new(stranger, 1)]),
            Err(PricingError::UnknownSeatType(stranger))
        );
    }
}
