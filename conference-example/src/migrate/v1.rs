//! A V1 deployment's store, as data: what the CQRS Journey's first release would have left
//! behind after months of registrations.
//!
//! The events come from today's pure aggregates (so every stream is one they could have
//! written), then are written in V1's shapes ([`versions::to_v1`]) and with V1's metadata:
//! a time and an id, no correlation, causation or command ids. There are no conference
//! streams and no slug claims — V1's conference management was CRUD and discarded its
//! integration events — only the [`Management`] rows, kept beside the store.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_core::{Aggregate, Commit, ExpectedVersion, Metadata, NewEvent, Storage, StoreError};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::versions::to_v1;
use crate::domain::{
    AccessCode, ConferenceDetails, ConferenceId, Order, OrderCommand, OrderEvent, OrderId, Owner,
    PaymentCommand, PaymentId, PersonalInfo, SeatAssignments, SeatAssignmentsCommand, SeatPrice,
    SeatQuantity, SeatType, SeatTypeId, SeatsAvailability, SeatsAvailabilityCommand,
    SeatsAvailabilityEvent, ThirdPartyProcessorPayment,
};
use crate::migrate::{ManagedConference, ManagedSeatType, Management};

/// How big a V1 store to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Options {
    /// Stop once at least this many events are written.
    pub events: u64,
    /// How many conferences.
    pub conferences: u32,
    /// The seed of the pseudo-random choices (the same seed gives the same history).
    pub seed: u64,
}

impl Default for V1Options {
    fn default() -> Self {
        Self {
            events: 10_000,
            conferences: 3,
            seed: 2012,
        }
    }
}

/// What [`make_v1`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Summary {
    /// Events written.
    pub events: u64,
    /// Orders placed.
    pub orders: u64,
    /// Orders paid and confirmed.
    pub confirmed: u64,
    /// Orders that expired.
    pub expired: u64,
    /// Orders that got fewer seats than they asked for.
    pub partial: u64,
    /// The management rows, to keep beside the store.
    pub management: Management,
}

/// A small deterministic generator (SplitMix64): fixtures must be reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn uuid(&mut self) -> Uuid {
        // Version 4 bits, so they read as ordinary random ids.
        uuid::Builder::from_random_bytes(
            [self.next().to_le_bytes(), self.next().to_le_bytes()]
                .concat()
                .try_into()
                .unwrap_or([0; 16]),
        )
        .into_uuid()
    }
}

/// Runs `command` on `state` as a repository would, and returns the events.
fn decide<A: Aggregate>(state: &mut Option<A>, id: &A::Id, command: A::Command) -> Vec<A::Event> {
    let Ok(events) = A::handle(state.as_ref(), id, command) else {
        return Vec::new();
    };
    for event in &events {
        if let Ok(next) = A::apply(state.take(), event) {
            *state = Some(next);
        }
    }
    events
}

/// Writes events as V1 did.
struct Writer<'a> {
    storage: &'a dyn Storage,
    written: u64,
    at: DateTime<Utc>,
}

impl Writer<'_> {
    async fn write<A: Aggregate>(
        &mut self,
        id: &A::Id,
        events: &[A::Event],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let stream = A::stream_id(id).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut new = Vec::with_capacity(events.len());
        for event in events {
            let (event_type, payload) =
                cqrs_core::encode_message(event).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let value = payload
                .to_value()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let (v1_type, version, v1_payload) =
                to_v1(event_type, value).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let payload = cqrs_core::Json::encode(&v1_payload)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            new.push(
                NewEvent::new(v1_type, payload)
                    .with_schema_version(version)
                    .with_metadata(Metadata::at(self.at)),
            );
        }
        self.written += new.len() as u64;
        self.storage
            .commit(Commit::new(stream, ExpectedVersion::Any, new))
            .await?;
        Ok(())
    }

    fn later(&mut self, seconds: i64) {
        self.at += Duration::seconds(seconds);
    }
}

/// The conferences V1 ran, with their seat types.
fn conferences(rng: &mut Rng, count: u32, quota: u32) -> Vec<ManagedConference> {
    let start = Utc
        .with_ymd_and_hms(2012, 9, 10, 9, 0, 0)
        .single()
        .unwrap_or_default();
    (0..count)
        .map(|n| {
            let mut seat =
                |name: &str, description: &str, quantity: u32, cents: i64| ManagedSeatType {
                    id: SeatTypeId(rng.uuid()),
                    seats: SeatType {
                        name: name.into(),
                        description: description.into(),
                        quantity,
                        price: Decimal::new(cents, 2),
                    },
                };
            let seat_types = vec![
                seat("General admission", "Every talk", quota, 19_900),
                seat("Workshop", "A day of hands-on work", quota / 6 + 20, 9_950),
                seat("Pre-con", "The day before", quota / 3 + 10, 4_900),
            ];
            ManagedConference {
                id: ConferenceId(rng.uuid()),
                slug: format!("conf{}_2012", n + 1),
                details: ConferenceDetails {
                    name: format!("Contoso Conference {}", n + 1),
                    description: "Patterns and practices, in person".into(),
                    location: ["Redmond", "Lisbon", "Buenos Aires"][n as usize % 3].into(),
                    tagline: "The CQRS Journey, V1".into(),
                    twitter_search: format!("#contoso{}", n + 1),
                    start_date: start + Duration::days(i64::from(n) * 30),
                    end_date: start + Duration::days(i64::from(n) * 30 + 2),
                },
                owner: Owner {
                    name: "Contoso Events".into(),
                    email: format!("events{}@contoso.example", n + 1),
                },
                access_code: AccessCode::generate(),
                // The last conference was published once, then taken down.
                published: n + 1 < count || count == 1,
                was_ever_published: true,
                seat_types,
            }
        })
        .collect()
}

/// Writes a V1 store into the empty `storage`: conferences' seats, then orders until
/// `options.events` events are written (about 80% paid, the rest expired, some partially
/// reserved), with the process managers' checkpoints at the end, as a V1 deployment that
/// had processed everything would leave them. `progress` hears the events written so far.
///
/// # Errors
///
/// [`StoreError::Invalid`] if `storage` holds events; the store's error otherwise.
pub async fn make_v1(
    storage: Arc<dyn Storage>,
    options: V1Options,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<V1Summary, StoreError> {
    if storage.head().await?.get() > 0 {
        return Err(StoreError::Invalid(
            "the V1 store must be made into an empty store".into(),
        ));
    }
    let mut rng = Rng(options.seed);
    let quota = u32::try_from(options.events / 8 / u64::from(options.conferences.max(1)))
        .unwrap_or(u32::MAX)
        .clamp(50, 100_000);
    let management = Management {
        conferences: conferences(&mut rng, options.conferences.max(1), quota),
    };
    let mut w = Writer {
        storage: storage.as_ref(),
        written: 0,
        at: Utc
            .with_ymd_and_hms(2012, 5, 2, 8, 0, 0)
            .single()
            .unwrap_or_default(),
    };
    let mut seats: Vec<Option<SeatsAvailability>> = vec![None; management.conferences.len()];
    for (conference, state) in management.conferences.iter().zip(&mut seats) {
        for seat in &conference.seat_types {
            let events = decide(
                state,
                &conference.id,
                SeatsAvailabilityCommand::AddSeats {
                    seat_type: seat.id,
                    quantity: seat.seats.quantity,
                },
            );
            w.write::<SeatsAvailability>(&conference.id, &events)
                .await?;
        }
    }
    let mut summary = V1Summary {
        events: 0,
        orders: 0,
        confirmed: 0,
        expired: 0,
        partial: 0,
        management: management.clone(),
    };
    while w.written < options.events {
        let c = usize::try_from(rng.below(management.conferences.len() as u64)).unwrap_or(0);
        let conference = &management.conferences[c];
        let order_id = OrderId(rng.uuid());
        // Most registrants want general admission; some a pre-con or a workshop; a few add
        // one of the others.
        let main = match rng.below(10) {
            0..=6 => 0,
            7 | 8 => 2,
            _ => 1,
        };
        let mut wanted = vec![SeatQuantity::new(
            conference.seat_types[main].id,
            1 + u32::try_from(rng.below(3)).unwrap_or(0),
        )];
        if rng.below(4) == 0 {
            let extra = (main + 1 + usize::try_from(rng.below(2)).unwrap_or(0)) % 3;
            wanted.push(SeatQuantity::new(conference.seat_types[extra].id, 1));
        }
        let prices: Vec<SeatPrice> = conference
            .seat_types
            .iter()
            .map(|s| SeatPrice {
                seat_type: s.id,
                price: s.seats.price,
            })
            .collect();
        let expires = w.at + Duration::minutes(15);
        let mut order: Option<Order> = None;
        let placed = decide(
            &mut order,
            &order_id,
            OrderCommand::RegisterToConference {
                conference: conference.id,
                seats: wanted.clone(),
                prices,
                access_code: AccessCode::generate(),
                reservation_expires_at: expires,
                seats_released_at: expires + crate::domain::versions::V1_RELEASE_BUFFER,
            },
        );
        w.write::<Order>(&order_id, &placed).await?;
        summary.orders += 1;
        w.later(1);
        let reserved_events = decide(
            &mut seats[c],
            &conference.id,
            SeatsAvailabilityCommand::MakeReservation {
                reservation: order_id,
                seats: wanted.clone(),
            },
        );
        w.write::<SeatsAvailability>(&conference.id, &reserved_events)
            .await?;
        let reserved: Vec<SeatQuantity> = reserved_events
            .iter()
            .find_map(|e| match e {
                SeatsAvailabilityEvent::SeatsReserved { details, .. } => Some(details.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let marked = decide(
            &mut order,
            &order_id,
            OrderCommand::MarkSeatsAsReserved {
                seats: reserved.clone(),
                reservation_expires_at: expires,
            },
        );
        if marked
            .iter()
            .any(|e| matches!(e, OrderEvent::OrderPartiallyReserved { .. }))
        {
            summary.partial += 1;
        }
        w.write::<Order>(&order_id, &marked).await?;
        w.later(i64::try_from(rng.below(90)).unwrap_or(0) + 20);
        let holds = reserved.iter().any(|s| s.quantity > 0);
        if holds && rng.below(5) != 0 {
            let n = rng.below(10_000);
            let registrant = decide(
                &mut order,
                &order_id,
                OrderCommand::AssignRegistrantDetails {
                    registrant: PersonalInfo {
                        first_name: format!("Registrant{n}"),
                        last_name: "Contoso".into(),
                        email: format!("registrant{n}@example.com"),
                    },
                },
            );
            w.write::<Order>(&order_id, &registrant).await?;
            let total = order.as_ref().map_or(Decimal::ZERO, |o| o.totals.total);
            let payment_id = PaymentId(rng.uuid());
            let mut payment: Option<ThirdPartyProcessorPayment> = None;
            let mut paid = decide(
                &mut payment,
                &payment_id,
                PaymentCommand::Initiate {
                    order: order_id,
                    conference: conference.id,
                    description: format!("Seats for {}", conference.details.name),
                    total,
                },
            );
            paid.extend(decide(&mut payment, &payment_id, PaymentCommand::Complete));
            w.write::<ThirdPartyProcessorPayment>(&payment_id, &paid)
                .await?;
            w.later(2);
            let confirmed = decide(&mut order, &order_id, OrderCommand::Confirm);
            w.write::<Order>(&order_id, &confirmed).await?;
            let committed = decide(
                &mut seats[c],
                &conference.id,
                SeatsAvailabilityCommand::CommitReservation {
                    reservation: order_id,
                },
            );
            w.write::<SeatsAvailability>(&conference.id, &committed)
                .await?;
            let mut assignments: Option<SeatAssignments> = None;
            let created = decide(
                &mut assignments,
                &order_id,
                SeatAssignmentsCommand::Create { seats: reserved },
            );
            w.write::<SeatAssignments>(&order_id, &created).await?;
            summary.confirmed += 1;
        } else {
            w.later(15 * 60);
            let expired = decide(&mut order, &order_id, OrderCommand::Reject);
            w.write::<Order>(&order_id, &expired).await?;
            let cancelled = decide(
                &mut seats[c],
                &conference.id,
                SeatsAvailabilityCommand::CancelReservation {
                    reservation: order_id,
                },
            );
            w.write::<SeatsAvailability>(&conference.id, &cancelled)
                .await?;
            summary.expired += 1;
        }
        w.later(i64::try_from(rng.below(300)).unwrap_or(0));
        if summary.orders.is_multiple_of(256) {
            progress(w.written);
        }
    }
    progress(w.written);
    // A V1 deployment had processed everything it stored.
    let head = storage.head().await?;
    for name in super::process_checkpoints(&storage) {
        storage.save_checkpoint(&name, head).await?;
    }
    summary.events = w.written;
    Ok(summary)
}
