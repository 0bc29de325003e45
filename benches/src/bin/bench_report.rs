//! `bench_report`: reads criterion's results and writes the benchmark report — a Markdown
//! table per group (medians, throughput, ratio to the raw engine measured in the same run),
//! the machine and the durability settings — and SVG plots: throughput against concurrency,
//! and load time against stream length with and without snapshots.
//!
//! ```text
//! cargo run -p benches --bin bench_report -- [--criterion target/criterion] [--out docs/benchmarks.md] [--plots docs/plots] [--notes docs/benchmarks-notes.md]
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

/// One benchmark's result.
#[derive(Debug, Clone)]
struct Result {
    group: String,
    function: String,
    parameter: Option<String>,
    /// Median time per iteration, in nanoseconds.
    median_ns: f64,
    /// Elements per iteration, if the benchmark declared a throughput.
    elements: Option<f64>,
}

impl Result {
    fn name(&self) -> String {
        match &self.parameter {
            Some(p) => format!("{}/{p}", self.function),
            None => self.function.clone(),
        }
    }

    fn per_second(&self) -> Option<f64> {
        self.elements.map(|n| n * 1e9 / self.median_ns)
    }
}

fn args() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if let (Some(name), Some(value)) = (flag.strip_prefix("--"), it.next()) {
            out.insert(name.to_owned(), value);
        }
    }
    out
}

fn read_results(dir: &Path) -> Vec<Result> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    if let Some(r) = read_one(&p) {
                        found.push(r);
                    }
                } else {
                    stack.push(p);
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.group, a.name()).cmp(&(&b.group, b.name())));
    found
}

fn read_one(dir: &Path) -> Option<Result> {
    let benchmark: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let estimates: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
    let elements = benchmark["throughput"]["Elements"]
        .as_f64()
        .or_else(|| benchmark["throughput"]["Bytes"].as_f64());
    Some(Result {
        group: benchmark["group_id"].as_str()?.to_owned(),
        function: benchmark["function_id"].as_str().unwrap_or("").to_owned(),
        parameter: benchmark["value_str"].as_str().map(str::to_owned),
        median_ns: estimates["median"]["point_estimate"].as_f64()?,
        elements,
    })
}

/// The raw engine's result a benchmark is compared with: the raw one of its group with the
/// same concurrency and parameter, else the group's first raw one.
fn baseline<'a>(group: &'a [Result], r: &Result) -> Option<&'a Result> {
    if r.function.starts_with("raw") {
        return None;
    }
    let raws: Vec<&Result> = group
        .iter()
        .filter(|g| g.function.starts_with("raw") && g.parameter == r.parameter)
        .collect();
    let concurrent = r.function.contains("16");
    raws.iter()
        .find(|g| g.function.contains("16") == concurrent)
        .or_else(|| raws.first())
        .copied()
        // Groups with no raw engine compare with their simplest case.
        .or_else(|| {
            (r.function != "new_aggregate")
                .then(|| group.iter().find(|g| g.function == "new_aggregate"))
                .flatten()
        })
}

fn durability(group: &str) -> &'static str {
    if group.starts_with("sqlite_full") {
        "SQLite, synchronous=FULL"
    } else if group.starts_with("sqlite_normal") {
        "SQLite, synchronous=NORMAL"
    } else if group.starts_with("postgres") {
        "PostgreSQL, fsync=on, synchronous_commit=on"
    } else if group.starts_with("nats_1_node") {
        "NATS JetStream, file storage, sync_interval: always (an fsync per write), 1 node, 1 replica"
    } else if group.starts_with("nats_3_nodes") {
        "NATS JetStream, file storage, sync_interval: always (an fsync per write), 3 nodes, 3 replicas"
    } else if group.starts_with("memory") {
        "in memory"
    } else {
        "—"
    }
}

fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores; {rustc}")
}

/// The subscriber-latency percentiles the `latency` bench writes beside criterion's results.
fn read_percentiles(dir: &Path) -> Vec<(String, u64, u64, u64)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let file = entry.path().join("percentiles.json");
        let Some(v) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            continue;
        };
        if let (Some(group), Some(samples), Some(p50), Some(p99)) = (
            v["group"].as_str(),
            v["samples"].as_u64(),
            v["p50_ns"].as_u64(),
            v["p99_ns"].as_u64(),
        ) {
            found.push((group.to_owned(), samples, p50, p99));
        }
    }
    found.sort();
    found
}

/// A pair the `interleaved` bench measured in alternating blocks.
struct Interleaved {
    group: String,
    raw: String,
    store: String,
    raw_ns: f64,
    store_ns: f64,
    ratio: f64,
    low: f64,
    high: f64,
    rounds: u64,
}

/// The pairs the `interleaved` bench writes beside criterion's results.
fn read_interleaved(dir: &Path) -> Vec<Interleaved> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let file = entry.path().join("interleaved.json");
        let Some(v) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            continue;
        };
        let text = |k: &str| v[k].as_str().map(str::to_owned);
        let number = |k: &str| v[k].as_f64();
        if let (Some(group), Some(raw), Some(store), Some(raw_ns), Some(store_ns), Some(ratio)) = (
            text("group"),
            text("raw"),
            text("store"),
            number("raw_ns"),
            number("store_ns"),
            number("ratio"),
        ) {
            found.push(Interleaved {
                group,
                raw,
                store,
                raw_ns,
                store_ns,
                ratio,
                low: number("ratio_low").unwrap_or(f64::NAN),
                high: number("ratio_high").unwrap_or(f64::NAN),
                rounds: v["rounds"].as_u64().unwrap_or(0),
            });
        }
    }
    found.sort_by(|a, b| (&a.group, &a.store).cmp(&(&b.group, &b.store)));
    found
}

/// The interleaved pairs beside criterion's ratio for the same two benchmarks.
fn interleaved_section(md: &mut String, results: &[Result], pairs: &[Interleaved]) {
    let _ = writeln!(
        md,
        "## Interleaved pairs\n\nThe pairs whose ratio moved most between full runs, measured \
         again by the `interleaved` bench: blocks of each side taking turns (about 150 ms each in a full run, \
         the order swapped every round), the ratio taken per round. A change in the machine's \
         speed between the two sides of criterion's measurement moves criterion's ratio; it \
         moves these much less. The targets are criterion's medians; this is the check on \
         them.\n\n| Pair | minimal store | store | ratio (median of rounds) | rounds' range | criterion's ratio |\n|---|---:|---:|---:|---:|---:|"
    );
    for p in pairs {
        let median = |function: &str| {
            results
                .iter()
                .find(|r| r.group == p.group && r.parameter.is_none() && r.function == function)
                .map(|r| r.median_ns)
        };
        let criterion = match (median(&p.raw), median(&p.store)) {
            (Some(raw), Some(store)) => format!("{:.2}×", raw / store),
            _ => "—".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {}: {} / {} | {} | {} | {:.2}× | {:.2}–{:.2}× ({} rounds) | {criterion} |",
            p.group,
            p.raw,
            p.store,
            time(p.raw_ns),
            time(p.store_ns),
            p.ratio,
            p.low,
            p.high,
            p.rounds
        );
    }
    let _ = writeln!(md);
}

fn report(
    results: &[Result],
    percentiles: &[(String, u64, u64, u64)],
    interleaved: &[Interleaved],
    notes: Option<String>,
    plots: &[PathBuf],
    out: &Path,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `cargo run -p benches --bin bench_report` from criterion's results \
         (`cargo bench -p benches`). Each store runs beside its raw baseline in the same run: \
         on SQLite and PostgreSQL the minimal event store of DESIGN.md §5 on the same driver \
         (one row per event with its metadata, `UNIQUE (stream, version)`, a single-event \
         append one autocommit `INSERT`, a load one indexed `SELECT` folded on the calling \
         thread, no message log), doing the same logical work. *vs raw* is the raw side's \
         median time over the store's: above 1 the store is faster. Each group names its \
         durability. Every measurement starts from a flushed disk (`sync`), so that neither \
         side pays for writing back what the build or an earlier benchmark left dirty.\n"
    );
    let deposit = benches::RawEvent::new(&benches::AccountEvent::deposited(100));
    let opening = benches::RawEvent::new(&benches::AccountEvent::opened());
    let _ = writeln!(
        md,
        "Events are shaped like a real application's: a deposit's payload is {} bytes of JSON, \
         an opening's {}, and each event carries {} bytes of metadata (correlation id, \
         causation id, user); the store's commands carry the same.\n",
        deposit.payload.len(),
        opening.payload.len(),
        deposit.metadata.len()
    );
    let _ = writeln!(md, "Machine: {}.\n", machine());
    let mut groups: BTreeMap<&str, Vec<Result>> = BTreeMap::new();
    for r in results {
        groups.entry(r.group.as_str()).or_default().push(r.clone());
    }
    for (group, members) in &groups {
        let _ = writeln!(md, "## {group}\n\n{}\n", durability(group));
        let _ = writeln!(
            md,
            "| Benchmark | Median | Throughput | vs raw |\n|---|---:|---:|---:|"
        );
        for r in members {
            let rate = r
                .per_second()
                .map_or_else(|| "—".to_owned(), |p| format!("{p:.0}/s"));
            let ratio = baseline(members, r).map_or_else(
                || "—".to_owned(),
                |b| format!("{:.2}× ({})", b.median_ns / r.median_ns, b.name()),
            );
            let _ = writeln!(
                md,
                "| {} | {} | {rate} | {ratio} |",
                r.name(),
                time(r.median_ns)
            );
        }
        let _ = writeln!(md);
    }
    if !percentiles.is_empty() {
        let _ = writeln!(
            md,
            "## Subscriber latency\n\nFrom an append returning to a live projection having applied it, every iteration.\n\n| Group | Samples | p50 | p99 |\n|---|---:|---:|---:|"
        );
        for (group, samples, p50, p99) in percentiles {
            #[allow(clippy::cast_precision_loss, reason = "nanoseconds, shown to 3 digits")]
            let (p50, p99) = (*p50 as f64, *p99 as f64);
            let _ = writeln!(
                md,
                "| {group} | {samples} | {} | {} |",
                time(p50),
                time(p99)
            );
        }
        let _ = writeln!(md);
    }
    if !interleaved.is_empty() {
        interleaved_section(&mut md, results, interleaved);
    }
    if !plots.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        let base = out.parent().unwrap_or(Path::new("."));
        for plot in plots {
            let rel = pathdiff(plot, base);
            let _ = writeln!(
                md,
                "![{}]({rel})\n",
                plot.file_stem().and_then(|s| s.to_str()).unwrap_or("plot")
            );
        }
    }
    if let Some(notes) = notes {
        let _ = writeln!(md, "{notes}");
    }
    md
}

fn pathdiff(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .map_or_else(|_| path.display().to_string(), |p| p.display().to_string())
}

/// Commands per second against concurrency (1 task, 16 tasks), store and raw, per engine.
fn concurrency_plot(results: &[Result], file: &Path) -> Option<PathBuf> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.group.ends_with("command_new_aggregate"))
    {
        let engine = r.group.split('/').next().unwrap_or("");
        let (kind, tasks) = match r.function.as_str() {
            "raw" | "raw_one_lock_per_command" => ("raw", 1.0),
            "raw_16_connections" | "raw_16_tasks" => ("raw", 16.0),
            "store_1_task" => ("store", 1.0),
            "store_16_tasks" => ("store", 16.0),
            _ => continue,
        };
        if let Some(rate) = r.per_second() {
            series
                .entry(format!("{engine} {kind}"))
                .or_default()
                .push((tasks, rate));
        }
    }
    if series.is_empty() {
        return None;
    }
    let (bottom, top) = log_range(&series, 1.0);
    // Headroom above the fastest engine for the legend, which would hide its points.
    let top = top * 30.0;
    let root = SVGBackend::new(file, (720, 420)).into_drawing_area();
    root.fill(&WHITE).ok()?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Commands on new aggregates per second (log scale)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..17.0, (bottom..top).log_scale())
        .ok()?;
    chart
        .configure_mesh()
        .x_desc("concurrent tasks")
        .y_desc("commands/s")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .ok()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperRight)?;
    root.present().ok()?;
    Some(file.to_path_buf())
}

/// A log-scale y range around every series' values, never below `floor`.
fn log_range(series: &BTreeMap<String, Vec<(f64, f64)>>, floor: f64) -> (f64, f64) {
    let values = || series.values().flatten().map(|p| p.1);
    let top = values().fold(1.0, f64::max) * 2.0;
    let bottom = values().fold(f64::MAX, f64::min).max(floor) * 0.5;
    (bottom, top)
}

/// Draws each series as a line with its points, and the legend.
fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: BTreeMap<String, Vec<(f64, f64)>>,
    legend: SeriesLabelPosition,
) -> Option<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, mut points)) in series.into_iter().enumerate() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .ok()?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .ok()?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .ok()?;
    Some(())
}

/// Load time against stream length, with and without snapshots, per engine.
fn load_plot(results: &[Result], file: &Path) -> Option<PathBuf> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results
        .iter()
        .filter(|r| r.group.ends_with("load_by_length"))
    {
        let engine = r.group.split('/').next().unwrap_or("");
        let Some(n) = r.parameter.as_deref().and_then(|p| p.parse::<f64>().ok()) else {
            continue;
        };
        series
            .entry(format!("{engine} {}", r.function.replace('_', " ")))
            .or_default()
            .push((n, r.median_ns / 1e3));
    }
    if series.is_empty() {
        return None;
    }
    let (bottom, top) = log_range(&series, 0.001);
    let right = series.values().flatten().map(|p| p.0).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(file, (720, 420)).into_drawing_area();
    root.fill(&WHITE).ok()?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Loading an aggregate (median µs, log scales)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((5.0..right).log_scale(), (bottom..top).log_scale())
        .ok()?;
    chart
        .configure_mesh()
        .x_desc("events in the stream")
        .y_desc("µs")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .ok()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperLeft)?;
    root.present().ok()?;
    Some(file.to_path_buf())
}

fn main() -> std::process::ExitCode {
    let args = args();
    let criterion = PathBuf::from(
        args.get("criterion")
            .map_or("target/criterion", String::as_str),
    );
    let out = PathBuf::from(args.get("out").map_or("docs/benchmarks.md", String::as_str));
    let plots_dir = PathBuf::from(args.get("plots").map_or("docs/plots", String::as_str));
    let notes = args
        .get("notes")
        .and_then(|p| std::fs::read_to_string(p).ok());
    let results = read_results(&criterion);
    if results.is_empty() {
        eprintln!(
            "no criterion results under {}: run `cargo bench -p benches` first",
            criterion.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    if let Err(err) = std::fs::create_dir_all(&plots_dir) {
        eprintln!("cannot create {}: {err}", plots_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    let plots: Vec<PathBuf> = [
        concurrency_plot(&results, &plots_dir.join("throughput_vs_concurrency.svg")),
        load_plot(&results, &plots_dir.join("load_vs_stream_length.svg")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let percentiles = read_percentiles(&criterion);
    let interleaved = read_interleaved(&criterion);
    let md = report(&results, &percentiles, &interleaved, notes, &plots, &out);
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Err(err) = std::fs::write(&out, md) {
        eprintln!("cannot write {}: {err}", out.display());
        return std::process::ExitCode::FAILURE;
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "{} results, {} plots -> {}",
        results.len(),
        plots.len(),
        out.display()
    );
    std::process::ExitCode::SUCCESS
}
