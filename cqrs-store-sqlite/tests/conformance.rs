//! The whole store conformance suite, on a file in a temporary directory and in memory.

async fn on_file() -> cqrs_store_sqlite::SqliteEventStore {
    // The directory is leaked for the test's lifetime; the OS temp dir is cleaned by the test runner's host.
    let dir = tempfile::tempdir().expect("a temporary directory").keep();
    cqrs_store_sqlite::SqliteEventStore::open(dir.join("events.db"))
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
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        cqrs_store_sqlite::SqliteEventStore::open_with(
            dir.join("events.db"),
            cqrs_store_sqlite::SqliteOptions::default().with_correlation_index(true),
        )
        .await
        .expect("the store opens")
    });
}
