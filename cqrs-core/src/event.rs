use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::clock::truncate_to_micros;
use crate::dcb::{Tag, normalize};
use crate::version::{Position, Version};

/// The longest stream id, in bytes, that every store accepts.
pub const MAX_STREAM_ID_LEN: usize = 200;
/// The longest event or command type name, in bytes, that every store accepts.
pub const MAX_TYPE_NAME_LEN: usize = 200;

/// The identity of a stream of events, such as `"order-7f3c…"`.
///
/// By convention a stream id is `"{category}-{id}"`: the category names the kind of
/// aggregate (`"order"`), and projections can subscribe to a whole category. The category is
/// the part before the first `-` (the whole id if it has none). A stream id is 1 to
/// [`MAX_STREAM_ID_LEN`] bytes of text without control characters. Cloning is cheap.
///
/// # Examples
///
/// ```
/// use cqrs_core::StreamId;
///
/// let stream = StreamId::new("order-42")?;
/// assert_eq!(stream.category(), "order");
/// assert_eq!(StreamId::for_aggregate("order", &42)?, stream);
/// assert!(StreamId::new("").is_err());
/// # Ok::<(), cqrs_core::InvalidStreamId>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// Checks and wraps a stream id.
    ///
    /// # Errors
    ///
    /// [`InvalidStreamId`] if `id` is empty, longer than [`MAX_STREAM_ID_LEN`] bytes, or
    /// contains a control character.
    pub fn new(id: impl AsRef<str>) -> Result<Self, InvalidStreamId> {
        let id = id.as_ref();
        if id.is_empty() || id.len() > MAX_STREAM_ID_LEN || id.chars().any(char::is_control) {
            return Err(InvalidStreamId {
                id: id.chars().take(MAX_STREAM_ID_LEN).collect(),
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The stream of the aggregate `id` in `category`: `"{category}-{id}"`.
    ///
    /// # Errors
    ///
    /// [`InvalidStreamId`] if the result is not a valid stream id.
    pub fn for_aggregate(category: &str, id: &impl fmt::Display) -> Result<Self, InvalidStreamId> {
        Self::new(format!("{category}-{id}"))
    }

    /// The stream id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-`: the kind of aggregate this stream belongs to.
    #[must_use]
    pub fn category(&self) -> &str {
        self.0
            .split_once('-')
            .map_or(&self.0, |(category, _)| category)
    }

    /// The part after the first `-`: the aggregate's own id, if the stream has a category.
    #[must_use]
    pub fn local_id(&self) -> Option<&str> {
        self.0.split_once('-').map(|(_, id)| id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = InvalidStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// Checks that `name` can be a stream category: what routes commands back to their handler.
///
/// # Panics
///
/// Panics if `name` is empty or contains `-` (the category would not be told from the id).
pub(crate) fn assert_category(what: &str, name: &str) {
    assert!(
        !name.is_empty() && !name.contains('-'),
        "{what} {name:?} must be non-empty and free of '-'"
    );
}

/// A stream id that is empty, too long, or contains control characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream id {id:?}: it must be 1 to 200 bytes without control characters")]
pub struct InvalidStreamId {
    id: String,
}

/// A JSON document, kept as text.
///
/// Stores move payloads as text and never parse them; decoding into domain types (and
/// upcasting) happens in `cqrs-core`. A `Json` built with [`Json::encode`] or [`Json::parse`] is
/// valid JSON. Cloning is cheap.
///
/// # Examples
///
/// ```
/// use cqrs_core::Json;
///
/// let json = Json::encode(&serde_json::json!({"seats": 3}))?;
/// assert_eq!(json.as_str(), r#"{"seats":3}"#);
/// let value: serde_json::Value = json.decode()?;
/// assert_eq!(value["seats"], 3);
/// assert!(Json::parse("{not json").is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Json(Arc<str>);

impl Json {
    /// Serializes `value` as JSON.
    ///
    /// # Errors
    ///
    /// Whatever `serde_json` reports for `value` (a map with non-string keys, say).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_string(value).map(|s| Self(Arc::from(s)))
    }

    /// Checks that `text` is valid JSON and wraps it.
    ///
    /// # Errors
    ///
    /// The parse error if `text` is not valid JSON.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self(Arc::from(text)))
    }

    /// Wraps text read back from storage without checking it.
    ///
    /// Stores use this for payloads they wrote themselves: a row damaged on disk then surfaces
    /// as a decode error naming its position when something decodes it, instead of failing
    /// every read that merely passes it along.
    #[must_use]
    pub fn from_stored(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    /// The JSON `null`.
    #[must_use]
    pub fn null() -> Self {
        Self(Arc::from("null"))
    }

    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Deserializes the document into `T`.
    ///
    /// # Errors
    ///
    /// The `serde_json` error if the text is not valid JSON or does not fit `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parses the document into a [`serde_json::Value`].
    ///
    /// # Errors
    ///
    /// The `serde_json` error if the text is not valid JSON.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Self {
        Self::from(&value)
    }
}

impl From<&serde_json::Value> for Json {
    fn from(value: &serde_json::Value) -> Self {
        Self(Arc::from(value.to_string()))
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Embeds the document as JSON rather than as a string holding JSON. Going through a
        // `Value` works with every serializer (a raw value only works with serde_json's own).
        let value: serde_json::Value =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        value.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A `Value` also deserializes from buffered content (inside tagged enums), where a raw
        // value cannot.
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self::from(&value))
    }
}

/// Free-form string headers carried with an event or command (tenant, user agent, …): a
/// map from name to value, in name order.
///
/// Shared, copied on write: a clone is a reference count, so the events a store reads with
/// the same headers (one user's commands, one flow's trace context) share one map, and
/// copying an event's metadata into what it causes allocates nothing until a header changes.
/// It reads as a [`BTreeMap`] (`get`, `iter`, `len`…), and changes through one (`insert`,
/// `remove`).
///
/// # Examples
///
/// ```
/// use cqrs_core::Headers;
///
/// let mut headers = Headers::new();
/// headers.insert("user".into(), "ana".into());
/// let copy = headers.clone();
/// headers.insert("tenant".into(), "contoso".into());
/// assert_eq!(copy.len(), 1, "a clone does not see later changes");
/// assert_eq!(headers.get("user").map(String::as_str), Some("ana"));
/// let names: Vec<&String> = headers.keys().collect();
/// assert_eq!(names, ["tenant", "user"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Headers(Arc<BTreeMap<String, String>>);

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(deserializer).map(Self::from)
    }
}

impl Headers {
    /// No headers.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are none (for `skip_serializing_if`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::ops::Deref for Headers {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Headers {
    /// The map to change: this one's own, copied first if another clone shares it.
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl From<BTreeMap<String, String>> for Headers {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(Arc::new(map))
    }
}

impl<const N: usize> From<[(String, String); N]> for Headers {
    fn from(pairs: [(String, String); N]) -> Self {
        Self(Arc::new(BTreeMap::from(pairs)))
    }
}

impl FromIterator<(String, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self(Arc::new(pairs.into_iter().collect()))
    }
}

impl Extend<(String, String)> for Headers {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, pairs: I) {
        Arc::make_mut(&mut self.0).extend(pairs);
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

/// What a store records about an event besides its payload.
///
/// `recorded_at` is set by whoever creates the event (the repository stamps it from its
/// [`Clock`](crate::Clock)) and kept to the microsecond, the precision every store keeps.
///
/// # Examples
///
/// ```
/// use cqrs_core::Metadata;
/// use uuid::Uuid;
///
/// let correlation = Uuid::new_v4();
/// let meta = Metadata::new().with_correlation_id(correlation).with_header("tenant", "acme");
/// assert_eq!(meta.correlation_id, Some(correlation));
/// assert_eq!(meta.headers["tenant"], "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The event's unique id.
    pub event_id: Uuid,
    /// The id shared by every message of one business flow; events inherit it from the
    /// command that caused them.
    pub correlation_id: Option<Uuid>,
    /// The id of the message (usually the command) that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// The id of the command whose handling produced this event.
    pub command_id: Option<Uuid>,
    /// When the event was recorded, to the microsecond.
    pub recorded_at: DateTime<Utc>,
    /// Free-form headers. Those named `cqrs.*` are the framework's facts about this one
    /// event (such as [`SOURCE_POSITION`](crate::migrate::SOURCE_POSITION)); the commands a
    /// process manager sends in reaction do not inherit them, as they inherit the others.
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    pub headers: Headers,
}

impl Metadata {
    /// Metadata with a fresh (time-ordered) event id, recorded now, and nothing else.
    #[must_use]
    pub fn new() -> Self {
        Self::at(Utc::now())
    }

    /// Metadata with a fresh event id, recorded at `recorded_at` (cut to microseconds).
    #[must_use]
    pub fn at(recorded_at: DateTime<Utc>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            correlation_id: None,
            causation_id: None,
            command_id: None,
            recorded_at: truncate_to_micros(recorded_at),
            headers: Headers::new(),
        }
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: Uuid) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Sets the command id.
    #[must_use]
    pub fn with_command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::new()
    }
}

/// An event on its way into a store: a type name, a schema version, a JSON payload and
/// metadata. Stores never see domain types.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Json, NewEvent};
///
/// let event = NewEvent::new("registration.order_placed", Json::parse(r#"{"seats":2}"#)?);
/// assert_eq!(event.schema_version, 1);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The stable type name, such as `"registration.order_placed"`.
    pub event_type: String,
    /// The schema version of `payload` for this type name.
    pub schema_version: u16,
    /// The event's data.
    pub payload: Json,
    /// Ids, time and headers.
    pub metadata: Metadata,
    /// What [`EventQuery`](crate::EventQuery)s select it by: sorted, without duplicates
    /// (stores keep them as given; [`NewEvent::with_tags`] sorts them).
    pub tags: Vec<Tag>,
}

impl NewEvent {
    /// An event of schema version 1 with fresh [`Metadata`] and no tags.
    #[must_use]
    pub fn new(event_type: impl Into<String>, payload: Json) -> Self {
        Self {
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::new(),
            tags: Vec::new(),
        }
    }

    /// Sets the tags (sorted, duplicates dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{Json, NewEvent, Tag};
    ///
    /// let lent = NewEvent::new("book.lent", Json::null())
    ///     .with_tags([Tag::new("member", 3)?, Tag::new("book", 7)?, Tag::new("member", 3)?]);
    /// assert_eq!(lent.tags, [Tag::new("book", 7)?, Tag::new("member", 3)?]);
    /// # Ok::<(), cqrs_core::InvalidTag>(())
    /// ```
    #[must_use]
    pub fn with_tags<I: IntoIterator<Item = Tag>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().collect();
        normalize(&mut self.tags);
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, version: u16) -> Self {
        self.schema_version = version;
        self
    }

    /// Replaces the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as a store returns it: a [`NewEvent`] plus where it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in that stream (the first event is version 1).
    pub version: Version,
    /// Its position in the store's global log.
    pub position: Position,
    /// The stable type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: u16,
    /// The event's data, as written (upcasting happens when it is decoded).
    pub payload: Json,
    /// Ids, time and headers.
    pub metadata: Metadata,
    /// Its tags, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

impl RecordedEvent {
    /// Builds the recorded form of `event`, as a store does when it commits it.
    #[must_use]
    pub fn from_new(
        event: NewEvent,
        stream: StreamId,
        version: Version,
        position: Position,
    ) -> Self {
        Self {
            stream,
            version,
            position,
            event_type: event.event_type,
            schema_version: event.schema_version,
            payload: event.payload,
            metadata: event.metadata,
            tags: event.tags,
        }
    }

    /// The event as a fold reads it, borrowed.
    #[must_use]
    pub fn view(&self) -> EventView<'_> {
        EventView {
            stream: &self.stream,
            version: self.version,
            position: self.position,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: self.payload.as_str(),
            metadata: Some(&self.metadata),
        }
    }
}

/// A stored event as a fold reads it: borrowed from the store's row, with its metadata only
/// where the read loaded it.
///
/// Folding an aggregate needs the type, the schema version and the payload of each event;
/// [`EventReader::visit_stream`](crate::EventReader::visit_stream) hands events over in this
/// form so that a store need not copy what nobody reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventView<'a> {
    /// The stream it belongs to.
    pub stream: &'a StreamId,
    /// Its version in that stream.
    pub version: Version,
    /// Its position in the store's global log.
    pub position: Position,
    /// The stable type name.
    pub event_type: &'a str,
    /// The schema version the payload was written with.
    pub schema_version: u16,
    /// The payload, JSON text as written.
    pub payload: &'a str,
    /// The metadata, when the read loaded it (a store's narrow fold read may not: see
    /// [`Upcasters::needs_metadata`](crate::Upcasters::needs_metadata)).
    pub metadata: Option<&'a Metadata>,
}

impl<'a> EventView<'a> {
    /// An event as a store's fold read decodes it: the columns up to the payload, without
    /// metadata (a repository whose upcasters need metadata reads whole events instead).
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{EventView, Position, StreamId, Version};
    ///
    /// let stream = StreamId::new("order-1")?;
    /// let view = EventView::new(&stream, Version::new(1), Position::new(9), "OrderPlaced", 1, "{}");
    /// assert_eq!(view.event_type, "OrderPlaced");
    /// assert!(view.metadata.is_none());
    /// # Ok::<(), cqrs_core::InvalidStreamId>(())
    /// ```
    #[must_use]
    pub fn new(
        stream: &'a StreamId,
        version: Version,
        position: Position,
        event_type: &'a str,
        schema_version: u16,
        payload: &'a str,
    ) -> Self {
        Self {
            stream,
            version,
            position,
            event_type,
            schema_version,
            payload,
            metadata: None,
        }
    }
}

/// Selects events of the global log by type name or stream category.
///
/// An event passes if the filter is empty, or if its type is one of `types` **or** its
/// stream's category is one of `categories`: a read model that combines several aggregates
/// lists each. Stores may push the filter down into their queries.
///
/// # Examples
///
/// ```
/// use cqrs_core::EventFilter;
///
/// let filter = EventFilter::all().with_categories(["seats"]).with_types(["order.placed"]);
/// assert!(filter.matches_parts("seats-1", "seats.reserved"));
/// assert!(filter.matches_parts("order-9", "order.placed"));
/// assert!(!filter.matches_parts("order-9", "order.confirmed"));
/// assert!(EventFilter::all().matches_parts("anything-1", "any.type"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Type names that pass.
    pub types: Vec<String>,
    /// Stream categories whose events pass.
    pub categories: Vec<String>,
}

impl EventFilter {
    /// The filter that lets every event pass.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds type names that pass.
    #[must_use]
    pub fn with_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.types.extend(types.into_iter().map(Into::into));
        self.types.sort();
        self.types.dedup();
        self
    }

    /// Adds stream categories whose events pass.
    #[must_use]
    pub fn with_categories<I, S>(mut self, categories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.categories
            .extend(categories.into_iter().map(Into::into));
        self.categories.sort();
        self.categories.dedup();
        self
    }

    /// Whether every event passes.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.types.is_empty() && self.categories.is_empty()
    }

    /// Whether `event` passes.
    #[must_use]
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_parts(event.stream.as_str(), &event.event_type)
    }

    /// Whether an event of `event_type` in `stream` passes.
    #[must_use]
    pub fn matches_parts(&self, stream: &str, event_type: &str) -> bool {
        if self.is_all() {
            return true;
        }
        let category = stream.split_once('-').map_or(stream, |(c, _)| c);
        self.types.iter().any(|t| t == event_type) || self.categories.iter().any(|c| c == category)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_validated() {
        assert!(StreamId::new("a").is_ok());
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_LEN)).is_ok());
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_LEN + 1)).is_err());
        assert!(StreamId::new("bad\nid").is_err());
    }

    #[test]
    fn category_is_the_prefix_before_the_first_dash() {
        let s = StreamId::new("order-1-2").unwrap();
        assert_eq!(s.category(), "order");
        assert_eq!(s.local_id(), Some("1-2"));
        let plain = StreamId::new("plain").unwrap();
        assert_eq!(plain.category(), "plain");
        assert_eq!(plain.local_id(), None);
    }

    #[test]
    fn json_round_trips_inside_tagged_enums() {
        let outcome = crate::command::Outcome::Rejected {
            error: Json::parse(r#"{"a":1}"#).unwrap(),
            message: "m".into(),
        };
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(
            serde_json::from_str::<crate::command::Outcome>(&text).unwrap(),
            outcome
        );
    }

    #[test]
    fn json_serializes_inline() {
        let json = Json::parse(r#"{"a":[1,2]}"#).unwrap();
        let wrapped =
            serde_json::to_string(&serde_json::json!({ "p": json.to_value().unwrap() })).unwrap();
        let direct = serde_json::to_string(&Wrapper { p: json.clone() }).unwrap();
        assert_eq!(wrapped, direct);
        let back: Wrapper = serde_json::from_str(&direct).unwrap();
        assert_eq!(back.p, json);

        #[derive(Serialize, Deserialize)]
        struct Wrapper {
            p: Json,
        }
    }

    #[test]
    fn metadata_time_is_cut_to_microseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(
            Metadata::at(t).recorded_at.timestamp_subsec_nanos(),
            123_456_000
        );
    }
}
