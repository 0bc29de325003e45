//! Test support: a real PostgreSQL for tests, no mocks and no Docker.
//!
//! **Available with the crate feature `testing`.**
//!
//! With `DATABASE_URL` set, tests use that server. Otherwise the first test of a process
//! starts a throwaway cluster from the machine's PostgreSQL binaries (found with
//! `pg_config --bindir`, under `/usr/lib/postgresql/*/bin`, or on `PATH`): `initdb` and
//! `pg_ctl` in a temporary directory, on a free loopback port, as the `postgres` OS user when
//! running as root (PostgreSQL refuses root). A watchdog process stops the cluster and removes
//! its directory when the test process exits. Each test gets a fresh database.
//!
//! Without PostgreSQL binaries the tests print a loud notice and skip, except when `CI` is set,
//! where they fail: CI must really run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection;

use crate::{PostgresEventStore, PostgresOptions};

/// How a throwaway cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`: fast, for tests.
    Fast,
    /// The server's defaults (`fsync=on`, `synchronous_commit=on`): for benchmarks.
    Durable,
}

/// A running PostgreSQL to test against.
#[derive(Debug, Clone)]
pub struct TestServer {
    /// The URL of the server's `postgres` database.
    pub url: String,
}

impl TestServer {
    /// The URL of database `name` on this server.
    #[must_use]
    pub fn database_url(&self, name: &str) -> String {
        match self.url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => format!("{}/{name}", self.url),
        }
    }

    /// Creates a fresh, empty database and returns its URL.
    ///
    /// # Panics
    ///
    /// Panics if the server refuses: a test cannot go on.
    pub async fn fresh_database(&self) -> String {
        let name = format!("cqrs_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to the test server");
        // The name is made here from a UUID: nothing to inject.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        self.database_url(&name)
    }
}

static FAST: OnceLock<Result<TestServer, String>> = OnceLock::new();
static DURABLE: OnceLock<Result<TestServer, String>> = OnceLock::new();

/// The server tests run against: `DATABASE_URL`, or a throwaway cluster started once per
/// process. `None` (after a loud notice) when there is no PostgreSQL to run.
///
/// # Panics
///
/// Panics if PostgreSQL is missing or fails to start while `CI` is set.
#[must_use]
pub fn server(durability: Durability) -> Option<TestServer> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Some(TestServer { url });
    }
    let cell = match durability {
        Durability::Fast => &FAST,
        Durability::Durable => &DURABLE,
    };
    match cell.get_or_init(|| start_cluster(durability)) {
        Ok(server) => Some(server.clone()),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL tests cannot run under CI: {why}"
            );
            eprintln!(
                "\n****************************************************************\n\
                 * cqrs-store-postgres: PostgreSQL tests SKIPPED: {why}\n\
                 * Install PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL.\n\
                 ****************************************************************\n"
            );
            None
        }
    }
}

/// A store on a fresh database of the fast test server, or `None` (after a notice) without
/// PostgreSQL.
///
/// # Panics
///
/// Panics if the store cannot be opened on a server that is running.
pub async fn fresh_store() -> Option<PostgresEventStore> {
    fresh_store_with(PostgresOptions::default()).await
}

/// As [`fresh_store`], with `options`.
///
/// # Panics
///
/// As [`fresh_store`].
pub async fn fresh_store_with(options: PostgresOptions) -> Option<PostgresEventStore> {
    let server = server(Durability::Fast)?;
    let url = server.fresh_database().await;
    Some(
        PostgresEventStore::connect_with(&url, options)
            .await
            .expect("the store opens on a fresh database"),
    )
}

fn start_cluster(durability: Durability) -> Result<TestServer, String> {
    let bin = find_binaries().ok_or("no PostgreSQL binaries (initdb, pg_ctl) were found")?;
    let dir = tempfile::Builder::new()
        .prefix("cqrs-pg-")
        .tempdir()
        .map_err(|e| format!("cannot make a temporary directory: {e}"))?
        .keep();
    let data = dir.join("data");
    let as_user = if running_as_root() {
        Some(postgres_user()?)
    } else {
        None
    };
    if let Some((uid, gid)) = as_user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot hand the directory to postgres: {e}"))?;
    }
    run(
        as_user,
        Command::new(bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]),
    )?;
    let port = free_port()?;
    let mut settings = format!(
        "-p {port} -h 127.0.0.1 -k {} -c max_connections=300 -c shared_buffers=128MB",
        dir.display()
    );
    if durability == Durability::Fast {
        settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
    }
    run(
        as_user,
        Command::new(bin.join("pg_ctl"))
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &settings, "start"]),
    )?;
    spawn_watchdog(as_user, &bin, &dir, &data)?;
    Ok(TestServer {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    })
}

fn find_binaries() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| has_tools(p))
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(PathBuf::from)
        .find(|p| has_tools(p))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "running as root, and there is no `postgres` user to run PostgreSQL as".to_owned()
        })
}

fn run(as_user: Option<(u32, u32)>, command: &mut Command) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = as_user {
        command.uid(uid).gid(gid);
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed: {}{}",
            command.get_program(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Stops the cluster and removes its directory once this process has exited.
fn spawn_watchdog(
    as_user: Option<(u32, u32)>,
    bin: &Path,
    dir: &Path,
    data: &Path,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 1; done; '{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    if let Some((uid, gid)) = as_user {
        command.uid(uid).gid(gid);
    }
    command
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's watchdog: {e}"))
}

fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
