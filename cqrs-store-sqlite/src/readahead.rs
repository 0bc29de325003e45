//! Reading the log ahead of a sequential scan.
//!
//! A reader that pages through the log (`read_all` from where its last page ended, as a
//! replay, a catch-up or an export does) spends each page's time first reading and decoding
//! rows, then using them, one after the other, on one thread. Once a scan has taken two pages
//! in a row, the store reads its next [`DEPTH`] pages on other connections and threads, at
//! once, while the reader works on the current one: a scan then uses every core. Positions
//! are dense, so where a full page's successors start is known before they are read; if a
//! page ends elsewhere, the next read simply finds nothing read ahead for it.
//!
//! Only a full page read ahead is handed out. The store's file has one writer, this store's,
//! which gives positions out densely in commit order and never rewrites or deletes an event,
//! so the `limit` events from a position on, once there are that many, are the same whenever
//! they are read. A short page (the scan reached the log's head) is read again, so it sees
//! what was committed since.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cqrs_core::{RecordedEvent, StoreError};
use tokio::sync::oneshot;

/// The smallest and largest pages read ahead: smaller pages cost less than the hand-off to
/// another thread saves; a larger one would hold too much memory for a scan that stops.
const PAGES: std::ops::RangeInclusive<i64> = 256..=16_384;

/// How many pages a scan has read ahead of it.
const DEPTH: i64 = 2;

/// Pages read ahead (and marks of scans after their first page) kept at once, for all scans.
const KEPT_PAGES: usize = 8;

/// A page read ahead and not claimed within this is dropped (its scan stopped).
const KEPT: Duration = Duration::from_secs(2);

type Page = Result<Vec<RecordedEvent>, StoreError>;

/// Where the scans in progress will read next, and their pages read ahead.
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    scans: Mutex<Vec<Scan>>,
}

#[derive(Debug)]
struct Scan {
    /// Where its next page starts, and its size.
    from: i64,
    limit: i64,
    since: Instant,
    /// The next page, being read; `None` while the scan has read one page only.
    page: Option<oneshot::Receiver<Page>>,
}

/// What the store knew of a read before making it.
pub(crate) enum Next {
    /// Not the continuation of a scan: read it.
    Read,
    /// A scan's second page: read it, then read ahead.
    Continue,
    /// A page read ahead: use it if it is full, else read it again.
    Ahead(oneshot::Receiver<Page>),
}

impl ReadAhead {
    /// Takes what is known of the page of `limit` events from `from`.
    pub(crate) fn claim(&self, from: i64, limit: i64) -> Next {
        if !PAGES.contains(&limit) {
            return Next::Read;
        }
        let mut scans = self.lock();
        scans.retain(|scan| scan.since.elapsed() < KEPT);
        match scans
            .iter()
            .position(|scan| scan.from == from && scan.limit == limit)
        {
            Some(at) => match scans.swap_remove(at).page {
                Some(page) => Next::Ahead(page),
                None => Next::Continue,
            },
            None => Next::Read,
        }
    }

    /// Notes that a scan's next page starts at `from`, after its first page: the next read
    /// there continues the scan.
    pub(crate) fn mark(&self, from: i64, limit: i64) {
        if PAGES.contains(&limit) {
            self.keep(Scan {
                from,
                limit,
                since: Instant::now(),
                page: None,
            });
        }
    }

    /// Reads ahead of a scan whose next page starts at `from`: the [`DEPTH`] pages from there
    /// that are not already being read, each by `read(from)` on a blocking thread.
    pub(crate) fn read_ahead<F>(&self, from: i64, limit: i64, read: F)
    where
        F: Fn(i64) -> Page + Clone + Send + 'static,
    {
        if !PAGES.contains(&limit) {
            return;
        }
        for k in 0..DEPTH {
            let at = from.saturating_add(k.saturating_mul(limit));
            let known = self
                .lock()
                .iter()
                .any(|scan| scan.from == at && scan.limit == limit);
            if !known {
                let read = read.clone();
                self.keep(Scan {
                    from: at,
                    limit,
                    since: Instant::now(),
                    page: Some(spawn(move || read(at))),
                });
            }
        }
    }

    fn keep(&self, scan: Scan) {
        let mut scans = self.lock();
        if scans.len() == KEPT_PAGES {
            // The page read ahead longest ago gives way (its scan is the likeliest stopped).
            if let Some(oldest) = (0..scans.len()).min_by_key(|&i| scans[i].since) {
                scans.swap_remove(oldest);
            }
        }
        scans.push(scan);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Scan>> {
        self.scans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs `read` on a blocking thread: the receiver gets its result (nothing if the read
/// panicked or the runtime is shutting down).
fn spawn<F>(read: F) -> oneshot::Receiver<Page>
where
    F: FnOnce() -> Page + Send + 'static,
{
    let (send, receive) = oneshot::channel();
    drop(tokio::task::spawn_blocking(move || {
        // The scan may have stopped; its page is then simply dropped.
        let _ = send.send(read());
    }));
    receive
}
