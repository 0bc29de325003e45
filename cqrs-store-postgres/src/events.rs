//! Appending: one statement per append, concurrent appends batched into shared transactions.

use async_trait::async_trait;
use cqrs_core::{Appended, Commit, EventStore, StoreError};
use tokio::sync::oneshot;

use crate::batch::Pending;

use crate::store::PostgresEventStore;

#[async_trait]
impl EventStore for PostgresEventStore {
    /// Commits through the batcher: appends waiting at the same moment share one transaction
    /// and one round trip.
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .batcher
            .send(Pending { commit, reply })
            .map_err(|_| StoreError::Closed)?;
        let appended = answer.await.map_err(|_| StoreError::Closed)??;
        if appended.position.is_some() {
            // Subscribers in this process at once; other processes by NOTIFY.
            self.inner.notifier.notify();
            self.inner.announce.notify_one();
        }
        Ok(appended)
    }
}
