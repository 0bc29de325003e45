//! The conference directory: conferences by slug, their seat types, and the seats left of
//! each (the "remaining seats" read model).

use std::collections::BTreeMap;

use cqrs_core::{ProjectionError, RecordedEvent};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::domain::{
    AccessCode, Conference, ConferenceDetails, ConferenceEvent, ConferenceId, Owner, SeatPrice,
    SeatTypeId, SeatsAvailability, SeatsAvailabilityEvent,
};
use crate::read::decode;

/// A seat type, as registrants and owners see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeatTypeView {
    /// Its id.
    pub id: SeatTypeId,
    /// Its name (empty while only its availability is known).
    pub name: String,
    /// What it gives.
    pub description: String,
    /// The price of one.
    pub price: Decimal,
    /// The quota.
    pub quantity: u32,
    /// Whether it is on sale (the conference was ever published since it was added).
    pub on_sale: bool,
    /// Seats left: the quota minus the seats held or sold, negative when the quota was cut
    /// below what is held (`None` in the V1 read model, which had no such column).
    pub available: Option<i64>,
}

/// A conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConferenceView {
    /// Its id.
    pub id: ConferenceId,
    /// Its URL segment.
    pub slug: String,
    /// What the public sees.
    pub details: ConferenceDetails,
    /// Who runs it.
    pub owner: Owner,
    /// With the owner's email, opens its admin pages.
    #[serde(skip)]
    pub access_code: AccessCode,
    /// Whether registrants see it.
    pub published: bool,
    /// Its seat types, on sale or not.
    pub seat_types: BTreeMap<SeatTypeId, SeatTypeView>,
    /// The version of its seats stream last applied: older or repeated seat events are
    /// ignored.
    pub seats_version: u64,
    /// The version of its own stream last applied.
    pub version: u64,
}

impl ConferenceView {
    /// The seat types on sale, in the order they were added.
    pub fn seat_types_on_sale(&self) -> impl Iterator<Item = &SeatTypeView> {
        self.seat_types.values().filter(|s| s.on_sale)
    }

    /// The prices of the seat types on sale, for placing an order.
    #[must_use]
    pub fn prices(&self) -> Vec<SeatPrice> {
        self.seat_types_on_sale()
            .map(|s| SeatPrice {
                seat_type: s.id,
                price: s.price,
            })
            .collect()
    }
}

/// Every conference, by id and by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceDirectory {
    /// Whether seat types carry the seats left (the V2 read model; V1 had no column).
    remaining_seats: bool,
    conferences: BTreeMap<ConferenceId, ConferenceView>,
    slugs: BTreeMap<String, ConferenceId>,
    /// Seats of conferences not created yet (an availability event that came first).
    pending_seats: BTreeMap<ConferenceId, (u64, BTreeMap<SeatTypeId, i64>)>,
}

impl Default for ConferenceDirectory {
    /// Today's directory, with the seats left.
    fn default() -> Self {
        Self {
            remaining_seats: true,
            conferences: BTreeMap::new(),
            slugs: BTreeMap::new(),
            pending_seats: BTreeMap::new(),
        }
    }
}

impl ConferenceDirectory {
    /// The directory as V1 built it: seat types without the seats left.
    #[must_use]
    pub fn v1() -> Self {
        Self {
            remaining_seats: false,
            ..Self::default()
        }
    }

    /// The conference named `slug`.
    #[must_use]
    pub fn by_slug(&self, slug: &str) -> Option<&ConferenceView> {
        self.slugs.get(slug).and_then(|id| self.conferences.get(id))
    }

    /// The conference `id`.
    #[must_use]
    pub fn get(&self, id: ConferenceId) -> Option<&ConferenceView> {
        self.conferences.get(&id)
    }

    /// The published conferences.
    pub fn published(&self) -> impl Iterator<Item = &ConferenceView> {
        self.conferences.values().filter(|c| c.published)
    }

    /// The published conferences after `after`, in the order of their ids (the order they
    /// were created in): a page resumes where the last one ended, whatever was added since.
    pub fn published_after(
        &self,
        after: Option<ConferenceId>,
    ) -> impl Iterator<Item = &ConferenceView> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.conferences
            .range((from, Unbounded))
            .map(|(_, c)| c)
            .filter(|c| c.published)
    }

    /// Every conference.
    pub fn all(&self) -> impl Iterator<Item = &ConferenceView> {
        self.conferences.values()
    }

    /// Applies one recorded event of a conference or of its seats.
    ///
    /// # Errors
    ///
    /// [`ProjectionError`] if the event does not decode.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let category = event.stream.category();
        let Some(id) = event
            .stream
            .local_id()
            .and_then(|id| id.parse::<ConferenceId>().ok())
        else {
            return Ok(());
        };
        if category == <Conference as cqrs_core::Aggregate>::TYPE {
            self.apply_conference(id, event.version.get(), decode(event)?);
        } else if category == <SeatsAvailability as cqrs_core::Aggregate>::TYPE
            && self.remaining_seats
        {
            self.apply_seats(id, event.version.get(), &decode(event)?);
        }
        Ok(())
    }

    fn apply_conference(&mut self, id: ConferenceId, version: u64, event: ConferenceEvent) {
        use ConferenceEvent as E;
        if let E::ConferenceCreated {
            slug,
            details,
            owner,
            access_code,
        } = event
        {
            if self.conferences.contains_key(&id) {
                return; // a duplicate
            }
            self.slugs.insert(slug.clone(), id);
            let mut view = ConferenceView {
                id,
                slug,
                details,
                owner,
                access_code,
                published: false,
                seat_types: BTreeMap::new(),
                seats_version: 0,
                version: 1,
            };
            if let Some((version, seats)) = self.pending_seats.remove(&id) {
                view.seats_version = version;
                for (seat_type, available) in seats {
                    view.seat_types
                        .insert(seat_type, placeholder(seat_type, Some(available)));
                }
            }
            self.conferences.insert(id, view);
            return;
        }
        let column = self.remaining_seats.then_some(0);
        let Some(view) = self.conferences.get_mut(&id) else {
            return;
        };
        // Versions of one stream come in order; anything not newer was applied already.
        if version <= view.version {
            return;
        }
        view.version = version;
        match event {
            E::ConferenceCreated { .. } => {}
            E::ConferenceUpdated { details } => view.details = details,
            E::ConferencePublished => view.published = true,
            E::ConferenceUnpublished => view.published = false,
            E::SeatTypeAdded { seat_type, seats } | E::SeatTypeUpdated { seat_type, seats } => {
                let row = view
                    .seat_types
                    .entry(seat_type)
                    .or_insert_with(|| placeholder(seat_type, column));
                row.name = seats.name;
                row.description = seats.description;
                row.price = seats.price;
                row.quantity = seats.quantity;
            }
            E::SeatTypeDeleted { seat_type } => {
                view.seat_types.remove(&seat_type);
            }
            E::AccessCodeChanged { access_code } => view.access_code = access_code,
            E::SeatCreated { seat_type, seats } | E::SeatUpdated { seat_type, seats } => {
                let row = view
                    .seat_types
                    .entry(seat_type)
                    .or_insert_with(|| placeholder(seat_type, column));
                row.name = seats.name;
                row.description = seats.description;
                row.price = seats.price;
                row.quantity = seats.quantity;
                row.on_sale = true;
            }
        }
    }

    fn apply_seats(&mut self, id: ConferenceId, version: u64, event: &SeatsAvailabilityEvent) {
        use SeatsAvailabilityEvent as E;
        let changes = match event {
            E::AvailableSeatsChanged { seats } => seats,
            E::SeatsReserved { changes, .. } | E::SeatsReservationCancelled { changes, .. } => {
                changes
            }
            E::SeatsReservationCommitted { .. } => return,
        };
        let (seen, rows) = match self.conferences.get_mut(&id) {
            Some(view) => (&mut view.seats_version, Rows::View(&mut view.seat_types)),
            None => {
                let (seen, rows) = self.pending_seats.entry(id).or_default();
                (seen, Rows::Pending(rows))
            }
        };
        // Versions of one stream come in order; anything not newer was applied already.
        if version <= *seen {
            return;
        }
        *seen = version;
        match rows {
            Rows::View(rows) => {
                for change in changes {
                    *rows
                        .entry(change.seat_type)
                        .or_insert_with(|| placeholder(change.seat_type, Some(0)))
                        .available
                        .get_or_insert(0) += change.delta;
                }
            }
            Rows::Pending(rows) => {
                for change in changes {
                    *rows.entry(change.seat_type).or_default() += change.delta;
                }
            }
        }
    }
}

enum Rows<'a> {
    View(&'a mut BTreeMap<SeatTypeId, SeatTypeView>),
    Pending(&'a mut BTreeMap<SeatTypeId, i64>),
}

fn placeholder(id: SeatTypeId, available: Option<i64>) -> SeatTypeView {
    SeatTypeView {
        id,
        name: String::new(),
        description: String::new(),
        price: Decimal::ZERO,
        quantity: 0,
        on_sale: false,
        available,
    }
}
