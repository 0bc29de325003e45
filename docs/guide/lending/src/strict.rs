//! The rule of the guide's §9 kept strictly, by one decision instead of two aggregates and a
//! process: "a member holds at most [`MAX_LOANS`] books, and a book is lent to one member at a
//! time". A loan reads the member's loans and the book's, across every book's stream, and is
//! appended only if none of them changed meanwhile. No compensation, no window in which a
//! member holds a book the book does not know about.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::{Decision, DomainEvent, Emit, EventQuery, QueryItem, StreamId, Tag};
use serde::{Deserialize, Serialize};

use crate::MAX_LOANS;

/// The decision: borrowing and giving back, each on the loans it could break.
pub struct Loans;

/// What a member asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoanCommand {
    /// Borrow `book` until `due`.
    #[serde(rename = "loan.borrow")]
    Borrow {
        /// Who.
        member: String,
        /// What.
        book: String,
        /// Until when.
        due: DateTime<Utc>,
    },
    /// Give `book` back.
    #[serde(rename = "loan.give_back")]
    GiveBack {
        /// Who.
        member: String,
        /// What.
        book: String,
    },
}

impl LoanCommand {
    fn parties(&self) -> (&str, &str) {
        match self {
            Self::Borrow { member, book, .. } | Self::GiveBack { member, book } => (member, book),
        }
    }
}

/// What happened to a loan. Each carries its member and its book as tags, which is what the
/// decision's query selects by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoanEvent {
    /// The book went out.
    #[serde(rename = "loan.opened")]
    Opened {
        /// To whom.
        member: String,
        /// Which book.
        book: String,
        /// Until when.
        due: DateTime<Utc>,
    },
    /// The book came back.
    #[serde(rename = "loan.closed")]
    Closed {
        /// Who had it.
        member: String,
        /// Which book.
        book: String,
    },
}

impl DomainEvent for LoanEvent {
    fn tags(&self) -> Vec<Tag> {
        let (Self::Opened { member, book, .. } | Self::Closed { member, book }) = self;
        // Ids are short; a longer one fails at the command (`Loans::query`) first.
        [Tag::new("member", member), Tag::new("book", book)]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Why a loan is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LoanError {
    /// The member holds as many books as allowed.
    #[error("the member holds {MAX_LOANS} books already")]
    LimitReached,
    /// Someone else has the book.
    #[error("the book is out")]
    BookOut,
    /// The member does not have the book.
    #[error("the member does not have the book")]
    NotBorrowed,
}

/// What a loan command decides on: the member's open loans and the book's holder.
#[derive(Debug)]
pub struct LoanState {
    member: String,
    book: String,
    held: usize,
    holder: Option<String>,
}

/// The stream of one book's loans.
///
/// # Panics
///
/// Never for the ids the service uses: `loan-` and a book id within the stream id limit.
#[must_use]
pub fn loan_stream(book: &str) -> StreamId {
    StreamId::for_aggregate("loan", &book).expect("book ids are short")
}

impl Decision for Loans {
    const NAME: &'static str = "lending.loans";
    type Command = LoanCommand;
    type Event = LoanEvent;
    type Error = LoanError;
    type State = LoanState;

    fn target(command: &LoanCommand) -> StreamId {
        loan_stream(command.parties().1)
    }

    fn query(command: &LoanCommand) -> EventQuery {
        let (member, book) = command.parties();
        let types = ["loan.opened", "loan.closed"];
        // Two items: the member's loans of any book, any member's loans of the book. An
        // invalid tag makes an invalid (empty) query, which the decider refuses.
        let items = [("member", member), ("book", book)]
            .into_iter()
            .filter_map(|(key, id)| Tag::new(key, id).ok())
            .map(|tag| QueryItem::types(types).with_tag(tag));
        EventQuery::items(items)
    }

    fn initial(command: &LoanCommand) -> LoanState {
        let (member, book) = command.parties();
        LoanState {
            member: member.to_owned(),
            book: book.to_owned(),
            held: 0,
            holder: None,
        }
    }

    fn apply(state: &mut LoanState, event: &LoanEvent) {
        let (member, book, opened) = match event {
            LoanEvent::Opened { member, book, .. } => (member, book, true),
            LoanEvent::Closed { member, book } => (member, book, false),
        };
        if *member == state.member {
            if opened {
                state.held += 1;
            } else {
                state.held = state.held.saturating_sub(1);
            }
        }
        if *book == state.book {
            state.holder = opened.then(|| member.clone());
        }
    }

    fn decide(state: &LoanState, command: &LoanCommand) -> Result<Vec<Emit<LoanEvent>>, LoanError> {
        let (member, book) = (state.member.clone(), state.book.clone());
        let event = match command {
            LoanCommand::Borrow { due, .. } => {
                if state.holder.is_some() {
                    return Err(LoanError::BookOut);
                }
                if state.held >= MAX_LOANS {
                    return Err(LoanError::LimitReached);
                }
                LoanEvent::Opened {
                    member,
                    book,
                    due: *due,
                }
            }
            LoanCommand::GiveBack { .. } => {
                if state.holder.as_deref() != Some(state.member.as_str()) {
                    return Err(LoanError::NotBorrowed);
                }
                LoanEvent::Closed { member, book }
            }
        };
        Ok(vec![Emit::to(Self::target(command), event)])
    }
}
