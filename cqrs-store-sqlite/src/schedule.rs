//! Scheduled commands: timeouts and outboxes, claims with leases.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::{lease_until, limit_to_i64};
use cqrs_core::{ParkedCommand, ScheduleStore, ScheduledCommand, StoreError};
use rusqlite::{OptionalExtension, params};
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
        self.read(move |conn| {
            page_in_id_order(
                conn,
                &format!(
                    "SELECT {SCHEDULED_COLUMNS} FROM cqrs_scheduled WHERE id > ?1 AND parked_at IS NULL \
                     ORDER BY id LIMIT ?2 + 0"
                ),
                after,
                limit,
                scheduled,
            )
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
            // Parked rows sort last in the index: the first row is the answer.
            let next: Option<i64> = conn
                .query_row(
                    "SELECT available_at FROM cqrs_scheduled WHERE parked_at IS NULL \
                     ORDER BY available_at LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            next.map(|us| from_micros(us, None)).transpose()
        })
        .await
    }

    fn keeps_dead_letters(&self) -> bool {
        true
    }

    async fn park(
        &self,
        id: Uuid,
        attempts: u32,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let reason = reason.to_owned();
        self.inner
            .writer
            .write(false, move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE cqrs_scheduled SET parked_at = ?2, parked_reason = ?3, available_at = ?4 \
                         WHERE id = ?1 AND parked_at IS NULL AND attempts = ?5",
                    )
                    .map_err(backend)?
                    .execute(params![
                        id.as_bytes().as_slice(),
                        micros(at),
                        reason,
                        PARKED,
                        i64::from(attempts)
                    ])
                    .map_err(backend)?;
                Ok(changed > 0)
            })
            .await
    }

    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedCommand>, StoreError> {
        self.read(move |conn| {
            page_in_id_order(
                conn,
                &format!(
                    "SELECT {SCHEDULED_COLUMNS}, parked_at, parked_reason FROM cqrs_scheduled \
                     WHERE id > ?1 AND parked_at IS NOT NULL ORDER BY id LIMIT ?2 + 0"
                ),
                after,
                limit,
                parked,
            )
        })
        .await
    }

    async fn count_parked(&self, up_to: usize) -> Result<usize, StoreError> {
        self.read(move |conn| {
            // Parked rows are the last in the `available_at` index: a range, not a scan.
            let count: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM (SELECT 1 FROM cqrs_scheduled \
                     WHERE available_at = ?1 AND parked_at IS NOT NULL LIMIT ?2 + 0)",
                )
                .map_err(backend)?
                .query_row(params![PARKED, limit_to_i64(up_to)], |row| row.get(0))
                .map_err(backend)?;
            Ok(usize::try_from(count).unwrap_or(up_to))
        })
        .await
    }

    async fn find_parked(&self, id: Uuid) -> Result<Option<ParkedCommand>, StoreError> {
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULED_COLUMNS}, parked_at, parked_reason FROM cqrs_scheduled \
                     WHERE id = ?1 AND parked_at IS NOT NULL"
                ))
                .map_err(backend)?;
            let mut rows = select
                .query(params![id.as_bytes().as_slice()])
                .map_err(backend)?;
            rows.next().map_err(backend)?.map(parked).transpose()
        })
        .await
    }

    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner
            .writer
            .write(false, move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE cqrs_scheduled SET parked_at = NULL, parked_reason = NULL, due_at = ?2, \
                         available_at = ?2, attempts = 0 WHERE id = ?1 AND parked_at IS NOT NULL",
                    )
                    .map_err(backend)?
                    .execute(params![id.as_bytes().as_slice(), micros(due_at)])
                    .map_err(backend)?;
                Ok(changed > 0)
            })
            .await
    }
}

/// The rows `sql` selects (`?1`: after this id, `?2`: at most this many), read by `read`.
fn page_in_id_order<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    after: Option<Uuid>,
    limit: usize,
    read: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let after = after.unwrap_or(Uuid::nil());
    let mut select = conn.prepare_cached(sql).map_err(backend)?;
    let mut rows = select
        .query(params![after.as_bytes().as_slice(), limit_to_i64(limit)])
        .map_err(backend)?;
    let mut all = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        all.push(read(row)?);
    }
    Ok(all)
}

/// The `available_at` of a parked command, later than any claim's `now`: the last microsecond
/// of year 9999, a time every reader of the column can still decode (a build from before dead
/// letters, during a rolling upgrade, reads it as a due time far away).
const PARKED: i64 = 253_402_300_799_999_999;

/// Reads a parked command selected with [`SCHEDULED_COLUMNS`], `parked_at`, `parked_reason`.
fn parked(row: &rusqlite::Row<'_>) -> Result<ParkedCommand, StoreError> {
    Ok(ParkedCommand {
        scheduled: scheduled(row)?,
        parked_at: from_micros(row.get(9).map_err(backend)?, None)?,
        reason: row.get(10).map_err(backend)?,
    })
}
