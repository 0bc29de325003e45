//! The whole store conformance suite on a 3-node cluster with three replicas (see
//! `cqrs_store_nats::testing`).

cqrs_core::conformance_suite!(optional async || cqrs_store_nats::testing::fresh_store().await);
