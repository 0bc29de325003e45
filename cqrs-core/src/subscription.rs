use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::event::EventFilter;
use crate::store::{BatchStream, EventReader, ReadBatch, StoreError};
use crate::version::Position;

/// Tells subscribers that new events were committed: the store side of a subscription.
///
/// A store keeps one and calls [`CommitNotifier::notify`] after every commit; the
/// subscriptions built by [`subscription`] wait on it instead of polling. Clones share one
/// signal.
///
/// # Examples
///
/// ```
/// use cqrs_core::store::CommitNotifier;
///
/// # tokio_test::block_on(async {
/// let notifier = CommitNotifier::new();
/// let mut watcher = notifier.watch();
/// notifier.notify();
/// watcher.changed().await.unwrap(); // returns at once: a commit was signalled
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct CommitNotifier {
    tx: Arc<watch::Sender<u64>>,
}

impl CommitNotifier {
    /// A notifier nobody has signalled yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Wakes every subscriber.
    pub fn notify(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`CommitNotifier::notify`].
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

impl Default for CommitNotifier {
    fn default() -> Self {
        Self::new()
    }
}

/// How a [`subscription`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionOptions {
    /// Events read per query.
    pub page_size: usize,
    /// Also re-read this often while idle, for stores whose notifications can be lost (a
    /// dropped `LISTEN` connection, say). `None` waits for notifications only.
    pub poll_interval: Option<Duration>,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            page_size: 512,
            poll_interval: None,
        }
    }
}

/// Builds a catch-up-then-live subscription over any reader: the one subscription loop every
/// store can share.
///
/// It reads pages with [`EventReader::read_filtered`] until the reader reports the end, then
/// waits for `notifier`, then reads again. It marks the notification seen *before* each read,
/// so a commit that lands during a read is never missed. Each item is a batch: its events
/// (possibly none, when only filtered-out events went by), where reading continues, and
/// whether the batch reached what was visible then — what a runner needs to report progress.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{EventFilter, InMemoryEventStore, Position};
/// use cqrs_core::store::{SubscriptionOptions, subscription};
///
/// let store = InMemoryEventStore::new();
/// let batches = subscription(
///     Arc::new(store.clone()),
///     store.notifier(),
///     Position::START,
///     EventFilter::all(),
///     SubscriptionOptions::default(),
/// );
/// # drop(batches);
/// ```
#[must_use]
pub fn subscription(
    reader: Arc<dyn EventReader>,
    notifier: &CommitNotifier,
    from: Position,
    filter: EventFilter,
    options: SubscriptionOptions,
) -> BatchStream {
    let state = State {
        reader,
        watch: notifier.watch(),
        next: from.max(Position::START),
        filter,
        options,
        at_end: false,
        wait_first: false,
        woken: false,
        done: false,
    };
    futures::stream::unfold(state, State::step).boxed()
}

struct State {
    reader: Arc<dyn EventReader>,
    watch: watch::Receiver<u64>,
    next: Position,
    filter: EventFilter,
    options: SubscriptionOptions,
    /// Whether the last read reached the end (so an empty end batch was already announced).
    at_end: bool,
    /// Whether the last batch handed out reached the end, so the next step waits first.
    wait_first: bool,
    /// Whether a commit woke it since its last read: that read's first event measures how
    /// long a commit takes to reach a live subscriber.
    woken: bool,
    done: bool,
}

impl State {
    async fn step(mut self) -> Option<(Result<ReadBatch, StoreError>, Self)> {
        loop {
            if self.done {
                return None;
            }
            if self.wait_first {
                self.wait_first = false;
                if !self.wait().await {
                    return None;
                }
            }
            self.watch.borrow_and_update();
            let batch = match self
                .reader
                .read_filtered(self.next, self.options.page_size, &self.filter)
                .await
            {
                Ok(batch) => batch,
                Err(err) => {
                    self.done = true;
                    return Some((Err(err), self));
                }
            };
            if std::mem::take(&mut self.woken)
                && let Some(first) = batch.events.first()
            {
                crate::metric::woke(crate::metric::seconds_since(first.metadata.recorded_at));
            }
            let advanced = batch.next > self.next;
            let newly_at_end = batch.end && !self.at_end;
            self.next = self.next.max(batch.next);
            self.at_end = batch.end;
            if !batch.events.is_empty() || advanced || newly_at_end {
                self.wait_first = batch.end;
                return Some((Ok(batch), self));
            }
            if batch.end && !self.wait().await {
                return None;
            }
        }
    }

    /// Waits for a commit; false once the store is gone.
    async fn wait(&mut self) -> bool {
        self.woken = true;
        match self.options.poll_interval {
            None => self.watch.changed().await.is_ok(),
            Some(interval) => {
                tokio::select! {
                    changed = self.watch.changed() => changed.is_ok(),
                    () = tokio::time::sleep(interval) => true,
                }
            }
        }
    }
}
