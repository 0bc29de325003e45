//! Scheduled commands: timeouts and outboxes, claims with leases.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::{lease_until, limit_to_i64};
use cqrs_core::{ScheduleStore, ScheduledCommand, StoreError};
use rusqlite::params;
use uuid::Uuid;

use crate::error::{backend, from_micros, micros};
use crate::rows::{SCHEDULED_COLUMNS, delete_scheduled, insert_scheduled, scheduled};
use crate::store::SqliteEventStore;

#[async_trait]
impl ScheduleStore for SqliteEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(false, move |conn| insert_scheduled(conn, &commands))
            .await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let limit = limit_to_i64(limit);
        self.inner
            .writer
            .write(false, move |conn| {
                let mut select = conn
                    .prepare_cached(&format!(
                        "SELECT {SCHEDULED_COLUMNS} FROM cqrs_scheduled WHERE available_at <= ?1 \
                         ORDER BY due_at, id LIMIT ?2 + 0"
                    ))
                    .map_err(backend)?;
                let mut rows = select.query(params![micros(now), limit]).map_err(backend)?;
                let mut claimed = Vec::new();
                while let Some(row) = rows.next().map_err(backend)? {
                    claimed.push(scheduled(row)?);
                }
                let until = micros(lease_until(now, lease));
                let mut claim = conn
                    .prepare_cached("UPDATE cqrs_scheduled SET available_at = ?1, attempts = attempts + 1 WHERE id = ?2")
                    .map_err(backend)?;
                for c in &mut claimed {
                    claim.execute(params![until, c.command.id.as_bytes().as_slice()]).map_err(backend)?;
                    c.attempts = c.attempts.saturating_add(1);
                }
                Ok(claimed)
            })
            .await
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let limit = limit_to_i64(limit);
        self.read(move |conn| {
            let after = after.unwrap_or(Uuid::nil());
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULED_COLUMNS} FROM cqrs_scheduled WHERE id > ?1 ORDER BY id LIMIT ?2 + 0"
                ))
                .map_err(backend)?;
            let mut rows = select
                .query(params![after.as_bytes().as_slice(), limit])
                .map_err(backend)?;
            let mut all = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                all.push(scheduled(row)?);
            }
            Ok(all)
        })
        .await
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        self.inner
            .writer
            .write(false, move |conn| delete_scheduled(conn, &ids))
            .await
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.read(|conn| {
            let next: Option<i64> = conn
                .query_row("SELECT min(available_at) FROM cqrs_scheduled", [], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            next.map(|us| from_micros(us, None)).transpose()
        })
        .await
    }
}
