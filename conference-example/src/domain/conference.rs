//! Conference management, the owner's side: a conference, its seat types, publishing; and
//! the claim that keeps each conference's slug unique.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_core::{
    Aggregate, ApplyError, Decision, DomainEvent, Emit, EventQuery, ExpectedVersion, QueryItem,
    StreamId, Tag,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::values::{AccessCode, ConferenceId, SeatTypeId, is_email};

/// What the public sees of a conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConferenceDetails {
    /// Its name.
    pub name: String,
    /// What it is about.
    pub description: String,
    /// Where it is.
    pub location: String,
    /// A one-line pitch (optional: empty).
    pub tagline: String,
    /// A Twitter search for it (optional: empty).
    pub twitter_search: String,
    /// When it starts.
    pub start_date: DateTime<Utc>,
    /// When it ends.
    pub end_date: DateTime<Utc>,
}

/// Checks a text field: at most `max` characters, and no control character but, in a text
/// of several lines, line breaks and tabs.
fn text(field: &str, value: &str, max: usize, lines: bool) -> Result<(), ConferenceError> {
    if value.chars().count() > max {
        return Err(ConferenceError::Invalid(format!(
            "the {field} has at most {max} characters"
        )));
    }
    let allowed = |c: char| lines && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(ConferenceError::Invalid(format!(
            "the {field} holds a control character"
        )));
    }
    Ok(())
}

impl ConferenceDetails {
    fn validate(&self) -> Result<(), ConferenceError> {
        let required = [
            ("name", &self.name),
            ("description", &self.description),
            ("location", &self.location),
        ];
        if let Some((field, _)) = required.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(ConferenceError::Invalid(format!("the {field} is required")));
        }
        text("name", &self.name, 100, false)?;
        text("description", &self.description, 4_000, true)?;
        text("location", &self.location, 200, false)?;
        text("tagline", &self.tagline, 200, false)?;
        text("twitter search", &self.twitter_search, 100, false)?;
        if self.end_date < self.start_date {
            return Err(ConferenceError::Invalid(
                "the conference ends before it starts".into(),
            ));
        }
        Ok(())
    }
}

/// Who runs a conference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Name.
    pub name: String,
    /// Email: with the access code, it opens the conference's admin pages.
    pub email: String,
}

/// A kind of seat: the whole conference, a workshop, a party…
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatType {
    /// Its name (2 to 70 characters).
    pub name: String,
    /// What it gives (at most 250 characters).
    pub description: String,
    /// How many there are (0 to 100,000).
    pub quantity: u32,
    /// The price of one (0 to 50,000).
    pub price: Decimal,
}

impl SeatType {
    fn validate(&self) -> Result<(), ConferenceError> {
        let name = self.name.chars().count();
        if !(2..=70).contains(&name) {
            return Err(ConferenceError::Invalid(
                "a seat type's name has 2 to 70 characters".into(),
            ));
        }
        if self.description.trim().is_empty() || self.description.chars().count() > 250 {
            return Err(ConferenceError::Invalid(
                "a seat type's description has 1 to 250 characters".into(),
            ));
        }
        text("seat type's name", &self.name, 70, false)?;
        text("seat type's description", &self.description, 250, false)?;
        if self.quantity > 100_000 {
            return Err(ConferenceError::Invalid(
                "at most 100,000 seats of a type".into(),
            ));
        }
        if self.price < Decimal::ZERO || self.price > Decimal::from(50_000) {
            return Err(ConferenceError::Invalid(
                "a seat's price is 0 to 50,000".into(),
            ));
        }
        if self.price.normalize().scale() > 2 {
            return Err(ConferenceError::Invalid(
                "a seat's price has at most two decimals".into(),
            ));
        }
        Ok(())
    }
}

/// A conference, as its owner manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conference {
    /// Its URL segment, unique.
    pub slug: String,
    /// What the public sees.
    pub details: ConferenceDetails,
    /// Who runs it.
    pub owner: Owner,
    /// With the owner's email, opens the admin pages.
    pub access_code: AccessCode,
    /// Whether registrants can see it now.
    pub published: bool,
    /// Whether it was ever published: from then on its seat types are on sale, and none can
    /// be deleted.
    pub was_ever_published: bool,
    /// Its seat types.
    pub seat_types: BTreeMap<SeatTypeId, SeatType>,
}

/// What a conference can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConferenceCommand {
    /// Create the conference, unpublished. Through [`UniqueSlug`], which keeps its slug to it.
    #[serde(rename = "conference.create")]
    Create {
        /// Its slug.
        slug: String,
        /// What the public sees.
        details: ConferenceDetails,
        /// Who runs it.
        owner: Owner,
        /// A fresh access code.
        access_code: AccessCode,
    },
    /// Change what the public sees.
    #[serde(rename = "conference.update")]
    Update {
        /// The new details.
        details: ConferenceDetails,
    },
    /// Show the conference to registrants (the first time, put its seat types on sale).
    #[serde(rename = "conference.publish")]
    Publish,
    /// Hide the conference from registrants.
    #[serde(rename = "conference.unpublish")]
    Unpublish,
    /// Add a seat type.
    #[serde(rename = "conference.add_seat_type")]
    AddSeatType {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is.
        seats: SeatType,
    },
    /// Change a seat type.
    #[serde(rename = "conference.update_seat_type")]
    UpdateSeatType {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is now.
        seats: SeatType,
    },
    /// Delete a seat type (only while the conference was never published).
    #[serde(rename = "conference.delete_seat_type")]
    DeleteSeatType {
        /// Its id.
        seat_type: SeatTypeId,
    },
    /// Replace the access code (every session opened with the old one ends).
    #[serde(rename = "conference.change_access_code")]
    ChangeAccessCode {
        /// A fresh access code.
        access_code: AccessCode,
    },
}

/// What happened to a conference. `SeatCreated` and `SeatUpdated` are the events the
/// registration side acts on: they flow once the conference was ever published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConferenceEvent {
    /// The conference was created.
    #[serde(rename = "conference.created")]
    ConferenceCreated {
        /// Its slug.
        slug: String,
        /// What the public sees.
        details: ConferenceDetails,
        /// Who runs it.
        owner: Owner,
        /// Its access code.
        access_code: AccessCode,
    },
    /// What the public sees changed.
    #[serde(rename = "conference.updated")]
    ConferenceUpdated {
        /// The new details.
        details: ConferenceDetails,
    },
    /// Registrants can see the conference.
    #[serde(rename = "conference.published")]
    ConferencePublished,
    /// Registrants cannot see the conference.
    #[serde(rename = "conference.unpublished")]
    ConferenceUnpublished,
    /// The owner added a seat type.
    #[serde(rename = "conference.seat_type_added")]
    SeatTypeAdded {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is.
        seats: SeatType,
    },
    /// The owner changed a seat type.
    #[serde(rename = "conference.seat_type_updated")]
    SeatTypeUpdated {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is now.
        seats: SeatType,
    },
    /// The owner deleted a seat type. (Fixed quirk: the CQRS Journey deleted it silently.)
    #[serde(rename = "conference.seat_type_deleted")]
    SeatTypeDeleted {
        /// Its id.
        seat_type: SeatTypeId,
    },
    /// A seat type is on sale.
    #[serde(rename = "conference.seat_created")]
    SeatCreated {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is.
        seats: SeatType,
    },
    /// A seat type on sale changed (its quantity is the new quota, not a difference).
    #[serde(rename = "conference.seat_updated")]
    SeatUpdated {
        /// Its id.
        seat_type: SeatTypeId,
        /// What it is now.
        seats: SeatType,
    },
    /// The owner replaced the access code.
    #[serde(rename = "conference.access_code_changed")]
    AccessCodeChanged {
        /// The new code.
        access_code: AccessCode,
    },
}

impl DomainEvent for ConferenceEvent {
    /// A creation carries its slug (`slug:devconf`), which [`UniqueSlug`] reads by.
    fn tags(&self) -> Vec<Tag> {
        match self {
            Self::ConferenceCreated { slug, .. } => slug_tag(slug).into_iter().collect(),
            _ => Vec::new(),
        }
    }
}

/// The tag of a slug, if it makes one (a valid slug always does).
fn slug_tag(slug: &str) -> Option<Tag> {
    Tag::new("slug", slug).ok()
}

/// Why a conference refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConferenceError {
    /// No such conference.
    #[error("no such conference")]
    NotFound,
    /// The conference exists already.
    #[error("the conference exists already")]
    AlreadyExists,
    /// A field is missing or out of range.
    #[error("{0}")]
    Invalid(String),
    /// No such seat type.
    #[error("the conference has no seat type {0}")]
    UnknownSeatType(SeatTypeId),
    /// The seat type exists already.
    #[error("seat type {0} exists already")]
    SeatTypeExists(SeatTypeId),
    /// Seat types of a conference that was ever published are on sale and stay.
    #[error("a seat type of a conference that was published cannot be deleted")]
    SeatTypeOnSale,
}

/// Top-level paths of the web app that a conference's slug would shadow.
pub const RESERVED_SLUGS: [&str; 4] = ["admin", "api", "static", "assets"];

/// Whether `slug` can name a conference in a URL: ASCII letters, digits and `_`, and not one of
/// the [`RESERVED_SLUGS`] (in any case).
///
/// ```
/// use conference_example::domain::is_valid_slug;
/// assert!(is_valid_slug("devconf_2026"));
/// assert!(!is_valid_slug("dev conf"));
/// // ASCII only: a look-alike (a Cyrillic "е" in "dеvconf") is no slug.
/// assert!(!is_valid_slug("d\u{435}vconf"));
/// assert!(!is_valid_slug("Admin"));
/// ```
#[must_use]
pub fn is_valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 64
        && slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED_SLUGS.iter().any(|r| r.eq_ignore_ascii_case(slug))
}

impl Aggregate for Conference {
    const TYPE: &'static str = "conference";
    type Id = ConferenceId;
    type Command = ConferenceCommand;
    type Event = ConferenceEvent;
    type Error = ConferenceError;

    fn handle(
        state: Option<&Self>,
        _id: &ConferenceId,
        command: ConferenceCommand,
    ) -> Result<Vec<ConferenceEvent>, ConferenceError> {
        use ConferenceCommand as C;
        use ConferenceEvent as E;
        let conference = match (state, command) {
            (
                None,
                C::Create {
                    slug,
                    details,
                    owner,
                    access_code,
                },
            ) => {
                if !is_valid_slug(&slug) {
                    return Err(ConferenceError::Invalid(format!(
                        "{slug:?} is not a slug: use ASCII letters, digits and _ (and not admin, api, static or assets)"
                    )));
                }
                details.validate()?;
                if owner.name.trim().is_empty() {
                    return Err(ConferenceError::Invalid(
                        "the owner's name is required".into(),
                    ));
                }
                text("owner's name", &owner.name, 100, false)?;
                if !is_email(&owner.email) || owner.email.len() > 254 {
                    return Err(ConferenceError::Invalid(format!(
                        "{:?} is not an email address",
                        owner.email
                    )));
                }
                return Ok(vec![E::ConferenceCreated {
                    slug,
                    details,
                    owner,
                    access_code,
                }]);
            }
            (Some(_), C::Create { .. }) => return Err(ConferenceError::AlreadyExists),
            (None, _) => return Err(ConferenceError::NotFound),
            (Some(conference), command) => (conference, command),
        };
        match conference {
            (_, C::Create { .. }) => Err(ConferenceError::AlreadyExists),
            (_, C::Update { details }) => {
                details.validate()?;
                Ok(vec![E::ConferenceUpdated { details }])
            }
            (c, C::Publish) if c.published => Ok(vec![]),
            (c, C::Publish) => {
                let mut events: Vec<ConferenceEvent> = if c.was_ever_published {
                    Vec::new()
                } else {
                    c.seat_types
                        .iter()
                        .map(|(id, seats)| E::SeatCreated {
                            seat_type: *id,
                            seats: seats.clone(),
                        })
                        .collect()
                };
                events.push(E::ConferencePublished);
                Ok(events)
            }
            (c, C::Unpublish) => Ok(if c.published {
                vec![E::ConferenceUnpublished]
            } else {
                vec![]
            }),
            (c, C::AddSeatType { seat_type, seats }) => {
                if c.seat_types.contains_key(&seat_type) {
                    return Err(ConferenceError::SeatTypeExists(seat_type));
                }
                seats.validate()?;
                let mut events = vec![E::SeatTypeAdded {
                    seat_type,
                    seats: seats.clone(),
                }];
                if c.was_ever_published {
                    events.push(E::SeatCreated { seat_type, seats });
                }
                Ok(events)
            }
            (c, C::UpdateSeatType { seat_type, seats }) => {
                if !c.seat_types.contains_key(&seat_type) {
                    return Err(ConferenceError::UnknownSeatType(seat_type));
                }
                seats.validate()?;
                let mut events = vec![E::SeatTypeUpdated {
                    seat_type,
                    seats: seats.clone(),
                }];
                if c.was_ever_published {
                    events.push(E::SeatUpdated { seat_type, seats });
                }
                Ok(events)
            }
            (c, C::DeleteSeatType { seat_type }) => {
                // Which seat type first: deleting one that does not exist is a 404 whether or
                // not the conference was published.
                if !c.seat_types.contains_key(&seat_type) {
                    return Err(ConferenceError::UnknownSeatType(seat_type));
                }
                if c.was_ever_published {
                    return Err(ConferenceError::SeatTypeOnSale);
                }
                Ok(vec![E::SeatTypeDeleted { seat_type }])
            }
            (_, C::ChangeAccessCode { access_code }) => {
                Ok(vec![E::AccessCodeChanged { access_code }])
            }
        }
    }

    fn apply(state: Option<Self>, event: &ConferenceEvent) -> Result<Self, ApplyError> {
        use ConferenceEvent as E;
        let mut conference = match (state, event) {
            (
                None,
                E::ConferenceCreated {
                    slug,
                    details,
                    owner,
                    access_code,
                },
            ) => {
                return Ok(Self {
                    slug: slug.clone(),
                    details: details.clone(),
                    owner: owner.clone(),
                    access_code: access_code.clone(),
                    published: false,
                    was_ever_published: false,
                    seat_types: BTreeMap::new(),
                });
            }
            (Some(_), E::ConferenceCreated { .. }) => {
                return Err(ApplyError::new("the conference was created twice"));
            }
            (None, _) => return Err(ApplyError::new("the conference was never created")),
            (Some(conference), _) => conference,
        };
        match event {
            E::ConferenceCreated { .. } | E::SeatCreated { .. } | E::SeatUpdated { .. } => {}
            E::ConferenceUpdated { details } => conference.details = details.clone(),
            E::ConferencePublished => {
                conference.published = true;
                conference.was_ever_published = true;
            }
            E::ConferenceUnpublished => conference.published = false,
            E::SeatTypeAdded { seat_type, seats } | E::SeatTypeUpdated { seat_type, seats } => {
                conference.seat_types.insert(*seat_type, seats.clone());
            }
            E::SeatTypeDeleted { seat_type } => {
                conference.seat_types.remove(seat_type);
            }
            E::AccessCodeChanged { access_code } => conference.access_code = access_code.clone(),
        }
        Ok(conference)
    }
}

/// One conference per slug, however many owners try at once: creating a conference reads the
/// creations tagged with its slug, and commits only if none came since. A decision across
/// streams, where an older build kept a claim stream per slug.
#[derive(Debug)]
pub struct UniqueSlug;

/// Creating a conference under its slug.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConferenceCreation {
    /// Create `conference` with `create` (a [`ConferenceCommand::Create`]) if its slug is free.
    #[serde(rename = "conference.create_under_slug")]
    Create {
        /// The new conference.
        conference: ConferenceId,
        /// Its creation.
        create: ConferenceCommand,
    },
}

impl ConferenceCreation {
    fn slug(&self) -> &str {
        let Self::Create { create, .. } = self;
        match create {
            ConferenceCommand::Create { slug, .. } => slug,
            _ => "",
        }
    }
}

/// Why a conference cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConferenceSlugError {
    /// Another conference holds it.
    #[error("the slug is taken")]
    Taken,
    /// The conference itself is refused (a field is wrong).
    #[error(transparent)]
    Refused(ConferenceError),
}

impl Decision for UniqueSlug {
    const NAME: &'static str = "conference.unique_slug";
    type Command = ConferenceCreation;
    type Event = ConferenceEvent;
    type Error = ConferenceSlugError;
    /// Whether a conference holds the slug.
    type State = bool;

    fn target(ConferenceCreation::Create { conference, .. }: &ConferenceCreation) -> StreamId {
        Conference::stream_id(conference).expect("a conference id makes a stream id")
    }

    fn query(command: &ConferenceCreation) -> EventQuery {
        // A slug that makes no tag is no slug either: `decide` refuses it. It reads `slug:-`,
        // which no slug makes, rather than have no query.
        let tag =
            slug_tag(command.slug()).unwrap_or_else(|| Tag::new("slug", "-").expect("a valid tag"));
        EventQuery::items([QueryItem::types(["conference.created"]).with_tag(tag)])
    }

    fn initial(_: &ConferenceCreation) -> bool {
        false
    }

    fn apply(taken: &mut bool, _: &ConferenceEvent) {
        *taken = true;
    }

    fn decide(
        taken: &bool,
        command: &ConferenceCreation,
    ) -> Result<Vec<Emit<ConferenceEvent>>, ConferenceSlugError> {
        let ConferenceCreation::Create { conference, create } = command;
        // The conference's own rules first: an invalid slug is invalid, not taken.
        let events = Conference::handle(None, conference, create.clone())
            .map_err(ConferenceSlugError::Refused)?;
        if *taken {
            return Err(ConferenceSlugError::Taken);
        }
        let stream = Self::target(command);
        Ok(events
            .into_iter()
            .map(|event| Emit::to(stream.clone(), event).expecting(ExpectedVersion::NoStream))
            .collect())
    }
}
