//! Names: the store's JetStream streams and the subjects of its messages (ADR 0012).

use cqrs_core::{StoreError, StreamId};
use uuid::Uuid;

/// One subject token for `text`: ASCII letters, digits, `-` and `_` as they are, every other
/// byte as `~` and two upper-case hex digits, so that no token holds `.`, `*`, `>` or white
/// space and the encoding reverses. The empty text is `~` alone, which no other text gives.
pub(crate) fn token(text: &str) -> String {
    if text.is_empty() {
        return "~".to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            out.push(char::from(byte));
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The text [`token`] encoded, or `None` if `token` is not one of its outputs.
pub(crate) fn untoken(token: &str) -> Option<String> {
    if token == "~" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = bytes.get(i + 1..i + 3)?;
            let digit = |b: u8| HEX.iter().position(|&h| h == b);
            let value = digit(hex[0])? * 16 + digit(hex[1])?;
            out.push(u8::try_from(value).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The store's names: its JetStream streams and its subjects, from the two prefixes.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    /// The log stream: events, command records, checks.
    pub(crate) log: String,
    /// The state stream: one message per subject (checkpoints now; processes and the
    /// schedule later).
    pub(crate) state: String,
    /// The snapshots stream: one message per subject.
    pub(crate) snapshots: String,
    prefix: String,
    /// `{p}.log.e.`, which starts every event's subject.
    events_start: String,
}

impl Names {
    pub(crate) fn new(stream_prefix: &str, subject_prefix: &str) -> Self {
        Self {
            log: format!("{stream_prefix}_LOG"),
            state: format!("{stream_prefix}_STATE"),
            snapshots: format!("{stream_prefix}_SNAPSHOTS"),
            prefix: subject_prefix.to_owned(),
            events_start: format!("{subject_prefix}.log.e."),
        }
    }

    /// What the log stream holds.
    pub(crate) fn log_subjects(&self) -> String {
        format!("{}.log.>", self.prefix)
    }

    pub(crate) fn state_subjects(&self) -> String {
        format!("{}.state.>", self.prefix)
    }

    pub(crate) fn snapshot_subjects(&self) -> String {
        format!("{}.snap.>", self.prefix)
    }

    /// Every event.
    pub(crate) fn events(&self) -> String {
        format!("{}>", self.events_start)
    }

    /// The events of `stream`: `{p}.log.e.{category}.{stream}`.
    pub(crate) fn event(&self, stream: &StreamId) -> String {
        format!(
            "{}{}.{}",
            self.events_start,
            token(stream.category()),
            token(stream.as_str())
        )
    }

    /// The stream an event's subject names, if it is an event's subject of this store.
    pub(crate) fn stream_of(&self, subject: &str) -> Option<StreamId> {
        let rest = subject.strip_prefix(&self.events_start)?;
        let (_category, stream) = rest.split_once('.')?;
        StreamId::new(untoken(stream)?).ok()
    }

    /// The record of command `id` (repositories and deciders).
    pub(crate) fn command(&self, id: Uuid) -> String {
        format!("{}.log.c.{}", self.prefix, id.simple())
    }

    /// Every command record of the log.
    pub(crate) fn commands(&self) -> String {
        format!("{}.log.c.>", self.prefix)
    }

    /// Whether `subject` is a command record's (a commit's in the log, or a process
    /// manager's in the state stream).
    pub(crate) fn is_command(&self, subject: &str) -> bool {
        subject
            .strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.starts_with(".log.c.") || rest.starts_with(".state.c."))
    }

    /// Every event and every command record: what the message log reads.
    pub(crate) fn events_and_commands(&self) -> [String; 2] {
        [self.events(), self.commands()]
    }

    /// The markers of the events tagged `tag`.
    pub(crate) fn tag(&self, tag: &cqrs_core::Tag) -> String {
        format!("{}.log.t.{}", self.prefix, token(tag.as_str()))
    }

    /// Where a commit without events checks its stream's version: a message that is no
    /// event, so the stream's subject keeps events only.
    pub(crate) fn check(&self) -> String {
        format!("{}.log.x", self.prefix)
    }

    /// The snapshot of `stream` at `schema_version`.
    pub(crate) fn snapshot(&self, stream: &StreamId, schema_version: u16) -> String {
        format!(
            "{}.snap.{schema_version}.{}",
            self.prefix,
            token(stream.as_str())
        )
    }

    /// The process instance `id`.
    pub(crate) fn process(&self, id: &StreamId) -> String {
        format!("{}.state.p.{}", self.prefix, token(id.as_str()))
    }

    /// Every process instance.
    pub(crate) fn processes(&self) -> String {
        format!("{}.state.p.>", self.prefix)
    }

    /// The instance a process row's subject names.
    pub(crate) fn process_of(&self, subject: &str) -> Option<StreamId> {
        let rest = subject
            .strip_prefix(&self.prefix)?
            .strip_prefix(".state.p.")?;
        StreamId::new(untoken(rest)?).ok()
    }

    /// The scheduled command `id`.
    pub(crate) fn scheduled(&self, id: Uuid) -> String {
        format!("{}.state.s.{}", self.prefix, id.simple())
    }

    /// Every scheduled command.
    pub(crate) fn schedule(&self) -> String {
        format!("{}.state.s.>", self.prefix)
    }

    /// The record of command `id` handled by a process manager: saved with its instance, in
    /// the state stream.
    pub(crate) fn handled(&self, id: Uuid) -> String {
        format!("{}.state.c.{}", self.prefix, id.simple())
    }

    /// Every command record of process managers.
    pub(crate) fn handled_all(&self) -> String {
        format!("{}.state.c.>", self.prefix)
    }

    /// The checkpoint `name`.
    pub(crate) fn checkpoint(&self, name: &str) -> String {
        format!("{}.state.k.{}", self.prefix, token(name))
    }
}

/// Checks a prefix of JetStream stream names: 1 to 32 ASCII letters, digits, `-` or `_`.
pub(crate) fn check_stream_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty()
        || prefix.len() > 32
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::Invalid(format!(
            "stream prefix {prefix:?} must be 1 to 32 ASCII letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

/// Checks a subject prefix: tokens of ASCII letters, digits, `-` or `_`, joined by dots.
pub(crate) fn check_subject_prefix(prefix: &str) -> Result<(), StoreError> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if prefix.len() > 64 || !prefix.split('.').all(token_ok) {
        return Err(StoreError::Invalid(format!(
            "subject prefix {prefix:?} must be dot-separated tokens of ASCII letters, digits, \
             `-` or `_`, at most 64 bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_reverse_and_hold_no_subject_syntax() {
        for text in [
            "order-1",
            "",
            "a.b",
            "*",
            ">",
            "with space",
            "~",
            "~41",
            "ünï",
            "tab\there",
        ] {
            let t = token(text);
            assert!(!t.is_empty());
            assert!(!t.contains(['.', '*', '>', ' ', '\t']), "{text:?} -> {t:?}");
            assert_eq!(untoken(&t).as_deref(), Some(text), "{text:?} -> {t:?}");
        }
        assert_eq!(token("order-1_x"), "order-1_x");
        assert_eq!(token("a.b"), "a~2Eb");
        assert_eq!(untoken("~4"), None);
        assert_eq!(untoken("~ZZ"), None);
        assert_eq!(untoken("~FF"), None, "not UTF-8");
    }

    #[test]
    fn event_subjects_name_their_stream() {
        let names = Names::new("CQRS", "cqrs");
        let stream = StreamId::new("order-1.2 x").unwrap();
        let subject = names.event(&stream);
        assert_eq!(subject, "cqrs.log.e.order.order-1~2E2~20x");
        assert_eq!(names.stream_of(&subject), Some(stream));
        assert_eq!(names.stream_of("cqrs.log.c.abc"), None);
        assert_eq!(names.stream_of("other.log.e.a.a"), None);
        assert!(names.is_command(&names.command(Uuid::nil())));
        assert!(!names.is_command(&subject));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_stream_prefix("CQRS_1").is_ok());
        assert!(check_stream_prefix("A.B").is_err());
        assert!(check_stream_prefix("").is_err());
        assert!(check_subject_prefix("app.cqrs").is_ok());
        assert!(check_subject_prefix("app..cqrs").is_err());
        assert!(check_subject_prefix("a*").is_err());
    }
}
