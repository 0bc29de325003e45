//! Group `snapshots`: what a [`SnapshotStore`] keeps.

use std::sync::Arc;

use serde_json::json;

use crate::event::Json;
use crate::store::{Snapshot, SnapshotStore};
use crate::testing::conformance::fixtures::{at, stream};
use crate::version::Version;

/// A snapshot round-trips; a newer one replaces it, an older one does not; each stream and
/// each schema version keeps its own.
pub async fn snapshots_keep_the_newest(store: Arc<dyn SnapshotStore>) {
    let (s, other) = (stream("tally"), stream("tally"));
    assert_eq!(store.load_snapshot(&s, 1).await.expect("load"), None);
    let snap = |version: u64, schema: u16, label: &str| Snapshot {
        stream: s.clone(),
        version: Version::new(version),
        schema_version: schema,
        state: Json::from(json!({ "total": version, "label": label, "name": "✓" })),
        taken_at: at(i64::try_from(version).expect("small")),
    };
    store.save_snapshot(snap(5, 1, "a")).await.expect("save");
    assert_eq!(
        store.load_snapshot(&s, 1).await.expect("load"),
        Some(snap(5, 1, "a")),
        "a snapshot round-trips"
    );
    store
        .save_snapshot(snap(3, 1, "b"))
        .await
        .expect("save older");
    assert_eq!(
        store.load_snapshot(&s, 1).await.expect("load"),
        Some(snap(5, 1, "a")),
        "an older snapshot must not replace a newer one"
    );
    store
        .save_snapshot(snap(5, 1, "c"))
        .await
        .expect("save same version");
    assert_eq!(
        store.load_snapshot(&s, 1).await.expect("load"),
        Some(snap(5, 1, "c")),
        "the same version may be re-snapshotted"
    );
    store
        .save_snapshot(snap(4, 2, "d"))
        .await
        .expect("save another schema");
    assert_eq!(
        store.load_snapshot(&s, 2).await.expect("load"),
        Some(snap(4, 2, "d"))
    );
    assert_eq!(
        store.load_snapshot(&s, 1).await.expect("load"),
        Some(snap(5, 1, "c")),
        "schema versions live side by side"
    );
    store
        .save_snapshot(snap(8, 1, "e"))
        .await
        .expect("save newer");
    assert_eq!(
        store.load_snapshot(&s, 1).await.expect("load"),
        Some(snap(8, 1, "e"))
    );
    assert_eq!(store.load_snapshot(&s, 3).await.expect("load"), None);
    assert_eq!(
        store.load_snapshot(&other, 1).await.expect("load"),
        None,
        "snapshots are per stream"
    );
}
