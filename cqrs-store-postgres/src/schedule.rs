//! Scheduled commands: timeouts and outboxes, claims with leases.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::store::{lease_until, limit_to_i64};
use cqrs_core::{ParkedCommand, ScheduleStore, ScheduledCommand, StoreError};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::error::backend;
use crate::rows::scheduled;
use crate::sql::Sql;
use cqrs_core::store::headers_json;

use crate::store::PostgresEventStore;

#[async_trait]
impl ScheduleStore for PostgresEventStore {
    async fn schedule(&self, commands: Vec<ScheduledCommand>) -> Result<(), StoreError> {
        schedule(&self.inner.sql, &self.inner.pool, &commands).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: chrono::Duration,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let until = lease_until(now, lease);
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.claim_due.clone()))
            .bind(now)
            .bind(limit_to_i64(limit))
            .bind(until)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        let mut claimed = rows.iter().map(scheduled).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|c| (c.due_at, c.command.id));
        Ok(claimed)
    }

    async fn list_scheduled(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ScheduledCommand>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_scheduled.clone()))
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(limit_to_i64(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(scheduled).collect()
    }

    async fn complete_scheduled(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.complete_scheduled.clone()))
            .bind(ids)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        sqlx::query_scalar(AssertSqlSafe(self.inner.sql.next_due.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)
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
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.park.clone()))
            .bind(id)
            .bind(at)
            .bind(reason)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_parked(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedCommand>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_parked.clone()))
            .bind(after.unwrap_or(Uuid::nil()))
            .bind(limit_to_i64(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.iter().map(parked).collect()
    }

    async fn count_parked(&self, up_to: usize) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(self.inner.sql.count_parked.clone()))
            .bind(limit_to_i64(up_to))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(usize::try_from(count).unwrap_or(up_to))
    }

    async fn find_parked(&self, id: Uuid) -> Result<Option<ParkedCommand>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.find_parked.clone()))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(parked).transpose()
    }

    async fn retry_parked(&self, id: Uuid, due_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.retry_parked.clone()))
            .bind(id)
            .bind(due_at)
            .execute(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Reads a parked command: the scheduled columns, `parked_at`, `parked_reason`.
fn parked(row: &sqlx::postgres::PgRow) -> Result<ParkedCommand, StoreError> {
    use sqlx::Row as _;
    Ok(ParkedCommand {
        scheduled: scheduled(row)?,
        parked_at: row.try_get(9).map_err(backend)?,
        reason: row.try_get(10).map_err(backend)?,
    })
}

/// Schedules commands through `executor`; ids already scheduled are left as they are.
pub(crate) async fn schedule<'e, E>(
    sql: &Sql,
    executor: E,
    commands: &[ScheduledCommand],
) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'e>,
{
    if commands.is_empty() {
        return Ok(());
    }
    for s in commands {
        s.validate()?;
    }
    let ids: Vec<Uuid> = commands.iter().map(|s| s.command.id).collect();
    let targets: Vec<&str> = commands.iter().map(|s| s.command.target.as_str()).collect();
    let types: Vec<&str> = commands
        .iter()
        .map(|s| s.command.command_type.as_str())
        .collect();
    let payloads: Vec<&str> = commands
        .iter()
        .map(|s| s.command.payload.as_str())
        .collect();
    let correlations: Vec<Option<Uuid>> =
        commands.iter().map(|s| s.command.correlation_id).collect();
    let causations: Vec<Option<Uuid>> = commands.iter().map(|s| s.command.causation_id).collect();
    let headers: Vec<Option<String>> = commands
        .iter()
        .map(|s| headers_json(&s.command.headers))
        .collect();
    let due: Vec<DateTime<Utc>> = commands.iter().map(|s| s.due_at).collect();
    sqlx::query(AssertSqlSafe(sql.schedule.clone()))
        .bind(&ids)
        .bind(&targets)
        .bind(&types)
        .bind(&payloads)
        .bind(&correlations)
        .bind(&causations)
        .bind(&headers)
        .bind(&due)
        .execute(executor)
        .await
        .map_err(backend)?;
    Ok(())
}
