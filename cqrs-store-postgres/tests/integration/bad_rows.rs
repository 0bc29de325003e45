use std::sync::Arc;

use cqrs_core::Position;
use cqrs_core::testing::stores::{Damage, damaged_rows};

#[tokio::test]
async fn damaged_rows_are_typed_errors_at_their_position_and_the_rest_still_works() {
    let Some(store) = super::store().await else {
        return;
    };
    let pool = store.pool().clone();
    damaged_rows(Arc::new(store), |damage, position: Position| {
        let pool = pool.clone();
        async move {
            let at = i64::try_from(position.get()).unwrap();
            // The payload column is `json`: it holds only JSON, so the damage is a wrong shape.
            let (sql, name) = match damage {
                Damage::Payload => (
                    "UPDATE cqrs.events SET payload = '{\"text\": 42}' WHERE position = $1",
                    "",
                ),
                Damage::Retype(name) => (
                    "UPDATE cqrs.events SET event_type = $2 WHERE position = $1",
                    name,
                ),
                Damage::Metadata => (
                    "UPDATE cqrs.events SET headers = '[1, 2]' WHERE position = $1",
                    "",
                ),
                other => panic!("no damage for {other:?}"),
            };
            let mut query = sqlx::query(sql).bind(at);
            if !name.is_empty() {
                query = query.bind(name);
            }
            let changed = query.execute(&pool).await.unwrap().rows_affected();
            assert_eq!(changed, 1);
        }
    })
    .await;
}
