//! The strict rule of §9 as a decision: given/when/then, then racing members on SQLite.

use std::sync::Arc;

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::testing::DecisionScenario;
use cqrs_core::{CommandError, System};
use cqrs_store_sqlite::SqliteEventStore;
use lending_guide::MAX_LOANS;
use lending_guide::strict::{LoanCommand, LoanError, LoanEvent, Loans, loan_stream};

fn due() -> DateTime<Utc> {
    "2026-03-16T10:00:00Z".parse().unwrap()
}

fn opened(member: &str, book: &str) -> LoanEvent {
    LoanEvent::Opened {
        member: member.into(),
        book: book.into(),
        due: due(),
    }
}

fn borrow(member: &str, book: &str) -> LoanCommand {
    LoanCommand::Borrow {
        member: member.into(),
        book: book.into(),
        due: due(),
    }
}

#[test]
fn a_book_on_the_shelf_is_lent() {
    DecisionScenario::<Loans>::new()
        .given(loan_stream("dune"), [opened("ana", "dune")])
        .given(
            loan_stream("dune"),
            [LoanEvent::Closed {
                member: "ana".into(),
                book: "dune".into(),
            }],
        )
        .when(borrow("ben", "dune"))
        .then_emitted([(loan_stream("dune"), opened("ben", "dune"))]);
}

#[test]
fn a_book_that_is_out_is_refused_and_nothing_needs_compensating() {
    DecisionScenario::<Loans>::new()
        .given(loan_stream("dune"), [opened("ana", "dune")])
        .when(borrow("ben", "dune"))
        .then_error(LoanError::BookOut);
}

#[test]
fn a_member_at_the_limit_is_refused_and_other_members_loans_do_not_count() {
    DecisionScenario::<Loans>::new()
        .given(loan_stream("a"), [opened("ana", "a")])
        .given(loan_stream("b"), [opened("ana", "b")])
        .given(loan_stream("c"), [opened("ana", "c")])
        .given(loan_stream("d"), [opened("ben", "d")])
        .when(borrow("ana", "e"))
        .then_selected(|events| assert_eq!(events.len(), MAX_LOANS, "ben's loan is not read"))
        .then_error(LoanError::LimitReached);
}

/// Eight members ask for one book at once, and one member for eight books at once, on a
/// SQLite file: one loan for the book, three for the member, every other request refused
/// with the rule's reason. Nothing to compensate afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_keep_the_rule_exactly() {
    let dir = tempfile_dir();
    let store = SqliteEventStore::open(dir.join("lending.db"))
        .await
        .unwrap();
    let system = System::builder(Arc::new(store)).build();
    let loans = system.decider::<Loans>();
    for (requests, wins, refusal) in [
        (
            (0..8)
                .map(|m| borrow(&format!("m{m}"), "dune"))
                .collect::<Vec<_>>(),
            1,
            LoanError::BookOut,
        ),
        (
            (0..8).map(|b| borrow("ana", &format!("b{b}"))).collect(),
            MAX_LOANS,
            LoanError::LimitReached,
        ),
    ] {
        let racers: Vec<_> = requests
            .into_iter()
            .map(|request| {
                let loans = loans.clone();
                tokio::spawn(async move { loans.handle(request).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => won += 1,
                Err(CommandError::Rejected(reason)) => assert_eq!(reason, refusal),
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(won, wins, "{refusal}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A directory of its own under the system's temporary directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lending-strict-{}",
        cqrs_core::uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
