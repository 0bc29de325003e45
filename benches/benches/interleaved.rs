//! The headline pairs again, measured in alternation: short blocks of the minimal store's
//! operation and the store's, taking turns, so that both sides see the same moments of the
//! machine.
//!
//! Criterion measures one side of a pair after the other. On a VM whose speed moves by tens
//! of per cent within minutes (`docs/benchmarks-notes.md`, "PostgreSQL's one-task command is
//! bound by the CPU"), that makes a ratio partly a measure of when each side ran. Here each
//! round runs one block of each side, the order swapped every round, and the ratio is taken
//! per round: its median, and the range over the rounds, are what a drift between the sides
//! cannot move far. The report prints them beside criterion's ratios; the targets stay
//! criterion's medians.
//!
//! `cargo bench -p benches --bench interleaved [-- [--quick] [FILTER]]`: `FILTER` keeps the
//! pairs whose name contains it. Results go to `target/criterion/interleaved_*/`, where
//! `bench_report` finds them. A full run takes about two minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::interleave::{Measured, Plan, interleave};
use benches::{Account, AccountCommand, RawSqlite, in_parallel, open_account, raw_postgres};
use cqrs_core::{Repository, Version};
use cqrs_store_postgres::PostgresOptions;
use cqrs_store_sqlite::{Durability, SqliteEventStore, SqliteOptions};

/// Measures a pair as [`interleave`] does, from a flushed disk and an empty SQLite page-cache
/// pool ([`benches::settle_disk`]).
fn measure(
    plan: Plan,
    raw: impl FnMut(u64) -> Duration,
    store: impl FnMut(u64) -> Duration,
) -> Measured {
    benches::settle_disk();
    interleave(plan, raw, store)
}

/// Runs `op` `n` times, one after the other, on `rt`, and returns how long that took.
fn timed<T, F: Future<Output = T>>(
    rt: &tokio::runtime::Runtime,
    n: u64,
    mut op: impl FnMut() -> F,
) -> Duration {
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..n {
            op().await;
        }
        started.elapsed()
    })
}

/// Prints a pair's result and writes it beside criterion's, for `bench_report`.
#[expect(
    clippy::print_stdout,
    reason = "a benchmark's result goes to its output"
)]
fn record(plan: Plan, group: &str, raw: &str, store: &str, measured: &Measured) {
    let rounds = measured.ratios.len();
    let ratio = measured.ratio();
    let (low, high) = (
        measured.ratios.first().copied().unwrap_or(f64::NAN),
        measured.ratios.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "{group}: {raw} {:.1} µs, {store} {:.1} µs; ratio {ratio:.2}× (rounds {low:.2}–{high:.2}, {rounds} rounds)",
        measured.raw_ns / 1e3,
        measured.store_ns / 1e3,
    );
    if !plan.keep {
        return;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/criterion")
        .join(format!("interleaved_{}_{store}", group.replace('/', "_")));
    let written = std::fs::create_dir_all(&out).and_then(|()| {
        std::fs::write(
            out.join("interleaved.json"),
            serde_json::json!({
                "group": group,
                "raw": raw,
                "store": store,
                "raw_ns": measured.raw_ns,
                "store_ns": measured.store_ns,
                "ratio": ratio,
                "ratio_low": low,
                "ratio_high": high,
                "rounds": rounds,
            })
            .to_string(),
        )
    });
    if let Err(err) = written {
        eprintln!("interleaved: cannot write {}: {err}", out.display());
    }
}

/// Command-line arguments as `cargo bench` and `cargo test` pass them: `--quick`, `--test`,
/// criterion's other flags (ignored, with their values), and a filter.
struct Args {
    quick: bool,
    test: bool,
    filter: Option<String>,
}

impl Args {
    fn parse() -> Self {
        const WITH_VALUE: &[&str] = &[
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--profile-time",
            "--measurement-time",
            "--warm-up-time",
            "--sample-size",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--output-format",
            "--plotting-backend",
            "--color",
            "--format",
        ];
        let (mut quick, mut test, mut filter) = (false, false, None);
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--quick" {
                quick = true;
            } else if arg == "--test" {
                test = true;
            } else if WITH_VALUE.contains(&arg.as_str()) {
                args.next();
            } else if !arg.starts_with('-') {
                filter = Some(arg);
            }
        }
        Self {
            quick,
            test,
            filter,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }
}

fn sqlite(args: &Args, plan: Plan) {
    let rt = benches::runtime();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);
    let open = AccountCommand::open();
    for (durability, synchronous, label) in [
        (Durability::Full, "FULL", "full"),
        (Durability::Normal, "NORMAL", "normal"),
    ] {
        let group = format!("sqlite_{label}/command_new_aggregate");
        if !args.wants(&group) {
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt
            .block_on(SqliteEventStore::open_with(
                dir.path().join("store.db"),
                SqliteOptions::default().with_durability(durability),
            ))
            .expect("store");
        let raw = RawSqlite::open(&dir.path().join("raw.db"), synchronous);
        let accounts = Repository::<Account>::new(Arc::new(store.clone()));
        let measured = measure(
            plan,
            |n| {
                let started = Instant::now();
                for _ in 0..n {
                    raw.command(&format!("raw-{}", next()), &open);
                }
                started.elapsed()
            },
            |n| timed(&rt, n, || open_account(&accounts, format!("seq{}", next()))),
        );
        record(plan, &group, "raw", "store_1_task", &measured);
    }

    let group = "sqlite_full/load_100_events";
    if args.wants(group) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = rt
            .block_on(SqliteEventStore::open(dir.path().join("store.db")))
            .expect("store");
        let raw = RawSqlite::open(&dir.path().join("raw.db"), "FULL");
        let hundred = "hundred".to_owned();
        let accounts = Repository::<Account>::new(Arc::new(store.clone()));
        rt.block_on(async {
            benches::fill_account(&store, &hundred, 100).await;
        });
        raw.fill("account-hundred", 1, 100);
        let measured = measure(
            plan,
            |n| {
                let started = Instant::now();
                for _ in 0..n {
                    assert_eq!(raw.load("account-hundred").1, 100);
                }
                started.elapsed()
            },
            |n| {
                timed(&rt, n, || async {
                    let loaded = accounts.load(&hundred).await.expect("load");
                    assert_eq!(loaded.version, Version::new(100));
                })
            },
        );
        record(plan, group, "raw", "store", &measured);
    }
}

fn postgres(args: &Args, plan: Plan) {
    const TASKS: u64 = 16;
    let names = [
        "postgres/command_new_aggregate",
        "postgres/command_new_aggregate_16",
        "postgres/load_100_events",
    ];
    if !names.iter().any(|n| args.wants(n)) {
        return;
    }
    let rt = benches::runtime();
    // The pools as `benches/postgres.rs` sets them up.
    let options =
        PostgresOptions::default().with_max_connections(u32::try_from(TASKS + 4).expect("small"));
    let Some((store, raw)) =
        benches::postgres_pair_with(&rt, options, u32::try_from(TASKS).expect("small"))
    else {
        return;
    };
    let accounts = Repository::<Account>::new(Arc::new(store.clone()));
    let open = AccountCommand::open();
    let counter = AtomicU64::new(0);
    let next = || counter.fetch_add(1, Ordering::Relaxed);

    if args.wants(names[0]) {
        let measured = measure(
            plan,
            |n| {
                timed(&rt, n, || {
                    let (raw, open, stream) = (&raw, &open, format!("raw-{}", next()));
                    async move { raw_postgres::command(raw, &stream, open).await }
                })
            },
            |n| timed(&rt, n, || open_account(&accounts, format!("seq{}", next()))),
        );
        record(plan, names[0], "raw", "store_1_task", &measured);
    }

    if args.wants(names[1]) {
        let measured = measure(
            plan,
            |n| {
                rt.block_on(in_parallel(n, TASKS, &counter, {
                    let (raw, open) = (raw.clone(), open.clone());
                    move |n| {
                        let (raw, open) = (raw.clone(), open.clone());
                        async move {
                            raw_postgres::command(&raw, &format!("raw-{n}"), &open).await;
                        }
                    }
                }))
            },
            |n| {
                rt.block_on(in_parallel(n, TASKS, &counter, {
                    let accounts = accounts.clone();
                    move |n| {
                        let accounts = accounts.clone();
                        async move { open_account(&accounts, format!("par{n}")).await }
                    }
                }))
            },
        );
        record(
            plan,
            "postgres/command_new_aggregate",
            "raw_16_connections",
            "store_16_tasks",
            &measured,
        );
    }

    if args.wants(names[2]) {
        let hundred = "hundred".to_owned();
        rt.block_on(async {
            benches::fill_account(&store, &hundred, 100).await;
            raw_postgres::fill(&raw, "account-hundred", 1, 100).await;
            for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
                sqlx::query(statement).execute(&raw).await.expect("settle");
            }
        });
        let measured = measure(
            plan,
            |n| {
                timed(&rt, n, || async {
                    assert_eq!(raw_postgres::load(&raw, "account-hundred").await.1, 100);
                })
            },
            |n| {
                timed(&rt, n, || async {
                    accounts.load(&hundred).await.expect("load");
                })
            },
        );
        record(plan, names[2], "raw", "store", &measured);
    }
}

fn main() {
    let args = Args::parse();
    let plan = if args.test {
        Plan::TEST
    } else if args.quick {
        Plan::QUICK
    } else {
        Plan::FULL
    };
    sqlite(&args, plan);
    postgres(&args, plan);
}
