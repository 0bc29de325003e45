//! The write connection and the writer thread: a write runs on its caller's thread when the
//! connection is free and nothing waits, else the writer thread commits every waiting write in
//! one transaction (group commit). A write that may fail half-way runs in its own savepoint; a
//! write that checks everything before it writes (an append, a command) runs without one, and
//! if it still fails half-way the whole transaction is rolled back and every write in it fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cqrs_core::StoreError;
use cqrs_core::store::CommitNotifier;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::KeepAlive;

/// The most writes one transaction takes, so that a flood of writers still sees commits.
const MAX_GROUP: usize = 1024;

/// A unit of work for the writer, run inside the group transaction.
pub(crate) struct Job {
    /// Whether it runs in a savepoint of its own.
    savepoint: bool,
    run: RunFn,
}

/// Given the connection, or why there is no transaction to run in.
type RunFn = Box<dyn FnOnce(Result<&Connection, String>) -> Ran + Send>;

/// What a job did.
struct Ran {
    /// Whether its writes stand (false rolls back its savepoint).
    ok: bool,
    /// Whether it failed after writing without a savepoint: the transaction must go.
    spoiled: bool,
    /// Whether it appended events (subscribers are woken after the commit).
    appended: bool,
    /// Answers the caller once the transaction has ended: `Ok` if it committed.
    done: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// How a write that runs without a savepoint failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// It failed before writing anything: the others go on.
    Refused(StoreError),
    /// It failed after writing: the whole transaction is rolled back.
    Broken(StoreError),
}

impl From<StoreError> for WriteError {
    /// An error from a check before any write.
    fn from(err: StoreError) -> Self {
        Self::Refused(err)
    }
}

impl Job {
    /// A job running `f` in a savepoint, and the receiver of its result, which arrives only
    /// once its writes are durable (or have failed).
    pub(crate) fn new<T, F>(appends: bool, f: F) -> (Self, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::build(appends, true, move |conn| {
            f(conn).map_err(WriteError::Refused)
        })
    }

    /// A job running `f` without a savepoint: `f` must check before it writes, and say with
    /// [`WriteError::Broken`] if it failed after writing.
    pub(crate) fn checked<T, F>(
        appends: bool,
        f: F,
    ) -> (Self, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WriteError> + Send + 'static,
    {
        Self::build(appends, false, f)
    }

    fn build<T, F>(
        appends: bool,
        savepoint: bool,
        f: F,
    ) -> (Self, oneshot::Receiver<Result<T, StoreError>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WriteError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: RunFn = Box::new(move |conn: Result<&Connection, String>| {
            let result = match conn {
                Err(why) => Err(WriteError::Refused(StoreError::backend(CommitFailed(why)))),
                // A panic in a write (user code in a decision, say) must not end the writer:
                // it fails this write alone if a savepoint can undo it, else the transaction.
                Ok(conn) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
                    .unwrap_or_else(|panic| {
                        let err = StoreError::backend(Panicked(panic_message(&*panic)));
                        Err(if savepoint {
                            WriteError::Refused(err)
                        } else {
                            WriteError::Broken(err)
                        })
                    }),
            };
            match result {
                Ok(value) => Ran {
                    ok: true,
                    spoiled: false,
                    appended: appends,
                    done: Box::new(move |committed: Result<(), String>| {
                        let _ = tx.send(
                            committed
                                .map(|()| value)
                                .map_err(|why| StoreError::backend(CommitFailed(why))),
                        );
                    }),
                },
                Err(WriteError::Refused(err)) => Ran {
                    ok: false,
                    spoiled: false,
                    appended: false,
                    done: Box::new(move |_| {
                        let _ = tx.send(Err(err));
                    }),
                },
                Err(WriteError::Broken(err)) => Ran {
                    ok: false,
                    spoiled: true,
                    appended: false,
                    done: Box::new(move |_| {
                        let _ = tx.send(Err(err));
                    }),
                },
            }
        });
        (Self { savepoint, run }, rx)
    }
}

/// A write panicked.
#[derive(Debug, thiserror::Error)]
#[error("the write panicked: {0}")]
struct Panicked(String);

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The group transaction failed to commit.
#[derive(Debug, thiserror::Error)]
#[error("the transaction failed to commit: {0}")]
struct CommitFailed(String);

/// The handle to the write connection and the writer thread.
///
/// A write runs on the caller's own thread when it can (a multi-threaded runtime, no write
/// waiting, the connection free): it takes the connection, commits its job as a group of one
/// and has its answer with no thread to wake. Otherwise it goes to the writer thread's channel,
/// and the writer commits every write waiting there in one transaction (group commit). Either
/// way one connection, behind one lock, does every write.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    conn: Arc<Mutex<Connection>>,
    notifier: CommitNotifier,
    stats: Arc<Counters>,
    checkpoints: Option<mpsc::SyncSender<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    writes: AtomicU64,
    submitted: AtomicU64,
}

/// What the writer thread has done so far: how well group commit is grouping.
///
/// # Examples
///
/// ```
/// # tokio_test::block_on(async {
/// let store = cqrs_store_sqlite::SqliteEventStore::open_in_memory().await?;
/// let stats = store.writer_stats();
/// assert!(stats.transactions >= 1, "opening the store migrated its schema");
/// assert_eq!(stats.queued, 0);
/// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub transactions: u64,
    /// Writes (appends and other jobs) run in them.
    pub writes: u64,
    /// Writes submitted and not yet picked up by the writer.
    pub queued: u64,
}

impl Writer {
    /// Starts the writer thread on `conn`, and with `checkpointer` (a second connection to
    /// the same file) a thread that checkpoints the WAL after commits, off every writer's path.
    /// Each thread holds `keep` until it has closed its connection.
    ///
    /// # Errors
    ///
    /// The backend error if a thread cannot start.
    pub(crate) fn spawn(
        conn: Connection,
        checkpointer: Option<Connection>,
        notifier: CommitNotifier,
        keep: Option<KeepAlive>,
    ) -> Result<Self, StoreError> {
        let checkpoints = match checkpointer {
            Some(other) => {
                // Only a backstop now: the checkpointer keeps the log far below it.
                conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_BACKSTOP)
                    .map_err(StoreError::backend)?;
                let (wake, woken) = mpsc::sync_channel(1);
                let keep = keep.clone();
                thread::Builder::new()
                    .name("cqrs-sqlite-checkpointer".into())
                    .spawn(move || {
                        checkpoint_after_commits(&other, &woken);
                        drop(other);
                        drop(keep);
                    })
                    .map_err(StoreError::backend)?;
                Some(wake)
            }
            None => None,
        };
        let (jobs, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(Counters::default());
        // Opening the store ran its migration in a transaction of its own.
        stats.transactions.store(1, Ordering::Relaxed);
        let conn = Arc::new(Mutex::new(conn));
        let (counters, shared, wake) = (Arc::clone(&stats), Arc::clone(&conn), notifier.clone());
        let after = checkpoints.clone();
        thread::Builder::new()
            .name("cqrs-sqlite-writer".into())
            .spawn(move || {
                run(&shared, &rx, &wake, &counters, after.as_ref());
                // The connection closes with its last holder, this thread or the store's last
                // handle, whichever is later; `keep` goes after it either way.
                drop(shared);
                drop(keep);
            })
            .map_err(StoreError::backend)?;
        Ok(Self {
            jobs,
            conn,
            notifier,
            stats,
            checkpoints,
        })
    }

    /// The writer's counters.
    pub(crate) fn stats(&self) -> WriterStats {
        let transactions = self.stats.transactions.load(Ordering::Acquire);
        let writes = self.stats.writes.load(Ordering::Acquire);
        let submitted = self.stats.submitted.load(Ordering::Acquire);
        WriterStats {
            transactions,
            writes,
            queued: submitted.saturating_sub(writes),
        }
    }

    /// Runs `f` on the writer and waits, without blocking the executor, for its durable result.
    ///
    /// # Errors
    ///
    /// [`StoreError::Closed`] if the writer has stopped, or `f`'s error.
    pub(crate) async fn write<T, F>(&self, appends: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Job::new(appends, f);
        self.submit(job, rx).await
    }

    /// Runs `f` on the writer without a savepoint (see [`Job::checked`]) and waits for its
    /// durable result.
    ///
    /// # Errors
    ///
    /// [`StoreError::Closed`] if the writer has stopped, or `f`'s error.
    pub(crate) async fn write_checked<T, F>(&self, appends: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, WriteError> + Send + 'static,
    {
        let (job, rx) = Job::checked(appends, f);
        self.submit(job, rx).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let submitted = self.stats.submitted.fetch_add(1, Ordering::AcqRel);
        // Writes already waiting go first: they are the writer thread's, and it commits them
        // together; this one joins them. With none waiting and the connection free, this
        // thread commits it itself (on a multi-threaded runtime, whose other tasks
        // `block_in_place` hands to another thread first).
        let idle = submitted == self.stats.writes.load(Ordering::Acquire);
        if let Some(job) = self.commit_here(job, idle) {
            self.jobs.send(job).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Writer {
    /// Commits `job` on this thread if nothing waits (`idle`), the runtime can move its other
    /// tasks away, and the connection is free; gives it back otherwise.
    fn commit_here(&self, job: Job, idle: bool) -> Option<Job> {
        if !idle || !on_multi_thread_runtime() {
            return Some(job);
        }
        let Ok(conn) = self.conn.try_lock() else {
            return Some(job);
        };
        self.stats.writes.fetch_add(1, Ordering::AcqRel);
        tokio::task::block_in_place(|| {
            commit_group(
                &conn,
                &mut vec![job],
                &self.notifier,
                &self.stats,
                self.checkpoints.as_ref(),
            );
        });
        None
    }
}

/// Whether the current task runs on a multi-threaded tokio runtime, where `block_in_place`
/// may be called.
pub(crate) fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn run(
    conn: &Mutex<Connection>,
    jobs: &mpsc::Receiver<Job>,
    notifier: &CommitNotifier,
    stats: &Counters,
    checkpoints: Option<&mpsc::SyncSender<()>>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    // The thread ends when every handle to the store is gone; the last handle to the
    // connection then drops it, which closes the file cleanly (and checkpoints the WAL).
    while let Some(first) = next_job(jobs) {
        // The connection first: while a caller commits on its own thread, writes keep
        // arriving, and all of them then go in the next transaction.
        // A job panicking is caught inside `commit_group`: the lock is never poisoned by one,
        // and a poisoned lock's connection is still whole.
        let conn = conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stats.writes.fetch_add(group.len() as u64, Ordering::AcqRel);
        commit_group(&conn, &mut group, notifier, stats, checkpoints);
    }
}

/// The WAL's size, in pages, past which a commit checkpoints it itself: far above what the
/// checkpointer lets it reach, unless it cannot keep up.
const AUTOCHECKPOINT_BACKSTOP: u32 = 16_000;

/// How long the checkpointer lets commits gather before it copies them into the database
/// file: about what SQLite's own checkpoint every 1,000 pages amounts to at a few thousand
/// commits a second.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Copies the WAL's committed pages into the database file (`PASSIVE`: never waiting for a
/// reader or the writer) a moment after commits, until the store's last handle is gone.
///
/// SQLite checkpoints by itself in the commit that takes the log past 1,000 pages: that
/// commit, and whoever waits for it, pays for writing the pages back and syncing the file.
/// Measured on a 2-core VM, checkpoints took 15 % of a one-event append with its command
/// record in NORMAL mode.
fn checkpoint_after_commits(conn: &Connection, woken: &mpsc::Receiver<()>) {
    while woken.recv().is_ok() {
        thread::sleep(CHECKPOINT_EVERY);
        while woken.try_recv().is_ok() {}
        if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // The writer's own checkpoint (the backstop) still bounds the log.
            tracing::warn!(error = %cqrs_core::ErrorChain(&err), "sqlite: checkpoint failed");
        }
    }
}

/// How long the writer keeps looking for the next write before it sleeps. Waking a sleeping
/// thread costs tens of microseconds on some machines, more than a whole write without sync;
/// a caller that sends its next write right after the last answer finds the writer awake.
const SPIN: Duration = Duration::from_micros(50);

/// The next write, or `None` once every handle to the store is gone.
fn next_job(jobs: &mpsc::Receiver<Job>) -> Option<Job> {
    let started = Instant::now();
    let mut spins = 0u32;
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {
                spins = spins.wrapping_add(1);
                // Reading the clock costs more than a spin; look at it now and then.
                if spins.is_multiple_of(64) && started.elapsed() >= SPIN {
                    return jobs.recv().ok();
                }
                std::hint::spin_loop();
            }
        }
    }
}

fn commit_group(
    conn: &Connection,
    group: &mut Vec<Job>,
    notifier: &CommitNotifier,
    stats: &Counters,
    checkpoints: Option<&mpsc::SyncSender<()>>,
) {
    // Counted before anyone is answered, so that a caller who sees its answer sees the count.
    stats.transactions.fetch_add(1, Ordering::AcqRel);
    let size = group.len();
    #[expect(
        clippy::cast_precision_loss,
        reason = "a group is far below 2^53 writes"
    )]
    metrics::histogram!(cqrs_core::metric::GROUP_COMMIT_SIZE, "store" => "sqlite")
        .record(size as f64);
    let span = tracing::trace_span!("cqrs.sqlite.group_commit", jobs = size);
    let _enter = span.enter();
    if let Err(err) = execute(conn, "BEGIN IMMEDIATE") {
        // Without a transaction nothing may run: every job fails alike.
        let why = format!("cannot begin a write transaction: {err}");
        tracing::error!(error = %why, "sqlite writer");
        fail_all(group.drain(..), &why);
        return;
    }
    let mut ran = Vec::with_capacity(size);
    let mut appended = false;
    // A write alone in its transaction needs no savepoint: if it fails, the whole transaction
    // is rolled back instead.
    let alone = size == 1;
    let mut jobs = group.drain(..);
    while let Some(job) = jobs.next() {
        let outcome = if alone || !job.savepoint {
            (job.run)(Ok(conn))
        } else {
            match execute(conn, "SAVEPOINT job") {
                Ok(()) => {
                    let outcome = (job.run)(Ok(conn));
                    let closed = if outcome.ok {
                        execute(conn, "RELEASE job")
                    } else {
                        execute(conn, "ROLLBACK TO job").and_then(|()| execute(conn, "RELEASE job"))
                    };
                    if let Err(err) = closed {
                        tracing::error!(error = %cqrs_core::ErrorChain(&err), "sqlite: cannot close a savepoint");
                    }
                    outcome
                }
                Err(err) => (job.run)(Err(format!("cannot open a savepoint: {err}"))),
            }
        };
        let spoiled = outcome.spoiled || (alone && !outcome.ok);
        appended |= outcome.ok && outcome.appended;
        ran.push(outcome);
        if spoiled {
            // A write failed half-way without a savepoint: nothing in this transaction can be
            // trusted. Roll it all back; every write in it fails.
            let _ = execute(conn, "ROLLBACK");
            let why =
                "an earlier write in the same transaction failed; nothing was written".to_owned();
            for outcome in ran {
                (outcome.done)(Err(why.clone()));
            }
            fail_all(jobs, &why);
            return;
        }
    }
    drop(jobs);
    let committed = execute(conn, "COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = execute(conn, "ROLLBACK");
    }
    if committed.is_ok() && appended {
        notifier.notify();
    }
    if let (Ok(()), Some(checkpoints)) = (&committed, checkpoints) {
        // Full means a checkpoint is already due.
        let _ = checkpoints.try_send(());
    }
    for outcome in ran {
        (outcome.done)(committed.clone());
    }
}

/// Fails `jobs` without running them.
fn fail_all(jobs: impl Iterator<Item = Job>, why: &str) {
    for job in jobs {
        let outcome = (job.run)(Err(why.to_owned()));
        (outcome.done)(Err(why.to_owned()));
    }
}

/// Runs a statement without parameters through the statement cache (no parsing each time).
fn execute(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
