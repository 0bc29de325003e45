//! Owners' portal sessions: they live in the store, and end when the owner signs out, when
//! their lifetime is over, or when the conference's access code changes.

use chrono::Duration;
use conference_example::app::{AppError, OWNER_SESSION_LIFETIME};
use cqrs_core::InMemoryEventStore;

use crate::World;

#[tokio::test]
async fn a_session_ends_on_sign_out_at_its_lifetime_and_when_the_code_changes() {
    let w = World::new(std::sync::Arc::new(InMemoryEventStore::new())).await;
    let view = w.app.conference(w.conference).unwrap();
    let (email, code) = (view.owner.email.clone(), view.access_code.clone());
    fn closed<T>(result: Result<T, AppError>) -> bool {
        matches!(result, Err(AppError::NotFound(_)))
    }

    // Signed out: the token opens nothing, for any server on the store.
    let (token, opened) = w.app.open_owner_session(&email, &code).await.unwrap();
    assert_eq!(opened.id, w.conference);
    assert_eq!(w.app.owner_session(&token).await.unwrap().id, w.conference);
    w.app.close_owner_session(&token).await.unwrap();
    assert!(closed(w.app.owner_session(&token).await));
    w.app.close_owner_session(&token).await.unwrap(); // twice: nothing more

    // Its lifetime over: closed, to the second.
    let (token, _) = w.app.open_owner_session(&email, &code).await.unwrap();
    w.clock
        .advance(OWNER_SESSION_LIFETIME - Duration::seconds(1));
    assert!(w.app.owner_session(&token).await.is_ok());
    w.clock.advance(Duration::seconds(1));
    assert!(closed(w.app.owner_session(&token).await));

    // A new code: sessions opened with the old one end, and the old code opens none.
    let (before, _) = w.app.open_owner_session(&email, &code).await.unwrap();
    let new = w.app.change_access_code(w.conference).await.unwrap();
    w.app.settle().await.unwrap();
    assert_ne!(new, code);
    assert!(closed(w.app.owner_session(&before).await));
    assert!(closed(w.app.open_owner_session(&email, &code).await));
    let (after, _) = w
        .app
        .open_owner_session(&email.to_uppercase(), &new)
        .await
        .unwrap();
    assert!(w.app.owner_session(&after).await.is_ok());
    // A token never issued opens nothing.
    let stranger = conference_example::app::SessionToken::generate();
    assert!(closed(w.app.owner_session(&stranger).await));
}
