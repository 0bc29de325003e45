use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

use crate::event::StreamId;
use crate::store::{EventStore, StoreError};
use crate::testing::conformance::fixtures::{event, n_of, run_model_check, settle};
use crate::version::{ExpectedVersion, Version};

const STREAMS: usize = 3;

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    /// The model's version plus this offset (so right, stale and ahead all occur).
    Exact(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expect: Expect,
        count: u64,
    },
    ReadStream {
        stream: usize,
        from: u64,
    },
    ReadAll {
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        (-1i64..=1).prop_map(Expect::Exact)
    ];
    prop_oneof![
        4 => (0..STREAMS, expect, 0u64..4).prop_map(|(stream, expect, count)| Op::Append { stream, expect, count }),
        1 => (0..STREAMS, 0u64..6).prop_map(|(stream, from)| Op::ReadStream { stream, from }),
        1 => (1usize..12).prop_map(|limit| Op::ReadAll { limit }),
    ]
}

/// Random sequences of appends (right, stale, ahead, `Any`, `NoStream`, empty) and reads
/// agree with a plain model: a list of events per stream and one global list.
///
/// Runs `PROPTEST_CASES` cases (32 by default) against the one store, each on fresh streams.
pub async fn model_check(store: Arc<dyn EventStore>) {
    run_model_check(proptest::collection::vec(op(), 1..40), move |ops| {
        check(Arc::clone(&store), ops)
    })
    .await;
}

async fn check(store: Arc<dyn EventStore>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let case = Uuid::new_v4().simple().to_string();
    let streams: Vec<StreamId> = (0..STREAMS)
        .map(|i| StreamId::new(format!("model{i}-{case}")).expect("valid"))
        .collect();
    let start = store.head().await.map_err(fail)?;
    let mut model: Vec<Vec<u64>> = vec![Vec::new(); STREAMS];
    let mut global: Vec<(usize, u64)> = Vec::new();
    let mut next_n = 0u64;
    for op in ops {
        match op {
            Op::Append {
                stream,
                expect,
                count,
            } => {
                let current = model[stream].len() as u64;
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::Exact(delta) => {
                        ExpectedVersion::Exact(Version::new(current.saturating_add_signed(delta)))
                    }
                };
                let ns: Vec<u64> = (0..count).map(|i| next_n + i).collect();
                let batch = ns.iter().map(|n| event("model.event", *n)).collect();
                let result = store.append(&streams[stream], expected, batch).await;
                if expected.matches(Version::new(current)) {
                    let appended = result.map_err(|e| {
                        fail(format!(
                            "append at {expected} on version {current} failed: {e}"
                        ))
                    })?;
                    settle(&*store, appended.position).await;
                    prop_assert_eq!(appended.version, Version::new(current + count));
                    prop_assert_eq!(appended.position.is_some(), count > 0);
                    next_n += count;
                    model[stream].extend(&ns);
                    global.extend(ns.iter().map(|n| (stream, *n)));
                } else {
                    match result {
                        Err(StoreError::Conflict { actual, .. }) => {
                            prop_assert_eq!(actual, Version::new(current))
                        }
                        other => {
                            return Err(fail(format!(
                                "append at {expected} on version {current} gave {other:?}"
                            )));
                        }
                    }
                }
            }
            Op::ReadStream { stream, from } => {
                let read = store
                    .read_stream(&streams[stream], Version::new(from))
                    .await
                    .map_err(fail)?;
                let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
                let expected: Vec<u64> = model[stream].iter().skip(skip).copied().collect();
                prop_assert_eq!(read.iter().map(n_of).collect::<Vec<_>>(), expected);
                let versions: Vec<u64> = read.iter().map(|e| e.version.get()).collect();
                let expected_versions: Vec<u64> =
                    (from.max(1)..=model[stream].len() as u64).collect();
                prop_assert_eq!(versions, expected_versions);
            }
            Op::ReadAll { limit } => {
                let read = store.read_all(start.next(), limit).await.map_err(fail)?;
                let got: Vec<(usize, u64)> = read
                    .iter()
                    .map(|e| {
                        (
                            streams
                                .iter()
                                .position(|s| *s == e.stream)
                                .unwrap_or(usize::MAX),
                            n_of(e),
                        )
                    })
                    .collect();
                let expected: Vec<(usize, u64)> = global.iter().take(limit).copied().collect();
                prop_assert_eq!(got, expected);
                prop_assert!(read.windows(2).all(|w| w[0].position < w[1].position));
                prop_assert!(
                    read.first().is_none_or(|e| e.position > start),
                    "read_all went before its start"
                );
            }
        }
    }
    let head = store.head().await.map_err(fail)?;
    prop_assert!(head >= start, "head went backwards");
    prop_assert_eq!(global.is_empty(), head == start);
    Ok(())
}

fn fail(err: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(err.to_string())
}
