//! The real binary, stopped with SIGTERM while registrants are ordering: every order it
//! accepted is in the store, and once a server runs again each is reserved.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use conference_example::app::{AppConfig, ConferenceApp, open_storage};
use conference_example::domain::OrderId;
use conference_example::read::DraftOrderState;
use cqrs_core::SystemClock;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_accepted_order() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let mut server = Command::new(env!("CARGO_BIN_EXE_conference-example"))
        .args([
            "--database",
            &database,
            "serve",
            "--seed-demo",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first[first.find("http://").expect("the URL")..]
        .trim_end_matches('/')
        .to_owned();

    // Every wait is bounded: a request or a restart that hangs fails the test, naming where.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let (_, demo) = {
        let response = client
            .get(format!("{base}/api/conferences/devconf"))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let seat_type = demo["seat_types"][0]["id"].as_str().unwrap().to_owned();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel::<OrderId>();
    let orders: Vec<_> = (0..80)
        .map(|_| {
            let (client, url, seat_type, accepted) = (
                client.clone(),
                format!("{base}/api/conferences/devconf/orders"),
                seat_type.clone(),
                accepted_tx.clone(),
            );
            tokio::spawn(async move {
                let order = OrderId::new();
                let sent = client
                    .post(url)
                    .json(&json!({"order_id": order, "seats": [{"seat_type_id": seat_type, "quantity": 1}]}))
                    .send()
                    .await;
                if let Ok(response) = sent
                    && response.status() == 202
                {
                    let _ = accepted.send(order);
                }
            })
        })
        .collect();
    drop(accepted_tx);
    // Stop it as soon as the first order is accepted, with the rest in flight.
    let first_order = tokio::time::timeout(std::time::Duration::from_secs(60), accepted_rx.recv())
        .await
        .expect("an order is accepted within a minute")
        .expect("an order accepted");
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for order in orders {
        order.await.unwrap();
    }
    let mut accepted = vec![first_order];
    while let Some(order) = accepted_rx.recv().await {
        accepted.push(order);
    }
    let status = server.wait().unwrap();
    assert!(status.success(), "the server exits cleanly: {status}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");

    // Every accepted order is there, and reserved once the processes run again.
    let app = ConferenceApp::new(
        open_storage(&database).await.unwrap(),
        Arc::new(SystemClock),
        AppConfig::default(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(60), app.settle())
        .await
        .expect("the restarted app settles within a minute")
        .unwrap();
    for order in &accepted {
        let draft = app
            .draft_order(*order)
            .expect("an accepted order is stored");
        assert_eq!(
            draft.state,
            DraftOrderState::ReservationCompleted,
            "{order}"
        );
    }
    eprintln!(
        "{} of 80 orders were accepted before SIGTERM; none lost",
        accepted.len()
    );
}
