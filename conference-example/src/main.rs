//! `conference-example`: the Contoso conference system's command line.
//!
//! With no arguments it serves the web app on the embedded SQLite store, with a demo
//! conference; `conference-example demo` walks through registration in the terminal;
//! `conference-example log` queries the message log; `conference-example walkthrough` runs
//! the framework tour on the in-memory store.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use conference_example::app::{AppConfig, ConferenceApp, open_storage};
use conference_example::cli::{DemoOptions, LogOptions, print_log, run_demo};
use conference_example::server::ServeOptions;
use cqrs_core::{MessageKind, StreamId, SystemClock};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The Contoso conference system of the CQRS Journey, on cqrs",
    long_about = "The Contoso conference system of the CQRS Journey, on cqrs.\n\nWith no \
                  subcommand it runs `serve --seed-demo`: the web app with a demo conference."
)]
struct Cli {
    /// Where events live: sqlite://PATH, postgres://…, nats://HOST:PORT,… (a NATS cluster) or
    /// memory:.
    #[arg(
        long,
        global = true,
        env = "CONFERENCE_DATABASE",
        default_value = "sqlite://conference.db"
    )]
    database: String,
    /// How log lines look on stderr: `human` (coloured on a terminal) or `json` (one object
    /// per line, for a log collector). `RUST_LOG` chooses what is logged (default: info).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CONFERENCE_LOG_FORMAT",
        default_value_t = LogFormat::Human
    )]
    log_format: LogFormat,
    /// Where to send traces over OTLP/HTTP, e.g. `http://127.0.0.1:4318/v1/traces` (a build
    /// with the `otel` feature). A request's `traceparent` is continued, and every command,
    /// event and timeout it leads to carries its trace id.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Installs the log subscriber: every warning and error the server logs (each 5xx with its
/// cause) reaches the operator on stderr, leaving stdout to the commands' output. With the
/// `otel` feature and an OTLP endpoint, spans are exported too; the provider returned must be
/// shut down at exit, to send the last of them.
fn init_logging(format: LogFormat, otlp: Option<&str>) -> anyhow::Result<Option<Telemetry>> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (human, json) = match format {
        LogFormat::Human => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let telemetry = otlp.map(Telemetry::export_to).transpose()?;
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json);
    #[cfg(feature = "otel")]
    let registry = registry.with(telemetry.as_ref().map(Telemetry::layer));
    // A second subscriber (in a test harness) keeps the first: logging is never fatal.
    let _ = registry.try_init();
    if let Some(endpoint) = otlp {
        // The exporter's own errors (logged by `opentelemetry_sdk`) do not name it.
        tracing::info!(endpoint, "exporting spans over OTLP/HTTP");
    }
    Ok(telemetry)
}

/// Spans exported over OTLP/HTTP.
#[cfg(feature = "otel")]
struct Telemetry {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

#[cfg(feature = "otel")]
impl Telemetry {
    fn export_to(endpoint: &str) -> anyhow::Result<Self> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot export traces to {endpoint}: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("conference-example")
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Self { provider })
    }

    fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("conference-example"))
    }

    fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "the last spans were not all exported");
        }
    }
}

/// Without the `otel` feature there is nothing to export to.
#[cfg(not(feature = "otel"))]
struct Telemetry;

#[cfg(not(feature = "otel"))]
impl Telemetry {
    fn export_to(endpoint: &str) -> anyhow::Result<Self> {
        anyhow::bail!(
            "cannot export traces to {endpoint}: this build has no `otel` feature \
             (cargo build --features otel)"
        )
    }

    fn shutdown(self) {}
}

/// `serve`'s arguments alone, to read their defaults (and environment) when no subcommand
/// is given.
#[derive(Debug, Parser)]
struct DefaultServe {
    #[command(flatten)]
    args: ServeArgs,
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// How long a registrant has to pay (e.g. 15m, 90s).
    #[arg(long, default_value = "15m", value_parser = duration)]
    reservation_window: chrono::Duration,
    /// How much longer unpaid seats stay held, for payments under way.
    #[arg(long, default_value = "14m", value_parser = duration)]
    release_buffer: chrono::Duration,
    /// Create a published demo conference if there is none (always on with no subcommand).
    #[arg(long)]
    seed_demo: bool,
    /// A bearer token that opens the whole message log (`GET /api/messages`).
    #[arg(long, env = "CONFERENCE_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// The read models' generation at start: `v1` (as V1 built them: no seats left, no
    /// is_free_of_charge) or `current`. `POST /api/admin/projections/upgrade` moves V1's to
    /// today's with no pause.
    #[arg(long, value_enum, default_value_t = ReadModelsArg::Current)]
    read_models: ReadModelsArg,
    /// The secret owners' portal sessions are signed with (64 bytes or more; e.g. `openssl
    /// rand -hex 32`). Give every server process on one database the same one; without it a
    /// random key is used and sessions end when the server stops.
    #[arg(long, env = "CONFERENCE_COOKIE_SECRET", hide_env_values = true)]
    cookie_secret: Option<String>,
    /// How long requests in flight get to be answered after SIGTERM or Ctrl-C, before every
    /// connection is closed and the server exits (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = duration)]
    shutdown_timeout: chrono::Duration,
    /// How many connections at once; more wait to be accepted.
    #[arg(long, default_value_t = 1_024)]
    max_connections: usize,
    /// How long a client has to send a request's headers; an idle keep-alive connection is
    /// closed after it too.
    #[arg(long, default_value = "10s", value_parser = duration)]
    header_read_timeout: chrono::Duration,
    /// How long a client has to send a request's body (then: 408).
    #[arg(long, default_value = "10s", value_parser = duration)]
    body_read_timeout: chrono::Duration,
    /// How many orders of one conference may wait for their seats before new ones for it are
    /// turned away (503 with Retry-After).
    #[arg(long, default_value_t = 500)]
    max_awaiting_per_conference: u32,
    /// How many orders of all conferences together may wait for their seats.
    #[arg(long, default_value_t = 2_000)]
    max_awaiting: u64,
    /// How many times a timeout or a process manager's command is tried before it is parked
    /// as a dead letter (the explorer's Dead letters page retries or discards it).
    #[arg(long, default_value_t = 10)]
    delivery_attempts: u32,
    /// How long after a failed delivery it is tried again (at least 1s).
    #[arg(long, default_value = "30s", value_parser = duration)]
    delivery_retry_after: chrono::Duration,
    /// How many orders one client (an address) may place at once; then it gets one more
    /// every `--order-refill` (more: 429 with Retry-After).
    #[arg(long, default_value_t = 20)]
    orders_per_client: u32,
    /// How often a client gets one more order (e.g. 3s, 100ms).
    #[arg(long, default_value = "3s", value_parser = duration)]
    order_refill: chrono::Duration,
    /// Browsers reach the server over HTTPS only (a proxy in front terminates TLS): mark the
    /// portal's cookies `Secure` always (they are when the proxy sends `X-Forwarded-Proto:
    /// https` anyway).
    #[arg(long)]
    secure_cookies: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReadModelsArg {
    V1,
    Current,
}

impl ServeArgs {
    fn options(self, database: String) -> ServeOptions {
        ServeOptions {
            database,
            listen: self.listen,
            config: AppConfig {
                reservation_window: self.reservation_window,
                release_buffer: self.release_buffer,
                read_models: match self.read_models {
                    ReadModelsArg::V1 => conference_example::app::ReadModels::V1,
                    ReadModelsArg::Current => conference_example::app::ReadModels::Current,
                },
                max_awaiting_per_conference: self.max_awaiting_per_conference,
                max_awaiting: self.max_awaiting,
                delivery_attempts: self.delivery_attempts,
                delivery_retry_after: std_duration(self.delivery_retry_after),
            },
            seed_demo: self.seed_demo,
            operator_token: self.operator_token,
            cookie_secret: self.cookie_secret,
            limits: conference_example::web::ServeLimits {
                shutdown_timeout: std_duration(self.shutdown_timeout),
                header_read_timeout: std_duration(self.header_read_timeout),
                body_read_timeout: std_duration(self.body_read_timeout),
                max_connections: self.max_connections,
                ..conference_example::web::ServeLimits::default()
            },
            orders_per_client: (self.orders_per_client, std_duration(self.order_refill)),
            secure_cookies: self.secure_cookies,
        }
    }
}

/// A parsed duration (never negative: `duration` refuses a sign) as the standard library's.
fn std_duration(d: chrono::Duration) -> std::time::Duration {
    d.to_std().unwrap_or(std::time::Duration::ZERO)
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web server: the registrant's site, the owner's portal and the JSON API, with
    /// the processes and read models inside (the default, with --seed-demo).
    Serve(ServeArgs),
    /// Walk through registration: a paid order, a zero-cost order, a partial reservation and
    /// an expiry, with the seats left after each step.
    Demo,
    /// Show the message log: every command and event, filtered.
    Log {
        /// Only commands or only events.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Type names (repeatable), e.g. registration.order_placed.
        #[arg(long = "type")]
        types: Vec<String>,
        /// Streams (repeatable), e.g. order-0190….
        #[arg(long = "stream")]
        streams: Vec<StreamId>,
        /// Correlation ids (repeatable): one flow each.
        #[arg(long = "correlation")]
        correlations: Vec<Uuid>,
        /// From this time on (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// At most this many entries.
        #[arg(long, default_value_t = 200)]
        limit: usize,
    },
    /// The framework tour on the in-memory store.
    Walkthrough,
    /// The V1 → V2 upgrade: make a V1 store, migrate it, verify the result.
    #[command(subcommand)]
    Migrate(MigrateCommand),
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Write a V1 deployment's store (V1 event shapes and metadata, no conference events)
    /// and its conference management rows beside it.
    MakeV1 {
        /// The empty store to write: sqlite://PATH (add ?durability=normal for big ones) or
        /// postgres://….
        #[arg(long)]
        out: String,
        /// About how many events.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// How many conferences.
        #[arg(long, default_value_t = 3)]
        conferences: u32,
        /// The seed: the same seed makes the same history.
        #[arg(long, default_value_t = 2012)]
        seed: u64,
        /// Where to write the management rows (default: PATH.management.json beside a SQLite
        /// file).
        #[arg(long)]
        management: Option<std::path::PathBuf>,
    },
    /// Copy a V1 store into an empty store in today's shapes, re-creating the conference
    /// events from the management rows. The source is only read.
    Run {
        /// The V1 store.
        #[arg(long)]
        from: String,
        /// The empty target store.
        #[arg(long)]
        to: String,
        /// The V1 management rows (default: beside a SQLite source).
        #[arg(long)]
        management: Option<std::path::PathBuf>,
        /// Continue a migration that was interrupted.
        #[arg(long)]
        resume: bool,
        /// Events per read and progress step.
        #[arg(long, default_value_t = 1_000)]
        batch: usize,
    },
    /// Prove the target holds the V1 store upcast: the same events, aggregates and read
    /// models.
    Verify {
        /// The V1 store.
        #[arg(long)]
        from: String,
        /// The migrated store.
        #[arg(long)]
        to: String,
        /// The V1 management rows (default: beside a SQLite source).
        #[arg(long)]
        management: Option<std::path::PathBuf>,
    },
}

impl From<MigrateCommand> for conference_example::cli::MigrateAction {
    fn from(command: MigrateCommand) -> Self {
        use conference_example::cli::MigrateAction as A;
        match command {
            MigrateCommand::MakeV1 {
                out,
                events,
                conferences,
                seed,
                management,
            } => A::MakeV1 {
                out,
                options: conference_example::migrate::V1Options {
                    events,
                    conferences,
                    seed,
                },
                management,
            },
            MigrateCommand::Run {
                from,
                to,
                management,
                resume,
                batch,
            } => A::Run {
                from,
                to,
                management,
                resume,
                batch,
            },
            MigrateCommand::Verify {
                from,
                to,
                management,
            } => A::Verify {
                from,
                to,
                management,
            },
        }
    }
}

fn duration(text: &str) -> Result<chrono::Duration, String> {
    let parsed = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    chrono::Duration::from_std(parsed).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Command,
    Event,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = init_logging(cli.log_format, cli.otlp_endpoint.as_deref())?;
    let result = run(cli).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let command = cli.command.unwrap_or_else(|| {
        let mut serve = DefaultServe::parse_from(["conference-example"]).args;
        serve.seed_demo = true;
        Command::Serve(serve)
    });
    match command {
        Command::Serve(args) => {
            conference_example::server::run(args.options(cli.database.clone()), &mut out).await?;
        }
        Command::Demo => {
            let storage = open_storage(&cli.database).await?;
            writeln!(out, "(events in {})", cli.database)?;
            run_demo(storage, DemoOptions::default(), &mut out).await?;
        }
        Command::Log {
            kind,
            types,
            streams,
            correlations,
            since,
            until,
            limit,
        } => {
            let storage = open_storage(&cli.database).await?;
            let app = ConferenceApp::new(
                storage,
                std::sync::Arc::new(SystemClock),
                AppConfig::default(),
            );
            let options = LogOptions {
                kind: kind.map(|k| match k {
                    Kind::Command => MessageKind::Command,
                    Kind::Event => MessageKind::Event,
                }),
                types,
                streams,
                correlations,
                since,
                until,
                limit,
            };
            let shown = print_log(&app, options, &mut out).await?;
            writeln!(out, "({shown} entries)")?;
        }
        Command::Walkthrough => conference_example::walkthrough::run(&mut out).await?,
        Command::Migrate(command) => {
            conference_example::cli::migrate(command.into(), &mut out).await?
        }
    }
    out.flush()?;
    Ok(())
}
