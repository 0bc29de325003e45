//! Turning Rust enums into (type name, JSON payload) pairs and back.
//!
//! A domain message (event, command, timeout) is an enum whose variants carry
//! `#[serde(rename = "context.name")]`: the serde variant name is the stable type name that
//! stores record, and the variant's content is the payload. A custom serializer captures the
//! name and writes the content straight to JSON, so encoding costs one `serde_json` pass and
//! no intermediate `Value`.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

use crate::dcb::Tag;
use crate::event::Json;

/// A domain event: an enum whose variants are the event types of one aggregate or context.
///
/// Derive `Serialize` and `Deserialize` and give every variant a stable name with
/// `#[serde(rename = "…")]`. That name is the event's identity in the store, so renaming the
/// Rust variant changes nothing stored. Keep serde's default (externally tagged) enum
/// representation; the framework stores the variant name and the content separately.
///
/// When the shape of an event type changes, raise its [`DomainEvent::schema_version`] and
/// register an upcaster for the old version in [`Upcasters`](crate::Upcasters).
///
/// # Examples
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum SeatEvent {
///     #[serde(rename = "seats.added")]
///     Added { quantity: u32 },
///     #[serde(rename = "seats.reserved")]
///     Reserved { reservation: String, quantity: u32 },
/// }
///
/// impl DomainEvent for SeatEvent {
///     fn schema_version(event_type: &str) -> u16 {
///         match event_type {
///             "seats.reserved" => 2, // version 1 had no `reservation`
///             _ => 1,
///         }
///     }
/// }
///
/// let event = SeatEvent::Added { quantity: 3 };
/// assert_eq!(event.event_type()?, "seats.added");
/// assert_eq!(SeatEvent::event_types(), ["seats.added", "seats.reserved"]);
/// # Ok::<(), cqrs_core::MessageError>(())
/// ```
pub trait DomainEvent: Message {
    /// The schema version that events of `event_type` are written with today.
    ///
    /// Defaults to 1 for every type.
    fn schema_version(event_type: &str) -> u16 {
        let _ = event_type;
        1
    }

    /// This event's tags, which [`EventQuery`](crate::EventQuery)s select it by; none by
    /// default. Every way an event is written (repositories, decisions) stores them, so that a
    /// decision's query sees events however they were appended.
    ///
    /// # Examples
    ///
    /// ```
    /// use cqrs_core::{DomainEvent, Tag};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Clone, Serialize, Deserialize)]
    /// enum LoanEvent {
    ///     #[serde(rename = "book.lent")]
    ///     Lent { book: u32, member: u32 },
    /// }
    ///
    /// impl DomainEvent for LoanEvent {
    ///     fn tags(&self) -> Vec<Tag> {
    ///         let Self::Lent { book, member } = self;
    ///         [Tag::new("book", book), Tag::new("member", member)].into_iter().flatten().collect()
    ///     }
    /// }
    /// assert_eq!(LoanEvent::Lent { book: 7, member: 3 }.tags().len(), 2);
    /// ```
    fn tags(&self) -> Vec<Tag> {
        Vec::new()
    }

    /// This event's stable type name (its serde variant name).
    ///
    /// # Errors
    ///
    /// [`MessageError::NotAnEnum`] if the type does not serialize as an enum variant.
    fn event_type(&self) -> Result<&'static str, MessageError> {
        message_type(self)
    }

    /// Every type name this enum can hold.
    #[must_use]
    fn event_types() -> &'static [&'static str] {
        message_types::<Self>()
    }
}

/// Anything the framework stores and reads back by type name: commands, events, timeouts.
///
/// Implemented for every `Serialize + DeserializeOwned` type; the encoding rules are those of
/// [`DomainEvent`].
pub trait Message: serde::Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: serde::Serialize + DeserializeOwned + Send + Sync + 'static> Message for T {}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The type does not serialize as an enum variant, so it has no type name.
    #[error("messages must be enums whose variants name their types")]
    NotAnEnum,
    /// The type name is not a variant of the target enum.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// The payload does not fit the variant.
    #[error("invalid payload")]
    Payload(#[source] serde_json::Error),
    /// Something else that serde reported.
    #[error("{0}")]
    Custom(String),
}

impl MessageError {
    /// Whether the type name was unknown (as opposed to a bad payload).
    #[must_use]
    pub fn is_unknown_type(&self) -> bool {
        matches!(self, Self::UnknownType(_))
    }
}

impl ser::Error for MessageError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

impl de::Error for MessageError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// Encodes an enum value as its variant name and the variant's content as JSON.
///
/// Unit variants encode as `null`.
///
/// # Examples
///
/// ```
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// enum Command {
///     #[serde(rename = "seats.reserve")]
///     Reserve { quantity: u32 },
///     #[serde(rename = "seats.release_all")]
///     ReleaseAll,
/// }
///
/// let (name, payload) = cqrs_core::encode_message(&Command::Reserve { quantity: 2 })?;
/// assert_eq!((name, payload.as_str()), ("seats.reserve", r#"{"quantity":2}"#));
/// let (name, payload) = cqrs_core::encode_message(&Command::ReleaseAll)?;
/// assert_eq!((name, payload.as_str()), ("seats.release_all", "null"));
/// # Ok::<(), cqrs_core::MessageError>(())
/// ```
///
/// # Errors
///
/// [`MessageError::NotAnEnum`] if `value` is not an enum variant, or the serializer's error.
pub fn encode_message<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(&'static str, Json), MessageError> {
    let (name, text) = value.serialize(VariantSerializer { name_only: false })?;
    Ok((name, Json::from_stored(text)))
}

/// The variant name of an enum value, without encoding its content.
///
/// # Errors
///
/// [`MessageError::NotAnEnum`] if `value` is not an enum variant.
pub fn message_type<T: Serialize + ?Sized>(value: &T) -> Result<&'static str, MessageError> {
    value
        .serialize(VariantSerializer { name_only: true })
        .map(|(name, _)| name)
}

/// Every variant name of the enum `T`, in declaration order (empty if `T` is not an enum).
///
/// # Examples
///
/// ```
/// #[derive(serde::Deserialize)]
/// enum Event {
///     #[serde(rename = "a.one")]
///     One,
///     #[serde(rename = "a.two")]
///     Two(u8),
/// }
/// assert_eq!(cqrs_core::message_types::<Event>(), ["a.one", "a.two"]);
/// ```
#[must_use]
pub fn message_types<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(VariantLister) {
        Err(Listed(variants)) => variants,
        Ok(_) => &[],
    }
}

/// Decodes a message of type `name` from JSON text.
///
/// # Examples
///
/// ```
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// enum Event {
///     #[serde(rename = "seats.added")]
///     Added { quantity: u32 },
/// }
/// let event: Event = cqrs_core::decode_message("seats.added", r#"{"quantity":4}"#)?;
/// assert_eq!(event, Event::Added { quantity: 4 });
/// let unknown = cqrs_core::decode_message::<Event>("seats.removed", "{}");
/// assert!(unknown.unwrap_err().is_unknown_type());
/// # Ok::<(), cqrs_core::MessageError>(())
/// ```
///
/// # Errors
///
/// [`MessageError::UnknownType`] if `name` is not a variant of `T`, [`MessageError::Payload`]
/// if the payload does not fit it.
pub fn decode_message<T: DeserializeOwned>(name: &str, payload: &str) -> Result<T, MessageError> {
    T::deserialize(VariantDeserializer {
        name,
        payload: Payload::Text(payload),
    })
}

/// Decodes a message of type `name` from a parsed JSON value (as upcasters produce).
///
/// # Errors
///
/// As [`decode_message`].
pub fn decode_message_value<T: DeserializeOwned>(
    name: &str,
    payload: serde_json::Value,
) -> Result<T, MessageError> {
    T::deserialize(VariantDeserializer {
        name,
        payload: Payload::Value(payload),
    })
}

// ----- encoding -----

struct VariantSerializer {
    name_only: bool,
}

impl VariantSerializer {
    fn content<T: Serialize + ?Sized>(&self, value: &T) -> Result<String, MessageError> {
        if self.name_only {
            return Ok(String::new());
        }
        serde_json::to_string(value).map_err(MessageError::Payload)
    }
}

macro_rules! not_an_enum {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> { Err(MessageError::NotAnEnum) })*
    };
}

impl ser::Serializer for VariantSerializer {
    type Ok = (&'static str, String);
    type Error = MessageError;
    type SerializeSeq = ser::Impossible<Self::Ok, MessageError>;
    type SerializeTuple = ser::Impossible<Self::Ok, MessageError>;
    type SerializeTupleStruct = ser::Impossible<Self::Ok, MessageError>;
    type SerializeTupleVariant = JsonCompound;
    type SerializeMap = ser::Impossible<Self::Ok, MessageError>;
    type SerializeStruct = ser::Impossible<Self::Ok, MessageError>;
    type SerializeStructVariant = JsonCompound;

    not_an_enum! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Self::Ok, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        // A newtype around an enum encodes as the enum.
        value.serialize(self)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Self::Ok, Self::Error> {
        Ok((
            variant,
            if self.name_only {
                String::new()
            } else {
                "null".to_owned()
            },
        ))
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Self::Ok, Self::Error> {
        Ok((variant, self.content(value)?))
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        Ok(JsonCompound::new(variant, b'[', self.name_only))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        Ok(JsonCompound::new(variant, b'{', self.name_only))
    }
}

/// Writes a tuple or struct variant's content as a JSON array or object, byte for byte what
/// `serde_json` writes for the same fields.
struct JsonCompound {
    variant: &'static str,
    buf: Vec<u8>,
    first: bool,
    name_only: bool,
}

impl JsonCompound {
    fn new(variant: &'static str, open: u8, name_only: bool) -> Self {
        let mut buf = Vec::with_capacity(if name_only { 0 } else { 128 });
        if !name_only {
            buf.push(open);
        }
        Self {
            variant,
            buf,
            first: true,
            name_only,
        }
    }

    fn separator(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    fn finish(mut self, close: u8) -> Result<(&'static str, String), MessageError> {
        if self.name_only {
            return Ok((self.variant, String::new()));
        }
        self.buf.push(close);
        // serde_json only writes UTF-8, and so does this type.
        let text = String::from_utf8(self.buf).map_err(|e| MessageError::Custom(e.to_string()))?;
        Ok((self.variant, text))
    }
}

impl ser::SerializeTupleVariant for JsonCompound {
    type Ok = (&'static str, String);
    type Error = MessageError;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Self::Error> {
        if self.name_only {
            return Ok(());
        }
        self.separator();
        serde_json::to_writer(&mut self.buf, value).map_err(MessageError::Payload)
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.finish(b']')
    }
}

impl ser::SerializeStructVariant for JsonCompound {
    type Ok = (&'static str, String);
    type Error = MessageError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Self::Error> {
        if self.name_only {
            return Ok(());
        }
        self.separator();
        serde_json::to_writer(&mut self.buf, key).map_err(MessageError::Payload)?;
        self.buf.push(b':');
        serde_json::to_writer(&mut self.buf, value).map_err(MessageError::Payload)
    }

    fn end(self) -> Result<Self::Ok, Self::Error> {
        self.finish(b'}')
    }
}

// ----- decoding -----

enum Payload<'a> {
    Text(&'a str),
    Value(serde_json::Value),
}

struct VariantDeserializer<'a> {
    name: &'a str,
    payload: Payload<'a>,
}

impl<'de> de::Deserializer<'de> for VariantDeserializer<'de> {
    type Error = MessageError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(MessageError::NotAnEnum)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if !variants.contains(&self.name) {
            return Err(MessageError::UnknownType(self.name.to_owned()));
        }
        visitor.visit_enum(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for VariantDeserializer<'de> {
    type Error = MessageError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), Self::Error> {
        let name = de::value::BorrowedStrDeserializer::<MessageError>::new(self.name);
        let variant = seed.deserialize(name)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for VariantDeserializer<'de> {
    type Error = MessageError;

    fn unit_variant(self) -> Result<(), Self::Error> {
        // The payload of a unit variant carries nothing; whatever is stored is ignored.
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        match self.payload {
            Payload::Text(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                let value = seed.deserialize(&mut de).map_err(MessageError::Payload)?;
                de.end().map_err(MessageError::Payload)?;
                Ok(value)
            }
            Payload::Value(value) => seed.deserialize(value).map_err(MessageError::Payload),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.payload {
            Payload::Text(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                let value = de::Deserializer::deserialize_tuple(&mut de, len, visitor)
                    .map_err(MessageError::Payload)?;
                de.end().map_err(MessageError::Payload)?;
                Ok(value)
            }
            Payload::Value(value) => de::Deserializer::deserialize_tuple(value, len, visitor)
                .map_err(MessageError::Payload),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.payload {
            Payload::Text(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                let value = de::Deserializer::deserialize_struct(&mut de, "", fields, visitor)
                    .map_err(MessageError::Payload)?;
                de.end().map_err(MessageError::Payload)?;
                Ok(value)
            }
            Payload::Value(value) => {
                de::Deserializer::deserialize_struct(value, "", fields, visitor)
                    .map_err(MessageError::Payload)
            }
        }
    }
}

/// A deserializer that only asks the target enum for its variant names.
struct VariantLister;

#[derive(Debug)]
struct Listed(&'static [&'static str]);

impl fmt::Display for Listed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("variant names listed")
    }
}

impl std::error::Error for Listed {}

impl de::Error for Listed {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Self(&[])
    }
}

impl<'de> de::Deserializer<'de> for VariantLister {
    type Error = Listed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(Listed(&[]))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        Err(Listed(variants))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Sample {
        #[serde(rename = "s.unit")]
        Unit,
        #[serde(rename = "s.newtype")]
        Newtype(Inner),
        #[serde(rename = "s.tuple")]
        Tuple(u32, String),
        #[serde(rename = "s.struct")]
        Struct {
            a: u32,
            #[serde(skip_serializing_if = "Option::is_none", default)]
            b: Option<String>,
            #[serde(rename = "renamed")]
            c: Vec<u8>,
        },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Inner {
        x: i64,
    }

    fn samples() -> Vec<Sample> {
        vec![
            Sample::Unit,
            Sample::Newtype(Inner { x: -3 }),
            Sample::Tuple(7, "seven \"quoted\"".into()),
            Sample::Struct {
                a: 1,
                b: None,
                c: vec![1, 2],
            },
            Sample::Struct {
                a: 1,
                b: Some("é".into()),
                c: vec![],
            },
        ]
    }

    #[test]
    fn content_matches_what_serde_json_writes_inside_the_tag() {
        for sample in samples() {
            let (name, payload) = encode_message(&sample).unwrap();
            let tagged = serde_json::to_value(&sample).unwrap();
            let expected = match tagged {
                serde_json::Value::String(s) => {
                    assert_eq!(s, name);
                    serde_json::Value::Null
                }
                serde_json::Value::Object(map) => map[name].clone(),
                other => panic!("unexpected {other}"),
            };
            assert_eq!(payload.to_value().unwrap(), expected, "{name}");
            assert_eq!(message_type(&sample).unwrap(), name);
        }
    }

    #[test]
    fn round_trips_through_text_and_value() {
        for sample in samples() {
            let (name, payload) = encode_message(&sample).unwrap();
            let back: Sample = decode_message(name, payload.as_str()).unwrap();
            assert_eq!(back, sample);
            let back: Sample = decode_message_value(name, payload.to_value().unwrap()).unwrap();
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn lists_variants() {
        assert_eq!(
            message_types::<Sample>(),
            ["s.unit", "s.newtype", "s.tuple", "s.struct"]
        );
        assert!(message_types::<Inner>().is_empty());
    }

    #[test]
    fn structs_are_not_messages() {
        assert!(matches!(
            encode_message(&Inner { x: 1 }),
            Err(MessageError::NotAnEnum)
        ));
    }

    #[test]
    fn bad_payloads_and_unknown_names_are_told_apart() {
        assert!(
            decode_message::<Sample>("s.nope", "{}")
                .unwrap_err()
                .is_unknown_type()
        );
        let err = decode_message::<Sample>("s.struct", r#"{"a":"x"}"#).unwrap_err();
        assert!(matches!(err, MessageError::Payload(_)), "{err:?}");
        let err =
            decode_message::<Sample>("s.struct", r#"{"a":1,"renamed":[]} trailing"#).unwrap_err();
        assert!(matches!(err, MessageError::Payload(_)), "{err:?}");
    }
}
