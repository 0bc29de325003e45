use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::event::{Headers, InvalidStreamId, Json, StreamId};
use crate::message::{MessageError, encode_message};
use crate::version::Version;

/// The identity and lineage a caller attaches to a command.
///
/// The command id is what makes handling idempotent: a command id that was already handled
/// is not executed again; the recorded result comes back instead. The correlation id ties
/// every message of one business flow together (it defaults to the command id, starting a
/// flow); the causation id names the message that caused this command.
///
/// # Examples
///
/// ```
/// use cqrs_core::CommandContext;
/// use uuid::Uuid;
///
/// let id = Uuid::new_v4();
/// let cx = CommandContext::new().with_command_id(id).with_header("user", "ana");
/// assert_eq!(cx.command_id, id);
/// assert_eq!(cx.correlation_id(), id, "a new flow is correlated by its first command");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandContext {
    /// The command's id.
    pub command_id: Uuid,
    /// The flow this command belongs to, if it continues one.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command, if any.
    pub causation_id: Option<Uuid>,
    /// Free-form headers, copied onto the command's events.
    #[serde(default)]
    pub headers: Headers,
}

impl CommandContext {
    /// A context with a fresh (time-ordered) command id.
    #[must_use]
    pub fn new() -> Self {
        Self {
            command_id: Uuid::now_v7(),
            correlation_id: None,
            causation_id: None,
            headers: Headers::new(),
        }
    }

    /// Sets the command id (for example one sent by a client that may retry).
    #[must_use]
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        self.command_id = id;
        self
    }

    /// Continues the flow `id`.
    #[must_use]
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Records `id` as the cause of this command.
    #[must_use]
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The correlation id, or the command id when this command starts a flow.
    #[must_use]
    pub fn correlation_id(&self) -> Uuid {
        self.correlation_id.unwrap_or(self.command_id)
    }
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}

/// A serialized command addressed to an aggregate (or a process manager): what outboxes,
/// schedulers and routers move around.
///
/// # Examples
///
/// ```
/// use cqrs_core::{CommandContext, CommandEnvelope, StreamId};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// enum SeatsCommand {
///     #[serde(rename = "seats.cancel_reservation")]
///     CancelReservation { reservation: String },
/// }
///
/// let envelope = CommandEnvelope::new(
///     StreamId::new("seats-c1")?,
///     &SeatsCommand::CancelReservation { reservation: "r1".into() },
///     CommandContext::new(),
/// )?;
/// assert_eq!(envelope.command_type, "seats.cancel_reservation");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    /// The command id (receivers deduplicate on it).
    pub id: Uuid,
    /// The stream of the aggregate or process instance the command is for.
    pub target: StreamId,
    /// The command's stable type name.
    pub command_type: String,
    /// The command's data.
    pub payload: Json,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The message that caused it.
    pub causation_id: Option<Uuid>,
    /// Free-form headers.
    #[serde(default)]
    pub headers: Headers,
}

impl CommandEnvelope {
    /// Serializes `command` for `target`, with the ids of `context`.
    ///
    /// # Errors
    ///
    /// [`MessageError`] if `command` is not an enum variant or fails to serialize.
    pub fn new<C: Serialize>(
        target: StreamId,
        command: &C,
        context: CommandContext,
    ) -> Result<Self, MessageError> {
        let (command_type, payload) = encode_message(command)?;
        Ok(Self {
            id: context.command_id,
            target,
            command_type: command_type.to_owned(),
            payload,
            correlation_id: context.correlation_id,
            causation_id: context.causation_id,
            headers: context.headers,
        })
    }

    /// Serializes `command` for the aggregate `A` with id `id`.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] if the id makes an invalid stream id or the command fails to
    /// serialize.
    pub fn for_aggregate<A: Aggregate>(
        id: &A::Id,
        command: &A::Command,
        context: CommandContext,
    ) -> Result<Self, EnvelopeError> {
        Ok(Self::new(A::stream_id(id)?, command, context)?)
    }

    /// The ids of this envelope as a [`CommandContext`].
    #[must_use]
    pub fn context(&self) -> CommandContext {
        CommandContext {
            command_id: self.id,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            headers: self.headers.clone(),
        }
    }
}

/// Why a command could not be put in an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The target's stream id is invalid.
    #[error("invalid target")]
    Target(#[from] InvalidStreamId),
    /// The command did not serialize.
    #[error("cannot serialize the command")]
    Message(#[from] MessageError),
}

/// A command as the message log keeps it: what was asked, by whom, and what came of it.
///
/// A store writes it in the same transaction as the command's events, so that a command id is
/// recorded exactly when its effect is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The command id (unique in a store).
    pub command_id: Uuid,
    /// The command's stable type name.
    pub command_type: String,
    /// The stream the command was for.
    pub target: StreamId,
    /// The command's data.
    pub payload: Json,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The message that caused it.
    pub causation_id: Option<Uuid>,
    /// When it was handled, to the microsecond.
    pub recorded_at: DateTime<Utc>,
    /// Free-form headers.
    #[serde(default)]
    pub headers: Headers,
    /// What came of it.
    pub outcome: Outcome,
}

impl CommandRecord {
    /// The record of `envelope`, handled at `recorded_at` with `outcome`.
    #[must_use]
    pub fn from_envelope(
        envelope: &CommandEnvelope,
        recorded_at: DateTime<Utc>,
        outcome: Outcome,
    ) -> Self {
        Self {
            command_id: envelope.id,
            command_type: envelope.command_type.clone(),
            target: envelope.target.clone(),
            payload: envelope.payload.clone(),
            correlation_id: envelope.correlation_id,
            causation_id: envelope.causation_id,
            recorded_at: crate::clock::truncate_to_micros(recorded_at),
            headers: envelope.headers.clone(),
            outcome,
        }
    }
}

/// What came of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The command was accepted and appended `events` events, leaving its stream at `version`.
    Accepted {
        /// The stream's version after the command.
        version: Version,
        /// How many events the command appended.
        events: u64,
    },
    /// The command was rejected by the domain.
    Rejected {
        /// The domain error, serialized.
        error: Json,
        /// The domain error's message, for people reading the log.
        message: String,
    },
}

impl Outcome {
    /// Whether the command was accepted.
    #[must_use]
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}
