//! Checks for what only a store's own test can set up: rows damaged behind the store's back,
//! and a durable read model switching versions while it is written and read.
//!
//! The [conformance suite](super::conformance) drives a store through its traits alone. These
//! checks need one more thing from the store's test (how to damage a row in its tables, how to
//! read its read model), and then make the same assertions for every store, so that a
//! third-party store is held to what the SQLite and PostgreSQL stores are.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, ApplyError};
use crate::event::{Json, NewEvent, RecordedEvent};
use crate::projection::{Projection, ProjectionRunner};
use crate::repository::{LoadError, Repository};
use crate::store::{EventStore, Storage, StoreError};
use crate::upcast::DecodeErrorKind;
use crate::version::{ExpectedVersion, Position, Version};
use crate::{BoxError, DomainEvent, StreamId};

/// How [`damaged_rows`] asks the store's test to damage one stored event, given its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damage {
    /// The payload no longer decodes as the event: invalid JSON, or valid JSON of the wrong
    /// shape (such as `{"text": 42}`) where the store only holds valid JSON.
    Payload,
    /// The event type becomes this name, which no code knows.
    Retype(&'static str),
    /// A metadata column (event id, headers, …) holds what the store never writes.
    Metadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum NoteEvent {
    #[serde(rename = "note.written")]
    Written { text: String },
}
impl DomainEvent for NoteEvent {}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Write {
    #[serde(rename = "note.write")]
    Note { text: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("never")]
struct Never;

#[derive(Debug, Clone)]
struct Note;

impl Aggregate for Note {
    const TYPE: &'static str = "note";
    type Id = String;
    type Command = Write;
    type Event = NoteEvent;
    type Error = Never;
    fn handle(
        _: Option<&Self>,
        _: &String,
        Write::Note { text }: Write,
    ) -> Result<Vec<NoteEvent>, Never> {
        Ok(vec![NoteEvent::Written { text }])
    }
    fn apply(_: Option<Self>, _: &NoteEvent) -> Result<Self, ApplyError> {
        Ok(Note)
    }
}

/// Damaged rows fail where they are, with typed errors naming their position, and the rest of
/// the store still works.
///
/// Writes notes to the streams `note-good`, `note-bad`, `note-odd` and `note-torn`, then asks
/// `damage` to damage one event of each of the last three in turn ([`Damage::Payload`],
/// [`Damage::Retype`], [`Damage::Metadata`]) and checks what loading and reading report: a
/// payload or unknown-type decode error at the event's position, a corrupt row at its
/// position. Then the good stream still loads, the log still reads up to the torn row, and the
/// store still takes commands. `damage` must change exactly that one row.
///
/// # Panics
///
/// When the store reports anything else.
///
/// # Examples
///
/// ```no_run
/// # async fn example() {
/// use std::sync::Arc;
/// use cqrs_core::testing::stores::{Damage, damaged_rows};
/// use cqrs_core::{InMemoryEventStore, Position};
///
/// // A real store's test updates the row at `position` in its tables with SQL here.
/// let store = Arc::new(InMemoryEventStore::new());
/// damaged_rows(store, |damage: Damage, position: Position| async move {
///     unimplemented!("damage the row at {position}: {damage:?}")
/// })
/// .await;
/// # }
/// ```
pub async fn damaged_rows<S, F, Fut>(store: Arc<S>, mut damage: F)
where
    S: Storage,
    F: FnMut(Damage, Position) -> Fut,
    Fut: Future<Output = ()>,
{
    let notes = Repository::<Note>::new(store.clone());
    let write = async |id: &str, text: &str| {
        let handled = notes
            .handle(
                &id.to_owned(),
                Write::Note {
                    text: text.to_owned(),
                },
            )
            .await;
        handled
            .expect("an intact store takes the note")
            .position
            .expect("a note is an event")
    };
    write("good", "fine").await;
    let bad = write("bad", "soon damaged").await;
    let odd = write("odd", "soon renamed").await;
    let torn = write("torn", "soon torn").await;
    // A store may show the log only up to a horizon that others' transactions hold back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.head().await.expect("the head reads") < torn {
        assert!(
            tokio::time::Instant::now() < deadline,
            "position {torn} never became visible"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    damage(Damage::Payload, bad).await;
    match notes.load(&"bad".to_owned()).await {
        Err(LoadError::Decode(err)) => {
            assert_eq!(err.position, bad, "the payload error names its event");
            assert!(
                matches!(err.kind, DecodeErrorKind::Payload(_)),
                "{:?}",
                err.kind
            );
        }
        other => panic!("a damaged payload should be a decode error, got {other:?}"),
    }
    let log = store.read_all(Position::START, 10).await;
    assert_eq!(
        log.expect("the raw log still reads").len(),
        4,
        "raw reads do not decode payloads"
    );

    const VANISHED: &str = "note.vanished";
    damage(Damage::Retype(VANISHED), odd).await;
    match notes.load(&"odd".to_owned()).await {
        Err(LoadError::Decode(err)) => {
            assert_eq!(err.position, odd, "the unknown type names its event");
            assert!(
                matches!(err.kind, DecodeErrorKind::UnknownType),
                "{:?}",
                err.kind
            );
            assert_eq!(err.event_type, VANISHED);
        }
        other => panic!("an unknown type should be a decode error, got {other:?}"),
    }

    damage(Damage::Metadata, torn).await;
    let torn_stream = StreamId::new("note-torn").expect("valid stream id");
    match store.read_stream(&torn_stream, Version::START).await {
        Err(StoreError::Corrupt { position, .. }) => {
            assert_eq!(position, Some(torn), "the corrupt row names its position");
        }
        other => panic!("damaged metadata should be a corrupt row, got {other:?}"),
    }
    let up_to_torn = store.read_all(Position::START, 3).await;
    assert_eq!(
        up_to_torn.expect("the log reads up to the torn row").len(),
        3
    );

    let good = notes.load(&"good".to_owned()).await;
    assert!(good.expect("other streams still load").state.is_some());
    let more = notes
        .handle(
            &"good".to_owned(),
            Write::Note {
                text: "still taking commands".into(),
            },
        )
        .await;
    more.expect("the store still takes commands");
    let fresh = StreamId::new("note-new").expect("valid stream id");
    let appended = store
        .append(&fresh, ExpectedVersion::NoStream, vec![note("new")])
        .await;
    appended.expect("the store still takes appends");
}

fn note(_: &str) -> NewEvent {
    NewEvent::new("note.written", Json::null())
}

/// A durable read model switching from version 1 to version 2 while events are written and
/// readers read, for [`UpgradeUnderLoad::run`].
///
/// The events are seat counts, as the stores' read-model tests project them: first
/// `seats.added` with `{"quantity": 1000}` on each stream `seats-c{n}`, then `seats.reserved`
/// with `{"quantity": 1}` spread over those streams, so the seats left across all streams go
/// from `1000 × streams` down to `1000 × streams − reservations`.
#[derive(Debug, Clone)]
pub struct UpgradeUnderLoad {
    /// How many `seats-c{n}` streams.
    pub streams: u64,
    /// How many reservations are written while version 2 builds.
    pub reservations: u64,
    /// How many tasks read the live version all along.
    pub readers: usize,
    /// How long version 2 may take to go live and catch up.
    pub patience: Duration,
}

impl Default for UpgradeUnderLoad {
    fn default() -> Self {
        Self {
            streams: 4,
            reservations: 600,
            readers: 2,
            patience: Duration::from_secs(60),
        }
    }
}

impl UpgradeUnderLoad {
    /// Runs version 1 of the read model, starts writing reservations and reading, starts
    /// version 2 beside it, and checks that version 2 goes live and counts every reservation
    /// once, that every read succeeded with a sane total, and that the readers saw version 1
    /// and then version 2.
    ///
    /// `read` reads the live version: `(its version, the seats left over all streams)`;
    /// `live` is the version the store records as live (`None` before any).
    ///
    /// # Panics
    ///
    /// When a read fails or answers out of range, or version 2 does not take over in time.
    pub async fn run<S, R, RF, L, LF>(
        &self,
        store: Arc<S>,
        versions: [Arc<dyn Projection>; 2],
        read: R,
        live: L,
    ) where
        S: EventStore,
        R: Fn() -> RF + Clone + Send + 'static,
        RF: Future<Output = Result<(u32, i64), BoxError>> + Send,
        L: Fn() -> LF,
        LF: Future<Output = Option<u32>>,
    {
        let seats = 1_000 * i64::try_from(self.streams).expect("a small count");
        let [old, new] = versions;
        let mut opened = Position::ZERO;
        for c in 0..self.streams {
            opened = append_seats(&*store, &format!("c{c}"), "seats.added", 1_000).await;
        }
        let v1 = ProjectionRunner::new(store.clone(), old).spawn();
        v1.wait_for(opened).await.expect("version 1 runs");

        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let readers: Vec<_> = (0..self.readers)
            .map(|_| {
                let (read, stop, reads) = (read.clone(), Arc::clone(&stop), Arc::clone(&reads));
                tokio::spawn(async move {
                    let mut versions = BTreeSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (version, left) = match read().await {
                            Ok(answer) => answer,
                            Err(err) => panic!("a read failed: {}", crate::ErrorChain(&*err)),
                        };
                        assert!(
                            (0..=seats).contains(&left),
                            "version {version} answered {left}"
                        );
                        versions.insert(version);
                        reads.fetch_add(1, Ordering::Relaxed);
                        tokio::task::yield_now().await;
                    }
                    versions
                })
            })
            .collect();
        let writer = {
            let (store, streams, reservations) = (store.clone(), self.streams, self.reservations);
            tokio::spawn(async move {
                let mut last = Position::ZERO;
                for n in 0..reservations {
                    last = append_seats(&*store, &format!("c{}", n % streams), "seats.reserved", 1)
                        .await;
                }
                last
            })
        };

        tokio::time::sleep(Duration::from_millis(50)).await;
        let v2 = ProjectionRunner::new(store.clone(), new).spawn();
        let last = writer.await.expect("the writer finishes");
        let deadline = tokio::time::Instant::now() + self.patience;
        while live().await != Some(2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "version 2 never took over"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        v2.wait_for(last).await.expect("version 2 runs");
        // Let the readers read version 2 too before they stop.
        let seen = reads.load(Ordering::Relaxed);
        while reads.load(Ordering::Relaxed) < seen + 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the readers stopped reading"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut versions = BTreeSet::new();
        for reader in readers {
            versions.extend(reader.await.expect("a reader never panics"));
        }
        assert!(
            versions.contains(&1) && versions.contains(&2),
            "the readers read version 1, then version 2: {versions:?}"
        );
        let reserved = i64::try_from(self.reservations).expect("a small count");
        let answer = read().await.expect("the live version reads");
        assert_eq!(
            answer,
            (2, seats - reserved),
            "version 2 counted every reservation once"
        );
        v1.stop().await;
        v2.stop().await;
    }
}

/// Appends one seat-count event, as [`UpgradeUnderLoad`] writes them: `ty` (`seats.added` or
/// `seats.reserved`) with `{"quantity": quantity}` to the stream `seats-{conference}`.
///
/// # Panics
///
/// When `conference` makes an invalid stream id, or the store refuses the append.
///
/// # Examples
///
/// ```
/// # tokio_test::block_on(async {
/// use cqrs_core::testing::stores::append_seats;
/// use cqrs_core::{EventReader, InMemoryEventStore, StreamId, Version};
///
/// let store = InMemoryEventStore::new();
/// append_seats(&store, "devconf", "seats.added", 10).await;
/// let events = store.read_stream(&StreamId::new("seats-devconf")?, Version::START).await?;
/// assert_eq!(events[0].payload.to_value()?["quantity"], 10);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
pub async fn append_seats<S>(store: &S, conference: &str, ty: &str, quantity: i64) -> Position
where
    S: EventStore + ?Sized,
{
    let stream = StreamId::new(format!("seats-{conference}")).expect("valid stream id");
    let event = NewEvent::new(ty, Json::from(serde_json::json!({ "quantity": quantity })));
    let appended = store
        .append(&stream, ExpectedVersion::Any, vec![event])
        .await;
    appended
        .expect("the store takes the event")
        .position
        .expect("one event appended")
}

/// A seat-count event as the stores' test read models fold it (see [`append_seats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatChange<'a> {
    /// The stream's local id: `devconf` for `seats-devconf`.
    pub conference: &'a str,
    /// Seats added (from `seats.added`), else 0.
    pub added: i64,
    /// Seats reserved (from `seats.reserved`), else 0.
    pub reserved: i64,
}

impl<'a> SeatChange<'a> {
    /// Reads `event`'s conference and quantity; any type but `seats.added` reserves.
    ///
    /// # Errors
    ///
    /// If the payload is not JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use cqrs_core::testing::stores::{SeatChange, append_seats};
    /// use cqrs_core::{EventReader, InMemoryEventStore, Position};
    ///
    /// let store = InMemoryEventStore::new();
    /// append_seats(&store, "devconf", "seats.reserved", 2).await;
    /// let events = store.read_all(Position::START, 1).await?;
    /// let change = SeatChange::of(&events[0])?;
    /// assert_eq!((change.conference, change.added, change.reserved), ("devconf", 0, 2));
    /// # Ok::<(), cqrs_core::BoxError>(()) }).unwrap();
    /// ```
    pub fn of(event: &'a RecordedEvent) -> Result<Self, BoxError> {
        let quantity = event.payload.to_value()?["quantity"].as_i64().unwrap_or(0);
        let added = event.event_type == "seats.added";
        Ok(Self {
            conference: event.stream.local_id().unwrap_or_default(),
            added: if added { quantity } else { 0 },
            reserved: if added { 0 } else { quantity },
        })
    }

    /// What the change does to the seats left.
    #[must_use]
    pub fn delta(&self) -> i64 {
        self.added - self.reserved
    }
}
