//! The JetStream requests the store is made of: reads answered by a stream's leader, batched
//! direct reads answered by any replica (and bounded by what the leader reported), and
//! publishes single or as atomic batches.

use std::error::Error as _;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use cqrs_core::StoreError;
use futures::StreamExt;

use crate::codec::Raw;

/// Messages read per direct request at most.
pub(crate) const MAX_BATCH: usize = 1024;

/// Messages in one atomic batch at most (the server's limit, ADR-50).
pub(crate) const MAX_ATOMIC: usize = 1000;

/// A client and its JetStream context.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// How long a request may wait for its answer, and a read for a replica to catch up.
    pub(crate) timeout: Duration,
}

/// Where [`Conn::read_range`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// At the bound the leader gave: a consistent cut of a log that only grows.
    Bound,
    /// At the end of what the replica has, past the bound: every row of a table whose rows
    /// are replaced.
    End,
}

/// Why a publish was not stored.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A subject's last sequence was not the one expected (10071).
    WrongLast,
    /// Another publish with an expectation on the same subject is being stored (10164): the
    /// subject is busy, try again.
    Busy,
    /// Anything else, as the store reports it.
    Failed(StoreError),
}

impl Conn {
    /// The last message on `subject` (wildcards allowed) of `stream`, from the stream's leader:
    /// it has every acknowledged write.
    pub(crate) async fn last(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<Raw>, StoreError> {
        let handle = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(StoreError::backend)?;
        match handle.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(Raw {
                sequence: message.sequence,
                subject: message.subject.to_string(),
                headers: message.headers,
                payload: message.payload,
            })),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(StoreError::backend(err)),
        }
    }

    /// Up to `batch` messages of `stream` on `filter`, from sequence `from` on, from one
    /// replica, which may be behind the leader (empty when it has none), and whether that
    /// replica has more after them.
    async fn direct_batch(
        &self,
        stream: &str,
        from: u64,
        filter: &str,
        batch: usize,
    ) -> Result<(Vec<Raw>, bool), StoreError> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(StoreError::backend)?;
        let body = serde_json::json!({ "seq": from, "next_by_subj": filter, "batch": batch });
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                inbox,
                Bytes::from(body.to_string()),
            )
            .await
            .map_err(StoreError::backend)?;
        let mut out = Vec::with_capacity(batch.min(MAX_BATCH));
        loop {
            let Ok(next) = tokio::time::timeout(self.timeout, replies.next()).await else {
                return Err(StoreError::backend(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer to a direct read of {stream} within {:?}",
                        self.timeout
                    ),
                )));
            };
            let Some(message) = next else {
                return Err(StoreError::backend(std::io::Error::other(
                    "the connection closed during a direct read",
                )));
            };
            match message.status {
                None => {}
                // End of the batch, with how many more the replica has.
                Some(status) if status == 204 => {
                    let pending = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Num-Pending"))
                        .and_then(|v| v.as_str().parse::<u64>().ok());
                    return Ok((out, pending != Some(0)));
                }
                // Nothing at all from `from` on.
                Some(status) if status == 404 => return Ok((out, false)),
                Some(status) => {
                    return Err(StoreError::backend(std::io::Error::other(format!(
                        "a direct read of {stream} was answered {status} {}",
                        message.description.unwrap_or_default()
                    ))));
                }
            }
            let headers = message.headers.unwrap_or_default();
            let sequence = headers
                .get(header::NATS_SEQUENCE)
                .and_then(|v| v.as_str().parse().ok());
            let subject = headers.get(header::NATS_SUBJECT).map(|v| v.to_string());
            let (Some(sequence), Some(subject)) = (sequence, subject) else {
                return Err(StoreError::backend(std::io::Error::other(
                    "a direct read's message has no sequence or subject",
                )));
            };
            out.push(Raw {
                sequence,
                subject,
                headers,
                payload: message.payload,
            });
        }
    }

    /// The messages of `stream` on `filter` from `from` on, at most `max` of them: up to
    /// `bound` ([`Until::Bound`]), or up to the end of what the replica has, once it has gone
    /// past `bound` ([`Until::End`]: for streams whose rows are replaced, where the message at
    /// `bound` may be gone, replaced by a later one).
    ///
    /// `bound` is the sequence of a message on `filter` that the stream's leader reported:
    /// whichever replica answers, the read goes on until it has seen that message (or a later
    /// one), waiting for a replica that is behind, so it misses no acknowledged write (ADR
    /// 0012, "Reads"). While it waits it asks the leader again, as the message at `bound` may
    /// have been replaced or have expired since.
    pub(crate) async fn read_range(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        bound: u64,
        max: usize,
        until: Until,
    ) -> Result<Vec<Raw>, StoreError> {
        let mut out = Vec::new();
        let mut next = from.max(1);
        let mut bound = bound;
        let mut waited_since: Option<Instant> = None;
        while out.len() < max && (until == Until::End || next <= bound) {
            let want = (max - out.len()).min(MAX_BATCH);
            let (got, more) = self.direct_batch(stream, next, filter, want).await?;
            if got.is_empty() {
                if next > bound {
                    break;
                }
                // The replica that answered has not stored `bound` yet, or the message there
                // is gone: the leader says which.
                match self.last(stream, filter).await? {
                    Some(last) if last.sequence >= next => bound = bound.min(last.sequence),
                    _ => break,
                }
                let since = *waited_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.timeout {
                    return Err(StoreError::backend(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "a replica of {stream} stayed behind sequence {bound} for {:?}",
                            self.timeout
                        ),
                    )));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            waited_since = None;
            for raw in got {
                if until == Until::Bound && raw.sequence > bound {
                    next = bound + 1;
                    break;
                }
                next = raw.sequence + 1;
                out.push(raw);
            }
            if !more && until == Until::End && next > bound {
                // The replica's last, past the bound.
                break;
            }
        }
        Ok(out)
    }

    /// Every message of a table-like `stream` (one message per subject) on `filter`, as the
    /// leader's last message there bounds it: the rows, in no particular order.
    pub(crate) async fn read_table(
        &self,
        stream: &str,
        filter: &str,
    ) -> Result<Vec<Raw>, StoreError> {
        let Some(last) = self.last(stream, filter).await? else {
            return Ok(Vec::new());
        };
        self.read_range(stream, filter, 1, last.sequence, usize::MAX, Until::End)
            .await
    }

    /// Publishes one message, expecting `subject`'s last sequence where given: its sequence.
    pub(crate) async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, Refused> {
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| Refused::Failed(StoreError::backend(e)))?;
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(err) => Err(refused(err)),
        }
    }

    /// Publishes `messages` as one atomic batch (ADR-50): all stored or none. Returns the
    /// sequence of the last; the batch took the sequences just before it.
    pub(crate) async fn publish_batch(
        &self,
        messages: Vec<(String, HeaderMap, Bytes)>,
    ) -> Result<u64, Refused> {
        let count = messages.len();
        if count == 1 {
            let (subject, headers, payload) = messages.into_iter().next().expect("one message");
            return self.publish(subject, headers, payload).await;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        for (i, (subject, mut headers, payload)) in messages.into_iter().enumerate() {
            headers.insert(header::NATS_BATCH_ID, id.as_str());
            headers.insert(header::NATS_BATCH_SEQUENCE, (i + 1).to_string());
            if i + 1 == count {
                headers.insert(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
                return self.publish(subject, headers, payload).await;
            }
            // The others go without a reply subject: the commit's answer covers them all, and
            // a connection keeps the order of what it sends.
            self.client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| Refused::Failed(StoreError::backend(e)))?;
        }
        unreachable!("a batch of {count} messages ends with its commit")
    }
}

fn refused(err: jetstream::context::PublishError) -> Refused {
    if err.kind() == PublishErrorKind::WrongLastSequence {
        return Refused::WrongLast;
    }
    let code = err
        .source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code);
    match code {
        Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE) => Refused::WrongLast,
        Some(ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT) => Refused::Busy,
        _ => Refused::Failed(StoreError::backend(err)),
    }
}
