use chrono::{DateTime, Duration};
use conference_example::domain::{
    AccessCode, Conference, ConferenceCommand as C, ConferenceCreation, ConferenceDetails,
    ConferenceError, ConferenceEvent as E, ConferenceId, ConferenceSlugError, Owner, SeatType,
    SeatTypeId, UniqueSlug,
};
use cqrs_core::testing::{DecisionScenario, Scenario};
use cqrs_core::{Aggregate, DomainEvent, Tag};
use rust_decimal::Decimal;

fn details() -> ConferenceDetails {
    let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    ConferenceDetails {
        name: "CQRS summit".into(),
        description: "Events, all the way down".into(),
        location: "Lisbon".into(),
        tagline: String::new(),
        twitter_search: String::new(),
        start_date: start,
        end_date: start + Duration::days(2),
    }
}

fn owner() -> Owner {
    Owner {
        name: "Ana".into(),
        email: "ana@example.com".into(),
    }
}

fn code() -> AccessCode {
    "XYZ789".parse().unwrap()
}

fn seats(name: &str, quantity: u32) -> SeatType {
    SeatType {
        name: name.into(),
        description: format!("{name} access"),
        quantity,
        price: Decimal::new(100, 0),
    }
}

fn created() -> E {
    E::ConferenceCreated {
        slug: "summit".into(),
        details: details(),
        owner: owner(),
        access_code: code(),
    }
}

#[test]
fn a_conference_is_created_unpublished_with_valid_details() {
    Scenario::<Conference>::new(ConferenceId::new())
        .when(C::Create {
            slug: "summit".into(),
            details: details(),
            owner: owner(),
            access_code: code(),
        })
        .then_events([created()])
        .then_state(|c| assert!(!c.published && !c.was_ever_published));
    Scenario::<Conference>::new(ConferenceId::new())
        .when(C::Create {
            slug: "no spaces".into(),
            details: details(),
            owner: owner(),
            access_code: code(),
        })
        .then_error_matches(|e| matches!(e, ConferenceError::Invalid(_)));
    Scenario::<Conference>::new(ConferenceId::new())
        .when(C::Create {
            slug: "summit".into(),
            details: ConferenceDetails {
                name: " ".into(),
                ..details()
            },
            owner: owner(),
            access_code: code(),
        })
        .then_error(ConferenceError::Invalid("the name is required".into()));
}

#[test]
fn seat_types_go_on_sale_at_the_first_publish_only() {
    let (full, workshop) = (SeatTypeId::new(), SeatTypeId::new());
    let drafted = || {
        Scenario::<Conference>::new(ConferenceId::new()).given([
            created(),
            E::SeatTypeAdded {
                seat_type: full,
                seats: seats("Full", 100),
            },
        ])
    };
    drafted()
        .when(C::Publish)
        .then_events([
            E::SeatCreated {
                seat_type: full,
                seats: seats("Full", 100),
            },
            E::ConferencePublished,
        ])
        .then_state(|c| assert!(c.published && c.was_ever_published));
    // Published before: republishing announces nothing again; new seat types go on sale at once.
    let published_once = || {
        drafted().given([
            E::SeatCreated {
                seat_type: full,
                seats: seats("Full", 100),
            },
            E::ConferencePublished,
            E::ConferenceUnpublished,
        ])
    };
    published_once()
        .when(C::Publish)
        .then_events([E::ConferencePublished]);
    published_once()
        .when(C::AddSeatType {
            seat_type: workshop,
            seats: seats("Workshop", 20),
        })
        .then_events([
            E::SeatTypeAdded {
                seat_type: workshop,
                seats: seats("Workshop", 20),
            },
            E::SeatCreated {
                seat_type: workshop,
                seats: seats("Workshop", 20),
            },
        ]);
    published_once()
        .when(C::UpdateSeatType {
            seat_type: full,
            seats: seats("Full", 120),
        })
        .then_events([
            E::SeatTypeUpdated {
                seat_type: full,
                seats: seats("Full", 120),
            },
            E::SeatUpdated {
                seat_type: full,
                seats: seats("Full", 120),
            },
        ]);
    // Before the first publish, changes stay with the owner.
    drafted()
        .when(C::UpdateSeatType {
            seat_type: full,
            seats: seats("Full", 120),
        })
        .then_events([E::SeatTypeUpdated {
            seat_type: full,
            seats: seats("Full", 120),
        }]);
}

#[test]
fn seat_types_are_deleted_with_an_event_and_only_before_the_first_publish() {
    let full = SeatTypeId::new();
    let drafted = || {
        Scenario::<Conference>::new(ConferenceId::new()).given([
            created(),
            E::SeatTypeAdded {
                seat_type: full,
                seats: seats("Full", 100),
            },
        ])
    };
    drafted()
        .when(C::DeleteSeatType { seat_type: full })
        .then_events([E::SeatTypeDeleted { seat_type: full }])
        .then_state(|c| assert!(c.seat_types.is_empty()));
    drafted()
        .given([E::ConferencePublished, E::ConferenceUnpublished])
        .when(C::DeleteSeatType { seat_type: full })
        .then_error(ConferenceError::SeatTypeOnSale);
}

#[test]
fn seat_types_are_validated() {
    let base = || Scenario::<Conference>::new(ConferenceId::new()).given([created()]);
    for bad in [
        SeatType {
            name: "X".into(),
            ..seats("Full", 1)
        },
        SeatType {
            description: String::new(),
            ..seats("Full", 1)
        },
        SeatType {
            quantity: 100_001,
            ..seats("Full", 1)
        },
        SeatType {
            price: Decimal::new(-1, 0),
            ..seats("Full", 1)
        },
        SeatType {
            price: Decimal::new(50_001, 0),
            ..seats("Full", 1)
        },
    ] {
        base()
            .when(C::AddSeatType {
                seat_type: SeatTypeId::new(),
                seats: bad,
            })
            .then_error_matches(|e| matches!(e, ConferenceError::Invalid(_)));
    }
}

#[test]
fn publishing_and_unpublishing_twice_changes_nothing() {
    Scenario::<Conference>::new(ConferenceId::new())
        .given([created(), E::ConferencePublished])
        .when(C::Publish)
        .then_no_events();
    Scenario::<Conference>::new(ConferenceId::new())
        .given([created()])
        .when(C::Unpublish)
        .then_no_events();
}

#[test]
fn a_slug_names_one_conference() {
    let (first, second) = (ConferenceId::new(), ConferenceId::new());
    let stream = |id: &ConferenceId| Conference::stream_id(id).unwrap();
    let create = |conference, slug: &str| ConferenceCreation::Create {
        conference,
        create: C::Create {
            slug: slug.into(),
            details: details(),
            owner: owner(),
            access_code: code(),
        },
    };
    assert_eq!(created().tags(), [Tag::new("slug", "summit").unwrap()]);
    DecisionScenario::<UniqueSlug>::new()
        .when(create(first, "summit"))
        .then_emitted([(stream(&first), created())]);
    DecisionScenario::<UniqueSlug>::new()
        .given(stream(&first), [created()])
        .when(create(second, "summit"))
        .then_error(ConferenceSlugError::Taken);
    // Another slug's creation and later events carry no `slug:summit`: not read.
    DecisionScenario::<UniqueSlug>::new()
        .given(
            stream(&first),
            [
                E::ConferenceCreated {
                    slug: "other".into(),
                    details: details(),
                    owner: owner(),
                    access_code: code(),
                },
                E::ConferencePublished,
            ],
        )
        .when(create(second, "summit"))
        .then_selected(|read| assert!(read.is_empty()))
        .then_events([created()]);
    // The conference's own rules still apply, and the slug stays free.
    DecisionScenario::<UniqueSlug>::new()
        .when(create(second, "admin"))
        .then_error_matches(|e| {
            matches!(e, ConferenceSlugError::Refused(ConferenceError::Invalid(_)))
        });
}
