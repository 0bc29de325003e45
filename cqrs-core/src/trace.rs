//! Trace context carried in messages, so that one trace follows a command through its events,
//! the process managers and read models that take them, and the commands they send — even a
//! timeout delivered an hour later.
//!
//! The context is the [W3C trace context] (`traceparent`, `tracestate`) kept in the message's
//! [`Headers`]. A [`Repository`](crate::Repository) or [`Decider`](crate::Decider) writes the
//! context of its `cqrs.command` (or `cqrs.decision`) span into the command's record and every
//! event it produced; a process manager's `cqrs.process` span and a dispatcher's
//! `cqrs.dispatch` span continue the context of the message they take, and the commands a
//! process manager sends carry the context of the span that sent them. A projection's
//! `cqrs.projection` span applies a batch of events from many traces, so it links to each of
//! them instead (OpenTelemetry's messaging conventions for batches).
//!
//! Spans have trace ids only when an OpenTelemetry layer is installed and the `otel` feature is
//! on (`tracing-opentelemetry`). Without it nothing is stamped: headers a caller set travel
//! unchanged (commands sent by a process manager inherit them, as every header not named
//! `cqrs.*`), so a context taken from an incoming request still reaches every message.
//!
//! [W3C trace context]: https://www.w3.org/TR/trace-context/
//!
//! # Examples
//!
//! ```
//! use cqrs_core::trace::{TRACEPARENT, TraceParent};
//!
//! let parent = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .expect("a valid traceparent");
//! assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
//! assert!(parent.is_sampled());
//! assert_eq!(
//!     parent.to_string(),
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
//! );
//!
//! let mut headers = cqrs_core::Headers::new();
//! headers.insert(TRACEPARENT.into(), parent.to_string());
//! assert_eq!(TraceParent::of(&headers), Some(parent));
//! // A malformed one is no context at all, never an error.
//! assert_eq!(TraceParent::parse("00-0000-bad"), None);
//! ```

use std::fmt;

use crate::event::Headers;

/// The header holding a W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";

/// The header holding a W3C `tracestate` (vendor data that travels with the `traceparent`).
pub const TRACESTATE: &str = "tracestate";

/// A W3C `traceparent`: the trace a message belongs to and the span that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace's id (never zero).
    pub trace_id: u128,
    /// The id of the span that sent the message (never zero).
    pub span_id: u64,
    /// The trace flags; bit 0 says the trace is sampled.
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` header value. Anything malformed — wrong lengths, upper-case
    /// hex, all-zero ids, version `ff` — is `None`, as the W3C specification asks: a bad
    /// header starts a new trace, it fails nothing. Versions after `00` are read for their
    /// first four fields, as the specification allows.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let bytes = value.as_bytes();
        if !value.is_ascii()
            || bytes.len() < 55
            || bytes[2] != b'-'
            || bytes[35] != b'-'
            || bytes[52] != b'-'
        {
            return None;
        }
        let version = hex(&value[0..2])?;
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        let trace_id = hex(&value[3..35])?;
        let span_id = u64::try_from(hex(&value[36..52])?).ok()?;
        let flags = u8::try_from(hex(&value[53..55])?).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` in `headers`, if there is a valid one.
    #[must_use]
    pub fn of(headers: &Headers) -> Option<Self> {
        headers
            .get(TRACEPARENT)
            .and_then(|value| Self::parse(value))
    }

    /// Whether the trace is sampled (recorded by whoever sent it).
    #[must_use]
    pub fn is_sampled(self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lower-case hex digits, as trace viewers show it.
    #[must_use]
    pub fn trace_id_hex(self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Lower-case hex only: the specification refuses upper case.
fn hex(digits: &str) -> Option<u128> {
    if digits.is_empty()
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u128::from_str_radix(digits, 16).ok()
}

/// Writes the context of the current span into `headers` (`traceparent`, and `tracestate` when
/// there is one), replacing any there: for messages built by hand, such as an envelope sent
/// to another system. Does nothing when the current span has no OpenTelemetry context (no
/// `otel` feature, no OpenTelemetry layer, or no span).
pub fn inject_current(headers: &mut Headers) {
    stamp(&tracing::Span::current(), headers);
}

/// The context of the current span, if it has one (see [`inject_current`]).
#[must_use]
pub fn current() -> Option<TraceParent> {
    let mut headers = Headers::new();
    inject_current(&mut headers);
    TraceParent::of(&headers)
}

/// For a command's span, before it is entered: continue the trace in the command's headers
/// when the command runs outside any trace (it came from a queue or another process), then
/// write the span's own context into the headers, so that its record and events carry it.
pub(crate) fn command(span: &tracing::Span, headers: &mut Headers) {
    otel::adopt(span, headers);
    stamp(span, headers);
}

/// Makes `span` a child of the trace context in `headers` (a consumer's span, continuing the
/// trace of the message it takes; a server's span, continuing its caller's). Call it before the
/// span is first entered; without a context in `headers`, an OpenTelemetry layer or the `otel`
/// feature, it does nothing.
///
/// # Examples
///
/// ```
/// use cqrs_core::trace::{TRACEPARENT, continue_from};
///
/// let mut headers = cqrs_core::Headers::new();
/// headers.insert(
///     TRACEPARENT.into(),
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
/// );
/// let span = tracing::info_span!("handle incoming message");
/// continue_from(&span, &headers);
/// let _entered = span.enter();
/// ```
pub fn continue_from(span: &tracing::Span, headers: &Headers) {
    otel::set_parent(span, headers);
}

/// For a span over a batch of messages: link it to each distinct trace context among them, up
/// to `MAX_LINKS` (OpenTelemetry's default span limit).
pub(crate) fn link_all<'a>(span: &tracing::Span, headers: impl IntoIterator<Item = &'a Headers>) {
    otel::link_all(span, headers);
}

/// Writes `span`'s context into `headers`, if it has one.
pub(crate) fn stamp(span: &tracing::Span, headers: &mut Headers) {
    if let Some((parent, state)) = otel::context_of(span) {
        headers.insert(TRACEPARENT.to_owned(), parent.to_string());
        match state {
            Some(state) => headers.insert(TRACESTATE.to_owned(), state),
            None => headers.remove(TRACESTATE),
        };
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::str::FromStr;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::{Headers, TRACESTATE, TraceParent};

    /// How many traces a batch's span links to at most.
    const MAX_LINKS: usize = 128;

    fn span_context(headers: &Headers) -> Option<SpanContext> {
        let parent = TraceParent::of(headers)?;
        let state = headers
            .get(TRACESTATE)
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        Some(SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            state,
        ))
    }

    pub(super) fn context_of(span: &tracing::Span) -> Option<(TraceParent, Option<String>)> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return None;
        }
        let parent = TraceParent {
            trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
            flags: span_context.trace_flags().to_u8(),
        };
        let state = span_context.trace_state().header();
        Some((parent, (!state.is_empty()).then_some(state)))
    }

    pub(super) fn set_parent(span: &tracing::Span, headers: &Headers) {
        if let Some(parent) = span_context(headers) {
            // A span without an OpenTelemetry layer, or disabled, has no parent to set.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
    }

    pub(super) fn adopt(span: &tracing::Span, headers: &Headers) {
        let current = tracing::Span::current().context();
        if !current.span().span_context().is_valid() {
            set_parent(span, headers);
        }
    }

    pub(super) fn link_all<'a>(
        span: &tracing::Span,
        headers: impl IntoIterator<Item = &'a Headers>,
    ) {
        let mut linked: Vec<(u128, u64)> = Vec::new();
        for headers in headers {
            if linked.len() == MAX_LINKS {
                break;
            }
            let Some(parent) = TraceParent::of(headers) else {
                continue;
            };
            if linked.contains(&(parent.trace_id, parent.span_id)) {
                continue;
            }
            linked.push((parent.trace_id, parent.span_id));
            if let Some(context) = span_context(headers) {
                span.add_link(context);
            }
        }
    }
}

#[cfg(not(feature = "otel"))]
mod otel {
    use super::{Headers, TraceParent};

    pub(super) fn context_of(_: &tracing::Span) -> Option<(TraceParent, Option<String>)> {
        None
    }

    pub(super) fn set_parent(_: &tracing::Span, _: &Headers) {}

    pub(super) fn adopt(_: &tracing::Span, _: &Headers) {}

    pub(super) fn link_all<'a>(_: &tracing::Span, _: impl IntoIterator<Item = &'a Headers>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_specification_allows_and_nothing_else() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent = TraceParent::parse(good).unwrap();
        assert_eq!(parent.span_id, 0x00f0_67aa_0ba9_02b7);
        assert_eq!(parent.to_string(), good);
        assert!(
            !TraceParent::parse(&good.replace("-01", "-00"))
                .unwrap()
                .is_sampled()
        );
        // A later version may add fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(TraceParent::parse(later).unwrap().trace_id, parent.trace_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\u{e9}",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_context_nothing_is_stamped() {
        let mut headers = Headers::new();
        headers.insert(TRACEPARENT.into(), "kept".into());
        inject_current(&mut headers);
        assert_eq!(headers.get(TRACEPARENT).map(String::as_str), Some("kept"));
        assert_eq!(current(), None);
    }
}
