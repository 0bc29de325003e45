//! The whole store conformance suite against a real PostgreSQL (see `cqrs_store_postgres::testing`).

cqrs_core::conformance_suite!(optional async || cqrs_store_postgres::testing::fresh_store().await);
