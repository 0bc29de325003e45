//! The application layer that the CLI and the web app share: typed commands in, typed errors
//! out, queries over the read models; and the engine that keeps the read models and the
//! processes running.
//!
//! # Examples
//!
//! ```
//! use conference_example::app::{AppConfig, ConferenceApp, NewConference};
//! use cqrs_core::{InMemoryEventStore, ManualClock};
//! # tokio_test::block_on(async {
//! let clock = ManualClock::new("2026-05-04T09:00:00Z".parse()?);
//! let app = ConferenceApp::new(
//!     std::sync::Arc::new(InMemoryEventStore::new()),
//!     std::sync::Arc::new(clock.clone()),
//!     AppConfig::default(),
//! );
//! let (conference, _code) = app.create_conference(NewConference::example("rustconf")).await?;
//! app.settle().await?;
//! assert_eq!(app.conference_by_slug("rustconf").unwrap().id, conference);
//! # Ok::<(), anyhow::Error>(()) }).unwrap();
//! ```

mod error;
mod storage;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_core::{
    BlueGreen, BlueGreenStatus, Clock, CommandError, Decider, LogEntry, LogQuery, Projection,
    Repository, Running, SnapshotPolicy, Storage, System,
};
use sha2::{Digest, Sha256};

pub use crate::app::error::{AppError, Rejection};
pub use crate::app::storage::{check_tagged, open_storage};
use crate::domain::{
    AccessCode, Conference, ConferenceCommand, ConferenceCreation, ConferenceDetails, ConferenceId,
    OneOpenOrderPerRegistrant, Order, OrderCommand, OrderError, OrderId, Owner, OwnerSession,
    OwnerSessionCommand, PaymentCommand, PaymentId, PersonalInfo, RegistrantAssignment,
    RegistrationProcess, SeatAssignments, SeatAssignmentsCommand, SeatQuantity, SeatQuotas,
    SeatType, SeatTypeId, SeatsAvailability, ThirdPartyProcessorPayment, UniqueSlug,
};
pub use crate::read::ReadModels;
use crate::read::{
    ConferenceDirectory, ConferenceView, DraftOrder, OrderSeat, OrderSummary, OrderViews,
    PricedOrder, conference_directory, conference_directory_v1, order_views, order_views_v1,
};

/// How long reservations last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppConfig {
    /// How long a registrant has to pay once they placed an order (15 minutes).
    pub reservation_window: Duration,
    /// How much longer an unpaid order's seats stay held, so that a payment under way can
    /// finish (14 minutes).
    pub release_buffer: Duration,
    /// The read models' generation at start; [`ConferenceApp::upgrade_read_models`] moves
    /// V1's to today's with no pause.
    pub read_models: ReadModels,
    /// How many orders of one conference may wait for their seats before new orders for it
    /// are turned away with [`AppError::Overloaded`] (500): the queue one conference can
    /// put in front of the others.
    pub max_awaiting_per_conference: u32,
    /// How many orders of all conferences together may wait for their seats (2,000).
    pub max_awaiting: u64,
    /// How many times a scheduled command (a timeout, a process manager's command) is tried
    /// before it is parked as a dead letter for the operator (10).
    pub delivery_attempts: u32,
    /// How long after a failed delivery it is tried again (30 s): also how long a dispatcher
    /// that stopped mid-delivery holds a command before another takes it.
    pub delivery_retry_after: std::time::Duration,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            reservation_window: Duration::minutes(15),
            release_buffer: Duration::minutes(14),
            read_models: ReadModels::Current,
            max_awaiting_per_conference: 500,
            max_awaiting: 2_000,
            delivery_attempts: 10,
            delivery_retry_after: std::time::Duration::from_secs(30),
        }
    }
}

/// How long a registrant turned away by [`AppError::Overloaded`] is asked to wait: a full
/// conference queue is reserved in well under that.
const OVERLOAD_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// A page of a list, in a stable order (its items' ids): the next page starts after the last
/// item of this one, so items added or removed meanwhile never shift what a cursor means.
///
/// ```
/// use conference_example::app::Page;
/// let page = Page::of(vec![1, 2, 3], 2, |n| n.to_string());
/// assert_eq!(page.items, [1, 2]);
/// assert_eq!(page.next.as_deref(), Some("2"));
/// assert_eq!(Page::of(vec![1, 2], 2, |n| n.to_string()).next, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// At most the page's limit of items.
    pub items: Vec<T>,
    /// The cursor to the next page (the last item's id), none on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of `limit` out of `fetched` (up to `limit + 1` items: one more tells whether a
    /// next page exists), with `cursor` naming an item.
    pub fn of(mut fetched: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Self {
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let next = if more {
            fetched.last().map(&cursor)
        } else {
            None
        };
        Self {
            items: fetched,
            next,
        }
    }
}

/// How long an owner's portal session lasts (8 hours) unless they sign out first.
pub const OWNER_SESSION_LIFETIME: Duration = Duration::hours(8);

/// The secret a browser keeps for an owner's session: 256 random bits, as 64 hex digits.
/// The store knows the session by a hash of it, so the event log does not hold the secret.
///
/// ```
/// use conference_example::app::SessionToken;
/// let token = SessionToken::generate();
/// assert_eq!(token.as_str().len(), 64);
/// assert!(token.as_str().parse::<SessionToken>().is_ok_and(|t| t == token));
/// assert_ne!(token.session_id(), token.as_str(), "the store never sees the token");
/// assert!("not a token".parse::<SessionToken>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// A fresh random token.
    #[must_use]
    pub fn generate() -> Self {
        let bytes: Vec<u8> = (0..4)
            .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
            .collect();
        // A v4 UUID has 122 random bits; four of them, hashed, make 256 uniform ones.
        Self(hex(&Sha256::digest(&bytes)))
    }

    /// The token as the cookie carries it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of its session in the store.
    #[must_use]
    pub fn session_id(&self) -> String {
        hex(&Sha256::digest(format!("session:{}", self.0)))[..32].to_owned()
    }

    /// The token a form of this session carries, against cross-site requests: derived from
    /// the session's secret, so only a page of the session knows it.
    #[must_use]
    pub fn form_token(&self) -> String {
        hex(&Sha256::digest(format!("form:{}", self.0)))[..32].to_owned()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

impl std::str::FromStr for SessionToken {
    type Err = AppError;

    fn from_str(s: &str) -> Result<Self, AppError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(AppError::Invalid("not a session token".into()))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// What a session keeps of an access code: enough to see that the code changed, nothing to
/// sign in with.
fn code_hash(code: &AccessCode) -> String {
    hex(&Sha256::digest(format!("access-code:{code}")))[..32].to_owned()
}

/// How many conferences' seats stay in memory between commands.
const SEATS_CACHED: usize = 1_024;

/// The most seats of one type an order may ask for, on the site and through the API alike
/// (the CQRS Journey's site offered 0 to 20).
pub const MAX_SEATS_PER_TYPE: u32 = 20;

/// What an owner gives to create a conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConference {
    /// Its URL segment (letters, digits, `_`), unique.
    pub slug: String,
    /// What the public sees.
    pub details: ConferenceDetails,
    /// Who runs it.
    pub owner: Owner,
}

impl NewConference {
    /// A conference with made-up details, for examples and tests.
    #[must_use]
    pub fn example(slug: &str) -> Self {
        let start: DateTime<Utc> = "2026-09-14T09:00:00Z".parse().unwrap_or_default();
        Self {
            slug: slug.to_owned(),
            details: ConferenceDetails {
                name: format!("{slug} 2026"),
                description: "Talks and workshops".into(),
                location: "Lisbon".into(),
                tagline: String::new(),
                twitter_search: String::new(),
                start_date: start,
                end_date: start + Duration::days(2),
            },
            owner: Owner {
                name: "Ana Lima".into(),
                email: "ana@example.com".into(),
            },
        }
    }
}

/// What starting a payment came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStep {
    /// The order costs nothing: it was confirmed with no payment.
    ConfirmedFree,
    /// A payment was started; the registrant completes or cancels it with the processor.
    Started(PaymentId),
}

/// The conference application on one storage: every operation the registrant's site, the
/// owner's portal and the CLI offer. Cheap to clone.
#[derive(Clone)]
pub struct ConferenceApp {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    config: AppConfig,
    conferences: Repository<Conference>,
    slugs: Decider<UniqueSlug>,
    orders: Repository<Order>,
    registrants: Decider<OneOpenOrderPerRegistrant>,
    assignments: Repository<SeatAssignments>,
    payments: Repository<ThirdPartyProcessorPayment>,
    sessions: Repository<OwnerSession>,
    directory: BlueGreen<ConferenceDirectory>,
    order_views: BlueGreen<OrderViews>,
    system: System,
    shed: Arc<ShedLog>,
}

/// Tells the operator that orders are being turned away, at most once every ten seconds: a
/// burst turned away is logged, not a log line per request.
#[derive(Debug, Default)]
struct ShedLog {
    since_last: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl ShedLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn turned_away(&self, conference: ConferenceId, here: u32, all: u64) {
        use std::sync::atomic::Ordering;
        let count = self.since_last.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        *last = Some(std::time::Instant::now());
        self.since_last.fetch_sub(count, Ordering::Relaxed);
        tracing::warn!(
            turned_away = count,
            %conference,
            awaiting_here = here,
            awaiting_in_all = all,
            "orders turned away: too many wait for their seats"
        );
    }
}

impl std::fmt::Debug for ConferenceApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConferenceApp")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConferenceApp {
    /// The application on `storage`, with time from `clock`.
    ///
    /// Nothing runs until [`settle`](Self::settle) (step by step, for tests and the demo) or
    /// [`start`](Self::start) (live, for a server).
    #[must_use]
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>, config: AppConfig) -> Self {
        // Every part decodes through the upcasters (a V1 store runs as it is) and keeps time by
        // the one clock; the system routes scheduled commands to each.
        let (attempts, retry_after) = (
            config.delivery_attempts,
            chrono::Duration::from_std(config.delivery_retry_after)
                .unwrap_or(chrono::Duration::seconds(30)),
        );
        let system = System::builder(Arc::clone(&storage))
            .clock(Arc::clone(&clock))
            .upcasters(crate::domain::versions::upcasters())
            .dispatcher(move |dispatcher| {
                dispatcher
                    .with_max_attempts(attempts)
                    .with_lease(retry_after)
            })
            .build();
        let conferences = system.repository::<Conference>();
        let slugs = system.decider::<UniqueSlug>();
        let orders = system.repository::<Order>();
        let registrants = system.decider::<OneOpenOrderPerRegistrant>();
        // A conference's seats see every reservation: each command starts from the state the
        // last one left in memory (its held reservations can number thousands), and snapshots
        // keep a restart's first load short.
        let _seats = system.repository_with::<SeatsAvailability>(|seats| {
            seats
                .with_snapshots(SnapshotPolicy::every(1_000))
                .with_cache(SEATS_CACHED)
        });
        let assignments = system.repository::<SeatAssignments>();
        let payments = system.repository::<ThirdPartyProcessorPayment>();
        // A session is one small stream read on every portal request: no message log for it
        // (its events are the record), and the commands carry no secret.
        let sessions = system.repository::<OwnerSession>();
        let _quotas = system.process_manager::<SeatQuotas>();
        let _registration = system.process_manager::<RegistrationProcess>();
        // The read models can be replaced by a new version while they serve.
        let (directory, order_views) = match config.read_models {
            ReadModels::V1 => (conference_directory_v1(), order_views_v1()),
            ReadModels::Current => (conference_directory(), order_views()),
        };
        let directory = system.blue_green(directory);
        let order_views = system.blue_green(order_views);
        Self {
            storage,
            clock,
            config,
            system,
            conferences,
            slugs,
            orders,
            registrants,
            assignments,
            payments,
            sessions,
            directory,
            order_views,
            shed: Arc::default(),
        }
    }

    /// The storage the application runs on.
    #[must_use]
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Runs the processes, the read models and the commands they send until nothing is left
    /// to do now: after it returns, every read model shows every effect of what was done
    /// before the call (timeouts fall due only when the clock reaches them).
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails or a read model cannot be updated.
    pub async fn settle(&self) -> Result<(), AppError> {
        self.system
            .settle()
            .await
            .map_err(|e| AppError::Unavailable(Box::new(e)))
    }

    /// Starts the processes, the read models and the dispatcher as background tasks that
    /// follow the log live, for a server. Stop them with [`Engine::stop`].
    #[must_use]
    pub fn start(&self) -> Engine {
        Engine {
            running: self.system.spawn(),
        }
    }

    /// Starts only the read models, following the log live: for a server that takes over
    /// from another (it catches up before the switch, then [`start`](Self::start)s the rest).
    pub fn start_read_models(&self) {
        self.directory.start();
        self.order_views.start();
    }

    /// Builds today's read models beside V1's while they keep serving, and switches to each
    /// once it has caught up (nothing to do if today's are live). Progress shows in
    /// [`read_model_status`](Self::read_model_status).
    ///
    /// # Errors
    ///
    /// [`AppError::Busy`] if an upgrade is under way already.
    pub fn upgrade_read_models(&self) -> Result<(), AppError> {
        let current = (conference_directory(), order_views());
        if self.directory.live_key() != current.0.key() {
            self.directory
                .upgrade(current.0)
                .map_err(|e| AppError::Busy(e.to_string()))?;
        }
        if self.order_views.live_key() != current.1.key() {
            self.order_views
                .upgrade(current.1)
                .map_err(|e| AppError::Busy(e.to_string()))?;
        }
        Ok(())
    }

    /// Builds the read model `name` (`conference_directory` or `order_views`) again from the
    /// start of the log, beside the live one, which keeps serving until the new copy has
    /// caught up and replaces it. Progress shows in
    /// [`read_model_status`](Self::read_model_status).
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] for another name, [`AppError::Busy`] if that read model is
    /// being built already.
    pub fn rebuild_read_model(&self, name: &str) -> Result<(), AppError> {
        let busy = |e: cqrs_core::ProjectionError| AppError::Busy(e.to_string());
        match name {
            "conference_directory" => {
                let fresh = [conference_directory(), conference_directory_v1()]
                    .into_iter()
                    .find(|p| p.key() == self.directory.live_key())
                    .unwrap_or_else(conference_directory);
                self.directory.rebuild(fresh).map_err(busy)
            }
            "order_views" => {
                let fresh = [order_views(), order_views_v1()]
                    .into_iter()
                    .find(|p| p.key() == self.order_views.live_key())
                    .unwrap_or_else(order_views);
                self.order_views.rebuild(fresh).map_err(busy)
            }
            other => Err(AppError::NotFound(format!("no read model named {other:?}"))),
        }
    }

    /// Puts the dead letter `id` (a scheduled command given up after its last attempt) back
    /// in the schedule, due now with fresh attempts, and wakes the dispatcher.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if no dead letter has that id (retried or discarded already),
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn retry_dead_letter(&self, id: uuid::Uuid) -> Result<(), AppError> {
        let now = self.system.clock().now();
        let retried = self
            .storage
            .retry_parked(id, now)
            .await
            .map_err(|e| AppError::Unavailable(Box::new(e)))?;
        if !retried {
            return Err(AppError::NotFound(format!("no dead letter {id}")));
        }
        tracing::info!(command_id = %id, "a dead letter was put back in the schedule");
        self.system.dispatcher().waker().wake();
        Ok(())
    }

    /// Discards the dead letter `id`: it is recorded as rejected in the message log, with the
    /// reason it was given up, and never delivered.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if no dead letter has that id (retried or discarded already),
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn discard_dead_letter(&self, id: uuid::Uuid) -> Result<(), AppError> {
        let now = self.system.clock().now();
        let discarded =
            cqrs_core::discard_parked(&*self.storage, id, "discarded by the operator", now)
                .await
                .map_err(|e| AppError::Unavailable(Box::new(e)))?;
        if !discarded {
            return Err(AppError::NotFound(format!("no dead letter {id}")));
        }
        tracing::info!(command_id = %id, "a dead letter was discarded");
        Ok(())
    }

    /// Where each read model stands: the live version, one being built, against the log's
    /// head.
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn read_model_status(&self) -> Result<Vec<BlueGreenStatus>, AppError> {
        let mut all = Vec::new();
        for status in [
            self.directory.status_with_head().await,
            self.order_views.status_with_head().await,
        ] {
            all.push(status.map_err(|e| AppError::Unavailable(Box::new(e)))?);
        }
        Ok(all)
    }

    // ----- conference management (owners) -----

    /// Creates [`NewConference::example`] under `slug` with one seat type, "Pass", of
    /// `quantity` seats at $100, publishes it and settles: where a test, a benchmark or a
    /// demo of one conference starts. Returns the conference, its seat type and its code.
    ///
    /// # Errors
    ///
    /// As [`create_conference`](Self::create_conference) (a taken slug, say), and the store's.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use conference_example::app::{AppConfig, ConferenceApp};
    /// # use cqrs_core::{InMemoryEventStore, SystemClock};
    /// # tokio_test::block_on(async {
    /// let app = ConferenceApp::new(Arc::new(InMemoryEventStore::new()), Arc::new(SystemClock), AppConfig::default());
    /// let (conference, seat_type, _code) = app.publish_example("devconf", 100).await?;
    /// let view = app.conference_by_slug("devconf").expect("published");
    /// assert_eq!((view.id, view.published), (conference, true));
    /// assert_eq!(view.seat_types[&seat_type].available, Some(100));
    /// # Ok::<(), conference_example::app::AppError>(()) }).unwrap();
    /// ```
    pub async fn publish_example(
        &self,
        slug: &str,
        quantity: u32,
    ) -> Result<(ConferenceId, SeatTypeId, AccessCode), AppError> {
        let (conference, code) = self.create_conference(NewConference::example(slug)).await?;
        let seat_type = self
            .add_seat_type(
                conference,
                SeatType {
                    name: "Pass".into(),
                    description: "Both days".into(),
                    quantity,
                    price: rust_decimal::Decimal::new(10_000, 2),
                },
            )
            .await?;
        self.manage(conference, ConferenceCommand::Publish).await?;
        self.settle().await?;
        Ok((conference, seat_type, code))
    }

    /// Creates a conference, unpublished, and returns its id and the access code that, with
    /// the owner's email, opens its admin pages.
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] if a field is wrong or the slug is taken.
    pub async fn create_conference(
        &self,
        new: NewConference,
    ) -> Result<(ConferenceId, AccessCode), AppError> {
        let id = ConferenceId::new();
        let access_code = AccessCode::generate();
        let create = ConferenceCommand::Create {
            slug: new.slug.clone(),
            details: new.details,
            owner: new.owner,
            access_code: access_code.clone(),
        };
        // One commit: the conference's creation, on the condition that no conference was
        // created under its slug meanwhile.
        self.slugs
            .handle(ConferenceCreation::Create {
                conference: id,
                create,
            })
            .await?;
        Ok((id, access_code))
    }

    /// Runs an owner's command on a conference.
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] if the conference's rules refuse it.
    pub async fn manage(
        &self,
        conference: ConferenceId,
        command: ConferenceCommand,
    ) -> Result<(), AppError> {
        self.conferences.handle(&conference, command).await?;
        Ok(())
    }

    /// Replaces a conference's access code and returns the new one: every owner session
    /// opened with the old code ends (see [`owner_session`](Self::owner_session)).
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] for an unknown conference.
    pub async fn change_access_code(
        &self,
        conference: ConferenceId,
    ) -> Result<AccessCode, AppError> {
        let access_code = AccessCode::generate();
        self.manage(
            conference,
            ConferenceCommand::ChangeAccessCode {
                access_code: access_code.clone(),
            },
        )
        .await?;
        Ok(access_code)
    }

    // ----- owners' portal sessions -----

    /// Signs an owner in: checks their email and access code, and opens a session that
    /// lasts [`OWNER_SESSION_LIFETIME`]. Returns the token the browser keeps (the only
    /// secret it holds) and the conference.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if no conference has this owner and code.
    pub async fn open_owner_session(
        &self,
        email: &str,
        access_code: &AccessCode,
    ) -> Result<(SessionToken, ConferenceView), AppError> {
        let view = self.owner_conference(email, access_code)?;
        let token = SessionToken::generate();
        self.sessions
            .handle(
                &token.session_id(),
                OwnerSessionCommand::Open {
                    conference: view.id,
                    email: view.owner.email.clone(),
                    code_hash: code_hash(&view.access_code),
                    expires_at: self.clock.now() + OWNER_SESSION_LIFETIME,
                },
            )
            .await
            .map_err(|e| AppError::Unavailable(Box::new(e)))?;
        Ok((token, view))
    }

    /// The conference the session under `token` manages, while it is open: not signed out,
    /// not past its lifetime, and its conference's access code unchanged since.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if there is no such open session;
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn owner_session(&self, token: &SessionToken) -> Result<ConferenceView, AppError> {
        let closed = || AppError::NotFound("open session".into());
        let session = self
            .sessions
            .load(&token.session_id())
            .await?
            .state
            .ok_or_else(closed)?;
        let view = self.conference(session.conference).ok_or_else(closed)?;
        if !session.is_open(self.clock.now(), &code_hash(&view.access_code))
            || !session.email.eq_ignore_ascii_case(&view.owner.email)
        {
            return Err(closed());
        }
        Ok(view)
    }

    /// Signs the session under `token` out, for every server on the store.
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn close_owner_session(&self, token: &SessionToken) -> Result<(), AppError> {
        self.sessions
            .handle(&token.session_id(), OwnerSessionCommand::Close)
            .await
            .map_err(|e| AppError::Unavailable(Box::new(e)))?;
        Ok(())
    }

    /// Adds a seat type to a conference and returns its id.
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] if a field is out of range.
    pub async fn add_seat_type(
        &self,
        conference: ConferenceId,
        seats: SeatType,
    ) -> Result<SeatTypeId, AppError> {
        let seat_type = SeatTypeId::new();
        self.manage(
            conference,
            ConferenceCommand::AddSeatType { seat_type, seats },
        )
        .await?;
        Ok(seat_type)
    }

    /// The conference an owner opens with their email and access code.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if no conference matches both.
    pub fn owner_conference(
        &self,
        email: &str,
        access_code: &AccessCode,
    ) -> Result<ConferenceView, AppError> {
        self.directory
            .read(|d| {
                d.all()
                    .find(|c| {
                        c.access_code == *access_code && c.owner.email.eq_ignore_ascii_case(email)
                    })
                    .cloned()
            })
            .ok_or_else(|| AppError::NotFound("conference for this email and access code".into()))
    }

    /// Every order ever placed for `conference`, expired ones too: the streams whose messages
    /// its owner may see.
    #[must_use]
    pub fn conference_order_ids(&self, conference: ConferenceId) -> Vec<OrderId> {
        self.order_views.read(|v| v.placed_in(conference).collect())
    }

    /// A page of `conference`'s orders for its owner: at most `limit` after the order
    /// `after`, in the order of their ids, with the cursor to the next page.
    #[must_use]
    pub fn conference_orders_page(
        &self,
        conference: ConferenceId,
        after: Option<OrderId>,
        limit: usize,
    ) -> Page<OrderSummary> {
        let limit = limit.max(1);
        let items: Vec<OrderSummary> = self.order_views.read(|v| {
            v.of_conference_after(conference, after)
                .take(limit + 1)
                .cloned()
                .collect()
        });
        Page::of(items, limit, |o| o.order.to_string())
    }

    /// Every order of a conference, for its owner (see
    /// [`conference_orders_page`](Self::conference_orders_page) for a page).
    #[must_use]
    pub fn conference_orders(&self, conference: ConferenceId) -> Vec<OrderSummary> {
        self.order_views
            .read(|v| v.of_conference(conference).cloned().collect())
    }

    // ----- registration (registrants) -----

    /// The conference named `slug`, published or not.
    #[must_use]
    pub fn conference_by_slug(&self, slug: &str) -> Option<ConferenceView> {
        self.directory.read(|d| d.by_slug(slug).cloned())
    }

    /// The conference `id`, published or not.
    #[must_use]
    pub fn conference(&self, id: ConferenceId) -> Option<ConferenceView> {
        self.directory.read(|d| d.get(id).cloned())
    }

    /// The version of the conference's stream in the store (0: no such conference), to wait
    /// for the directory to show it.
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn conference_version(&self, id: ConferenceId) -> Result<u64, AppError> {
        Ok(self.conferences.load(&id).await?.version.get())
    }

    /// The version of an order's stream in the store (0: no such order).
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn order_version(&self, order: OrderId) -> Result<u64, AppError> {
        Ok(self.orders.load(&order).await?.version.get())
    }

    /// The published conferences.
    #[must_use]
    pub fn published_conferences(&self) -> Vec<ConferenceView> {
        self.directory.read(|d| d.published().cloned().collect())
    }

    /// A page of the published conferences: at most `limit` after the conference `after`,
    /// in the order they were created, with the cursor to the next page.
    #[must_use]
    pub fn published_conferences_page(
        &self,
        after: Option<ConferenceId>,
        limit: usize,
    ) -> Page<ConferenceView> {
        let limit = limit.max(1);
        let items: Vec<ConferenceView> = self.directory.read(|d| {
            d.published_after(after)
                .take(limit.saturating_add(1))
                .cloned()
                .collect()
        });
        Page::of(items, limit, |c| c.id.to_string())
    }

    /// Places an order for seats of a published conference, priced at its seat types' current
    /// prices; its seats are then reserved by the registration process.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] for an unknown or unpublished conference,
    /// [`AppError::Rejected`] for no seats or a seat type not on sale.
    pub async fn place_order(
        &self,
        conference: ConferenceId,
        seats: Vec<SeatQuantity>,
    ) -> Result<OrderId, AppError> {
        let order = OrderId::new();
        self.place_order_as(order, conference, seats).await?;
        Ok(order)
    }

    /// Turns a new order away while the registration process has too many orders of
    /// `conference`, or of all conferences, still to reserve: the backlog stays bounded, so
    /// an order accepted is reserved in seconds, and one conference's burst cannot queue
    /// every other conference's orders behind it.
    fn admit_order(&self, conference: ConferenceId) -> Result<(), AppError> {
        let (here, all) = self.order_views.read(|v| {
            (
                v.awaiting_reservation(conference),
                v.awaiting_reservation_in_all(),
            )
        });
        #[expect(
            clippy::cast_precision_loss,
            reason = "a count of orders is below 2^53"
        )]
        metrics::gauge!(crate::telemetry::ORDERS_AWAITING).set(all as f64);
        let message = if here >= self.config.max_awaiting_per_conference {
            format!(
                "{here} orders for this conference are waiting for their seats: try again in a moment"
            )
        } else if all >= self.config.max_awaiting {
            format!("{all} orders are waiting for their seats: try again in a moment")
        } else {
            return Ok(());
        };
        self.shed.turned_away(conference, here, all);
        metrics::counter!(crate::telemetry::ORDERS_TURNED_AWAY, "reason" => "overloaded")
            .increment(1);
        Err(AppError::Overloaded {
            message,
            retry_after: OVERLOAD_RETRY_AFTER,
        })
    }

    /// Places an order under an id the client chose (so that a retried request does not place
    /// a second one); if that order exists already, its seats are changed instead. Returns the
    /// order's version after it, which the draft order reaches once it shows the change.
    ///
    /// # Errors
    ///
    /// As [`place_order`](Self::place_order), and [`AppError::Rejected`] if the existing
    /// order is for another conference, confirmed or expired.
    pub async fn place_order_as(
        &self,
        order: OrderId,
        conference: ConferenceId,
        seats: Vec<SeatQuantity>,
    ) -> Result<u64, AppError> {
        let command = self.register(conference, seats)?;
        self.admit_order(conference)?;
        let handled = self.orders.handle(&order, command).await?;
        Ok(handled.version.get())
    }

    /// Changes the seats of an order not confirmed yet; they are reserved again, under the
    /// original deadline. Returns the order's version after the change.
    ///
    /// # Errors
    ///
    /// As [`place_order`](Self::place_order), and [`AppError::Rejected`] for a confirmed or
    /// expired order.
    pub async fn update_order(
        &self,
        order: OrderId,
        seats: Vec<SeatQuantity>,
    ) -> Result<u64, AppError> {
        let conference = self
            .orders
            .load(&order)
            .await?
            .state
            .map(|o| o.conference)
            .ok_or_else(|| AppError::NotFound(format!("order {order}")))?;
        let command = self.register(conference, seats)?;
        self.admit_order(conference)?;
        let handled = self.orders.handle(&order, command).await?;
        Ok(handled.version.get())
    }

    fn register(
        &self,
        conference: ConferenceId,
        seats: Vec<SeatQuantity>,
    ) -> Result<OrderCommand, AppError> {
        // As the site offers: one request cannot hold a whole conference.
        let seats = SeatQuantity::merged(seats);
        if seats.iter().any(|s| s.quantity > MAX_SEATS_PER_TYPE) {
            return Err(AppError::Invalid(format!(
                "an order holds at most {MAX_SEATS_PER_TYPE} seats of a type"
            )));
        }
        let view = self
            .directory
            .read(|d| d.get(conference).filter(|c| c.published).cloned())
            .ok_or_else(|| AppError::NotFound(format!("published conference {conference}")))?;
        let now = self.clock.now();
        let reservation_expires_at = now + self.config.reservation_window;
        Ok(OrderCommand::RegisterToConference {
            conference,
            seats,
            prices: view.prices(),
            access_code: AccessCode::generate(),
            reservation_expires_at,
            seats_released_at: reservation_expires_at + self.config.release_buffer,
        })
    }

    /// Records who is registering, if they have no other order in progress for the
    /// conference ([`OneOpenOrderPerRegistrant`]).
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] if a field is missing or the email is wrong, the order is
    /// closed, or the registrant has another open order for the conference
    /// ([`RegistrantError::AnotherOrderOpen`](crate::domain::RegistrantError::AnotherOrderOpen)).
    pub async fn assign_registrant(
        &self,
        order: OrderId,
        registrant: PersonalInfo,
    ) -> Result<(), AppError> {
        self.registrants
            .handle(RegistrantAssignment::Assign { order, registrant })
            .await?;
        Ok(())
    }

    /// Moves a reserved order to payment: an order that costs nothing is confirmed at once,
    /// with no payment; otherwise a payment with the (simulated) processor starts.
    ///
    /// # Errors
    ///
    /// [`AppError::NotReady`] if the order's seats are not held yet (call again once the
    /// draft order shows them), [`AppError::Rejected`] for an expired order.
    pub async fn start_payment(&self, order: OrderId) -> Result<PaymentStep, AppError> {
        // Freeze the seats first, then price what is frozen: the order itself, not a read
        // model that may lag, says what the payment is for.
        match self
            .orders
            .handle(&order, OrderCommand::LockForPayment)
            .await
        {
            Ok(_) => {}
            Err(CommandError::Rejected(OrderError::AlreadyConfirmed)) => {
                return Ok(PaymentStep::ConfirmedFree);
            }
            Err(CommandError::Rejected(OrderError::NotReserved)) => {
                return Err(AppError::NotReady(
                    "the order's seats are still being reserved".into(),
                ));
            }
            Err(err) => return Err(err.into()),
        }
        let locked = self
            .orders
            .load(&order)
            .await?
            .state
            .ok_or_else(|| AppError::NotFound(format!("order {order}")))?;
        if locked.totals.is_free_of_charge() {
            self.orders.handle(&order, OrderCommand::Confirm).await?;
            return Ok(PaymentStep::ConfirmedFree);
        }
        let payment = PaymentId::new();
        let name = self
            .directory
            .read(|d| d.get(locked.conference).map(|c| c.details.name.clone()))
            .unwrap_or_default();
        self.payments
            .handle(
                &payment,
                PaymentCommand::Initiate {
                    order,
                    conference: locked.conference,
                    description: format!("Seats for {name}"),
                    total: locked.totals.total,
                },
            )
            .await?;
        Ok(PaymentStep::Started(payment))
    }

    /// The processor accepted a payment: the registration process confirms its order.
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] for an unknown or finished payment.
    pub async fn complete_payment(&self, payment: PaymentId) -> Result<(), AppError> {
        self.payments
            .handle(&payment, PaymentCommand::Complete)
            .await?;
        Ok(())
    }

    /// A payment as the (simulated) processor shows it: what it is for, how much, and where
    /// it stands.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] for an unknown payment, [`AppError::Unavailable`] if the store
    /// fails.
    pub async fn payment(
        &self,
        payment: PaymentId,
    ) -> Result<ThirdPartyProcessorPayment, AppError> {
        self.payments
            .load(&payment)
            .await?
            .state
            .ok_or_else(|| AppError::NotFound(format!("payment {payment}")))
    }

    /// The registrant cancelled a payment.
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] for an unknown or finished payment.
    pub async fn cancel_payment(&self, payment: PaymentId) -> Result<(), AppError> {
        self.payments
            .handle(&payment, PaymentCommand::Cancel)
            .await?;
        let order = self
            .payments
            .load(&payment)
            .await?
            .state
            .map(|p| p.order)
            .ok_or_else(|| AppError::NotFound(format!("payment {payment}")))?;
        // The registrant may change the order's seats again, or pay anew.
        self.orders.handle(&order, OrderCommand::Unlock).await?;
        Ok(())
    }

    /// Puts an attendee in a seat of a confirmed order, or frees the seat (`None`).
    ///
    /// # Errors
    ///
    /// [`AppError::Rejected`] for an unknown position, a wrong email, or an order whose
    /// seats have no assignments yet.
    pub async fn assign_seat(
        &self,
        order: OrderId,
        position: u32,
        attendee: Option<PersonalInfo>,
    ) -> Result<(), AppError> {
        let command = match attendee {
            Some(attendee) => SeatAssignmentsCommand::AssignSeat { position, attendee },
            None => SeatAssignmentsCommand::UnassignSeat { position },
        };
        self.assignments.handle(&order, command).await?;
        Ok(())
    }

    /// The draft order `order`.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if there is none (yet).
    pub fn draft_order(&self, order: OrderId) -> Result<DraftOrder, AppError> {
        self.order_views
            .read(|v| v.draft(order).cloned())
            .ok_or_else(|| AppError::NotFound(format!("order {order}")))
    }

    /// The priced order `order` (none once it expired).
    #[must_use]
    pub fn priced_order(&self, order: OrderId) -> Option<PricedOrder> {
        self.order_views.read(|v| v.priced(order).cloned())
    }

    /// The seats of the confirmed order `order`.
    #[must_use]
    pub fn order_seats(&self, order: OrderId) -> Option<Vec<OrderSeat>> {
        self.order_views
            .read(|v| v.seats(order).map(<[OrderSeat]>::to_vec))
    }

    /// The order a registrant finds with their email and the order's access code.
    ///
    /// # Errors
    ///
    /// [`AppError::NotFound`] if none matches both.
    pub fn locate_order(
        &self,
        email: &str,
        access_code: &AccessCode,
    ) -> Result<DraftOrder, AppError> {
        self.order_views
            .read(|v| v.locate(email, access_code).cloned())
            .ok_or_else(|| AppError::NotFound("order for this email and access code".into()))
    }

    /// Entries of the message log: every command and event, with their lineage.
    ///
    /// # Errors
    ///
    /// [`AppError::Unavailable`] if the store fails.
    pub async fn log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, AppError> {
        Ok(self.storage.query_log(query).await?)
    }
}

/// The background tasks of a started application.
#[derive(Debug)]
pub struct Engine {
    running: Running,
}

impl Engine {
    /// Stops every task, letting each finish what it is doing.
    pub async fn stop(self) {
        self.running.stop().await;
    }
}
