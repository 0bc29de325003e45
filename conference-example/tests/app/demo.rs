use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp};
use conference_example::cli::{DemoOptions, LogOptions, print_log, run_demo};
use cqrs_core::{InMemoryEventStore, Storage, SystemClock};

/// The demo shows each path, the seats left changing, and the expired order's flow; `log`
/// then finds that flow by its type names.
#[tokio::test]
async fn the_demo_walks_every_path_and_the_log_finds_its_flow() {
    let storage: Arc<dyn Storage> = Arc::new(InMemoryEventStore::new());
    let mut out = Vec::new();
    let expired = run_demo(Arc::clone(&storage), DemoOptions::default(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    for expected in [
        "remaining seats: Full pass 10/10, Workshop 5/5, Party 20/20",
        "pays 497.50 and is confirmed",
        "remaining seats: Full pass 8/10, Workshop 4/5, Party 20/20",
        "total 0, confirmed with no payment",
        "partially reserved (4 of 6 held)",
        "remaining seats: Full pass 8/10, Workshop 0/5, Party 18/20",
        "the order is expired",
        "remaining seats: Full pass 8/10, Workshop 4/5, Party 18/20",
        "registration.expire_registration_process",
        "registration.seats_reservation_cancelled",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }

    let app = ConferenceApp::new(storage, Arc::new(SystemClock), AppConfig::default());
    let mut out = Vec::new();
    let shown = print_log(
        &app,
        LogOptions {
            types: vec!["registration.order_expired".into()],
            limit: 10,
            ..LogOptions::default()
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(shown, 1);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains(&expired.to_string())
    );
}
