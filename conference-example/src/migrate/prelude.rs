//! V1's conference management state, and the events it never stored, re-created from it.

use chrono::{DateTime, Duration, Utc};
use cqrs_core::{Aggregate, Commit, DomainEvent, ExpectedVersion, Metadata, NewEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    AccessCode, Conference, ConferenceDetails, ConferenceEvent, ConferenceId, Owner, SeatType,
    SeatTypeId,
};

/// V1's conference management database: CRUD rows, not events (MIGRATION.md §1.3). The
/// migration re-creates the integration events V1 discarded from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// Every conference, as it is now.
    pub conferences: Vec<ManagedConference>,
}

/// A conference row of V1's management database, with its seat types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedConference {
    /// Its id.
    pub id: ConferenceId,
    /// Its slug.
    pub slug: String,
    /// Its current details (their history is lost).
    pub details: ConferenceDetails,
    /// Its owner.
    pub owner: Owner,
    /// The owner's access code.
    pub access_code: AccessCode,
    /// Whether it is published now.
    pub published: bool,
    /// Whether it was ever published.
    pub was_ever_published: bool,
    /// Its seat types, as they are now.
    pub seat_types: Vec<ManagedSeatType>,
}

/// A seat type row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedSeatType {
    /// Its id.
    pub id: SeatTypeId,
    /// Its current name, description, quota and price.
    pub seats: SeatType,
}

/// The events V1 never stored, re-created from `management` as the Journey's migration did
/// (MIGRATION.md §1.4): per conference, `ConferenceCreated` (tagged with its slug) with the current
/// details, a `SeatTypeAdded` per seat type, then, if it was ever published, the
/// `SeatCreated`s and `ConferencePublished` its first publish announces, and
/// `ConferenceUnpublished` if it is not published now.
///
/// They are dated from one day before `history_starts`, a second apart, so that a replay
/// by time applies them before the history that depends on them; their ids are derived
/// from the conference's, so that a resumed migration recognises them.
#[must_use]
pub fn prelude(management: &Management, history_starts: DateTime<Utc>) -> Vec<Commit> {
    let mut at = history_starts - Duration::days(1);
    let mut commits = Vec::new();
    for conference in &management.conferences {
        let mut n = 0u32;
        let mut event = |event_type: &str, payload: cqrs_core::Json| {
            let mut metadata = Metadata::at(at);
            metadata.event_id =
                Uuid::new_v5(&conference.id.0, format!("v1-prelude-{n}").as_bytes());
            metadata.correlation_id = Some(conference.id.0);
            at += Duration::seconds(1);
            n += 1;
            NewEvent::new(event_type, payload).with_metadata(metadata)
        };
        let encode =
            |e: &ConferenceEvent| cqrs_core::encode_message(e).expect("a conference event encodes");
        let mut events = Vec::new();
        let mut push = |e: ConferenceEvent| {
            let (event_type, payload) = encode(&e);
            // Tagged as today's build tags it: the creation by its slug, which `UniqueSlug`
            // reads to keep the slug to it.
            events.push(event(event_type, payload).with_tags(e.tags()));
        };
        push(ConferenceEvent::ConferenceCreated {
            slug: conference.slug.clone(),
            details: conference.details.clone(),
            owner: conference.owner.clone(),
            access_code: conference.access_code.clone(),
        });
        for seat in &conference.seat_types {
            push(ConferenceEvent::SeatTypeAdded {
                seat_type: seat.id,
                seats: seat.seats.clone(),
            });
        }
        if conference.was_ever_published {
            for seat in &conference.seat_types {
                push(ConferenceEvent::SeatCreated {
                    seat_type: seat.id,
                    seats: seat.seats.clone(),
                });
            }
            push(ConferenceEvent::ConferencePublished);
            if !conference.published {
                push(ConferenceEvent::ConferenceUnpublished);
            }
        }
        if let Ok(stream) = Conference::stream_id(&conference.id) {
            commits.push(Commit::new(stream, ExpectedVersion::NoStream, events));
        }
    }
    commits
}
