//! The guide's service, tested the three ways the guide shows: an aggregate given/when/then,
//! the process manager given/when/then, and the whole service on SQLite with a manual clock.

use std::sync::Arc;

use cqrs_core::chrono::{DateTime, Duration, Utc};
use cqrs_core::testing::{ProcessScenario, Scenario};
use cqrs_core::{
    Aggregate, EventStore, ExpectedVersion, Json, ManualClock, NewEvent, Outgoing, ScheduleStore,
    System,
};
use cqrs_store_sqlite::SqliteEventStore;
use lending_guide::{
    Book, BookCommand, BookEvent, LOAN_DAYS, Lending, LendingInput, Member, MemberCommand,
    MemberError, MemberEvent, Shelf, upcasters,
};

fn due() -> DateTime<Utc> {
    "2026-03-16T10:00:00Z".parse().unwrap()
}

#[test]
fn a_member_holds_at_most_three_books() {
    let borrowed = |book: &str| MemberEvent::Borrowed { book: book.into() };
    Scenario::<Member>::new("ana".into())
        .given([
            MemberEvent::Registered { name: "Ana".into() },
            borrowed("a"),
            borrowed("b"),
            borrowed("c"),
        ])
        .when(MemberCommand::Borrow { book: "d".into() })
        .then_error(MemberError::LimitReached);
}

#[test]
fn a_book_that_is_out_answers_a_loan_with_a_refusal() {
    Scenario::<Book>::new("dune".into())
        .given([
            BookEvent::Added {
                title: "Dune".into(),
            },
            BookEvent::Lent {
                member: "ana".into(),
                due: due(),
            },
        ])
        .when(BookCommand::Lend {
            member: "ben".into(),
            due: due(),
        })
        .then_events([BookEvent::LendRefused {
            member: "ben".into(),
        }]);
}

#[test]
fn a_refused_loan_is_compensated_and_a_return_cancels_the_due_date() {
    let waiting = Lending {
        member: "ben".into(),
        book: "dune".into(),
        due: None,
    };
    ProcessScenario::<Lending>::new()
        .given_state(waiting)
        .when(LendingInput::LendRefused {
            member: "ben".into(),
        })
        .then_sends([Outgoing::to::<Member>(
            &"ben".to_owned(),
            &MemberCommand::Release {
                book: "dune".into(),
            },
        )])
        .then_completed();

    let timeout = cqrs_core::uuid::Uuid::new_v4();
    ProcessScenario::<Lending>::new()
        .given_state(Lending {
            member: "ana".into(),
            book: "dune".into(),
            due: Some(timeout),
        })
        .when(LendingInput::Returned {
            member: "ana".into(),
        })
        .then_cancels([timeout])
        .then_completed();
}

/// The whole service on an in-memory SQLite store and a manual clock.
struct Library {
    store: SqliteEventStore,
    clock: ManualClock,
    system: System,
}

impl Library {
    async fn open() -> Self {
        let store = SqliteEventStore::open_in_memory().await.unwrap();
        let clock = ManualClock::new("2026-03-02T10:00:00Z".parse().unwrap());
        let system = System::builder(Arc::new(store.clone()))
            .clock(Arc::new(clock.clone()))
            .upcasters(upcasters())
            .build();
        system.repository::<Book>();
        system.repository::<Member>();
        system.process_manager::<Lending>();
        system.projection(Arc::new(store.projection(Shelf)));
        Self {
            store,
            clock,
            system,
        }
    }

    async fn book(&self, id: &str, command: BookCommand) {
        self.system
            .repository::<Book>()
            .handle(&id.to_owned(), command)
            .await
            .unwrap();
    }

    async fn member(&self, id: &str, command: MemberCommand) {
        self.system
            .repository::<Member>()
            .handle(&id.to_owned(), command)
            .await
            .unwrap();
    }

    async fn holding(&self, id: &str) -> (Vec<String>, Vec<String>) {
        let member = self
            .system
            .repository::<Member>()
            .load(&id.to_owned())
            .await
            .unwrap()
            .state
            .unwrap();
        (member.holding, member.overdue)
    }

    async fn on_shelf(&self, book: &str) -> bool {
        let book = book.to_owned();
        self.store
            .read_model("shelf", move |conn, tables| {
                conn.query_row(
                    &format!(
                        "SELECT on_shelf FROM {} WHERE book = ?1",
                        tables.table("books")
                    ),
                    [book],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_is_lent_refused_to_another_flagged_when_overdue_and_returned() {
    let library = Library::open().await;
    library
        .book(
            "dune",
            BookCommand::Add {
                title: "Dune".into(),
            },
        )
        .await;
    library
        .member("ana", MemberCommand::Register { name: "Ana".into() })
        .await;
    library
        .member("ben", MemberCommand::Register { name: "Ben".into() })
        .await;

    library
        .member(
            "ana",
            MemberCommand::Borrow {
                book: "dune".into(),
            },
        )
        .await;
    library.system.settle().await.unwrap();
    assert!(!library.on_shelf("dune").await, "lent to Ana");
    assert_eq!(library.holding("ana").await.0, ["dune"]);

    // Ben asks too: the member side accepts, the book refuses, the process compensates.
    library
        .member(
            "ben",
            MemberCommand::Borrow {
                book: "dune".into(),
            },
        )
        .await;
    library.system.settle().await.unwrap();
    assert!(
        library.holding("ben").await.0.is_empty(),
        "Ben's claim was taken back"
    );

    library.clock.advance(Duration::days(LOAN_DAYS + 1));
    library.system.settle().await.unwrap();
    assert_eq!(
        library.holding("ana").await.1,
        ["dune"],
        "overdue, on the manual clock"
    );

    library.book("dune", BookCommand::Return).await;
    library.system.settle().await.unwrap();
    assert_eq!(library.holding("ana").await, (vec![], vec![]));
    assert!(library.on_shelf("dune").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_in_time_cancels_the_due_date() {
    let library = Library::open().await;
    library
        .book(
            "dune",
            BookCommand::Add {
                title: "Dune".into(),
            },
        )
        .await;
    library
        .member("ana", MemberCommand::Register { name: "Ana".into() })
        .await;
    library
        .member(
            "ana",
            MemberCommand::Borrow {
                book: "dune".into(),
            },
        )
        .await;
    library.system.settle().await.unwrap();
    assert!(
        library.store.next_due().await.unwrap().is_some(),
        "the due date is scheduled"
    );

    library.book("dune", BookCommand::Return).await;
    library.system.settle().await.unwrap();
    assert_eq!(
        library.store.next_due().await.unwrap(),
        None,
        "and cancelled by the return"
    );
    library.clock.advance(Duration::days(LOAN_DAYS + 1));
    library.system.settle().await.unwrap();
    assert_eq!(library.holding("ana").await, (vec![], vec![]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_stored_by_the_first_build_still_load() {
    let library = Library::open().await;
    // The first build wrote `book.added` version 1, with the title in `name`.
    library
        .store
        .append(
            &Book::stream_id(&"ender".to_owned()).unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "book.added",
                Json::parse(r#"{"name": "Ender's Game"}"#).unwrap(),
            )],
        )
        .await
        .unwrap();
    let book = library
        .system
        .repository::<Book>()
        .load(&"ender".to_owned())
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(book.title, "Ender's Game");
    library.system.settle().await.unwrap();
    assert!(
        library.on_shelf("ender").await,
        "the read model upcasts too"
    );
}
