use std::sync::Arc;

use serde_json::json;

use crate::aggregate::Aggregate;
use crate::event::Json;
use crate::repository::{Repository, SnapshotPolicy};
use crate::store::{Snapshot, Storage};
use crate::testing::conformance::fixtures::{Tally, TallyCommand, at, stream};
use crate::version::{Position, Version};

/// A snapshot round-trips; a newer one replaces it, an older one does not; each stream and
/// each schema version keeps its own.
pub async fn snapshots_keep_the_newest(store: Arc<dyn Storage>) {
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

/// A checkpoint loads as `None` until saved, keeps the last save, is independent per name, and
/// can be deleted.
pub async fn checkpoints_round_trip(store: Arc<dyn Storage>) {
    assert_eq!(store.load_checkpoint("seats@v1").await.expect("load"), None);
    store
        .save_checkpoint("seats@v1", Position::new(10))
        .await
        .expect("save");
    store
        .save_checkpoint("orders@v1", Position::new(3))
        .await
        .expect("save");
    store
        .save_checkpoint("seats@v1", Position::new(42))
        .await
        .expect("overwrite");
    assert_eq!(
        store.load_checkpoint("seats@v1").await.expect("load"),
        Some(Position::new(42))
    );
    assert_eq!(
        store.load_checkpoint("orders@v1").await.expect("load"),
        Some(Position::new(3))
    );
    store.delete_checkpoint("seats@v1").await.expect("delete");
    assert_eq!(store.load_checkpoint("seats@v1").await.expect("load"), None);
    store
        .delete_checkpoint("never-saved")
        .await
        .expect("deleting a missing checkpoint is fine");
    assert_eq!(
        store.load_checkpoint("orders@v1").await.expect("load"),
        Some(Position::new(3))
    );
}

/// A repository with a snapshot policy saves snapshots and loads through them to the same
/// state, and ignores a snapshot of another schema version.
pub async fn repository_loads_through_snapshots(store: Arc<dyn Storage>) {
    let tallies =
        Repository::<Tally>::new(Arc::clone(&store)).with_snapshots(SnapshotPolicy::every(5));
    let id = format!("snap{}", uuid::Uuid::new_v4().simple());
    tallies
        .handle(&id, TallyCommand::Open { limit: 1_000 })
        .await
        .expect("open");
    for amount in 1..=12 {
        tallies
            .handle(&id, TallyCommand::Add { amount })
            .await
            .expect("add");
    }
    let s = <Tally as Aggregate>::stream_id(&id).expect("stream");
    let snapshot = store
        .load_snapshot(&s, Tally::SNAPSHOT_VERSION)
        .await
        .expect("load")
        .expect("a snapshot was taken");
    assert_eq!(
        snapshot.version,
        Version::new(10),
        "every 5 events: the last snapshot is at 10"
    );
    let loaded = tallies.load(&id).await.expect("load");
    assert_eq!(loaded.version, Version::new(13));
    assert_eq!(
        loaded.state,
        Some(Tally {
            total: 78,
            limit: 1_000
        })
    );

    // A snapshot of another schema (a newer build's, say) is ignored, not misread.
    store
        .save_snapshot(Snapshot {
            stream: s.clone(),
            version: Version::new(12),
            schema_version: 99,
            state: Json::from(json!({ "total": "garbage" })),
            taken_at: at(0),
        })
        .await
        .expect("save");
    let loaded = tallies
        .load(&id)
        .await
        .expect("load ignores the foreign snapshot");
    assert_eq!(
        loaded.state,
        Some(Tally {
            total: 78,
            limit: 1_000
        })
    );
}
