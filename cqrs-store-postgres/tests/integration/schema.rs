use cqrs_core::{
    EventReader, EventStore, ExpectedVersion, Json, NewEvent, Position, StoreError, StreamId,
};
use cqrs_store_postgres::testing::{Durability, server};
use cqrs_store_postgres::{PostgresEventStore, PostgresOptions};

#[tokio::test]
async fn stores_in_two_schemas_of_one_database_are_independent() {
    let Some(server) = server(Durability::Fast) else {
        return;
    };
    let url = server.fresh_database().await;
    let billing =
        PostgresEventStore::connect_with(&url, PostgresOptions::default().with_schema("billing"))
            .await
            .unwrap();
    let shipping =
        PostgresEventStore::connect_with(&url, PostgresOptions::default().with_schema("shipping"))
            .await
            .unwrap();
    assert_eq!(billing.schema(), "billing");
    let appended = billing
        .append(
            &StreamId::new("invoice-1").unwrap(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("e", Json::null())],
        )
        .await
        .unwrap();
    // Other tests' transactions on this server may hold the global log back for a moment.
    while billing.head().await.unwrap() < appended.position.unwrap() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        billing.read_all(Position::START, 10).await.unwrap().len(),
        1
    );
    assert!(
        shipping
            .read_all(Position::START, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn processes_starting_together_migrate_once() {
    let Some(server) = server(Durability::Fast) else {
        return;
    };
    let url = server.fresh_database().await;
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresEventStore::connect(&url).await })
        })
        .collect();
    for open in opens {
        open.await.unwrap().expect("every process opens the store");
    }
    let store = PostgresEventStore::connect(&url).await.unwrap();
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM cqrs.cqrs_schema ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        versions,
        [1, 2, 3, 4, 5, 6, 7],
        "each migration is recorded once"
    );
    // Stream names compare byte by byte whatever the database's locale: a category's streams
    // are one range of the index (`list_streams`).
    let collation: Option<String> = sqlx::query_scalar(
        "SELECT collation_name FROM information_schema.columns \
         WHERE table_schema = 'cqrs' AND table_name = 'events' AND column_name = 'stream'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(collation.as_deref(), Some("C"));
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused_and_a_bad_name_is_invalid() {
    let Some(server) = server(Durability::Fast) else {
        return;
    };
    let url = server.fresh_database().await;
    let store = PostgresEventStore::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO cqrs.cqrs_schema (version) VALUES (99)")
        .execute(store.pool())
        .await
        .unwrap();
    match PostgresEventStore::connect(&url).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (99, 7))
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    for bad in ["Bad", "drop table", "1x", ""] {
        let err =
            PostgresEventStore::connect_with(&url, PostgresOptions::default().with_schema(bad))
                .await
                .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn synchronous_commit_is_set_on_the_stores_connections() {
    let Some(server) = server(Durability::Durable) else {
        return;
    };
    let url = server.fresh_database().await;
    let setting = |store: PostgresEventStore| async move {
        let mut shown = Vec::new();
        // Every connection the pool opens, not only the first.
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = store.pool().acquire().await.unwrap();
            let value: String = cqrs_store_postgres::sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            shown.push(value);
            held.push(conn);
        }
        shown
    };
    let relaxed = PostgresEventStore::connect_with(
        &url,
        PostgresOptions::default()
            .with_synchronous_commit(cqrs_store_postgres::SynchronousCommit::Off),
    )
    .await
    .unwrap();
    assert_eq!(setting(relaxed).await, ["off", "off", "off"]);
    let default = PostgresEventStore::connect(&url).await.unwrap();
    assert_eq!(setting(default).await, ["on", "on", "on"], "the server's");
}

#[tokio::test]
async fn the_correlation_index_is_an_option_made_once_by_processes_starting_together() {
    let Some(server) = server(Durability::Fast) else {
        return;
    };
    let url = server.fresh_database().await;
    let indexed = PostgresOptions::default().with_correlation_index(true);
    let indexes = async |store: &PostgresEventStore| -> Vec<String> {
        sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'cqrs' \
             AND indexname LIKE '%correlation' ORDER BY indexname",
        )
        .fetch_all(store.pool())
        .await
        .unwrap()
    };
    let plain = PostgresEventStore::connect(&url).await.unwrap();
    assert!(indexes(&plain).await.is_empty(), "off by default");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (url, options) = (url.clone(), indexed.clone());
            tokio::spawn(async move { PostgresEventStore::connect_with(&url, options).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("every process opens the store"));
    }
    assert_eq!(
        indexes(&stores[0]).await,
        ["commands_correlation", "events_correlation"]
    );
    let mut tx = stores[0].pool().begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT position FROM cqrs.events WHERE correlation_id = ANY($1) \
         ORDER BY recorded_at, position LIMIT 100",
    )
    .bind(vec![uuid::Uuid::new_v4()])
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert!(
        plan.iter().any(|line| line.contains("events_correlation")),
        "{plan:?}"
    );
    drop(tx);
    drop(stores);
    let plain = PostgresEventStore::connect(&url).await.unwrap();
    assert_eq!(
        indexes(&plain).await.len(),
        2,
        "a process without the option leaves it for those that want it"
    );
}
