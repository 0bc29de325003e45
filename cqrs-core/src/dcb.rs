//! Consistency across streams: tags on events, queries over them, and appends that hold only
//! if nothing matching a query was appended since a decision read it (dynamic consistency
//! boundaries, as the DCB specification at dcb.events defines them).
//!
//! A rule that spans aggregates ("a slug names one conference"; "a member holds at most three
//! loans") reads the events that matter to it by an [`EventQuery`], decides, and commits with
//! an [`AppendCondition`] on the same query: the store refuses the commit if an event matching
//! the query was appended after the last position the decision read. Streams, versions and
//! aggregates are unchanged; a conditional commit may also expect stream versions, and may
//! append to several streams at once.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::CommandRecord;
use crate::event::{NewEvent, RecordedEvent, StreamId};
use crate::store::{Appended, EventStore, StoreError, check_headers, check_type_name};
use crate::version::{ExpectedVersion, Position};

/// The longest tag, in bytes (key, `:` and value), that every store accepts.
pub const MAX_TAG_LEN: usize = 200;

/// A label on an event that queries select it by: `key:value`, such as `conference:devconf`
/// or `member:42`.
///
/// The key is 1 to 64 bytes of lowercase letters, digits, `_`, `.` and `-`; the value is
/// non-empty and may hold any text but control characters; the whole is at most
/// [`MAX_TAG_LEN`] bytes. Tags compare and sort as their text. Cloning is cheap.
///
/// # Examples
///
/// ```
/// use cqrs_core::Tag;
///
/// let tag = Tag::new("conference", "devconf-2027")?;
/// assert_eq!(tag.as_str(), "conference:devconf-2027");
/// assert_eq!((tag.key(), tag.value()), ("conference", "devconf-2027"));
/// assert_eq!("conference:devconf-2027".parse::<Tag>()?, tag);
/// assert!(Tag::new("Conference", "x").is_err());
/// assert!(Tag::new("conference", "").is_err());
/// # Ok::<(), cqrs_core::InvalidTag>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(Arc<str>);

/// A tag that breaks the rules of [`Tag`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tag {tag:?} must be `key:value`: a key of 1 to 64 bytes of a-z, 0-9, `_`, `.`, `-`, a \
     non-empty value without control characters, at most {MAX_TAG_LEN} bytes in all"
)]
pub struct InvalidTag {
    /// The tag as given (cut to [`MAX_TAG_LEN`] characters).
    pub tag: String,
}

impl Tag {
    /// The tag `key:value`.
    ///
    /// # Errors
    ///
    /// [`InvalidTag`] if the key or the value breaks the rules of [`Tag`].
    pub fn new(key: &str, value: impl fmt::Display) -> Result<Self, InvalidTag> {
        Self::parse(&format!("{key}:{value}"))
    }

    /// Reads `key:value` (the first `:` ends the key).
    ///
    /// # Errors
    ///
    /// [`InvalidTag`] if it breaks the rules of [`Tag`].
    pub fn parse(text: &str) -> Result<Self, InvalidTag> {
        let valid = text.len() <= MAX_TAG_LEN
            && text.split_once(':').is_some_and(|(key, value)| {
                (1..=64).contains(&key.len())
                    && key
                        .bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
                    && !value.is_empty()
                    && !value.chars().any(char::is_control)
            });
        if valid {
            Ok(Self(Arc::from(text)))
        } else {
            Err(InvalidTag {
                tag: text.chars().take(MAX_TAG_LEN).collect(),
            })
        }
    }

    /// The tag as stored: `key:value`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `:`.
    #[must_use]
    pub fn key(&self) -> &str {
        self.0.split_once(':').map_or("", |(key, _)| key)
    }

    /// The part after the first `:`.
    #[must_use]
    pub fn value(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, value)| value)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl FromStr for Tag {
    type Err = InvalidTag;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Tag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Sorts and de-duplicates tags, the form events carry them in.
pub(crate) fn normalize(tags: &mut Vec<Tag>) {
    tags.sort_unstable();
    tags.dedup();
}

/// One alternative of an [`EventQuery`]: an event matches if its type is one of `types` (any
/// type if there are none) **and** it carries every one of `tags`.
///
/// An item names at least one type or one tag.
///
/// # Examples
///
/// ```
/// use cqrs_core::{QueryItem, Tag};
///
/// let item = QueryItem::types(["book.lent", "book.returned"]).with_tag(Tag::new("book", 7)?);
/// assert!(item.matches("book.lent", &[Tag::new("book", 7)?, Tag::new("member", 3)?]));
/// assert!(!item.matches("book.lent", &[Tag::new("book", 8)?]));
/// assert!(!item.matches("book.shelved", &[Tag::new("book", 7)?]));
/// # Ok::<(), cqrs_core::InvalidTag>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueryItem {
    /// The event types it accepts (any of them); empty accepts every type.
    pub types: Vec<String>,
    /// The tags an event must all carry.
    pub tags: Vec<Tag>,
}

impl QueryItem {
    /// An item for events of any of `types`.
    #[must_use]
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(types: I) -> Self {
        let mut types: Vec<String> = types.into_iter().map(Into::into).collect();
        types.sort_unstable();
        types.dedup();
        Self {
            types,
            tags: Vec::new(),
        }
    }

    /// An item for events of any type carrying all of `tags`.
    #[must_use]
    pub fn tagged<I: IntoIterator<Item = Tag>>(tags: I) -> Self {
        let mut tags: Vec<Tag> = tags.into_iter().collect();
        normalize(&mut tags);
        Self {
            types: Vec::new(),
            tags,
        }
    }

    /// Also requires `tag`.
    #[must_use]
    pub fn with_tag(mut self, tag: Tag) -> Self {
        self.tags.push(tag);
        normalize(&mut self.tags);
        self
    }

    /// Whether an event of `event_type` carrying `tags` (sorted, as events carry them)
    /// matches.
    #[must_use]
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|tag| tags.contains(tag))
    }
}

/// Which events a decision depends on: every event ([`EventQuery::all`]), or those matching
/// any of its [`QueryItem`]s.
///
/// # Examples
///
/// ```
/// use cqrs_core::{EventQuery, QueryItem, Tag};
///
/// // A book's loans, and a member's.
/// let query = EventQuery::items([
///     QueryItem::types(["book.lent", "book.returned"]).with_tag(Tag::new("book", 7)?),
///     QueryItem::types(["book.lent", "book.returned"]).with_tag(Tag::new("member", 3)?),
/// ]);
/// assert!(query.matches("book.returned", &[Tag::new("member", 3)?]));
/// assert!(!query.matches("book.returned", &[Tag::new("member", 4)?]));
/// assert!(EventQuery::all().matches("anything", &[]));
/// # Ok::<(), cqrs_core::InvalidTag>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventQuery {
    /// `None` for every event; else the alternatives (at least one).
    items: Option<Vec<QueryItem>>,
}

impl EventQuery {
    /// Every event.
    #[must_use]
    pub fn all() -> Self {
        Self { items: None }
    }

    /// The events matching any of `items`. A query needs at least one item, and each item a
    /// type or a tag: [`EventQuery::validate`] (which stores call) says so otherwise.
    #[must_use]
    pub fn items<I: IntoIterator<Item = QueryItem>>(items: I) -> Self {
        Self {
            items: Some(items.into_iter().collect()),
        }
    }

    /// The alternatives, `None` if the query matches every event.
    #[must_use]
    pub fn alternatives(&self) -> Option<&[QueryItem]> {
        self.items.as_deref()
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    #[must_use]
    pub fn matches(&self, event_type: &str, tags: &[Tag]) -> bool {
        self.items
            .as_ref()
            .is_none_or(|items| items.iter().any(|item| item.matches(event_type, tags)))
    }

    /// Whether `event` matches.
    #[must_use]
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(&event.event_type, &event.tags)
    }

    /// Checks what every store requires: at least one item, each with a type or a tag, and
    /// type names within the limits.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] saying what is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        let Some(items) = &self.items else {
            return Ok(());
        };
        if items.is_empty() {
            return Err(StoreError::Invalid(
                "a query needs at least one item (EventQuery::all() matches every event)".into(),
            ));
        }
        for (i, item) in items.iter().enumerate() {
            if item.types.is_empty() && item.tags.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "query item {i} names no type and no tag"
                )));
            }
            for ty in &item.types {
                check_type_name(ty)
                    .map_err(|why| StoreError::Invalid(format!("query item {i}: {why}")))?;
            }
        }
        Ok(())
    }
}

/// What a conditional commit requires: that no event matching `query` was appended after
/// `after` (the last position the decision read; `None`: that none exists at all).
///
/// # Examples
///
/// ```
/// use cqrs_core::{AppendCondition, EventQuery, Position, QueryItem, Tag};
///
/// let slug = EventQuery::items([QueryItem::tagged([Tag::new("slug", "devconf")?])]);
/// // Nothing may carry the slug yet.
/// let unique = AppendCondition::none_match(slug.clone());
/// // Nothing carrying it may have come after what the decision read.
/// let unchanged = AppendCondition::none_after(slug, Position::new(41));
/// assert_eq!(unique.after, None);
/// assert_eq!(unchanged.after, Some(Position::new(41)));
/// # Ok::<(), cqrs_core::InvalidTag>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendCondition {
    /// The events the decision depends on.
    pub query: EventQuery,
    /// The last position the decision read; matching events at or before it are allowed.
    pub after: Option<Position>,
}

impl AppendCondition {
    /// Fails if any event matches `query`.
    #[must_use]
    pub fn none_match(query: EventQuery) -> Self {
        Self { query, after: None }
    }

    /// Fails if an event matching `query` exists after `after`.
    #[must_use]
    pub fn none_after(query: EventQuery, after: Position) -> Self {
        Self {
            query,
            after: Some(after),
        }
    }

    /// Whether `event` breaks the condition.
    #[must_use]
    pub fn is_broken_by(&self, event: &RecordedEvent) -> bool {
        self.after.is_none_or(|after| event.position > after) && self.query.matches_event(event)
    }
}

/// The events for one stream in a [`ConditionalCommit`], at an expected version.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream.
    pub stream: StreamId,
    /// The version it must be at ([`ExpectedVersion::Any`] when the condition is the guard).
    pub expected: ExpectedVersion,
    /// Its new events, in order (at least one).
    pub events: Vec<NewEvent>,
}

impl StreamAppend {
    /// `events` for `stream` at `expected`.
    #[must_use]
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
        }
    }
}

/// One atomic write across streams: each stream's events at its expected version, all only if
/// the [`AppendCondition`] holds, and, optionally, the command that caused them.
///
/// # Examples
///
/// ```
/// use cqrs_core::{
///     AppendCondition, ConditionalCommit, EventQuery, ExpectedVersion, Json, NewEvent,
///     QueryItem, StreamAppend, StreamId, Tag,
/// };
///
/// let slug = Tag::new("slug", "devconf")?;
/// let created = NewEvent::new("conference.created", Json::null()).with_tags([slug.clone()]);
/// let commit = ConditionalCommit::new(vec![StreamAppend::new(
///     StreamId::new("conference-7")?,
///     ExpectedVersion::NoStream,
///     vec![created],
/// )])
/// .with_condition(AppendCondition::none_match(EventQuery::items([QueryItem::tagged([slug])])));
/// assert!(commit.validate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConditionalCommit {
    /// The streams' appends: distinct streams, in the order their events take positions.
    pub appends: Vec<StreamAppend>,
    /// What must still hold, checked atomically with the writes.
    pub condition: Option<AppendCondition>,
    /// The command to record with the events; its target is one of the streams.
    pub command: Option<CommandRecord>,
}

impl ConditionalCommit {
    /// A commit of `appends`, with no condition and no command record.
    #[must_use]
    pub fn new(appends: Vec<StreamAppend>) -> Self {
        Self {
            appends,
            condition: None,
            command: None,
        }
    }

    /// Commits only if `condition` holds.
    #[must_use]
    pub fn with_condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Records `command` with the events.
    #[must_use]
    pub fn with_command(mut self, command: CommandRecord) -> Self {
        self.command = Some(command);
        self
    }

    /// Checks the limits every store enforces: at least one stream, each named once and with
    /// at least one event, except the command's target, which may receive none (a rejection,
    /// or a command whose events all go elsewhere, is still recorded on it); names, headers
    /// and tags within limits; the condition's query valid; the command record for one of
    /// the streams.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] naming the offending part.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.appends.is_empty() {
            return Err(StoreError::Invalid(
                "a conditional commit needs at least one stream".into(),
            ));
        }
        for (i, append) in self.appends.iter().enumerate() {
            let records_command = self
                .command
                .as_ref()
                .is_some_and(|c| c.target == append.stream);
            if append.events.is_empty() && !records_command {
                return Err(StoreError::Invalid(format!(
                    "stream {} has no events and is not the command's target",
                    append.stream
                )));
            }
            if self.appends[..i].iter().any(|a| a.stream == append.stream) {
                return Err(StoreError::Invalid(format!(
                    "stream {} is named twice",
                    append.stream
                )));
            }
            for (j, event) in append.events.iter().enumerate() {
                check_type_name(&event.event_type)
                    .and_then(|()| check_headers(&event.metadata.headers))
                    .map_err(|why| {
                        StoreError::Invalid(format!("{} event {j}: {why}", append.stream))
                    })?;
            }
        }
        if let Some(condition) = &self.condition {
            condition.query.validate()?;
        }
        if let Some(command) = &self.command {
            check_type_name(&command.command_type)
                .and_then(|()| check_headers(&command.headers))
                .map_err(|why| StoreError::Invalid(format!("command: {why}")))?;
            if !self.appends.iter().any(|a| a.stream == command.target) {
                return Err(StoreError::Invalid(format!(
                    "the command record is for {}, which the commit does not append to",
                    command.target
                )));
            }
        }
        Ok(())
    }

    /// How many events the commit appends.
    #[must_use]
    pub fn len(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    /// Whether the commit appends nothing (it is then invalid).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A store that reads by [`EventQuery`] and commits under an [`AppendCondition`]: dynamic
/// consistency boundaries.
///
/// Stores index tags, so that a query with tags reads only the events carrying them; an item
/// without tags reads by type. [`DcbStore::commit_if`] is atomic: the condition is checked,
/// and the streams' expected versions, against everything committed before it, and a
/// concurrent commit whose events would break the condition is either seen (and refused) or
/// ordered after it. No store reports a condition as holding when a matching event exists
/// after `after`.
#[async_trait]
pub trait DcbStore: EventStore {
    /// Up to `limit` events matching `query`, from position `from` on, in log order.
    ///
    /// Like [`EventReader::read_all`](crate::EventReader::read_all), it shows only what no
    /// earlier commit can still precede.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] if the query is invalid; the store's errors.
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Commits `commit` if its condition holds and every stream is at its expected version,
    /// and nothing otherwise. Returns where each stream's events landed, in order.
    ///
    /// Checks, in this order: the command id ([`StoreError::DuplicateCommand`]), the condition
    /// ([`StoreError::ConditionFailed`]), each stream's version ([`StoreError::Conflict`]).
    ///
    /// # Errors
    ///
    /// As above, [`StoreError::Invalid`] if the commit breaks a limit, the store's errors.
    ///
    /// # Cancel safety
    ///
    /// As [`EventStore::commit`].
    async fn commit_if(&self, commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError>;
}
