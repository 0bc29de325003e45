//! Dynamic consistency boundaries on tag markers (ADR 0012, step 4).
//!
//! Every tagged event is followed in its batch by one marker per tag, on the tag's own subject
//! `{p}.log.t.{tag}`: a message with no payload that says how far back its event is. A query
//! item with tags reads its first tag's markers (an index by tag), then the events they point
//! at, and keeps those that match the whole query. A condition is checked twice: read first
//! (the markers after `after`, each event matched against the query exactly), then held
//! atomically by the batch, which expects each tag subject's last sequence to be the one read,
//! on a check message (`Nats-Expected-Last-Subject-Sequence-Subject`). A tag subject is exact,
//! never a wildcard: the server also refuses the check while another batch writing that very
//! subject is still being stored, which it does not do for a wildcard (server source,
//! `inflight` is keyed by subject), so a commit that could break the condition is either stored
//! before the check (and seen) or after the commit.
//!
//! A condition with an item of types only, or on every event, has no tag to check: it expects
//! the log's last sequence instead (`Nats-Expected-Last-Sequence`, checked against what the
//! leader has in flight too), so any commit in between makes it read and check again.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::store::truncate_to_micros;
use cqrs_core::{
    AppendCondition, Appended, ConditionalCommit, DcbStore, EventQuery, ExpectedVersion, NewEvent,
    Position, RecordedEvent, StoreError, Tag, Version,
};
use futures::future::try_join_all;

use crate::codec::{self, Raw};
use crate::conn::{MAX_ATOMIC, MAX_BATCH, Refused, Until};
use crate::schedule::expecting;
use crate::store::NatsEventStore;
use crate::subject::Names;

/// The header of a tag marker: how many messages back its event is.
const MARKER: &str = "Cqrs-Marker";

/// A message of a batch: subject, headers, payload.
pub(crate) type Message = (String, HeaderMap, Bytes);

/// Pushes `event`'s message at `version` (expecting `expect` on its subject, if given).
pub(crate) fn push_event(
    messages: &mut Vec<Message>,
    subject: &str,
    event: &NewEvent,
    version: Version,
    expect: Option<u64>,
) -> Result<(), StoreError> {
    let (headers, payload) = codec::event_message(event, version)?;
    let headers = match expect {
        Some(sequence) => expecting(headers, sequence),
        None => headers,
    };
    messages.push((subject.to_owned(), headers, payload));
    Ok(())
}

/// Pushes the tag markers of the event at `index` in `messages`. They go after all of a
/// batch's events, so that its events take consecutive positions.
pub(crate) fn push_markers(
    names: &Names,
    messages: &mut Vec<Message>,
    event: &NewEvent,
    index: usize,
) {
    for tag in &event.tags {
        let mut headers = HeaderMap::new();
        headers.insert(MARKER, (messages.len() - index).to_string());
        messages.push((names.tag(tag), headers, Bytes::new()));
    }
}

/// A check message: expects `subject`'s last sequence to be `sequence`, writing nothing there.
pub(crate) fn check(names: &Names, subject: &str, sequence: u64) -> Message {
    let mut headers = expecting(HeaderMap::new(), sequence);
    headers.insert("Nats-Expected-Last-Subject-Sequence-Subject", subject);
    (names.check(), headers, Bytes::new())
}

/// The position of the event `marker` marks.
fn marked(marker: &Raw) -> Result<u64, StoreError> {
    let back: u64 = codec::header(marker, MARKER)?
        .parse()
        .map_err(|e| codec::corrupt(marker, &e))?;
    marker
        .sequence
        .checked_sub(back)
        .ok_or_else(|| codec::corrupt(marker, &"points before the log"))
}

/// How a condition is held at commit.
enum Guard {
    /// Each tag subject at the last sequence read.
    Tags(BTreeMap<String, u64>),
    /// The whole log at the last sequence read.
    Log(u64),
}

impl NatsEventStore {
    /// The event at `position`, from a replica that has it (waiting for one that does not
    /// yet: the marker that named it was read below the leader's bound).
    async fn event_at(&self, position: u64) -> Result<RecordedEvent, StoreError> {
        let names = self.names();
        let raws = self
            .conn()
            .read_range(
                &names.log,
                &names.events(),
                position,
                position,
                1,
                Until::Bound,
            )
            .await?;
        match raws.into_iter().next() {
            Some(raw) if raw.sequence == position => self.decode(raw),
            other => Err(StoreError::Corrupt {
                position: Some(Position::new(position)),
                what: format!(
                    "a tag marker points at position {position}, which holds no event (found {:?})",
                    other.map(|r| r.subject)
                ),
            }),
        }
    }

    /// The events that `markers` point at, from `from` on, in order, without repeats.
    async fn events_of(
        &self,
        markers: &[Raw],
        from: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut positions = BTreeSet::new();
        for marker in markers {
            let position = marked(marker)?;
            if position >= from {
                positions.insert(position);
            }
        }
        try_join_all(positions.into_iter().map(|p| self.event_at(p))).await
    }

    /// Up to `limit` events matching `query` with a position ≥ `from`, reading the first tag's
    /// markers of each item, or the log for an item without tags.
    async fn query(
        &self,
        query: &EventQuery,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some(firsts) = first_tags(query) else {
            return self.query_log(query, from, limit).await;
        };
        let names = self.names();
        let mut found: BTreeMap<u64, RecordedEvent> = BTreeMap::new();
        for tag in firsts {
            let subject = names.tag(&tag);
            let Some(last) = self.conn().last(&names.log, &subject).await? else {
                continue;
            };
            let mut next = from;
            let mut matched = 0;
            while next <= last.sequence && matched < limit {
                // As many markers as events are still wanted: each costs a read of its event.
                let want = (limit - matched).min(MAX_BATCH);
                let markers = self
                    .conn()
                    .read_range(
                        &names.log,
                        &subject,
                        next,
                        last.sequence,
                        want,
                        Until::Bound,
                    )
                    .await?;
                let Some(end) = markers.last().map(|m| m.sequence) else {
                    break;
                };
                next = end + 1;
                for event in self.events_of(&markers, from).await? {
                    if query.matches_event(&event) {
                        matched += 1;
                        found.insert(event.position.get(), event);
                    }
                }
            }
        }
        Ok(found.into_values().take(limit).collect())
    }

    /// [`Self::query`] for a query that reads the log: every event from `from` on, filtered.
    async fn query_log(
        &self,
        query: &EventQuery,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        let mut from = Position::new(from);
        loop {
            let batch = self.scan(from, MAX_BATCH).await?;
            out.extend(batch.events.into_iter().filter(|e| query.matches_event(e)));
            from = batch.next;
            if out.len() >= limit || batch.end {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }

    /// Checks `condition` against what is stored now: the first event that breaks it, or how
    /// to hold it at commit.
    async fn check_condition(
        &self,
        condition: &AppendCondition,
    ) -> Result<Result<Guard, Position>, StoreError> {
        let names = self.names();
        let after = condition.after.map_or(0, Position::get);
        let first_breaking = |events: Vec<RecordedEvent>| {
            events
                .into_iter()
                .find(|e| condition.is_broken_by(e))
                .map(|e| e.position)
        };
        match first_tags(&condition.query) {
            Some(firsts) => {
                let lasts = try_join_all(firsts.iter().map(|tag| {
                    let subject = names.tag(tag);
                    async move {
                        let last = self.conn().last(&names.log, &subject).await?;
                        Ok::<_, StoreError>((subject, last))
                    }
                }))
                .await?;
                // A tag's last marker names the latest event with the tag: markers follow their
                // events, in order. At or before `after`, nothing with the tag came since.
                let mut moved = false;
                for (_, last) in &lasts {
                    if let Some(marker) = last
                        && marked(marker)? > after
                    {
                        moved = true;
                    }
                }
                if moved {
                    let breaking = self.query(&condition.query, after + 1, 1).await?;
                    if let Some(found) = first_breaking(breaking) {
                        return Ok(Err(found));
                    }
                }
                Ok(Ok(Guard::Tags(
                    lasts
                        .into_iter()
                        .map(|(subject, last)| (subject, last.map_or(0, |m| m.sequence)))
                        .collect(),
                )))
            }
            None => {
                let last = self
                    .conn()
                    .last(&names.log, &names.log_subjects())
                    .await?
                    .map_or(0, |raw| raw.sequence);
                if last > after {
                    let breaking = self.query_log(&condition.query, after + 1, 1).await?;
                    if let Some(found) = first_breaking(breaking) {
                        return Ok(Err(found));
                    }
                }
                Ok(Ok(Guard::Log(last)))
            }
        }
    }

    /// One try at `commit`: `Ok(None)` when another writer came in between.
    async fn try_commit_if(
        &self,
        commit: &ConditionalCommit,
    ) -> Result<Option<Vec<Appended>>, StoreError> {
        let names = self.names();
        let subjects: Vec<String> = commit
            .appends
            .iter()
            .map(|a| names.event(&a.stream))
            .collect();
        // Everything the commit depends on, read at once; judged in the contract's order.
        let (recorded, checked, lasts) = futures::try_join!(
            async {
                match &commit.command {
                    Some(command) => self.command_recorded_anywhere(command.command_id).await,
                    None => Ok(false),
                }
            },
            async {
                match &commit.condition {
                    Some(condition) => self.check_condition(condition).await.map(Some),
                    None => Ok(None),
                }
            },
            try_join_all(subjects.iter().map(|s| self.conn().last(&names.log, s))),
        )?;
        if recorded && let Some(command) = &commit.command {
            return Err(StoreError::DuplicateCommand {
                command_id: command.command_id,
            });
        }
        let guard = match (&commit.condition, checked) {
            (Some(condition), Some(checked)) => match checked {
                Ok(guard) => Some(guard),
                Err(found) => {
                    return Err(StoreError::ConditionFailed {
                        after: condition.after,
                        found,
                    });
                }
            },
            _ => None,
        };
        let mut bases = Vec::with_capacity(lasts.len());
        for (append, last) in commit.appends.iter().zip(&lasts) {
            let (sequence, actual) = match last {
                Some(raw) => (raw.sequence, codec::event_version(raw)?),
                None => (0, Version::ZERO),
            };
            if !append.expected.matches(actual) {
                return Err(StoreError::Conflict {
                    stream: append.stream.clone(),
                    expected: append.expected,
                    actual,
                });
            }
            bases.push((sequence, actual));
        }

        let mut messages: Vec<Message> = Vec::new();
        if let Some(Guard::Tags(lasts)) = &guard {
            for (subject, last) in lasts {
                messages.push(check(names, subject, *last));
            }
        }
        for ((append, subject), (sequence, _)) in commit.appends.iter().zip(&subjects).zip(&bases) {
            if append.events.is_empty() && !matches!(append.expected, ExpectedVersion::Any) {
                messages.push(check(names, subject, *sequence));
            }
        }
        // Where each stream's last event lands in the batch.
        let mut ends: Vec<Option<usize>> = Vec::with_capacity(commit.appends.len());
        let mut versions = Vec::with_capacity(commit.appends.len());
        let mut tagged: Vec<(&NewEvent, usize)> = Vec::new();
        for ((append, subject), (sequence, actual)) in
            commit.appends.iter().zip(&subjects).zip(&bases)
        {
            let mut version = *actual;
            let mut end = None;
            for (i, event) in append.events.iter().enumerate() {
                version = version.next();
                end = Some(messages.len());
                if !event.tags.is_empty() {
                    tagged.push((event, messages.len()));
                }
                push_event(
                    &mut messages,
                    subject,
                    event,
                    version,
                    (i == 0).then_some(*sequence),
                )?;
            }
            ends.push(end);
            versions.push(version);
        }
        for (event, index) in tagged {
            push_markers(names, &mut messages, event, index);
        }
        if let Some(command) = &commit.command {
            let (headers, payload) = codec::command_message(command)?;
            messages.push((
                names.command(command.command_id),
                expecting(headers, 0),
                payload,
            ));
        }
        if messages.len() > MAX_ATOMIC {
            return Err(StoreError::Invalid(format!(
                "a conditional commit of {} messages (events, tag markers, checks, record) is \
                 more than the {MAX_ATOMIC} of one atomic batch",
                messages.len()
            )));
        }
        if let Some(Guard::Log(last)) = &guard {
            // The whole log as read: any commit in between refuses this one.
            messages[0].1.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                last.to_string(),
            );
        }
        let count = messages.len() as u64;
        match self.conn().publish_batch(messages).await {
            Ok(last) => {
                let first = last + 1 - count;
                Ok(Some(
                    ends.iter()
                        .zip(versions)
                        .map(|(end, version)| Appended {
                            version,
                            position: end.map(|i| Position::new(first + i as u64)),
                        })
                        .collect(),
                ))
            }
            Err(Refused::WrongLast) => Ok(None),
            Err(Refused::Busy) => {
                // Let the batch being stored finish: until it has, the check is refused again.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                Ok(None)
            }
            Err(Refused::Failed(err)) => Err(err),
        }
    }
}

/// The first tag of each item, or `None` when an item has no tag (or the query is every
/// event): then the log is read.
fn first_tags(query: &EventQuery) -> Option<BTreeSet<Tag>> {
    let items = query.alternatives()?;
    items
        .iter()
        .map(|item| item.tags.first().cloned())
        .collect::<Option<BTreeSet<Tag>>>()
}

#[async_trait]
impl DcbStore for NatsEventStore {
    async fn read_query(
        &self,
        query: &EventQuery,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        query.validate()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query(query, from.get().max(1), limit).await
    }

    async fn commit_if(&self, mut commit: ConditionalCommit) -> Result<Vec<Appended>, StoreError> {
        commit.validate()?;
        for append in &mut commit.appends {
            for event in &mut append.events {
                event.metadata.recorded_at = truncate_to_micros(event.metadata.recorded_at);
            }
        }
        if let Some(command) = &mut commit.command {
            command.recorded_at = truncate_to_micros(command.recorded_at);
        }
        let started = std::time::Instant::now();
        loop {
            if let Some(appended) = self.try_commit_if(&commit).await? {
                self.notify();
                return Ok(appended);
            }
            if started.elapsed() > self.conn().timeout {
                return Err(StoreError::backend(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the streams or the condition's tags kept changing for {:?}: the \
                         conditional commit was not stored",
                        self.conn().timeout
                    ),
                )));
            }
        }
    }
}
