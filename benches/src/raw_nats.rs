//! The raw baseline on NATS JetStream: a minimal hand-written event store on async-nats, the
//! same driver as the NATS store, publishing the same messages with the same
//! acknowledgements.
//!
//! One message per event on `raw.e.{stream}` in a stream of its own (file storage, the same
//! replicas, direct reads allowed): the payload as is, the metadata (type, version, ids, user,
//! time) as one JSON header. A command reads the stream's last message (a direct get, which
//! any replica answers), decides, and publishes its event expecting the subject's last
//! sequence, waiting for the acknowledgement. A load is batched direct gets of the subject,
//! each payload decoded and folded; a replay reads the whole stream in batches of 1,024. It
//! keeps no message log, no command ids, and asks the leader nothing before it reads: whatever
//! the store adds (command records, reads bounded by the leader) counts against the store.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, header};
use bytes::Bytes;
use futures::StreamExt;

use crate::{Account, AccountCommand, AccountEvent, RawEvent};

/// The raw store: a client and the name of its stream.
#[derive(Clone)]
pub struct RawNats {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
}

/// What the raw store could not do.
#[derive(Debug, thiserror::Error)]
#[error("raw NATS: {0}")]
pub struct RawNatsError(String);

fn fail(err: impl std::fmt::Display) -> RawNatsError {
    RawNatsError(err.to_string())
}

impl RawNats {
    /// Connects to `urls` and creates the stream `RAW` (subjects `raw.>`) with `replicas`.
    ///
    /// # Errors
    ///
    /// If the cluster cannot be reached or the stream made.
    pub async fn connect(urls: &[String], replicas: usize) -> Result<Self, RawNatsError> {
        let client = async_nats::ConnectOptions::new()
            .ping_interval(Duration::from_secs(1))
            .connect(urls.to_vec())
            .await
            .map_err(fail)?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client.clone());
        js.get_or_create_stream(stream::Config {
            name: "RAW".into(),
            subjects: vec!["raw.>".into()],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(fail)?;
        Ok(Self {
            client,
            js,
            stream: "RAW".into(),
        })
    }

    fn subject(stream: &str) -> String {
        format!("raw.e.{stream}")
    }

    /// One event's headers: its type, version, time and metadata (correlation id, causation
    /// id, user) as JSON, as a minimal store keeps them.
    fn headers(event: &RawEvent, version: u64) -> HeaderMap {
        let meta = format!(
            r#"{{"type":"{}","v":{version},"at":"{}","meta":{}}}"#,
            event.event_type,
            chrono::Utc::now().to_rfc3339(),
            event.metadata
        );
        let mut headers = HeaderMap::new();
        headers.insert("Raw-Meta", meta);
        headers
    }

    /// Handles `command` on `stream`: reads its state, decides, publishes the event expecting
    /// the subject's last sequence. Returns the new version.
    ///
    /// # Errors
    ///
    /// If a request fails, the command is refused, or another writer came first.
    pub async fn command(
        &self,
        stream: &str,
        command: &AccountCommand,
    ) -> Result<u64, RawNatsError> {
        let (state, version, last) = self.load(stream).await?;
        let events = RawEvent::decide(state.as_ref(), command);
        let Some(event) = events.first() else {
            return Err(RawNatsError("the command was refused".into()));
        };
        let mut headers = Self::headers(event, version + 1);
        headers.insert(
            header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            last.to_string(),
        );
        self.js
            .publish_with_headers(
                Self::subject(stream),
                headers,
                Bytes::from(event.payload.clone()),
            )
            .await
            .map_err(fail)?
            .await
            .map_err(fail)?;
        Ok(version + 1)
    }

    /// Appends `count` events to `stream` from version `first` (set-up): version 1 opens the
    /// account, the others are deposits; acknowledgements awaited a thousand at a time.
    ///
    /// # Errors
    ///
    /// If a publish fails.
    pub async fn fill(&self, stream: &str, first: u64, count: u64) -> Result<(), RawNatsError> {
        let opened = RawEvent::new(&AccountEvent::opened());
        let deposited = RawEvent::new(&AccountEvent::deposited(100));
        let mut acks = Vec::new();
        for version in first..first + count {
            let event = if version == 1 { &opened } else { &deposited };
            acks.push(
                self.js
                    .publish_with_headers(
                        Self::subject(stream),
                        Self::headers(event, version),
                        Bytes::from(event.payload.clone()),
                    )
                    .await
                    .map_err(fail)?,
            );
            if acks.len() >= 1_000 {
                for ack in acks.drain(..) {
                    ack.await.map_err(fail)?;
                }
            }
        }
        for ack in acks {
            ack.await.map_err(fail)?;
        }
        Ok(())
    }

    /// Loads `stream`: its state, its version and its last message's sequence.
    ///
    /// # Errors
    ///
    /// If a read fails or an event does not decode.
    pub async fn load(&self, stream: &str) -> Result<(Option<Account>, u64, u64), RawNatsError> {
        let mut state: Option<Account> = None;
        let (mut version, mut last) = (0, 0);
        let mut from = 1;
        loop {
            let batch = self.batch(from, &Self::subject(stream)).await?;
            let Some((end, _, _)) = batch.last() else {
                break;
            };
            from = end + 1;
            let more = batch.len() == BATCH;
            for (sequence, meta, payload) in batch {
                let event_type = meta["type"].as_str().unwrap_or_default();
                let payload = std::str::from_utf8(&payload).map_err(fail)?;
                let event: AccountEvent =
                    cqrs_core::decode_message(event_type, payload).map_err(fail)?;
                state =
                    Some(<Account as cqrs_core::Aggregate>::apply(state, &event).map_err(fail)?);
                version += 1;
                last = sequence;
            }
            if !more {
                break;
            }
        }
        Ok((state, version, last))
    }

    /// Reads the whole stream in order, each message's payload and metadata copied out:
    /// how many events it read.
    ///
    /// # Errors
    ///
    /// If a read fails.
    pub async fn scan(&self) -> Result<u64, RawNatsError> {
        let mut seen = 0;
        let mut from = 1;
        loop {
            let batch = self.batch(from, "raw.e.>").await?;
            let Some((end, _, _)) = batch.last() else {
                return Ok(seen);
            };
            from = end + 1;
            seen += batch.len() as u64;
        }
    }

    /// Up to [`BATCH`] messages on `filter` from `from` on: their sequences, metadata and
    /// payloads.
    async fn batch(
        &self,
        from: u64,
        filter: &str,
    ) -> Result<Vec<(u64, serde_json::Value, Bytes)>, RawNatsError> {
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.map_err(fail)?;
        let body = serde_json::json!({ "seq": from, "next_by_subj": filter, "batch": BATCH });
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.stream),
                inbox,
                Bytes::from(body.to_string()),
            )
            .await
            .map_err(fail)?;
        let mut out = Vec::with_capacity(BATCH);
        while let Some(message) = replies.next().await {
            match message.status {
                None => {}
                Some(status) if status == 204 || status == 404 => return Ok(out),
                Some(status) => return Err(RawNatsError(format!("direct get: {status}"))),
            }
            let headers = message.headers.unwrap_or_default();
            let sequence: u64 = headers
                .get(header::NATS_SEQUENCE)
                .and_then(|v| v.as_str().parse().ok())
                .ok_or_else(|| RawNatsError("no sequence".into()))?;
            // What a reader copies out of each row: the metadata, decoded.
            let meta = headers
                .get("Raw-Meta")
                .ok_or_else(|| RawNatsError("no metadata".into()))?;
            let meta: serde_json::Value = serde_json::from_str(meta.as_str()).map_err(fail)?;
            out.push((sequence, meta, message.payload));
        }
        Err(RawNatsError("the connection closed".into()))
    }
}

/// Messages per direct read.
const BATCH: usize = 1024;
