use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::dcb::{EventQuery, QueryItem};
use crate::event::{EventFilter, EventView, Metadata, RecordedEvent, StreamId};
use crate::message::{DomainEvent, MessageError, decode_message, decode_message_value};
use crate::version::{Position, Version};

/// An event in flight through the upcaster chain: a type name, a schema version and a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcasted {
    /// The type name.
    pub event_type: String,
    /// The schema version of `payload`.
    pub schema_version: u16,
    /// The payload.
    pub payload: Value,
}

impl Upcasted {
    /// Bundles the three parts.
    #[must_use]
    pub fn new(event_type: impl Into<String>, schema_version: u16, payload: Value) -> Self {
        Self {
            event_type: event_type.into(),
            schema_version,
            payload,
        }
    }
}

/// Turns one stored shape of an event into newer ones.
///
/// Implemented for closures `Fn(Value) -> Result<Vec<Upcasted>, UpcastError>`. Most upcasters
/// are simpler and registered with [`Upcasters::rename`], [`Upcasters::map`] or
/// [`Upcasters::add_field`].
pub trait Upcaster: Send + Sync + 'static {
    /// Upcasts `payload` (of the type and version this upcaster was registered for) into one
    /// or more events of newer shapes.
    ///
    /// # Errors
    ///
    /// [`UpcastError`] if the payload cannot be upcast; reading the event then fails with a
    /// [`DecodeError`] naming its position.
    fn upcast(&self, payload: Value) -> Result<Vec<Upcasted>, UpcastError>;
}

impl<F> Upcaster for F
where
    F: Fn(Value) -> Result<Vec<Upcasted>, UpcastError> + Send + Sync + 'static,
{
    fn upcast(&self, payload: Value) -> Result<Vec<Upcasted>, UpcastError> {
        self(payload)
    }
}

/// An upcaster that could not upcast a payload.
///
/// # Examples
///
/// ```
/// use cqrs_core::UpcastError;
///
/// let err = UpcastError::new("`seats` is missing");
/// assert_eq!(err.to_string(), "`seats` is missing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UpcastError {
    message: String,
}

impl UpcastError {
    /// An error with this message.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<serde_json::Error> for UpcastError {
    fn from(err: serde_json::Error) -> Self {
        Self::new(err.to_string())
    }
}

/// An upcaster that reads the stored event's metadata too.
type WithMetadata =
    dyn Fn(Value, &Metadata) -> Result<Vec<Upcasted>, UpcastError> + Send + Sync + 'static;

#[derive(Clone)]
enum Step {
    Payload(Arc<dyn Upcaster>),
    WithMetadata(Arc<WithMetadata>),
}

#[derive(Clone)]
struct Registered {
    produces: Vec<String>,
    step: Step,
}

/// The chain of upcasters, keyed by (type name, schema version), and the codec that decodes
/// stored events into domain events through it.
///
/// Upcasting happens on read: stored rows are never rewritten. When an event is decoded, the
/// upcaster registered for its (type, version) runs, then the one for the result, and so on
/// until no upcaster matches; the result must then be the type's current
/// [`DomainEvent::schema_version`]. An upcaster may rename a type, change its payload, or split
/// one event into several.
///
/// Build the chain once and share it (cloning is cheap).
///
/// # Examples
///
/// ```
/// use cqrs_core::{DomainEvent, Json, Position, RecordedEvent, StreamId, Upcasters, Version, NewEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum OrderEvent {
///     #[serde(rename = "order.confirmed")]
///     Confirmed { free: bool },
/// }
/// impl DomainEvent for OrderEvent {
///     fn schema_version(_: &str) -> u16 { 2 }
/// }
///
/// // Version 1 was called "OrderPaymentConfirmed" and had no `free` field.
/// let upcasters = Upcasters::new()
///     .rename("OrderPaymentConfirmed", 1, "order.confirmed", 1)
///     .add_field("order.confirmed", 1, "free", false);
///
/// let old = RecordedEvent::from_new(
///     NewEvent::new("OrderPaymentConfirmed", Json::parse("{}")?),
///     StreamId::new("order-1")?,
///     Version::START,
///     Position::START,
/// );
/// let events: Vec<OrderEvent> = upcasters.decode(&old)?.collect();
/// assert_eq!(events, [OrderEvent::Confirmed { free: false }]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    /// Upcasters by type name, then by schema version: looked up without allocating.
    chain: Arc<HashMap<String, HashMap<u16, Registered>>>,
    /// Whether one of them reads the stored metadata (asked before every load).
    needs_metadata: bool,
}

/// A limit on chain length that only a cycle of renames can reach.
const MAX_STEPS: usize = 64;

impl Upcasters {
    /// An empty chain: events decode as stored.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `upcaster` for events of `event_type` at `from_version`; `produces` lists the
    /// type names it may output, so that filters on new names also select old rows.
    ///
    /// # Panics
    ///
    /// Panics if an upcaster is already registered for the same (type, version): the chain
    /// would be ambiguous.
    #[must_use]
    pub fn register<I, S>(
        self,
        event_type: &str,
        from_version: u16,
        produces: I,
        upcaster: impl Upcaster,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.insert(
            event_type,
            from_version,
            produces,
            Step::Payload(Arc::new(upcaster)),
        )
    }

    fn insert<I, S>(mut self, event_type: &str, from_version: u16, produces: I, step: Step) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.needs_metadata |= matches!(step, Step::WithMetadata(_));
        let chain = Arc::make_mut(&mut self.chain);
        let versions = chain.entry(event_type.to_owned()).or_default();
        assert!(
            !versions.contains_key(&from_version),
            "two upcasters registered for {event_type} v{from_version}"
        );
        versions.insert(
            from_version,
            Registered {
                produces: produces.into_iter().map(Into::into).collect(),
                step,
            },
        );
        self
    }

    /// Registers an upcaster that also reads the stored event's metadata (read-only): its
    /// time, ids and headers, for a payload that takes a default from them. As
    /// [`Upcasters::register`] otherwise.
    ///
    /// Events decoded through it need their metadata: a [`Repository`](crate::Repository)
    /// whose upcasters [need it](Self::needs_metadata) reads whole events instead of the
    /// narrower fold reads some stores offer.
    ///
    /// # Panics
    ///
    /// As [`Upcasters::register`].
    #[must_use]
    pub fn register_with_metadata<I, S, F>(
        self,
        event_type: &str,
        from_version: u16,
        produces: I,
        upcaster: F,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        F: Fn(Value, &Metadata) -> Result<Vec<Upcasted>, UpcastError> + Send + Sync + 'static,
    {
        self.insert(
            event_type,
            from_version,
            produces,
            Step::WithMetadata(Arc::new(upcaster)),
        )
    }

    /// [`Upcasters::map`] with the stored event's metadata: version `from_version + 1` gets the
    /// payload `f` makes of the old one and the event's metadata.
    ///
    /// # Panics
    ///
    /// As [`Upcasters::register`].
    ///
    /// # Examples
    ///
    /// Version 2 of `order.placed` added `placed_at`; version 1 events take it from the time
    /// they were recorded.
    ///
    /// ```
    /// use cqrs_core::{Json, Metadata, NewEvent, Position, RecordedEvent, StreamId, Upcasted, Upcasters, Version};
    /// use serde_json::json;
    ///
    /// let upcasters = Upcasters::new().map_with_metadata("order.placed", 1, |mut payload, metadata| {
    ///     payload["placed_at"] = json!(metadata.recorded_at);
    ///     Ok(payload)
    /// });
    /// let at = chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    /// let old = RecordedEvent::from_new(
    ///     NewEvent::new("order.placed", Json::parse(r#"{"seats": 2}"#)?).with_metadata(Metadata::at(at)),
    ///     StreamId::new("order-1")?,
    ///     Version::START,
    ///     Position::START,
    /// );
    /// let upcasted = upcasters.upcast(Upcasted::new("order.placed", 1, old.payload.to_value()?), Some(&old.metadata))?;
    /// assert_eq!(upcasted[0].payload, json!({ "seats": 2, "placed_at": "2026-01-01T00:00:00Z" }));
    /// assert!(upcasters.needs_metadata());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn map_with_metadata<F>(self, event_type: &str, from_version: u16, f: F) -> Self
    where
        F: Fn(Value, &Metadata) -> Result<Value, UpcastError> + Send + Sync + 'static,
    {
        let ty = event_type.to_owned();
        let to_version = from_version.saturating_add(1);
        self.register_with_metadata(
            event_type,
            from_version,
            [event_type],
            move |payload, metadata| {
                Ok(vec![Upcasted::new(
                    ty.clone(),
                    to_version,
                    f(payload, metadata)?,
                )])
            },
        )
    }

    /// Whether some upcaster reads the stored event's metadata, so that decoding needs it.
    #[must_use]
    pub fn needs_metadata(&self) -> bool {
        self.needs_metadata
    }

    /// Registers a rename: events of `from_type` at `from_version` become `to_type` at
    /// `to_version` with the same payload.
    ///
    /// # Panics
    ///
    /// As [`Upcasters::register`].
    #[must_use]
    pub fn rename(
        self,
        from_type: &str,
        from_version: u16,
        to_type: &str,
        to_version: u16,
    ) -> Self {
        let to = to_type.to_owned();
        self.register(from_type, from_version, [to_type], move |payload| {
            Ok(vec![Upcasted::new(to.clone(), to_version, payload)])
        })
    }

    /// Registers a payload change: events of `event_type` at `from_version` become version
    /// `from_version + 1` of the same type, with the payload `f` returns.
    ///
    /// # Panics
    ///
    /// As [`Upcasters::register`].
    #[must_use]
    pub fn map<F>(self, event_type: &str, from_version: u16, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, UpcastError> + Send + Sync + 'static,
    {
        let ty = event_type.to_owned();
        let to_version = from_version.saturating_add(1);
        self.register(event_type, from_version, [event_type], move |payload| {
            Ok(vec![Upcasted::new(ty.clone(), to_version, f(payload)?)])
        })
    }

    /// Registers the commonest change: version `from_version + 1` added `field`, and old events
    /// get `default`.
    ///
    /// # Panics
    ///
    /// As [`Upcasters::register`].
    #[must_use]
    pub fn add_field(
        self,
        event_type: &str,
        from_version: u16,
        field: &str,
        default: impl Into<Value>,
    ) -> Self {
        let field = field.to_owned();
        let default = default.into();
        self.map(event_type, from_version, move |mut payload| {
            let Value::Object(map) = &mut payload else {
                return Err(UpcastError::new(format!(
                    "expected an object to add `{field}` to"
                )));
            };
            map.entry(field.clone()).or_insert_with(|| default.clone());
            Ok(payload)
        })
    }

    /// Whether an upcaster is registered for (`event_type`, `version`).
    #[must_use]
    pub fn has_upcaster(&self, event_type: &str, version: u16) -> bool {
        self.get(event_type, version).is_some()
    }

    fn get(&self, event_type: &str, version: u16) -> Option<&Registered> {
        self.chain
            .get(event_type)
            .and_then(|versions| versions.get(&version))
    }

    /// Runs the chain over one stored event, returning the events it becomes (just itself when
    /// no upcaster matches). `metadata` is the stored event's, for the upcasters that read it.
    ///
    /// # Errors
    ///
    /// The first [`UpcastError`] of the chain, or one that reports a cycle, an undeclared
    /// output type, or an upcaster that needs the metadata when it is not given.
    pub fn upcast(
        &self,
        event: Upcasted,
        metadata: Option<&Metadata>,
    ) -> Result<Vec<Upcasted>, UpcastError> {
        let mut done = Vec::with_capacity(1);
        let mut todo = vec![(event, 0usize)];
        while let Some((event, steps)) = todo.pop() {
            let Some(registered) = self.get(&event.event_type, event.schema_version) else {
                done.push(event);
                continue;
            };
            if steps >= MAX_STEPS {
                return Err(UpcastError::new(format!(
                    "upcasting {} v{} did not end after {MAX_STEPS} steps (a cycle?)",
                    event.event_type, event.schema_version
                )));
            }
            let from = (event.event_type.clone(), event.schema_version);
            let outputs = match &registered.step {
                Step::Payload(upcaster) => upcaster.upcast(event.payload)?,
                Step::WithMetadata(upcaster) => {
                    let Some(metadata) = metadata else {
                        return Err(UpcastError::new(format!(
                            "the upcaster for {} v{} needs the event's metadata, which this read \
                             did not load",
                            from.0, from.1
                        )));
                    };
                    upcaster(event.payload, metadata)?
                }
            };
            // Push in reverse so that a split keeps the order the upcaster gave.
            for output in outputs.into_iter().rev() {
                if !registered.produces.contains(&output.event_type) {
                    return Err(UpcastError::new(format!(
                        "the upcaster for {} v{} produced undeclared type {}",
                        from.0, from.1, output.event_type
                    )));
                }
                todo.push((output, steps + 1));
            }
        }
        Ok(done)
    }

    /// Decodes a stored event into domain events, upcasting it first if needed.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming the event's position if the type is unknown to `E`, its schema
    /// version does not match after upcasting, an upcaster fails, or the payload does not fit.
    pub fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<Decoded<E>, DecodeError> {
        self.decode_view(event.view())
    }

    /// Decodes a stored event, borrowed as a fold reads it, into domain events, upcasting it
    /// first if needed.
    ///
    /// # Errors
    ///
    /// As [`Upcasters::decode`].
    pub fn decode_view<E: DomainEvent>(
        &self,
        event: EventView<'_>,
    ) -> Result<Decoded<E>, DecodeError> {
        let fail = |kind| DecodeError::at(event, kind);
        if !self.has_upcaster(event.event_type, event.schema_version) {
            check_known::<E>(event.event_type, event.schema_version).map_err(fail)?;
            let decoded = decode_message::<E>(event.event_type, event.payload)
                .map_err(|e| fail(DecodeErrorKind::from_message(e)))?;
            return Ok(Decoded(DecodedInner::One(Some(decoded))));
        }
        let payload = serde_json::from_str(event.payload)
            .map_err(|e| fail(DecodeErrorKind::Payload(MessageError::Payload(e))))?;
        let upcasted = self
            .upcast(
                Upcasted::new(event.event_type.to_owned(), event.schema_version, payload),
                event.metadata,
            )
            .map_err(|e| fail(DecodeErrorKind::Upcast(e)))?;
        let mut out = Vec::with_capacity(upcasted.len());
        for u in upcasted {
            check_known::<E>(&u.event_type, u.schema_version).map_err(fail)?;
            out.push(
                decode_message_value::<E>(&u.event_type, u.payload)
                    .map_err(|e| fail(DecodeErrorKind::from_message(e)))?,
            );
        }
        Ok(Decoded(DecodedInner::Many(out.into_iter())))
    }

    /// Every type name, stored now or in the past, that the chain turns into one of `types`
    /// (including `types` themselves).
    #[must_use]
    pub fn source_types<S: AsRef<str>>(&self, types: &[S]) -> BTreeSet<String> {
        let mut found: BTreeSet<String> = types.iter().map(|t| t.as_ref().to_owned()).collect();
        loop {
            let before = found.len();
            for (ty, versions) in self.chain.iter() {
                if versions
                    .values()
                    .any(|r| r.produces.iter().any(|p| found.contains(p)))
                {
                    found.insert(ty.clone());
                }
            }
            if found.len() == before {
                return found;
            }
        }
    }

    /// Widens `filter` so that its type names also select the old names they were upcast
    /// from: a projection that filters on `"order.confirmed"` then also reads the rows stored
    /// as `"OrderPaymentConfirmed"`.
    #[must_use]
    pub fn expand_filter(&self, filter: EventFilter) -> EventFilter {
        if filter.types.is_empty() {
            return filter;
        }
        let types = self.source_types(&filter.types);
        EventFilter {
            types: types.into_iter().collect(),
            categories: filter.categories,
        }
    }

    /// Widens `query` as [`expand_filter`](Self::expand_filter) widens a filter: each item's
    /// type names also select the old names they were upcast from. Tags are not widened:
    /// events stored before their type had tags carry none until a
    /// [`Migration`](crate::migrate::Migration) rewrites them.
    #[must_use]
    pub fn expand_query(&self, query: EventQuery) -> EventQuery {
        let Some(items) = query.alternatives() else {
            return query;
        };
        EventQuery::items(items.iter().map(|item| {
            if item.types.is_empty() {
                return item.clone();
            }
            QueryItem {
                types: self.source_types(&item.types).into_iter().collect(),
                tags: item.tags.clone(),
            }
        }))
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<(&String, &u16)> = self
            .chain
            .iter()
            .flat_map(|(ty, versions)| versions.keys().map(move |v| (ty, v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters")
            .field("registered", &keys)
            .finish()
    }
}

fn check_known<E: DomainEvent>(event_type: &str, version: u16) -> Result<(), DecodeErrorKind> {
    let current = E::schema_version(event_type);
    if version == current {
        // An unknown type is caught by decoding, which checks the variant names anyway.
        return Ok(());
    }
    if !E::event_types().contains(&event_type) {
        return Err(DecodeErrorKind::UnknownType);
    }
    Err(DecodeErrorKind::SchemaVersion {
        found: version,
        current,
    })
}

/// The domain events one stored event decodes into: usually one, several after a split.
#[derive(Debug)]
pub struct Decoded<E>(DecodedInner<E>);

#[derive(Debug)]
enum DecodedInner<E> {
    One(Option<E>),
    Many(std::vec::IntoIter<E>),
}

impl<E> Iterator for Decoded<E> {
    type Item = E;

    fn next(&mut self) -> Option<E> {
        match &mut self.0 {
            DecodedInner::One(e) => e.take(),
            DecodedInner::Many(it) => it.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            DecodedInner::One(e) => (usize::from(e.is_some()), Some(usize::from(e.is_some()))),
            DecodedInner::Many(it) => it.size_hint(),
        }
    }
}

/// A stored event that could not be decoded into a domain event. It names where the event is,
/// so that an operator can find the row.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot decode event at position {position} ({stream} version {version}, type {event_type} v{schema_version})"
)]
pub struct DecodeError {
    /// The event's global position.
    pub position: Position,
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in its stream.
    pub version: Version,
    /// The stored type name.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u16,
    /// What went wrong.
    #[source]
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// Describes a failure to decode `event`.
    #[must_use]
    pub fn new(event: &RecordedEvent, kind: DecodeErrorKind) -> Self {
        Self::at(event.view(), kind)
    }

    /// Describes a failure to decode `event`, borrowed as a fold reads it.
    #[must_use]
    pub fn at(event: EventView<'_>, kind: DecodeErrorKind) -> Self {
        Self {
            position: event.position,
            stream: event.stream.clone(),
            version: event.version,
            event_type: event.event_type.to_owned(),
            schema_version: event.schema_version,
            kind,
        }
    }
}

/// Why a stored event could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// No variant of the target enum has this type name (after upcasting).
    #[error("unknown event type")]
    UnknownType,
    /// The schema version (after upcasting) is not the type's current one: an upcaster is
    /// missing, or the event was written by newer code.
    #[error("schema version {found} is not the current version {current}")]
    SchemaVersion {
        /// The version found.
        found: u16,
        /// The version the code knows.
        current: u16,
    },
    /// An upcaster failed.
    #[error("upcasting failed")]
    Upcast(#[source] UpcastError),
    /// The payload is not valid JSON or does not fit the type.
    #[error("invalid payload")]
    Payload(#[source] MessageError),
}

impl DecodeErrorKind {
    fn from_message(err: MessageError) -> Self {
        match err {
            MessageError::UnknownType(_) => Self::UnknownType,
            other => Self::Payload(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::event::{Json, NewEvent};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        #[serde(rename = "t.placed")]
        Placed { seats: u32, free: bool },
        #[serde(rename = "t.half")]
        Half { n: u32 },
    }

    impl DomainEvent for Ev {
        fn schema_version(event_type: &str) -> u16 {
            if event_type == "t.placed" { 3 } else { 1 }
        }
    }

    fn stored(ty: &str, version: u16, payload: serde_json::Value) -> RecordedEvent {
        RecordedEvent::from_new(
            NewEvent::new(ty, Json::from(payload)).with_schema_version(version),
            StreamId::new("t-1").unwrap(),
            Version::new(4),
            Position::new(99),
        )
    }

    fn chain() -> Upcasters {
        Upcasters::new()
            .rename("OldPlaced", 1, "t.placed", 1)
            .map("t.placed", 1, |mut p| {
                p["seats"] = p.get("quantity").cloned().unwrap_or(json!(0));
                Ok(p)
            })
            .add_field("t.placed", 2, "free", false)
            .register("t.double", 1, ["t.half"], |p: Value| {
                let n = p["n"]
                    .as_u64()
                    .ok_or_else(|| UpcastError::new("n is missing"))?;
                Ok(vec![
                    Upcasted::new("t.half", 1, json!({"n": n / 2})),
                    Upcasted::new("t.half", 1, json!({"n": n - n / 2})),
                ])
            })
    }

    #[test]
    fn chains_rename_map_and_add_field_in_order() {
        let events: Vec<Ev> = chain()
            .decode(&stored("OldPlaced", 1, json!({"quantity": 5})))
            .unwrap()
            .collect();
        assert_eq!(
            events,
            [Ev::Placed {
                seats: 5,
                free: false
            }]
        );
    }

    #[test]
    fn current_events_pass_unchanged() {
        let event = stored("t.placed", 3, json!({"seats": 1, "free": true}));
        let events: Vec<Ev> = chain().decode(&event).unwrap().collect();
        assert_eq!(
            events,
            [Ev::Placed {
                seats: 1,
                free: true
            }]
        );
        let up = chain()
            .upcast(Upcasted::new("t.placed", 3, json!({"seats": 1})), None)
            .unwrap();
        assert_eq!(up, [Upcasted::new("t.placed", 3, json!({"seats": 1}))]);
    }

    #[test]
    fn splits_keep_their_order() {
        let events: Vec<Ev> = chain()
            .decode(&stored("t.double", 1, json!({"n": 5})))
            .unwrap()
            .collect();
        assert_eq!(events, [Ev::Half { n: 2 }, Ev::Half { n: 3 }]);
    }

    #[test]
    fn errors_name_the_position_and_the_cause() {
        let err = chain()
            .decode::<Ev>(&stored("t.unknown", 1, json!({})))
            .unwrap_err();
        assert_eq!(err.position, Position::new(99));
        assert!(matches!(err.kind, DecodeErrorKind::UnknownType));
        assert!(err.to_string().contains("position 99"), "{err}");

        let err = chain()
            .decode::<Ev>(&stored("t.double", 1, json!({})))
            .unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Upcast(_)));

        let err = chain()
            .decode::<Ev>(&stored("t.placed", 4, json!({})))
            .unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::SchemaVersion {
                found: 4,
                current: 3
            }
        ));

        let mut corrupt = stored("t.half", 1, json!({}));
        corrupt.payload = Json::from_stored("{\"n\": ");
        let err = chain().decode::<Ev>(&corrupt).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::Payload(_)));
    }

    #[test]
    fn cycles_are_reported_not_looped() {
        let cyclic = Upcasters::new()
            .rename("a", 1, "b", 1)
            .rename("b", 1, "a", 1);
        assert!(
            cyclic
                .upcast(Upcasted::new("a", 1, json!({})), None)
                .is_err()
        );
    }

    #[test]
    fn filters_widen_to_old_names() {
        let filter = chain().expand_filter(EventFilter::all().with_types(["t.placed"]));
        assert_eq!(filter.types, ["OldPlaced", "t.placed"]);
        assert!(chain().expand_filter(EventFilter::all()).is_all());
    }

    #[test]
    fn a_shared_chain_can_still_be_extended() {
        let base = Upcasters::new().rename("x", 1, "t.half", 1);
        let _keep = base.clone();
        let extended = base.rename("y", 1, "t.half", 1);
        let events: Vec<Ev> = extended
            .decode(&stored("x", 1, json!({"n": 1})))
            .unwrap()
            .collect();
        assert_eq!(events, [Ev::Half { n: 1 }]);
    }

    proptest::proptest! {
        #[test]
        fn upcasting_a_current_event_changes_nothing(seats in 0u32..10_000, free: bool) {
            let payload = json!({"seats": seats, "free": free});
            let up = chain().upcast(Upcasted::new("t.placed", 3, payload.clone()), None).unwrap();
            proptest::prop_assert_eq!(up, vec![Upcasted::new("t.placed", 3, payload)]);
        }
    }
}
