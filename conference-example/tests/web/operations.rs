//! The real binary as an operator runs it: its logs, and one process per SQLite file.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use serde_json::json;

/// The server binary on `database`, listening on a free loopback port, with `args` after
/// `serve`; returns it (stdout and stderr piped) and its base URL, read from its first line.
pub(crate) fn start(database: &str, args: &[&str]) -> (Child, String) {
    start_with_env(database, args, &[])
}

/// [`start`], with `env` added to the server's environment.
fn start_with_env(database: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut server = Command::new(env!("CARGO_BIN_EXE_conference-example"))
        .args(["--database", database, "serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
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

/// The first seat type of the demo conference (`--seed-demo`).
async fn demo_seat_type(client: &reqwest::Client, base: &str) -> String {
    let demo: serde_json::Value = client
        .get(format!("{base}/api/conferences/devconf"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    demo["seat_types"][0]["id"].as_str().unwrap().to_owned()
}

/// Stops `server` with SIGTERM and returns what it wrote on stderr.
pub(crate) fn stop(mut server: Child) -> String {
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
    let seat_type = demo_seat_type(&client, &base).await;

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
/// Spans the exporter cannot deliver (no collector listens at the endpoint) are logged with
/// the cause while the server runs, and it goes on serving.
#[cfg(feature = "otel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_that_cannot_be_exported_are_logged_with_the_cause() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = nobody.local_addr().unwrap();
    drop(nobody);
    let endpoint = format!("http://{collector}/v1/traces");
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let (server, base) = start_with_env(
        &database,
        &["--seed-demo", "--otlp-endpoint", &endpoint],
        // Export every 100 ms rather than every 5 s, so the failures come while it runs.
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..3 {
        let page = client.get(format!("{base}/devconf")).send().await.unwrap();
        assert!(page.status().is_success());
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let stderr = stop(server);
    let failure = stderr
        .lines()
        .find(|line| line.contains("BatchSpanProcessor.ExportError"))
        .unwrap_or_else(|| panic!("no export error logged:\n{stderr}"));
    assert!(failure.contains("ERROR"), "{failure}");
    assert!(failure.contains("export failed"), "says why: {failure}");
    assert!(
        stderr
            .lines()
            .any(|line| line.contains("exporting spans") && line.contains(&endpoint)),
        "the endpoint is named once, at the start:\n{stderr}"
    );
}

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

/// Opens `n` connections to `base`'s port, writing `prefix` on each (nothing: idle).
async fn connections(base: &str, n: usize, prefix: &[u8]) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let address = base.trim_start_matches("http://").to_owned();
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        open.push(stream);
    }
    open
}

/// Reads from each connection until the server closes it (or `within` passes): how many were
/// closed, and what the server said on them before it did.
async fn closed_within(
    streams: Vec<tokio::net::TcpStream>,
    within: std::time::Duration,
) -> (usize, Vec<String>) {
    use tokio::io::AsyncReadExt;
    let reads: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut said = Vec::new();
                let read = tokio::time::timeout(within, stream.read_to_end(&mut said)).await;
                (read.is_ok(), String::from_utf8_lossy(&said).into_owned())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(reads.len());
    for read in reads {
        results.push(read.await.unwrap());
    }
    let closed = results.iter().filter(|(closed, _)| *closed).count();
    (closed, results.into_iter().map(|(_, said)| said).collect())
}

/// Slow clients hold nothing: a connection that sends nothing, one that sends half its
/// headers (slowloris) and one that sends half its body are each closed once their timeout
/// passes (the slow body answered 408), while the server goes on answering everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let (server, base) = start(
        &database,
        &[
            "--seed-demo",
            "--header-read-timeout",
            "1s",
            "--body-read-timeout",
            "1s",
        ],
    );
    let started = std::time::Instant::now();
    let idle = connections(&base, 200, b"").await;
    let slowloris = connections(&base, 200, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: ").await;
    let slow_body = connections(
        &base,
        100,
        b"POST /api/conferences HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"name\": ",
    )
    .await;
    // Everyone else is served meanwhile.
    let response = reqwest::get(format!("{base}/api/conferences/devconf"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let within = std::time::Duration::from_secs(5);
    let (idle_closed, _) = closed_within(idle, within).await;
    let (slowloris_closed, _) = closed_within(slowloris, within).await;
    let (slow_body_closed, said) = closed_within(slow_body, within).await;
    let elapsed = started.elapsed();
    assert_eq!(
        (idle_closed, slowloris_closed, slow_body_closed),
        (200, 200, 100),
        "every slow connection is closed"
    );
    assert!(
        said.iter().all(|s| s.starts_with("HTTP/1.1 408")),
        "a slow body is answered 408: {:?}",
        said.iter().find(|s| !s.starts_with("HTTP/1.1 408"))
    );
    eprintln!("500 slow connections all closed {elapsed:?} after they opened (timeouts 1 s)");
    let response = reqwest::get(format!("{base}/api/conferences/devconf"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the server still serves");
    stop(server);
}

/// SIGTERM under load, with a client halfway through its headers and idle connections open:
/// the server stops accepting at once, answers what it can, closes the rest at the shutdown
/// deadline, and exits within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_its_bound_whatever_clients_do() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let (mut server, base) = start(
        &database,
        &[
            "--seed-demo",
            "--shutdown-timeout",
            "2s",
            "--header-read-timeout",
            "60s",
            // The load comes from one address: lift its allowance, so that it is load.
            "--orders-per-client",
            "1000000",
            "--order-refill",
            "1ms",
        ],
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let seat_type = demo_seat_type(&client, &base).await;
    let _half = connections(&base, 20, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-A: ").await;
    let _idle = connections(&base, 20, b"").await;
    // Four registrants order in a loop (bounded) until the server is gone.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, seat_type) = (
                client.clone(),
                format!("{base}/api/conferences/devconf/orders"),
                seat_type.clone(),
            );
            tokio::spawn(async move {
                let mut accepted = 0;
                for _ in 0..5_000 {
                    let sent = client
                        .post(&url)
                        .json(&json!({"seats": [{"seat_type_id": seat_type, "quantity": 1}]}))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 202 => accepted += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let signalled = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "the server exits cleanly: {status}");
    let mut accepted = 0;
    for task in load {
        accepted += task.await.unwrap();
    }
    eprintln!(
        "SIGTERM with 20 half-sent requests, 20 idle connections and 4 registrants ordering ({accepted} orders accepted): exited in {took:?} (bound 2 s)"
    );
    assert!(
        took < std::time::Duration::from_secs(8),
        "the server exits at its shutdown deadline, not when clients let it: {took:?}"
    );
}

/// At most `--max-connections` at once: with five held open by clients that send nothing,
/// a sixth is not answered until one of them is closed (by the header timeout here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("conference.db").display());
    let (server, base) = start(
        &database,
        &["--max-connections", "5", "--header-read-timeout", "2s"],
    );
    let held = connections(&base, 5, b"").await;
    let started = std::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let waited = tokio::time::timeout(
        std::time::Duration::from_millis(800),
        client.get(format!("{base}/api/conferences/devconf")).send(),
    )
    .await;
    assert!(
        waited.is_err(),
        "a sixth connection waits while five are open"
    );
    // The held ones time out (2 s): then it is answered.
    let response = client
        .get(format!("{base}/api/conferences/devconf"))
        .send()
        .await
        .unwrap();
    assert!(
        !response.status().is_server_error(),
        "{}",
        response.status()
    );
    let took = started.elapsed();
    eprintln!(
        "a sixth connection past a cap of 5 was answered after {took:?} (held ones closed at 2 s)"
    );
    drop(held);
    stop(server);
}
