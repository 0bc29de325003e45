//! Choosing the storage from a URL.

use std::sync::Arc;

use cqrs_core::{EventQuery, InMemoryEventStore, Position, QueryItem, Storage, StoreError};
use cqrs_store_postgres::PostgresEventStore;
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};

/// Opens the storage `url` names: `memory:` (nothing kept), `sqlite://PATH` (a file, created
/// if missing; `sqlite://PATH?durability=normal` trades the last commits before a power
/// loss for speed, for bulk loads; `&correlation_index=on` indexes the message log by
/// correlation id, so the explorer's timelines need not scan it) or `postgres://…` (a
/// server).
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
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let storage: Arc<dyn Storage> = Arc::new(PostgresEventStore::connect(url).await?);
        check_tagged(storage.as_ref()).await?;
        return Ok(storage);
    }
    Err(StoreError::Invalid(format!(
        "{url:?}: use memory:, sqlite://PATH or postgres://…"
    )))
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
