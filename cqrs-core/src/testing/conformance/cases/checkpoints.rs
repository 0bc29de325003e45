//! Group `checkpoints`: what a [`CheckpointStore`] keeps.

use std::sync::Arc;

use crate::store::CheckpointStore;
use crate::version::Position;

/// A checkpoint loads as `None` until saved, keeps the last save, is independent per name, and
/// can be deleted.
pub async fn checkpoints_round_trip(store: Arc<dyn CheckpointStore>) {
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
