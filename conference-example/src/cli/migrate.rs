//! `migrate`: make a V1 store, migrate it with a progress bar, verify the result.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use cqrs_core::Storage;
use cqrs_core::migrate::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::app::open_storage;
use crate::migrate::{
    V1Options, default_management_path, make_v1, read_management, upgrade, verify_upgrade,
    write_management,
};

/// What `migrate` was asked to do.
#[derive(Debug, Clone)]
pub enum MigrateAction {
    /// Write a V1 store and its management rows.
    MakeV1 {
        /// The empty store.
        out: String,
        /// How big.
        options: V1Options,
        /// Where the management rows go.
        management: Option<PathBuf>,
    },
    /// Copy a V1 store into an empty one.
    Run {
        /// The V1 store.
        from: String,
        /// The target.
        to: String,
        /// The management rows.
        management: Option<PathBuf>,
        /// Continue an interrupted run.
        resume: bool,
        /// Events per step.
        batch: usize,
    },
    /// Compare the two.
    Verify {
        /// The V1 store.
        from: String,
        /// The migrated store.
        to: String,
        /// The management rows.
        management: Option<PathBuf>,
    },
}

fn management_path(given: Option<PathBuf>, url: &str) -> anyhow::Result<PathBuf> {
    given
        .or_else(|| default_management_path(url))
        .ok_or_else(|| anyhow!("{url} is not a SQLite file: say where the management rows are with --management FILE"))
}

fn bar(length: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The V1 store's management rows, the V1 store and the target.
async fn open_both(
    management: Option<PathBuf>,
    from: &str,
    to: &str,
) -> anyhow::Result<(
    crate::migrate::Management,
    Arc<dyn Storage>,
    Arc<dyn Storage>,
)> {
    let path = management_path(management, from)?;
    let management = read_management(&path).map_err(anyhow::Error::msg)?;
    let source = open_storage(from)
        .await
        .with_context(|| format!("cannot open {from}"))?;
    let target = open_storage(to)
        .await
        .with_context(|| format!("cannot open {to}"))?;
    Ok((management, source, target))
}

/// Runs `action`, reporting to `out` (and a progress bar on the terminal).
///
/// # Errors
///
/// A store that cannot be opened, a management file that cannot be read or written, a
/// migration that stops (its error says what to do next), or a verification that finds a
/// difference.
pub async fn migrate(action: MigrateAction, out: &mut impl Write) -> anyhow::Result<()> {
    match action {
        MigrateAction::MakeV1 {
            out: url,
            options,
            management,
        } => {
            let path = management_path(management, &url)?;
            let storage = open_storage(&url)
                .await
                .with_context(|| format!("cannot open {url}"))?;
            let started = Instant::now();
            let progress = bar(options.events, "events");
            let made = make_v1(storage, options, &mut |n| progress.set_position(n)).await?;
            progress.finish_and_clear();
            write_management(&path, &made.management).map_err(anyhow::Error::msg)?;
            writeln!(
                out,
                "V1 store {url}: {} events, {} orders ({} confirmed, {} expired, {} partially reserved) in {:.1?}; management rows in {}",
                made.events,
                made.orders,
                made.confirmed,
                made.expired,
                made.partial,
                started.elapsed(),
                path.display()
            )?;
        }
        MigrateAction::Run {
            from,
            to,
            management,
            resume,
            batch,
        } => {
            let (management, source, target) = open_both(management, &from, &to).await?;
            let migration = upgrade(&source, &management).await?.with_batch(batch);
            let head = source.head().await?.get();
            let progress = bar(head, "positions");
            progress.enable_steady_tick(Duration::from_millis(200));
            let mut report = |p: Progress| progress.set_position(p.position.get());
            let done = if resume {
                migration
                    .resume(source.as_ref(), target.as_ref(), &mut report)
                    .await
            } else {
                migration
                    .run(source.as_ref(), target.as_ref(), &mut report)
                    .await
            };
            progress.finish_and_clear();
            let report = done.map_err(|e| anyhow!("{e}\n(the source {from} was not changed)"))?;
            let rate = report.events_read as f64 / report.elapsed.as_secs_f64().max(1e-9);
            writeln!(
                out,
                "migrated {from} -> {to}: {} events read, {} written, {} already there, {} re-created before them, {} process instances and {} pending commands brought in line, in {:.1?} ({rate:.0} events/s)",
                report.events_read,
                report.events_written,
                report.events_skipped,
                report.prelude_written,
                report.processes,
                report.scheduled,
                report.elapsed
            )?;
            for (name, source_at, target_at) in &report.checkpoints {
                writeln!(out, "  checkpoint {name}: {source_at} -> {target_at}")?;
            }
            writeln!(
                out,
                "next: conference-example migrate verify --from {from} --to {to}"
            )?;
        }
        MigrateAction::Verify {
            from,
            to,
            management,
        } => {
            let (management, source, target) = open_both(management, &from, &to).await?;
            let started = Instant::now();
            let verified = verify_upgrade(&source, &target, &management).await?;
            writeln!(
                out,
                "verified in {:.1?}: {} events ({} re-created), {} aggregates, conference directory {}, order views {}",
                started.elapsed(),
                verified.events.compared,
                verified.events.prelude,
                verified.aggregates,
                if verified.directory_identical {
                    "identical"
                } else {
                    "DIFFERENT"
                },
                if verified.orders_identical {
                    "identical"
                } else {
                    "DIFFERENT"
                },
            )?;
            for difference in verified
                .events
                .differences
                .iter()
                .chain(&verified.aggregate_differences)
                .take(20)
            {
                writeln!(out, "  {difference}")?;
            }
            if !verified.is_identical() {
                bail!("the migrated store differs from the V1 store read through the upcasters");
            }
        }
    }
    Ok(())
}
