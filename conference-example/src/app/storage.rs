//! Choosing the storage from a URL.

use std::sync::Arc;

use cqrs_core::{EventQuery, InMemoryEventStore, Position, QueryItem, Storage, StoreError};
use cqrs_store_nats::{NatsEventStore, NatsOptions};
use cqrs_store_postgres::PostgresEventStore;
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};

/// Opens the storage `url` names: `memory:` (nothing kept), `sqlite://PATH` (a file, created
/// if missing; `sqlite://PATH?durability=normal` trades the last commits before a power
/// loss for speed, for bulk loads; `&correlation_index=on` indexes the message log by
/// correlation id, so the explorer's timelines need not scan it), `postgres://…` (a
/// server) or `nats://HOST:PORT,HOST:PORT,…` (a NATS JetStream cluster: any of its servers,
/// comma-separated; `?replicas=N` for other than 3, `&prefix=NAME` to keep several apps apart
/// on one cluster: JetStream streams `NAME_*`, subjects `name.*`).
///
/// # Errors
///
/// [`StoreError::Invalid`] for a URL of no known kind, or for a store written by a build
/// that did not tag events (see [`check_tagged`]); the store's error when it cannot open.
///
/// # Examples
///
/// ```
/// # tokio_test::block_on(async {
/// let storage = conference_example::app::open_storage("memory:").await?;
/// # let _ = storage;
/// assert!(conference_example::app::open_storage("mysql://nope").await.is_err());
/// assert!(conference_example::app::open_storage("sqlite:///tmp/x.db?durability=fast").await.is_err());
/// # Ok::<(), cqrs_core::StoreError>(()) }).unwrap();
/// ```
pub async fn open_storage(url: &str) -> Result<Arc<dyn Storage>, StoreError> {
    if url == "memory:" {
        return Ok(Arc::new(InMemoryEventStore::new()));
    }
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = SqliteOptions::default();
        for setting in query.split('&').filter(|s| !s.is_empty()) {
            options = match setting {
                "durability=full" => options.with_durability(Durability::Full),
                "durability=normal" => options.with_durability(Durability::Normal),
                "correlation_index=on" => options.with_correlation_index(true),
                other => {
                    return Err(StoreError::Invalid(format!(
                        "{other:?}: a SQLite URL takes durability=full|normal and \
                         correlation_index=on"
                    )));
                }
            };
        }
        let storage: Arc<dyn Storage> = Arc::new(SqliteEventStore::open_with(path, options).await?);
        check_tagged(storage.as_ref()).await?;
        return Ok(storage);
    }
    if let Some(rest) = url.strip_prefix("nats://") {
        let (servers, options) = nats_url(rest)?;
        let storage: Arc<dyn Storage> = Arc::new(NatsEventStore::connect(&servers, options).await?);
        check_tagged(storage.as_ref()).await?;
        return Ok(storage);
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let storage: Arc<dyn Storage> = Arc::new(PostgresEventStore::connect(url).await?);
        check_tagged(storage.as_ref()).await?;
        return Ok(storage);
    }
    Err(StoreError::Invalid(format!(
        "{url:?}: use memory:, sqlite://PATH, postgres://… or nats://HOST:PORT,…"
    )))
}

/// The servers and options of a NATS URL after its `nats://`.
fn nats_url(rest: &str) -> Result<(Vec<String>, NatsOptions), StoreError> {
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let servers: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("nats://{}", h.trim_start_matches("nats://")))
        .collect();
    if servers.is_empty() {
        return Err(StoreError::Invalid(
            "a NATS URL names at least one server: nats://HOST:PORT,…".into(),
        ));
    }
    let mut options = NatsOptions::default();
    for setting in query.split('&').filter(|s| !s.is_empty()) {
        options = match setting.split_once('=') {
            Some(("replicas", n)) => match n.parse::<usize>() {
                Ok(n @ 1..=5) => options.with_replicas(n),
                _ => {
                    return Err(StoreError::Invalid(format!(
                        "{setting:?}: replicas is 1 to 5"
                    )));
                }
            },
            Some(("prefix", name)) if !name.is_empty() => options
                .with_stream_prefix(name.to_uppercase())
                .with_subject_prefix(name.to_lowercase()),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{setting:?}: a NATS URL takes replicas=N and prefix=NAME"
                )));
            }
        };
    }
    Ok((servers, options))
}

/// Refuses a store whose conferences were created by a build that did not tag events: the
/// slug rule ([`UniqueSlug`](crate::domain::UniqueSlug)) reads creations by their slug tag,
/// and would not see those, so a second conference could take a slug already in use. Such a
/// store kept each slug in a claim stream (`slug-…`) instead.
///
/// # Errors
///
/// [`StoreError::Invalid`] saying so, or the store's error.
pub async fn check_tagged(storage: &dyn Storage) -> Result<(), StoreError> {
    let first = EventQuery::items([QueryItem::types(["conference.created"])]);
    let found = storage.read_query(&first, Position::START, 1).await?;
    match found.first() {
        Some(created) if created.tags.is_empty() => Err(StoreError::Invalid(format!(
            "the conference at {} was created by a build that did not tag events with their \
             slug, so this build could not keep slugs unique: run it on a new database",
            created.stream
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};

    use super::{check_tagged, open_storage};
    use crate::domain::{AccessCode, ConferenceDetails, ConferenceEvent, Owner};

    fn created() -> ConferenceEvent {
        let start = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
        ConferenceEvent::ConferenceCreated {
            slug: "devconf".into(),
            details: ConferenceDetails {
                name: "Devconf".into(),
                description: "Talks".into(),
                location: "Lisbon".into(),
                tagline: String::new(),
                twitter_search: String::new(),
                start_date: start,
                end_date: start,
            },
            owner: Owner {
                name: "Ana".into(),
                email: "ana@example.org".into(),
            },
            access_code: AccessCode::generate(),
        }
    }

    #[tokio::test]
    async fn a_store_whose_conferences_carry_no_slug_tag_is_refused() {
        let (event_type, payload) = cqrs_core::encode_message(&created()).expect("encodes");
        let store = InMemoryEventStore::new();
        check_tagged(&store).await.expect("an empty store");
        let stream = StreamId::new("conference-1").expect("valid");
        let untagged = NewEvent::new(event_type, payload.clone());
        store
            .append(&stream, ExpectedVersion::NoStream, vec![untagged])
            .await
            .expect("append");
        let err = check_tagged(&store).await.expect_err("untagged");
        assert!(err.to_string().contains("did not tag"), "{err}");

        let tagged = InMemoryEventStore::new();
        let event =
            NewEvent::new(event_type, payload).with_tags(cqrs_core::DomainEvent::tags(&created()));
        tagged
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .expect("append");
        check_tagged(&tagged).await.expect("tagged by this build");
    }

    #[test]
    fn a_nats_url_names_a_cluster_and_its_settings() {
        let (servers, options) =
            super::nats_url("10.0.0.1:4222,nats://10.0.0.2:4222, 10.0.0.3?replicas=1&prefix=Shop")
                .expect("valid");
        assert_eq!(
            servers,
            [
                "nats://10.0.0.1:4222",
                "nats://10.0.0.2:4222",
                "nats://10.0.0.3"
            ]
        );
        assert_eq!(
            options,
            cqrs_store_nats::NatsOptions::default()
                .with_replicas(1)
                .with_stream_prefix("SHOP")
                .with_subject_prefix("shop")
        );
        for bad in [
            "",
            "h:1?replicas=0",
            "h:1?replicas=x",
            "h:1?prefix=",
            "h:1?durability=full",
        ] {
            assert!(super::nats_url(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_sqlite_url_takes_its_settings_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!(
            "sqlite://{}?durability=normal&correlation_index=on",
            dir.path().join("c.db").display()
        );
        let storage = open_storage(&url).await.expect("opens");
        drop(storage);
        let wrong = format!(
            "sqlite://{}?correlation_index=maybe",
            dir.path().join("d.db").display()
        );
        let err = open_storage(&wrong).await.err().expect("refused");
        assert!(
            err.to_string().contains("correlation_index=maybe"),
            "the setting is named: {err}"
        );
    }
}
