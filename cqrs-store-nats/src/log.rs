//! The message log: command records beside the events, read in log order.

use async_trait::async_trait;
use cqrs_core::store::log_page;
use cqrs_core::{CommandRecord, LogEntry, LogQuery, MessageKind, MessageLog, StoreError};
use uuid::Uuid;

use crate::codec;
use crate::store::NatsEventStore;

/// Entries gathered before a query sorts and cuts them to its limit, per limit.
const KEEP_FACTOR: usize = 4;

#[async_trait]
impl MessageLog for NatsEventStore {
    async fn find_command(&self, id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
        let names = self.names();
        match self.conn().last(&names.log, &names.command(id)).await? {
            Some(raw) => codec::decode_command(&raw, id).map(Some),
            None => Ok(None),
        }
    }

    /// Reads the log through, up to its last message when the query began: the log has no
    /// index by type, correlation id or time (ADR 0012).
    async fn query_log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let names = self.names();
        let [events, commands] = names.events_and_commands();
        let filter = match query.kind {
            Some(MessageKind::Event) => events,
            Some(MessageKind::Command) => commands,
            None => names.log_subjects(),
        };
        let Some(last) = self.conn().last(&names.log, &filter).await? else {
            return Ok(Vec::new());
        };
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut from = 1;
        while from <= last.sequence {
            let raws = self
                .conn()
                .read_range(
                    &names.log,
                    &filter,
                    from,
                    last.sequence,
                    4 * crate::conn::MAX_BATCH,
                )
                .await?;
            let Some(end) = raws.last().map(|r| r.sequence) else {
                break;
            };
            from = end + 1;
            for raw in raws {
                let entry = if names.is_command(&raw.subject) {
                    let id = codec::command_id_of(&raw)?;
                    LogEntry::command(raw.sequence, codec::decode_command(&raw, id)?)
                } else if let Some(stream) = names.stream_of(&raw.subject) {
                    LogEntry::event(codec::decode_event(raw, stream)?)
                } else {
                    // A version check of a commit without events: no message of the log.
                    continue;
                };
                let (stream, correlation) = match &entry.message {
                    cqrs_core::LoggedMessage::Command(c) => (&c.target, c.correlation_id),
                    cqrs_core::LoggedMessage::Event(e) => (&e.stream, e.metadata.correlation_id),
                };
                if query.matches(&entry.cursor, entry.message_type(), stream, correlation) {
                    entries.push(entry);
                }
            }
            if entries.len() > KEEP_FACTOR * query.limit {
                entries = log_page(query, entries);
            }
        }
        Ok(log_page(query, entries))
    }
}
