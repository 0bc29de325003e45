//! PostgreSQL-specific tests, against a real server (see `cqrs_store_postgres::testing`).

/// Damaged rows: typed errors naming the position; everything else still works.
mod bad_rows;
/// Concurrent appends batched into shared transactions, each with its own answer.
mod batching;
/// Connections killed mid-append and mid-projection: nothing partial, nothing doubled.
mod faults;
/// Gap safety: concurrent writers with slow commits under a live subscriber.
mod gaps;
/// Commits in order (bulk copies): set-based, all of a transaction or none, across
/// transactions when a list is long.
mod in_order;
/// LISTEN/NOTIFY across processes, and what happens when the listener drops.
mod listen;
/// A lone writer's one-event appends: every expectation, a record, a duplicate, a conflict.
mod one_event;
/// Read models that change version: built beside the live one, switched, the old one dropped.
mod read_models;
/// Concurrent stream reads sharing queries, each with its own events.
mod reads;
/// Opening: schema names, concurrent migrations, a newer schema refused.
mod schema;
/// Single-leader projections: a second runner takes over when the first is killed.
mod takeover;

/// A store on a fresh database, or `None` (after a loud notice) without PostgreSQL.
async fn store() -> Option<cqrs_store_postgres::PostgresEventStore> {
    cqrs_store_postgres::testing::fresh_store().await
}
