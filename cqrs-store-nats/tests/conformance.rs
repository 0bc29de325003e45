//! The store conformance suite's groups for what the NATS store implements so far, on a
//! 3-node cluster with three replicas (see `cqrs_store_nats::testing`).

cqrs_core::conformance_suite!(
    groups(events, snapshots, checkpoints, message_log)
    optional async || cqrs_store_nats::testing::fresh_store().await
);
