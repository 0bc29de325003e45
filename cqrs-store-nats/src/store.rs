//! [`NatsEventStore`]: connecting, the streams it keeps, events.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use cqrs_core::store::{
    CommitNotifier, Decide, SubscriptionOptions, subscription, truncate_to_micros,
};
use cqrs_core::{
    Appended, BatchStream, Commit, EventFilter, EventReader, EventStore, ExpectedVersion, Position,
    ReadBatch, RecordedEvent, StoreError, StreamId, Version,
};
use futures::StreamExt;
use tokio::task::JoinHandle;

use crate::codec::{self, Raw};
use crate::conn::{Conn, MAX_BATCH, Refused, Until};
use crate::dcb::{self, Message};
use crate::schedule;
use crate::subject::{self, Names};

/// How a [`NatsEventStore`] names and replicates what it keeps.
///
/// ```
/// use std::time::Duration;
/// use cqrs_store_nats::NatsOptions;
///
/// let options = NatsOptions::default()
///     .with_stream_prefix("SHOP")
///     .with_subject_prefix("shop")
///     .with_replicas(3)
///     .with_timeout(Duration::from_secs(10));
/// assert_eq!(options.replicas(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    stream_prefix: String,
    subject_prefix: String,
    replicas: usize,
    timeout: Duration,
    setup_timeout: Duration,
}

impl Default for NatsOptions {
    /// Streams `CQRS_*`, subjects `cqrs.*`, three replicas, requests answered within 5 s,
    /// the set-up given 30 s.
    fn default() -> Self {
        Self {
            stream_prefix: "CQRS".to_owned(),
            subject_prefix: "cqrs".to_owned(),
            replicas: 3,
            timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(30),
        }
    }
}

impl NatsOptions {
    /// Names the store's JetStream streams `{prefix}_LOG`, `{prefix}_STATE` and
    /// `{prefix}_SNAPSHOTS` (1 to 32 ASCII letters, digits, `-` or `_`): several stores share
    /// a cluster under different prefixes.
    #[must_use]
    pub fn with_stream_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.stream_prefix = prefix.into();
        self
    }

    /// Starts every subject the store publishes on with `prefix` (dot-separated tokens of
    /// ASCII letters, digits, `-` or `_`).
    #[must_use]
    pub fn with_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// How many servers keep each stream: 3 (the default) survives the loss of any one; 1 is
    /// for a single server, in tests.
    #[must_use]
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long a request waits for the cluster's answer (and a read for a replica that is
    /// behind) before it fails with [`StoreError::Backend`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`NatsEventStore::connect`] keeps asking for the store's streams while the
    /// cluster does not answer in time or has no JetStream leader yet: a cluster that has
    /// just started, or is electing leaders, or is loaded, creates a replicated stream in
    /// seconds. Each try still waits [`with_timeout`](Self::with_timeout) at most; an answer
    /// that the stream cannot be made (a bad configuration, too few servers) fails at once.
    #[must_use]
    pub fn with_setup_timeout(mut self, within: Duration) -> Self {
        self.setup_timeout = within;
        self
    }

    /// The number of replicas.
    #[must_use]
    pub fn replicas(&self) -> usize {
        self.replicas
    }
}

/// The event store on NATS JetStream: events, the message log, snapshots and checkpoints,
/// replicated by the cluster (ADR 0012 gives the layout).
///
/// Cheap to clone: clones share one connection.
///
/// ```no_run
/// use cqrs_core::{EventReader, EventStore, ExpectedVersion, Json, NewEvent, StreamId};
/// use cqrs_store_nats::{NatsEventStore, NatsOptions};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let urls = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"];
/// let store = NatsEventStore::connect(&urls, NatsOptions::default()).await?;
/// let stream = StreamId::new("seats-1")?;
/// store.append(&stream, ExpectedVersion::NoStream, vec![NewEvent::new("seats.added", Json::null())]).await?;
/// assert_eq!(store.read_stream(&stream, cqrs_core::Version::new(1)).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsEventStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) names: Names,
    notifier: CommitNotifier,
    waker: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.waker.abort();
    }
}

impl NatsEventStore {
    /// Connects to the servers at `urls` (any of a cluster's; the client learns the others),
    /// and creates the store's streams if they are missing.
    ///
    /// The client pings every second, so that it leaves a server that hangs within seconds
    /// (ADR 0012).
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a bad option, or an existing stream of the store's name
    /// that cannot hold it; [`StoreError::Backend`] if the cluster cannot be reached, or does
    /// not set up the streams within [`NatsOptions::with_setup_timeout`].
    pub async fn connect<U: AsRef<str>>(
        urls: &[U],
        options: NatsOptions,
    ) -> Result<Self, StoreError> {
        subject::check_stream_prefix(&options.stream_prefix)?;
        subject::check_subject_prefix(&options.subject_prefix)?;
        let urls: Vec<String> = urls.iter().map(|u| u.as_ref().to_owned()).collect();
        let client = async_nats::ConnectOptions::new()
            .ping_interval(Duration::from_secs(1))
            .request_timeout(Some(options.timeout))
            .connection_timeout(options.timeout)
            .connect(urls.clone())
            .await
            .map_err(|err| {
                StoreError::backend(std::io::Error::other(format!(
                    "cannot connect to the NATS servers {urls:?}: {err}"
                )))
            })?;
        Self::with_client(client, options).await
    }

    /// The store over a client already connected (its own options kept).
    ///
    /// # Errors
    ///
    /// As [`NatsEventStore::connect`].
    pub async fn with_client(
        client: async_nats::Client,
        options: NatsOptions,
    ) -> Result<Self, StoreError> {
        subject::check_stream_prefix(&options.stream_prefix)?;
        subject::check_subject_prefix(&options.subject_prefix)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .build(client.clone());
        let conn = Conn {
            client,
            js,
            timeout: options.timeout,
        };
        let names = Names::new(&options.stream_prefix, &options.subject_prefix);
        let deadline = tokio::time::Instant::now() + options.setup_timeout;
        let base = stream::Config {
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            allow_direct: true,
            allow_atomic_publish: true,
            ..Default::default()
        };
        ensure_stream(
            &conn,
            stream::Config {
                name: names.log.clone(),
                subjects: vec![names.log_subjects()],
                deny_delete: true,
                deny_purge: true,
                ..base.clone()
            },
            deadline,
        )
        .await?;
        // Tables: one message per subject. The state's tombstones expire.
        for (name, subjects, ttl) in [
            (&names.state, names.state_subjects(), true),
            (&names.snapshots, names.snapshot_subjects(), false),
        ] {
            ensure_stream(
                &conn,
                stream::Config {
                    name: name.clone(),
                    subjects: vec![subjects],
                    max_messages_per_subject: 1,
                    allow_message_ttl: ttl,
                    ..base.clone()
                },
                deadline,
            )
            .await?;
        }
        let notifier = CommitNotifier::new();
        let waker = tokio::spawn(wake_on_commits(
            conn.js.clone(),
            names.log.clone(),
            names.events(),
            notifier.clone(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                names,
                notifier,
                waker,
            }),
        })
    }

    /// The NATS client the store uses.
    #[must_use]
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.conn.client
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.inner.conn
    }

    pub(crate) fn names(&self) -> &Names {
        &self.inner.names
    }

    /// The last event of `subject` (one stream's, or every event's), from the leader.
    async fn last_event(&self, subject: &str) -> Result<Option<Raw>, StoreError> {
        self.conn().last(&self.names().log, subject).await
    }

    /// Whether command `id` is recorded, by a commit (in the log) or by a process manager's
    /// save (in the state stream): one namespace of ids across the two streams.
    pub(crate) async fn command_recorded_anywhere(
        &self,
        id: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        Ok(self.command_message(id).await?.is_some())
    }

    /// The message of command `id`'s record, from the log or the state stream.
    pub(crate) async fn command_message(&self, id: uuid::Uuid) -> Result<Option<Raw>, StoreError> {
        let names = self.names();
        let (in_log, in_state) = (names.command(id), names.handled(id));
        let (log, state) = futures::try_join!(
            self.conn().last(&names.log, &in_log),
            self.conn().last(&names.state, &in_state),
        )?;
        Ok(log.or(state))
    }

    /// The events of `stream` (on `subject`) from version `from` up to `last`, its last event
    /// as the leader reported it.
    async fn events_up_to(
        &self,
        stream: &StreamId,
        subject: &str,
        last: &Raw,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let version = codec::event_version(last)?;
        if version < from {
            return Ok(Vec::new());
        }
        // A subject cannot be read from a version: its events are read from the first, and
        // those before `from` skipped.
        let count = usize::try_from(version.get()).unwrap_or(usize::MAX);
        let raws = self
            .conn()
            .read_range(
                &self.names().log,
                subject,
                1,
                last.sequence,
                count,
                Until::Bound,
            )
            .await?;
        let mut events = Vec::with_capacity(count);
        for raw in raws {
            if codec::event_version(&raw)? >= from {
                events.push(codec::decode_event(raw, stream.clone())?);
            }
        }
        Ok(events)
    }

    /// Wakes this process's subscribers after a commit of events.
    pub(crate) fn notify(&self) {
        self.inner.notifier.notify();
    }

    /// Reads events of the log from `from`, at most `limit`, and where to go on.
    pub(crate) async fn scan(&self, from: Position, limit: usize) -> Result<ReadBatch, StoreError> {
        let from = from.max(Position::START);
        let Some(last) = self.last_event(&self.names().events()).await? else {
            return Ok(ReadBatch {
                events: Vec::new(),
                next: from,
                end: true,
            });
        };
        let bound = last.sequence;
        let limit = limit.max(1);
        let raws = self
            .conn()
            .read_range(
                &self.names().log,
                &self.names().events(),
                from.get(),
                bound,
                limit,
                Until::Bound,
            )
            .await?;
        let next = match raws.last() {
            Some(raw) if raws.len() == limit => Position::new(raw.sequence + 1),
            _ => Position::new(bound + 1).max(from),
        };
        let mut events = Vec::with_capacity(raws.len());
        for raw in raws {
            events.push(self.decode(raw)?);
        }
        Ok(ReadBatch {
            events,
            next,
            end: next.get() > bound,
        })
    }

    pub(crate) fn decode(&self, raw: Raw) -> Result<RecordedEvent, StoreError> {
        let stream = self
            .names()
            .stream_of(&raw.subject)
            .ok_or_else(|| codec::corrupt(&raw, &"the subject names no stream"))?;
        codec::decode_event(raw, stream)
    }

    /// One try at `commit` against the stream as last read: `Ok(None)` when another writer
    /// came in between and the commit may be tried again.
    ///
    /// `known` is the stream's last event as the caller just read it, if it did (a
    /// read-then-commit), so that the first try need not read it again.
    async fn try_commit(
        &self,
        commit: &Commit,
        subject: &str,
        known: Option<Option<Raw>>,
    ) -> Result<Option<Appended>, StoreError> {
        // Within the log, the batch's expectation keeps a command id once (and a refusal is
        // told apart below); across the two streams, a read of the state stream before the
        // write does (ADR 0012).
        let in_state = |id| {
            let names = self.names();
            let subject = names.handled(id);
            async move { Ok(self.conn().last(&names.state, &subject).await?.is_some()) }
        };
        let (last, recorded) = match (&commit.command, known) {
            (Some(command), Some(known)) => (known, in_state(command.command_id).await?),
            (Some(command), None) => {
                futures::try_join!(self.last_event(subject), in_state(command.command_id),)?
            }
            (None, Some(known)) => (known, false),
            (None, None) => (self.last_event(subject).await?, false),
        };
        if recorded && let Some(command) = &commit.command {
            return Err(StoreError::DuplicateCommand {
                command_id: command.command_id,
            });
        }
        let (last_sequence, actual) = match &last {
            Some(raw) => (raw.sequence, codec::event_version(raw)?),
            None => (0, Version::ZERO),
        };
        if !commit.expected.matches(actual) {
            // A redelivered command is told apart from a stale one first (the contract).
            if let Some(command) = &commit.command
                && self.command_recorded_anywhere(command.command_id).await?
            {
                return Err(StoreError::DuplicateCommand {
                    command_id: command.command_id,
                });
            }
            return Err(StoreError::Conflict {
                stream: commit.stream.clone(),
                expected: commit.expected,
                actual,
            });
        }
        if commit.events.is_empty() && commit.command.is_none() {
            return Ok(Some(Appended {
                version: actual,
                position: None,
            }));
        }
        let names = self.names();
        let mut messages: Vec<Message> = Vec::with_capacity(commit.events.len() + 2);
        let checks_stream = !matches!(commit.expected, ExpectedVersion::Any);
        if commit.events.is_empty() && checks_stream {
            // Nothing is written to the stream: a message elsewhere checks it.
            messages.push(dcb::check(names, subject, last_sequence));
        }
        let mut version = actual;
        let mut last_event = None;
        for (i, event) in commit.events.iter().enumerate() {
            version = version.next();
            last_event = Some(messages.len());
            // Even `Any` expects what it read: versions are counted here, so nobody may come
            // in between.
            dcb::push_event(
                &mut messages,
                subject,
                event,
                version,
                (i == 0).then_some(last_sequence),
            )?;
        }
        let events_start = messages.len() - commit.events.len();
        for (i, event) in commit.events.iter().enumerate() {
            dcb::push_markers(names, &mut messages, event, events_start + i);
        }
        if let Some(command) = &commit.command {
            let (headers, payload) = codec::command_message(command)?;
            // A command id is recorded once, for ever.
            messages.push((
                names.command(command.command_id),
                schedule::expecting(headers, 0),
                payload,
            ));
        }
        if messages.len() > crate::conn::MAX_ATOMIC {
            return Err(StoreError::Invalid(format!(
                "a commit of {} events (with their tag markers) is more than the {} messages of \
                 one atomic batch",
                commit.events.len(),
                crate::conn::MAX_ATOMIC
            )));
        }
        let count = messages.len() as u64;
        match self.conn().publish_batch(messages).await {
            Ok(sequence) => {
                let first = sequence + 1 - count;
                let position = last_event.map(|i| Position::new(first + i as u64));
                Ok(Some(Appended { version, position }))
            }
            Err(Refused::WrongLast) => {
                if let Some(command) = &commit.command
                    && self.command_recorded_anywhere(command.command_id).await?
                {
                    return Err(StoreError::DuplicateCommand {
                        command_id: command.command_id,
                    });
                }
                Ok(None)
            }
            Err(Refused::Busy) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(None)
            }
            Err(Refused::Failed(err)) => Err(err),
        }
    }
}

/// Creates `config`'s stream, or checks that the one of its name can hold the store.
async fn ensure_stream(
    conn: &Conn,
    config: stream::Config,
    deadline: tokio::time::Instant,
) -> Result<(), StoreError> {
    let name = config.name.clone();
    let subjects = config.subjects.clone();
    let ttl = config.allow_message_ttl;
    let mut pause = Duration::from_millis(50);
    let info = loop {
        match stream_info(conn, &config).await {
            Ok(info) => break info,
            Err(SetUp::Late(why)) if tokio::time::Instant::now() + pause < deadline => {
                // Creating an existing stream of the same configuration is a no-op, so a
                // try that timed out after the cluster did the work is harmless to repeat.
                tracing::warn!(stream = %name, error = %why, "the NATS cluster has not set up the store's stream yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(SetUp::Late(why) | SetUp::Refused(why)) => {
                return Err(StoreError::backend(std::io::Error::other(format!(
                    "cannot create or read the JetStream stream {name}: {why}"
                ))));
            }
        }
    };
    let found = &info.config;
    if !subjects.iter().all(|s| found.subjects.contains(s))
        || !found.allow_atomic_publish
        || !found.allow_direct
        || (ttl && !found.allow_message_ttl)
    {
        return Err(StoreError::Invalid(format!(
            "the JetStream stream {name} exists but cannot hold this store: it needs subjects \
             {subjects:?}, atomic batches, direct reads{}, and has {:?}, atomic batches {}, \
             direct reads {}, message TTLs {}",
            if ttl { " and message TTLs" } else { "" },
            found.subjects,
            found.allow_atomic_publish,
            found.allow_direct,
            found.allow_message_ttl
        )));
    }
    Ok(())
}

/// Why a stream's set-up failed: the cluster did not answer in time or had no leader to
/// answer (worth another try), or it refused.
enum SetUp {
    Late(async_nats::Error),
    Refused(async_nats::Error),
}

/// The stream of `config`, created if it is missing, as the cluster describes it.
async fn stream_info(conn: &Conn, config: &stream::Config) -> Result<stream::Info, SetUp> {
    use async_nats::jetstream::context::CreateStreamErrorKind;
    // The answer to the look-up or the creation describes the stream as the cluster keeps it.
    match conn.js.get_or_create_stream(config.clone()).await {
        Ok(stream) => Ok(stream.cached_info().clone()),
        Err(err) => {
            let late = match err.kind() {
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => {
                    true
                }
                // 503: JetStream is there but has no leader to answer yet.
                CreateStreamErrorKind::JetStream(js) => js.code() == 503,
                _ => false,
            };
            Err(if late {
                SetUp::Late(err.into())
            } else {
                SetUp::Refused(err.into())
            })
        }
    }
}

/// Wakes the store's subscribers at every event stored, whoever wrote it: a consumer of the
/// log's events, headers only, from now on. Subscriptions also poll, so a wake lost while
/// the consumer is re-created only delays them.
async fn wake_on_commits(
    js: jetstream::Context,
    log: String,
    events: String,
    notifier: CommitNotifier,
) {
    loop {
        let consumer = async {
            let stream = js.get_stream_no_info(&log).await?;
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: events.clone(),
                    deliver_policy: jetstream::consumer::DeliverPolicy::New,
                    headers_only: true,
                    ..Default::default()
                })
                .await?;
            Ok::<_, async_nats::Error>(consumer.messages().await?)
        };
        match consumer.await {
            Ok(mut messages) => {
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(_) => notifier.notify(),
                        Err(err) => {
                            tracing::debug!(error = %err, "the NATS store's commit watcher missed messages");
                            notifier.notify();
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, stream = %log, "the NATS store cannot watch commits; subscriptions poll until it can");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl EventReader for NatsEventStore {
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let subject = self.names().event(stream);
        let Some(last) = self.last_event(&subject).await? else {
            return Ok(Vec::new());
        };
        self.events_up_to(stream, &subject, &last, from).await
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self.scan(from, limit).await?.events)
    }

    async fn read_filtered(
        &self,
        from: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadBatch, StoreError> {
        // Scanning is bounded by what one read returns; filtered-out events still advance.
        let mut batch = self.scan(from, limit.clamp(1, MAX_BATCH)).await?;
        if !filter.is_all() {
            batch.events.retain(|e| filter.matches(e));
        }
        Ok(batch)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(self
            .last_event(&self.names().events())
            .await?
            .map_or(Position::ZERO, |raw| Position::new(raw.sequence)))
    }

    fn subscribe_batches(&self, from: Position, filter: EventFilter) -> BatchStream {
        let options = SubscriptionOptions {
            page_size: 512,
            poll_interval: Some(Duration::from_millis(500)),
        };
        subscription(
            Arc::new(self.clone()),
            &self.inner.notifier,
            from,
            filter,
            options,
        )
    }
}

#[async_trait]
impl EventStore for NatsEventStore {
    async fn commit(&self, commit: Commit) -> Result<Appended, StoreError> {
        self.commit_knowing(commit, None).await
    }

    /// Reads the stream's events after `from` with the read of its last event that the
    /// commit then expects, so a command costs one read fewer than a read and a commit.
    async fn read_then_commit(
        &self,
        stream: &StreamId,
        from: Version,
        decide: Decide,
    ) -> Result<Option<Appended>, StoreError> {
        let mut decide = decide;
        let subject = self.names().event(stream);
        let last = self.last_event(&subject).await?;
        if let Some(last) = &last {
            for event in self.events_up_to(stream, &subject, last, from).await? {
                if decide.event(event.view()).is_break() {
                    break;
                }
            }
        }
        match decide.decide() {
            Some(commit) => {
                let known = (commit.stream == *stream).then_some(last);
                self.commit_knowing(commit, known).await.map(Some)
            }
            None => Ok(None),
        }
    }
}

impl NatsEventStore {
    /// [`EventStore::commit`], the first try against `known`, the stream's last event as the
    /// caller read it (if it did).
    async fn commit_knowing(
        &self,
        mut commit: Commit,
        known: Option<Option<Raw>>,
    ) -> Result<Appended, StoreError> {
        commit.validate()?;
        for event in &mut commit.events {
            event.metadata.recorded_at = truncate_to_micros(event.metadata.recorded_at);
        }
        if let Some(command) = &mut commit.command {
            command.recorded_at = truncate_to_micros(command.recorded_at);
        }
        let subject = self.names().event(&commit.stream);
        let started = std::time::Instant::now();
        let mut known = known;
        loop {
            if let Some(appended) = self.try_commit(&commit, &subject, known.take()).await? {
                if appended.position.is_some() {
                    self.inner.notifier.notify();
                }
                return Ok(appended);
            }
            // Another writer came in between: with an exact expectation the next read reports
            // the conflict; `Any` tries again, for as long as a request may take.
            if started.elapsed() > self.conn().timeout {
                return Err(StoreError::backend(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "stream {} kept changing for {:?}: the commit was not stored",
                        commit.stream,
                        self.conn().timeout
                    ),
                )));
            }
        }
    }
}
