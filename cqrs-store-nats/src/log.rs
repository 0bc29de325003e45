//! The message log: command records beside the events, read in log order.

use async_trait::async_trait;
use cqrs_core::store::log_page;
use cqrs_core::{
    CommandRecord, LogEntry, LogQuery, LoggedMessage, MessageKind, MessageLog, StoreError,
};
use uuid::Uuid;

use crate::codec;
use crate::conn::{MAX_BATCH, Until};
use crate::store::NatsEventStore;

/// Entries gathered before a query sorts and cuts them to its limit, per limit.
const KEEP_FACTOR: usize = 4;

/// Added to the state stream's sequence of a process manager's command record to make its
/// [`LogCursor::sequence`](cqrs_core::LogCursor): unique beside the log's sequences, and after
/// them at equal times.
const STATE_COMMANDS: u64 = 1 << 62;

#[async_trait]
impl MessageLog for NatsEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        match self.command_message(id).await? {
            Some(raw) => codec::decode_command(&raw, id).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the log through, up to its last message when the query began, and the process
    /// managers' command records in the state stream: the log has no index by type,
    /// correlation id or time (ADR 0012).
    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let names = self.names();
        let [events, commands] = names.events_and_commands();
        let log_filter = match query.kind {
            Some(MessageKind::Event) => events,
            Some(MessageKind::Command) => commands,
            None => names.log_subjects(),
        };
        let mut entries: Vec<LogEntry> = Vec::new();
        self.gather(
            query,
            &names.log,
            &log_filter,
            Until::Bound,
            0,
            &mut entries,
        )
        .await?;
        if query.kind != Some(MessageKind::Event) {
            let filter = names.handled_all();
            self.gather(
                query,
                &names.state,
                &filter,
                Until::End,
                STATE_COMMANDS,
                &mut entries,
            )
            .await?;
        }
        Ok(log_page(query, entries))
    }
}

impl NatsEventStore {
    /// Adds the entries of `stream` on `filter` that match `query` to `entries`, keeping no
    /// more than a few pages of the best.
    async fn gather(
        &self,
        query: &LogQuery,
        stream: &str,
        filter: &str,
        until: Until,
        offset: u64,
        entries: &mut Vec<LogEntry>,
    ) -> Result<(), StoreError> {
        let names = self.names();
        let Some(last) = self.conn().last(stream, filter).await? else {
            return Ok(());
        };
        let mut from = 1;
        loop {
            let raws = self
                .conn()
                .read_range(stream, filter, from, last.sequence, 4 * MAX_BATCH, until)
                .await?;
            let Some(end) = raws.last().map(|r| r.sequence) else {
                break;
            };
            from = end + 1;
            for raw in raws {
                let entry = if names.is_command(&raw.subject) {
                    let id = codec::command_id_of(&raw)?;
                    LogEntry::command(raw.sequence + offset, codec::decode_command(&raw, id)?)
                } else if let Some(stream) = names.stream_of(&raw.subject) {
                    LogEntry::event(codec::decode_event(raw, stream)?)
                } else {
                    // A version check of a commit without events: no message of the log.
                    continue;
                };
                let (stream, correlation) = match &entry.message {
                    LoggedMessage::Command(c) => (&c.target, c.correlation_id),
                    LoggedMessage::Event(e) => (&e.stream, e.metadata.correlation_id),
                };
                if query.matches(&entry.cursor, entry.message_type(), stream, correlation) {
                    entries.push(entry);
                }
            }
            if entries.len() > KEEP_FACTOR * query.limit {
                *entries = log_page(query, std::mem::take(entries));
            }
            if until == Until::Bound && from > last.sequence {
                break;
            }
        }
        Ok(())
    }
}
