//! The whole store conformance suite against a real PostgreSQL (see `cqrs_store_postgres::testing`).

cqrs_core::conformance_suite!(optional async || cqrs_store_postgres::testing::fresh_store().await);

/// The message log reads the same through its correlation index.
mod indexed {
    cqrs_core::conformance_suite!(groups(message_log) optional async || {
        cqrs_store_postgres::testing::fresh_store_with(
            cqrs_store_postgres::PostgresOptions::default().with_correlation_index(true),
        )
        .await
    });
}
