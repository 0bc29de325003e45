use conference_example::domain::{
    Conference, ConferenceId, SeatQuotaInput as I, SeatQuotas, SeatType, SeatTypeId,
    SeatsAvailability, SeatsAvailabilityCommand as C,
};
use cqrs_core::testing::ProcessScenario;
use cqrs_core::{Aggregate, Outgoing};
use rust_decimal::Decimal;

fn seats(quantity: u32) -> SeatType {
    SeatType {
        name: "Full pass".into(),
        description: "Every talk".into(),
        quantity,
        price: Decimal::ONE,
    }
}

#[test]
fn seats_follow_the_quota_of_each_seat_type_on_sale() {
    let (conference, full) = (ConferenceId::new(), SeatTypeId::new());
    let scenario = || {
        ProcessScenario::<SeatQuotas>::new().in_stream(Conference::stream_id(&conference).unwrap())
    };
    let to_seats = |command: C| Outgoing::to::<SeatsAvailability>(&conference, &command);
    scenario()
        .when(I::SeatCreated {
            seat_type: full,
            seats: seats(100),
        })
        .then_sends([to_seats(C::AddSeats {
            seat_type: full,
            quantity: 100,
        })]);
    let on_sale = || {
        scenario().given([I::SeatCreated {
            seat_type: full,
            seats: seats(100),
        }])
    };
    on_sale()
        .when(I::SeatUpdated {
            seat_type: full,
            seats: seats(120),
        })
        .then_sends([to_seats(C::AddSeats {
            seat_type: full,
            quantity: 20,
        })]);
    on_sale()
        .when(I::SeatUpdated {
            seat_type: full,
            seats: seats(70),
        })
        .then_sends([to_seats(C::RemoveSeats {
            seat_type: full,
            quantity: 30,
        })]);
    // A changed price, same quota: nothing to tell the seats (the Journey sent RemoveSeats(0)).
    on_sale()
        .when(I::SeatUpdated {
            seat_type: full,
            seats: seats(100),
        })
        .then_no_sends();
    // A redelivered SeatCreated adds nothing.
    on_sale()
        .when(I::SeatCreated {
            seat_type: full,
            seats: seats(100),
        })
        .then_ignored();
}
