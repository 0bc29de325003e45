use std::sync::Arc;

use cqrs_core::Position;
use cqrs_core::testing::stores::{Damage, damaged_rows};
use cqrs_store_sqlite::{SqliteEventStore, rusqlite};

#[tokio::test]
async fn damaged_rows_are_typed_errors_at_their_position_and_the_rest_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventStore::open(dir.path().join("events.db"))
        .await
        .unwrap();
    let path = store.path().unwrap().to_owned();
    damaged_rows(Arc::new(store), |damage, position: Position| {
        // Behind the store's back, on a connection of its own, as a faulty tool or disk would.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let at = i64::try_from(position.get()).unwrap();
        let changed = match damage {
            Damage::Payload => conn.execute(
                "UPDATE cqrs_events SET payload = '{\"text\": tru' WHERE position = ?1",
                [at],
            ),
            Damage::Retype(name) => conn.execute(
                "UPDATE cqrs_events SET event_type = ?2 WHERE position = ?1",
                (at, name),
            ),
            // An event id that is not 16 bytes, and headers that are not JSON.
            Damage::Metadata => conn.execute(
                "UPDATE cqrs_events SET event_id = x'0102', headers = 'not json' WHERE position = ?1",
                [at],
            ),
            other => panic!("no damage for {other:?}"),
        };
        assert_eq!(changed.unwrap(), 1);
        std::future::ready(())
    })
    .await;
}
