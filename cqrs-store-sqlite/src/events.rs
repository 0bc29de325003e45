//! Appending: commits on the writer, commands decided inside the write.

use async_trait::async_trait;
use cqrs_core::store::Decide;
use cqrs_core::{Appended, Commit, EventStore, StoreError, StreamId, Version};

use crate::rows::{self, write_commit};
use crate::store::SqliteEventStore;
use crate::writer::WriteError;

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        commit.validate()?;
        let appends = !commit.events.is_empty();
        self.inner
            .writer
            .write_checked(appends, move |conn| write_commit(conn, commit, None))
            .await
    }

    /// All in one job of the writer, under one savepoint: all the commits or none, with one
    /// sync for the lot.
    async fn commit_in_order(&self, commits: Vec<Commit>) -> Result<Vec<Appended>, StoreError> {
        for commit in &commits {
            commit.validate()?;
        }
        let appends = commits.iter().any(|c| !c.events.is_empty());
        self.inner
            .writer
            .write(appends, move |conn| {
                commits
                    .into_iter()
                    .map(|commit| {
                        write_commit(conn, commit, None).map_err(|err| match err {
                            WriteError::Refused(e) | WriteError::Broken(e) => e,
                        })
                    })
                    .collect()
            })
            .await
    }

    /// Reads, decides and commits in one step on the writer thread, inside its transaction:
    /// a command never conflicts with another, and costs one round trip to the writer.
    async fn read_then_commit(
        &self,
        stream: &StreamId,
        from: Version,
        decide: Decide,
    ) -> Result<Option<Appended>, StoreError> {
        let stream = stream.clone();
        self.inner
            .writer
            .write_checked(true, move |conn| {
                let mut decide = decide;
                let mut stopped = false;
                let last = rows::visit_stream(conn, &stream, from, &mut |e| {
                    let next = decide.event(e);
                    stopped |= next.is_break();
                    next
                })?;
                // The stream cannot have moved since this read (same transaction, one writer):
                // its version is the last one read, or zero if it was read whole and is empty.
                // A decision that stopped early did not read it whole: the commit looks it up.
                let known = match last {
                    _ if stopped => None,
                    Some(version) => Some(version),
                    None if from <= Version::START => Some(Version::ZERO),
                    None => None,
                };
                match decide.decide() {
                    Some(commit) => {
                        commit.validate()?;
                        write_commit(conn, commit, known).map(Some)
                    }
                    None => Ok(None),
                }
            })
            .await
    }
}
