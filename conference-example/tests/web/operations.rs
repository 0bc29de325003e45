//! The real binary as an operator runs it: its logs, and one process per SQLite file.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use serde_json::json;

/// The server binary on `database`, listening on a free loopback port, with `args` after
/// `serve`; returns it (stdout and stderr piped) and its base URL, read from its first line.
fn start(database: &str, args: &[&str]) -> (Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_conference-example"))
        .args(["--database", database, "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first[first.find("http://").expect("the URL")..]
        .trim_end_matches('/')
        .to_owned();
    // Keep reading stdout, so that the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (server, base)
}

/// Stops `server` with SIGTERM and returns what it wrote on stderr.
fn stop(mut server: Child) -> String {
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait().unwrap();
    assert!(status.success(), "the server exits cleanly: {status}");
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// With `--log-format json`, the server logs one JSON object per line on stderr; a request
/// the store cannot serve answers 503, and the log says why (the store's own error), with
/// the request that got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_logged_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conference.db");
    let database = format!("sqlite://{}", file.display());
    let (server, base) = start(&database, &["--seed-demo", "--log-format", "json"]);
    let client = reqwest::Client::new();
    let demo: serde_json::Value = client
        .get(format!("{base}/api/conferences/devconf"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seat_type = demo["seat_types"][0]["id"].as_str().unwrap().to_owned();

    // The store breaks under the server: its message log's table is gone.
    let raw = cqrs_store_sqlite::rusqlite::Connection::open(&file).unwrap();
    raw.execute_batch("DROP TABLE cqrs_commands").unwrap();
    drop(raw);
    let response = client
        .post(format!("{base}/api/conferences/devconf/orders"))
        .json(&json!({"seats": [{"seat_type_id": seat_type, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    let stderr = stop(server);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    let errors: Vec<_> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(
        errors.iter().any(|l| l["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such table: cqrs_commands"))),
        "the cause is logged: {errors:#?}"
    );
    assert!(
        errors.iter().any(|l| l["fields"]["status"] == 503
            && l["fields"]["path"] == "/api/conferences/devconf/orders"),
        "the request that got it is logged: {errors:#?}"
    );
}

/// A second server on the same SQLite file is refused with a clear error, and so is any
/// command that opens the store while the server runs; once the server stops, they open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let (server, _) = start(&database, &["--seed-demo"]);

    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["log", "--limit", "1"],
    ] {
        let second = Command::new(env!("CARGO_BIN_EXE_conference-example"))
            .args(["--database", &database])
            .args(&args)
            .output()
            .unwrap();
        assert!(!second.status.success(), "{args:?} is refused");
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(
            stderr.contains("is open in another process"),
            "{args:?} says why: {stderr}"
        );
    }

    stop(server);
    let log = Command::new(env!("CARGO_BIN_EXE_conference-example"))
        .args(["--database", &database, "log", "--limit", "1"])
        .output()
        .unwrap();
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
}
