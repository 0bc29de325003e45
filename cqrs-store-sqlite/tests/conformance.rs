//! The whole store conformance suite, on a file in a temporary directory and in memory.

async fn on_file() -> cqrs_store_sqlite::SqliteEventStore {
    cqrs_store_sqlite::testing::fresh_store()
        .await
        .expect("the store opens")
}

mod file {
    cqrs_core::conformance_suite!(crate::on_file);
}

mod memory {
    cqrs_core::conformance_suite!(async || {
        cqrs_store_sqlite::SqliteEventStore::open_in_memory()
            .await
            .expect("the store opens")
    });
}

/// The message log reads the same through its correlation index.
mod indexed {
    cqrs_core::conformance_suite!(groups(message_log) async || {
        cqrs_store_sqlite::testing::fresh_store_with(
            cqrs_store_sqlite::SqliteOptions::default().with_correlation_index(true),
        )
        .await
        .expect("the store opens")
    });
}
