//! The V1 → V2 upgrade of the CQRS Journey, done with the framework: a V1 store as data
//! ([`make_v1`]), and its migration into today's shapes ([`upgrade`]) with the integration
//! events V1 never stored re-created from its management rows ([`prelude`]), then a proof
//! that nothing changed meaning ([`verify_upgrade`]).
//!
//! `conference-example migrate make-v1`, `migrate run` and `migrate verify` are the same
//! functions on the command line.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use conference_example::migrate::{V1Options, make_v1, upgrade, verify_upgrade};
//! use cqrs_core::{InMemoryEventStore, Storage};
//!
//! # tokio_test::block_on(async {
//! let v1: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
//! let made = make_v1(Arc::clone(&v1), V1Options { events: 300, ..V1Options::default() }, &mut |_| {}).await?;
//!
//! let v2: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
//! let migration = upgrade(&v1, &made.management).await?;
//! migration.run(v1.as_ref(), v2.as_ref(), &mut |_| {}).await?;
//! let verified = verify_upgrade(&v1, &v2, &made.management).await?;
//! assert!(verified.is_identical(), "{verified:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod prelude;
mod v1;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cqrs_core::migrate::{Migration, MigrationError, Verification};
use cqrs_core::{
    Aggregate, Metadata, Position, ProcessManagerRunner, Projection, RecordedEvent, Repository,
    Storage, StoreError, StreamId, Version,
};
use uuid::Uuid;

use crate::domain::versions::upcasters;
use crate::domain::{
    Conference, Order, RegistrationProcess, SeatAssignments, SeatQuotas, SeatsAvailability,
    ThirdPartyProcessorPayment,
};
use crate::read::{ConferenceDirectory, OrderViews};

pub use crate::migrate::prelude::{ManagedConference, ManagedSeatType, Management, prelude};
pub use crate::migrate::v1::{V1Options, V1Summary, make_v1};

/// The checkpoints of the application's process managers, which the migration carries over
/// so that nothing the old deployment processed is processed again.
#[must_use]
pub fn process_checkpoints(storage: &Arc<dyn Storage>) -> Vec<String> {
    vec![
        ProcessManagerRunner::<RegistrationProcess>::new(Arc::clone(storage)).key(),
        ProcessManagerRunner::<SeatQuotas>::new(Arc::clone(storage)).key(),
    ]
}

/// Fills in the correlation id V1 never recorded: the order an event belongs to (for a
/// seat reservation, the order it holds seats for; for a payment, the order it pays), so
/// that `log --correlation <order>` shows a V1 order's whole flow.
pub fn backfill(recorded: &RecordedEvent, metadata: &mut Metadata) {
    if metadata.correlation_id.is_some() {
        return;
    }
    let local = || {
        recorded
            .stream
            .local_id()
            .and_then(|id| id.parse::<Uuid>().ok())
    };
    let field = |name: &str| {
        recorded.payload.to_value().ok().and_then(|v| {
            v.get(name)
                .and_then(|f| f.as_str())
                .and_then(|s| s.parse::<Uuid>().ok())
        })
    };
    let category = recorded.stream.category();
    metadata.correlation_id = if category == Order::TYPE || category == SeatAssignments::TYPE {
        local()
    } else if category == ThirdPartyProcessorPayment::TYPE {
        field("order")
    } else if category == SeatsAvailability::TYPE {
        field("reservation")
    } else {
        None
    };
}

/// The migration of a V1 store (`from`, with its `management` rows) into today's shapes:
/// the upcasters, the prelude dated before `from`'s first event (for the conferences whose
/// events `from` does not hold already, see [`backfill_in_place`]), the backfill, and the
/// process managers' checkpoints.
///
/// # Errors
///
/// The store's error reading `from`.
pub async fn upgrade(
    from: &Arc<dyn Storage>,
    management: &Management,
) -> Result<Migration, StoreError> {
    let first = first_time(from).await?;
    Ok(Migration::new(upcasters())
        .with_prelude(missing_prelude(from, management, first).await?)
        .with_backfill(backfill)
        .with_checkpoints(process_checkpoints(from)))
}

/// The prelude's commits for the streams `storage` does not hold yet.
async fn missing_prelude(
    storage: &Arc<dyn Storage>,
    management: &Management,
    first: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<cqrs_core::Commit>, StoreError> {
    let mut missing = Vec::new();
    for commit in prelude(management, first) {
        if storage
            .read_stream(&commit.stream, Version::START)
            .await?
            .is_empty()
        {
            missing.push(commit);
        }
    }
    Ok(missing)
}

/// The first step of an upgrade in place: appends the conference events V1 never
/// stored to the V1 store itself (additive: V1's readers never read those streams), for the
/// conferences it lacks, and moves the process managers' checkpoints past them, as what they
/// describe was processed long ago. Today's application then runs on the store as it is,
/// reading V1's events through the upcasters. Returns the number of events appended.
///
/// Run it while the store's process managers are caught up (a checkpoint behind the head is
/// left where it is, and its process would then react to the re-created events).
///
/// # Errors
///
/// The store's error.
pub async fn backfill_in_place(
    storage: &Arc<dyn Storage>,
    management: &Management,
) -> Result<u64, StoreError> {
    let head = storage.head().await?;
    let first = first_time(storage).await?;
    let mut appended = 0u64;
    for commit in missing_prelude(storage, management, first).await? {
        appended += commit.events.len() as u64;
        storage.commit(commit).await?;
    }
    let new_head = storage.last_committed().await?;
    for name in process_checkpoints(storage) {
        if storage
            .load_checkpoint(&name)
            .await?
            .is_some_and(|at| at >= head)
        {
            storage.save_checkpoint(&name, new_head).await?;
        }
    }
    Ok(appended)
}

/// What [`verify_upgrade`] compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpgradeVerification {
    /// The event-by-event comparison.
    pub events: Verification,
    /// Aggregates loaded from both stores and compared.
    pub aggregates: u64,
    /// Aggregates that differ, by stream.
    pub aggregate_differences: Vec<String>,
    /// Whether the conference directory (with the remaining seats) is the same.
    pub directory_identical: bool,
    /// Whether the order views are the same.
    pub orders_identical: bool,
}

impl UpgradeVerification {
    /// Whether the migrated store means exactly what the old one does.
    #[must_use]
    pub fn is_identical(&self) -> bool {
        self.events.is_identical()
            && self.aggregate_differences.is_empty()
            && self.directory_identical
            && self.orders_identical
    }
}

/// Proves that the migrated store `to` and the V1 store `from` read through the upcasters
/// (with the prelude re-created from `management`) yield the same events, the same
/// aggregates and the same read models.
///
/// # Errors
///
/// As [`Migration::verify`].
pub async fn verify_upgrade(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    management: &Management,
) -> Result<UpgradeVerification, MigrationError> {
    let migration = upgrade(from, management).await?;
    let mut found = UpgradeVerification {
        events: migration.verify(from.as_ref(), to.as_ref()).await?,
        ..UpgradeVerification::default()
    };

    // Read models: the prelude then the old log (upcast on read), against the new log.
    let mut old_directory = ConferenceDirectory::default();
    let mut old_orders = OrderViews::default();
    let mut streams: BTreeMap<String, BTreeSet<StreamId>> = BTreeMap::new();
    let mut position = 0u64;
    for commit in missing_prelude(from, management, first_time(from).await?).await? {
        for (n, event) in commit.events.into_iter().enumerate() {
            position += 1;
            let recorded = RecordedEvent::from_new(
                event,
                commit.stream.clone(),
                Version::new(n as u64 + 1),
                Position::new(position),
            );
            feed(&mut old_directory, &mut old_orders, &recorded)?;
        }
    }
    each_event(from, |event| {
        streams
            .entry(event.stream.category().to_owned())
            .or_default()
            .insert(event.stream.clone());
        feed(&mut old_directory, &mut old_orders, event)
    })
    .await?;
    let mut new_directory = ConferenceDirectory::default();
    let mut new_orders = OrderViews::default();
    each_event(to, |event| feed(&mut new_directory, &mut new_orders, event)).await?;
    found.directory_identical = old_directory == new_directory;
    found.orders_identical = old_orders == new_orders;

    // Aggregates: every stream of the old store, loaded from both.
    for (category, ids) in &streams {
        for stream in ids {
            let Some(local) = stream.local_id() else {
                continue;
            };
            let same = match category.as_str() {
                c if c == Order::TYPE => same_aggregate::<Order>(from, to, local).await,
                c if c == SeatsAvailability::TYPE => {
                    same_aggregate::<SeatsAvailability>(from, to, local).await
                }
                c if c == SeatAssignments::TYPE => {
                    same_aggregate::<SeatAssignments>(from, to, local).await
                }
                c if c == ThirdPartyProcessorPayment::TYPE => {
                    same_aggregate::<ThirdPartyProcessorPayment>(from, to, local).await
                }
                c if c == Conference::TYPE => same_aggregate::<Conference>(from, to, local).await,
                _ => continue,
            };
            found.aggregates += 1;
            match same {
                Ok(true) => {}
                Ok(false) => found.aggregate_differences.push(stream.to_string()),
                Err(why) => found.aggregate_differences.push(format!("{stream}: {why}")),
            }
        }
    }
    Ok(found)
}

async fn first_time(from: &Arc<dyn Storage>) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    Ok(from
        .read_all(Position::START, 1)
        .await?
        .first()
        .map_or_else(chrono::Utc::now, |e| e.metadata.recorded_at))
}

/// Calls `f` with every event of `store`'s log, in order, a page at a time.
async fn each_event(
    store: &Arc<dyn Storage>,
    mut f: impl FnMut(&RecordedEvent) -> Result<(), MigrationError>,
) -> Result<(), MigrationError> {
    let mut next = Position::START;
    loop {
        let page = store.read_all(next, 1_000).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        next = last.position.next();
        for event in &page {
            f(event)?;
        }
    }
}

fn feed(
    directory: &mut ConferenceDirectory,
    orders: &mut OrderViews,
    event: &RecordedEvent,
) -> Result<(), MigrationError> {
    let category = event.stream.category();
    let decode_failed = |e: cqrs_core::ProjectionError| {
        MigrationError::Store(StoreError::Invalid(format!(
            "a read model refused the event: {e}"
        )))
    };
    if category == Conference::TYPE || category == SeatsAvailability::TYPE {
        directory.apply(event).map_err(decode_failed)?;
    }
    if category == Conference::TYPE || category == Order::TYPE || category == SeatAssignments::TYPE
    {
        orders.apply(event).map_err(decode_failed)?;
    }
    Ok(())
}

/// Whether the aggregate `local` loads the same from both stores (the old one through the
/// upcasters).
async fn same_aggregate<A>(
    from: &Arc<dyn Storage>,
    to: &Arc<dyn Storage>,
    local: &str,
) -> Result<bool, String>
where
    A: Aggregate + PartialEq,
    A::Id: std::str::FromStr,
{
    let id: A::Id = local
        .parse()
        .map_err(|_| format!("{local:?} is not an id"))?;
    let old = Repository::<A>::new(Arc::clone(from))
        .with_upcasters(upcasters())
        .load(&id)
        .await
        .map_err(|e| e.to_string())?;
    let new = Repository::<A>::new(Arc::clone(to))
        .with_upcasters(upcasters())
        .load(&id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(old.state == new.state && old.version == new.version)
}

/// Where the management rows of the store at `url` are kept by default: beside a SQLite
/// file (`PATH.management.json`); other stores need `--management`.
#[must_use]
pub fn default_management_path(url: &str) -> Option<PathBuf> {
    url.strip_prefix("sqlite://").map(|path| {
        let path = path.split('?').next().unwrap_or(path);
        PathBuf::from(format!("{path}.management.json"))
    })
}

/// Reads management rows.
///
/// # Errors
///
/// If the file cannot be read or is not management rows.
pub fn read_management(path: &Path) -> Result<Management, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the management rows at {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} holds no management rows: {e}", path.display()))
}

/// Writes management rows.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write_management(path: &Path, management: &Management) -> Result<(), String> {
    let text = serde_json::to_string_pretty(management).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| {
        format!(
            "cannot write the management rows to {}: {e}",
            path.display()
        )
    })
}
