//! Library lending, the service that `docs/guide/README.md` builds step by step: two
//! aggregates (books and members), a process manager that lends a book to a member with a
//! durable due-date timeout and compensates when the book is out, a SQLite read model of the
//! books on the shelf, and an upcaster for books stored by an older build. [`strict`] keeps
//! the same lending rule strictly instead, as one decision across streams.
//!
//! It uses only `cqrs-core` and `cqrs-store-sqlite`; nothing here comes from the conference
//! example.

use cqrs_core::chrono::{DateTime, Duration, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Aggregate, ApplyError, BoxError, DomainEvent, EventContext, EventFilter, Namespace, Outgoing,
    ProcessManager, Reaction, ReadModelSpec, RecordedEvent, StreamId, TimeoutContext, Upcasters,
};
use cqrs_store_sqlite::SqliteProjection;
use cqrs_store_sqlite::rusqlite::Connection;
use serde::{Deserialize, Serialize};

pub mod strict;

/// How long a loan lasts.
pub const LOAN_DAYS: i64 = 14;

/// How many books a member may hold at once.
pub const MAX_LOANS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Books

/// A book on the shelf, or lent to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    /// Its title.
    pub title: String,
    /// Who has it, if anyone.
    pub lent_to: Option<String>,
}

/// What a book can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookCommand {
    /// Put it on the shelf.
    #[serde(rename = "book.add")]
    Add {
        /// Its title.
        title: String,
    },
    /// Lend it to `member` until `due`.
    #[serde(rename = "book.lend")]
    Lend {
        /// The member.
        member: String,
        /// When it is due back.
        due: DateTime<Utc>,
    },
    /// Take it back.
    #[serde(rename = "book.return")]
    Return,
}

/// What happened to a book.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookEvent {
    /// It was put on the shelf (version 2: version 1 called the title `name`).
    #[serde(rename = "book.added")]
    Added {
        /// Its title.
        title: String,
    },
    /// It was lent.
    #[serde(rename = "book.lent")]
    Lent {
        /// To whom.
        member: String,
        /// Until when.
        due: DateTime<Utc>,
    },
    /// A loan was asked for while it was out: a fact the lending process compensates for,
    /// not an error, so that the process hears of it.
    #[serde(rename = "book.lend_refused")]
    LendRefused {
        /// Who asked.
        member: String,
    },
    /// It came back.
    #[serde(rename = "book.returned")]
    Returned {
        /// Who had it.
        member: String,
    },
}

impl DomainEvent for BookEvent {
    fn schema_version(event_type: &str) -> u16 {
        if event_type == "book.added" { 2 } else { 1 }
    }
}

/// Why a book refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BookError {
    /// No such book.
    #[error("no such book")]
    NotFound,
    /// It is on the shelf already.
    #[error("the book exists already")]
    AlreadyAdded,
    /// It is not lent.
    #[error("the book is not lent")]
    NotLent,
}

impl Aggregate for Book {
    const TYPE: &'static str = "book";
    type Id = String;
    type Command = BookCommand;
    type Event = BookEvent;
    type Error = BookError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: BookCommand,
    ) -> Result<Vec<BookEvent>, BookError> {
        match (state, command) {
            (None, BookCommand::Add { title }) => Ok(vec![BookEvent::Added { title }]),
            (Some(_), BookCommand::Add { .. }) => Err(BookError::AlreadyAdded),
            (None, _) => Err(BookError::NotFound),
            (Some(book), BookCommand::Lend { member, due }) => Ok(vec![match book.lent_to {
                None => BookEvent::Lent { member, due },
                Some(_) => BookEvent::LendRefused { member },
            }]),
            (Some(book), BookCommand::Return) => match &book.lent_to {
                Some(member) => Ok(vec![BookEvent::Returned {
                    member: member.clone(),
                }]),
                None => Err(BookError::NotLent),
            },
        }
    }

    fn apply(state: Option<Self>, event: &BookEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, BookEvent::Added { title }) => Ok(Self {
                title: title.clone(),
                lent_to: None,
            }),
            (Some(book), BookEvent::Lent { member, .. }) => Ok(Self {
                lent_to: Some(member.clone()),
                ..book
            }),
            (Some(book), BookEvent::LendRefused { .. }) => Ok(book),
            (Some(book), BookEvent::Returned { .. }) => Ok(Self {
                lent_to: None,
                ..book
            }),
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

/// The upcasters of this service: version 1 of `book.added` called the title `name`.
#[must_use]
pub fn upcasters() -> Upcasters {
    Upcasters::new().map("book.added", 1, |mut payload| {
        if let Some(name) = payload.as_object_mut().and_then(|o| o.remove("name")) {
            payload["title"] = name;
        }
        Ok(payload)
    })
}

// ---------------------------------------------------------------------------------------------
// Members

/// A member and the books they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Their name.
    pub name: String,
    /// The books they hold (or asked for, until the book answers).
    pub holding: Vec<String>,
    /// The books they kept past their due date.
    pub overdue: Vec<String>,
}

/// What a member can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberCommand {
    /// Join the library.
    #[serde(rename = "member.register")]
    Register {
        /// Their name.
        name: String,
    },
    /// Borrow a book (at most [`MAX_LOANS`] at once).
    #[serde(rename = "member.borrow")]
    Borrow {
        /// The book.
        book: String,
    },
    /// No longer hold a book (returned, or never lent).
    #[serde(rename = "member.release")]
    Release {
        /// The book.
        book: String,
    },
    /// Note a book kept past its due date.
    #[serde(rename = "member.mark_overdue")]
    MarkOverdue {
        /// The book.
        book: String,
    },
}

/// What happened to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberEvent {
    /// They joined.
    #[serde(rename = "member.registered")]
    Registered {
        /// Their name.
        name: String,
    },
    /// They asked for a book.
    #[serde(rename = "member.borrowed")]
    Borrowed {
        /// The book.
        book: String,
    },
    /// They no longer hold it.
    #[serde(rename = "member.released")]
    Released {
        /// The book.
        book: String,
    },
    /// They kept it too long.
    #[serde(rename = "member.overdue")]
    Overdue {
        /// The book.
        book: String,
    },
}

impl DomainEvent for MemberEvent {}

/// Why a member refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MemberError {
    /// Not a member.
    #[error("not a member")]
    NotRegistered,
    /// A member already.
    #[error("already a member")]
    AlreadyRegistered,
    /// They hold as many books as they may.
    #[error("a member holds at most {MAX_LOANS} books")]
    LimitReached,
    /// They hold that book already.
    #[error("the member holds that book already")]
    AlreadyHolding,
}

impl Aggregate for Member {
    const TYPE: &'static str = "member";
    type Id = String;
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = MemberError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: MemberCommand,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let Some(member) = state else {
            return match command {
                MemberCommand::Register { name } => Ok(vec![MemberEvent::Registered { name }]),
                _ => Err(MemberError::NotRegistered),
            };
        };
        match command {
            MemberCommand::Register { .. } => Err(MemberError::AlreadyRegistered),
            MemberCommand::Borrow { book } if member.holding.contains(&book) => {
                Err(MemberError::AlreadyHolding)
            }
            MemberCommand::Borrow { .. } if member.holding.len() >= MAX_LOANS => {
                Err(MemberError::LimitReached)
            }
            MemberCommand::Borrow { book } => Ok(vec![MemberEvent::Borrowed { book }]),
            // Idempotent: a release of a book not held changes nothing.
            MemberCommand::Release { book } if !member.holding.contains(&book) => Ok(vec![]),
            MemberCommand::Release { book } => Ok(vec![MemberEvent::Released { book }]),
            MemberCommand::MarkOverdue { book } if !member.holding.contains(&book) => Ok(vec![]),
            MemberCommand::MarkOverdue { book } => Ok(vec![MemberEvent::Overdue { book }]),
        }
    }

    fn apply(state: Option<Self>, event: &MemberEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (None, MemberEvent::Registered { name }) => Ok(Self {
                name: name.clone(),
                holding: Vec::new(),
                overdue: Vec::new(),
            }),
            (Some(mut m), MemberEvent::Borrowed { book }) => {
                m.holding.push(book.clone());
                Ok(m)
            }
            (Some(mut m), MemberEvent::Released { book }) => {
                m.holding.retain(|b| b != book);
                m.overdue.retain(|b| b != book);
                Ok(m)
            }
            (Some(mut m), MemberEvent::Overdue { book }) => {
                m.overdue.push(book.clone());
                Ok(m)
            }
            (state, event) => Err(ApplyError::unexpected(state.is_some(), event)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lending process: one instance per (member, book)

/// What the lending process listens to, from both aggregates, by their type names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LendingInput {
    /// A member asked for a book.
    #[serde(rename = "member.borrowed")]
    Borrowed {
        /// The book.
        book: String,
    },
    /// The book was lent.
    #[serde(rename = "book.lent")]
    Lent {
        /// To whom.
        member: String,
        /// Until when.
        due: DateTime<Utc>,
    },
    /// The book was out.
    #[serde(rename = "book.lend_refused")]
    LendRefused {
        /// Who asked.
        member: String,
    },
    /// The book came back.
    #[serde(rename = "book.returned")]
    Returned {
        /// Who had it.
        member: String,
    },
}

impl DomainEvent for LendingInput {}

/// What the lending process schedules for itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LendingTimeout {
    /// The due date passed.
    #[serde(rename = "lending.due")]
    Due,
}

/// One loan in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lending {
    /// The member.
    pub member: String,
    /// The book.
    pub book: String,
    /// The due-date timeout, once the book is lent.
    pub due: Option<Uuid>,
}

/// A lending input no instance can take.
#[derive(Debug, thiserror::Error)]
#[error("a book event for a loan that was never asked for")]
pub struct UnknownLoan;

/// The instance of a (member, book) pair.
fn loan(member: &str, book: &str) -> String {
    format!("{member}.{book}")
}

impl ProcessManager for Lending {
    const NAME: &'static str = "lending";
    type Event = LendingInput;
    type Timeout = LendingTimeout;
    type Error = UnknownLoan;

    fn route(event: &LendingInput, stream: &StreamId) -> Option<String> {
        let local = stream.local_id()?;
        Some(match event {
            LendingInput::Borrowed { book } => loan(local, book),
            LendingInput::Lent { member, .. }
            | LendingInput::LendRefused { member }
            | LendingInput::Returned { member } => loan(member, local),
        })
    }

    fn react(
        state: Option<&Self>,
        event: &LendingInput,
        cx: &EventContext<'_>,
    ) -> Result<Reaction<Self>, UnknownLoan> {
        let local = cx.recorded.stream.local_id().unwrap_or_default().to_owned();
        Ok(match (state, event) {
            (None, LendingInput::Borrowed { book }) => {
                let lend = BookCommand::Lend {
                    member: local.clone(),
                    due: cx.now + Duration::days(LOAN_DAYS),
                };
                Reaction::new(Self {
                    member: local,
                    book: book.clone(),
                    due: None,
                })
                .send(Outgoing::to::<Book>(book, &lend))
            }
            (Some(l), LendingInput::Lent { due, .. }) => {
                let timeout = Outgoing::timeout::<Self>(cx.instance, &LendingTimeout::Due).at(*due);
                Reaction::new(Self {
                    due: Some(timeout.id()),
                    ..l.clone()
                })
                .send(timeout)
            }
            // The compensation: the member's claim on the book is taken back.
            (Some(l), LendingInput::LendRefused { .. }) => Reaction::unchanged()
                .send(Outgoing::to::<Member>(
                    &l.member,
                    &MemberCommand::Release {
                        book: l.book.clone(),
                    },
                ))
                .complete(),
            (Some(l), LendingInput::Returned { .. }) => {
                let release = Outgoing::to::<Member>(
                    &l.member,
                    &MemberCommand::Release {
                        book: l.book.clone(),
                    },
                );
                let reaction = Reaction::unchanged().send(release).complete();
                match l.due {
                    Some(due) => reaction.cancel(due),
                    None => reaction,
                }
            }
            (None, _) => return Err(UnknownLoan),
            (Some(_), LendingInput::Borrowed { .. }) => Reaction::unchanged(),
        })
    }

    fn on_timeout(
        state: &Self,
        _timeout: LendingTimeout,
        cx: &TimeoutContext<'_>,
    ) -> Result<Reaction<Self>, UnknownLoan> {
        if state.due != Some(cx.command_id) {
            return Ok(Reaction::unchanged());
        }
        Ok(Reaction::unchanged().send(Outgoing::to::<Member>(
            &state.member,
            &MemberCommand::MarkOverdue {
                book: state.book.clone(),
            },
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// The shelf: a read model in the store's SQLite file

/// The books on the shelf (not lent), by title.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shelf;

impl ReadModelSpec for Shelf {
    fn name(&self) -> &str {
        "shelf"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().with_categories([Book::TYPE])
    }
}

impl SqliteProjection for Shelf {
    fn setup(&self, conn: &Connection, tables: &Namespace) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (book TEXT PRIMARY KEY, title TEXT NOT NULL, on_shelf INTEGER NOT NULL)",
            tables.table("books")
        );
        conn.execute_batch(&sql)?;
        Ok(())
    }

    fn apply(
        &self,
        conn: &Connection,
        tables: &Namespace,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        // The projection decodes through the same upcasters as the repositories.
        let book = event.stream.local_id().unwrap_or_default();
        for decoded in upcasters().decode::<BookEvent>(event)? {
            let (sql, title) = match decoded {
                BookEvent::Added { title } => (
                    "INSERT INTO {t} VALUES (?1, ?2, 1) ON CONFLICT (book) DO NOTHING",
                    title,
                ),
                BookEvent::Lent { .. } => (
                    "UPDATE {t} SET on_shelf = 0 WHERE book = ?1 AND ?2 = ?2",
                    String::new(),
                ),
                BookEvent::Returned { .. } => (
                    "UPDATE {t} SET on_shelf = 1 WHERE book = ?1 AND ?2 = ?2",
                    String::new(),
                ),
                BookEvent::LendRefused { .. } => continue,
            };
            conn.execute(&sql.replace("{t}", &tables.table("books")), (book, title))?;
        }
        Ok(())
    }
}
