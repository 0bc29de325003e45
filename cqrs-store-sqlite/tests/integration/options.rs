use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};

/// Reads `pragma` on a read connection and on the writer's.
async fn pragma(store: &SqliteEventStore, pragma: &'static str) -> (i64, i64) {
    let sql = format!("PRAGMA {pragma}");
    let read = {
        let sql = sql.clone();
        store
            .query(move |conn| conn.query_row(&sql, [], |r| r.get(0)))
            .await
            .unwrap()
    };
    let written = store
        .write(move |conn| conn.query_row(&sql, [], |r| r.get(0)))
        .await
        .unwrap();
    (read, written)
}

#[tokio::test]
async fn tuning_options_reach_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::default()
        .with_durability(Durability::Normal)
        .with_cache_size(1_234)
        .with_mmap_size(1 << 20);
    let store = SqliteEventStore::open_with(dir.path().join("tuned.db"), options)
        .await
        .unwrap();
    assert_eq!(pragma(&store, "cache_size").await, (-1_234, -1_234));
    assert_eq!(pragma(&store, "mmap_size").await, (1 << 20, 1 << 20));
    assert_eq!(pragma(&store, "synchronous").await, (1, 1), "NORMAL");

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("default.db"))
        .await
        .unwrap();
    assert_eq!(pragma(&store, "cache_size").await, (-16_000, -16_000));
    assert_eq!(pragma(&store, "mmap_size").await, (0, 0));
    assert_eq!(pragma(&store, "synchronous").await, (2, 2), "FULL");
}
