//! Appending: one statement per append, concurrent appends batched into shared transactions.

use async_trait::async_trait;
use cqrs_core::{Appended, Commit, EventStore, StoreError};
use tokio::sync::oneshot;

use crate::batch::Pending;

use crate::store::PostgresEventStore;

#[async_trait]
impl EventStore for PostgresEventStore {
    /// Commits through the batcher: appends waiting at the same moment share one transaction
    /// and one round trip. A lone writer's append skips it (see `Traffic`).
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let (_in_flight, alone) = self.inner.traffic.enter();
        let appended = if alone {
            self.inner.appender.commit_alone(&commit).await?
        } else {
            let (reply, answer) = oneshot::channel();
            self.inner
                .batcher
                .send(Pending { commit, reply })
                .map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)??
        };
        if appended.position.is_some() {
            // Subscribers in this process at once; other processes by NOTIFY.
            self.inner.notifier.notify();
            self.inner.announce.notify_one();
        }
        Ok(appended)
    }

    /// One call and one transaction per [`MAX_EVENTS_PER_TRANSACTION`](crate::MAX_EVENTS_PER_TRANSACTION)
    /// events, set-based (`append_in_order`): all the commits of a transaction or none, each
    /// checked against its stream as the earlier ones leave it. A list longer than one
    /// transaction holds is appended transaction by transaction, and an error leaves the
    /// earlier transactions' commits appended, as [`EventStore::commit_in_order`]'s default
    /// does commit by commit.
    async fn commit_in_order(&self, commits: Vec<Commit>) -> Result<Vec<Appended>, StoreError> {
        for commit in &commits {
            commit.validate()?;
        }
        let result = self.inner.appender.commit_in_order(&commits).await;
        if commits.iter().any(|c| !c.events.is_empty()) {
            self.inner.notifier.notify();
            self.inner.announce.notify_one();
        }
        result
    }
}
