//! `OwnerSession`: an owner signed in to the portal. The browser holds only a random token;
//! the session lives here, under a hash of it, so that signing out, a changed access code or
//! the end of its lifetime closes it for every server process on the store.

use chrono::{DateTime, Utc};
use cqrs_core::{Aggregate, ApplyError, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::domain::values::ConferenceId;

/// An open (or closed) owner session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerSession {
    /// The conference it manages.
    pub conference: ConferenceId,
    /// The owner's email, as they signed in.
    pub email: String,
    /// A hash of the access code it was opened with: once the conference's code changes,
    /// the session no longer matches it.
    pub code_hash: String,
    /// When it ends by itself.
    pub expires_at: DateTime<Utc>,
    /// Whether the owner signed out.
    pub closed: bool,
}

impl OwnerSession {
    /// Whether the session still opens its conference at `now`, whose access code hashes to
    /// `code_hash`.
    #[must_use]
    pub fn is_open(&self, now: DateTime<Utc>, code_hash: &str) -> bool {
        !self.closed && now < self.expires_at && self.code_hash == code_hash
    }
}

/// What a session can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerSessionCommand {
    /// Open the session (the credentials were checked by whoever sends this).
    #[serde(rename = "portal.open_session")]
    Open {
        /// The conference.
        conference: ConferenceId,
        /// The owner's email.
        email: String,
        /// A hash of the access code.
        code_hash: String,
        /// When it ends.
        expires_at: DateTime<Utc>,
    },
    /// Sign out. Closing a closed or unknown session changes nothing.
    #[serde(rename = "portal.close_session")]
    Close,
}

/// What happened to a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerSessionEvent {
    /// The owner signed in.
    #[serde(rename = "portal.session_opened")]
    Opened {
        /// The conference.
        conference: ConferenceId,
        /// The owner's email.
        email: String,
        /// A hash of the access code.
        code_hash: String,
        /// When it ends.
        expires_at: DateTime<Utc>,
    },
    /// The owner signed out.
    #[serde(rename = "portal.session_closed")]
    Closed,
}

impl DomainEvent for OwnerSessionEvent {}

/// Why a session refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OwnerSessionError {
    /// A session under this token exists already (tokens are random: a client replayed one).
    #[error("the session exists already")]
    AlreadyOpen,
}

impl Aggregate for OwnerSession {
    const TYPE: &'static str = "owner_session";
    type Id = String;
    type Command = OwnerSessionCommand;
    type Event = OwnerSessionEvent;
    type Error = OwnerSessionError;

    fn handle(
        state: Option<&Self>,
        _id: &String,
        command: OwnerSessionCommand,
    ) -> Result<Vec<OwnerSessionEvent>, OwnerSessionError> {
        match (state, command) {
            (
                None,
                OwnerSessionCommand::Open {
                    conference,
                    email,
                    code_hash,
                    expires_at,
                },
            ) => Ok(vec![OwnerSessionEvent::Opened {
                conference,
                email,
                code_hash,
                expires_at,
            }]),
            (Some(_), OwnerSessionCommand::Open { .. }) => Err(OwnerSessionError::AlreadyOpen),
            (Some(session), OwnerSessionCommand::Close) if !session.closed => {
                Ok(vec![OwnerSessionEvent::Closed])
            }
            (_, OwnerSessionCommand::Close) => Ok(vec![]),
        }
    }

    fn apply(state: Option<Self>, event: &OwnerSessionEvent) -> Result<Self, ApplyError> {
        match (state, event) {
            (
                None,
                OwnerSessionEvent::Opened {
                    conference,
                    email,
                    code_hash,
                    expires_at,
                },
            ) => Ok(Self {
                conference: *conference,
                email: email.clone(),
                code_hash: code_hash.clone(),
                expires_at: *expires_at,
                closed: false,
            }),
            (Some(session), OwnerSessionEvent::Closed) => Ok(Self {
                closed: true,
                ..session
            }),
            (Some(_), OwnerSessionEvent::Opened { .. }) => {
                Err(ApplyError::new("the session was opened twice"))
            }
            (None, OwnerSessionEvent::Closed) => {
                Err(ApplyError::new("the session was never opened"))
            }
        }
    }
}
