//! Measuring a pair in alternation (the `interleaved` bench): short blocks of each side taking
//! turns, the order swapped every round, and the ratio taken per round, so that a drift of
//! the machine's speed moves both sides of a round alike instead of moving the ratio.

use std::time::Duration;

/// How long one block of one side runs, how many rounds a pair gets, and whether the results
/// are kept.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// About how long one block of one side takes.
    pub block: Duration,
    /// Rounds run first and not counted, after the calibration: connections opened, plans
    /// cached, caches filled.
    pub warm_up: usize,
    /// Rounds counted.
    pub rounds: usize,
    /// Whether the results are written for the report.
    pub keep: bool,
}

impl Plan {
    /// A full run's plan: 150 ms blocks, 4 rounds of warm-up, 24 counted.
    pub const FULL: Self = Self {
        block: Duration::from_millis(150),
        warm_up: 4,
        rounds: 24,
        keep: true,
    };
    /// `--quick` (CI's short run, so that the bench cannot rot): 25 ms blocks, 2 + 4 rounds.
    pub const QUICK: Self = Self {
        block: Duration::from_millis(25),
        warm_up: 2,
        rounds: 4,
        keep: true,
    };
    /// `--test`: each pair once, to show it runs; nothing kept.
    pub const TEST: Self = Self {
        block: Duration::from_millis(2),
        warm_up: 0,
        rounds: 1,
        keep: false,
    };
}

/// What a pair measured: the medians of each side's blocks (time per operation) and the
/// rounds' ratios, lowest first.
#[derive(Debug, Clone)]
pub struct Measured {
    /// The minimal store's median time per operation, in nanoseconds.
    pub raw_ns: f64,
    /// The store's, in nanoseconds.
    pub store_ns: f64,
    /// Each round's ratio (the minimal store's time over the store's: above 1 the store is
    /// faster), sorted.
    pub ratios: Vec<f64>,
}

impl Measured {
    /// The median of the rounds' ratios: the pair's ratio.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        median_sorted(&self.ratios)
    }
}

/// The median of `values` (sorted in place); NaN if there are none.
///
/// # Examples
///
/// ```
/// assert_eq!(benches::interleave::median(&mut [3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(benches::interleave::median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
/// assert!(benches::interleave::median(&mut []).is_nan());
/// ```
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    median_sorted(values)
}

fn median_sorted(values: &[f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

/// How many operations make about one block of `side`: doubling from one until a run takes a
/// quarter of the block, then scaled (at most 2^22).
fn calibrate(side: &mut impl FnMut(u64) -> Duration, block: Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let took = side(n);
        if took * 4 >= block || n >= 1 << 20 {
            #[expect(
                clippy::cast_precision_loss,
                reason = "counts below 2^20 are exact in f64"
            )]
            let per_op = took.as_secs_f64() / n as f64;
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive count far below u64::MAX"
            )]
            return ((block.as_secs_f64() / per_op.max(1e-9)) as u64).clamp(1, 1 << 22);
        }
        n *= 2;
    }
}

/// Measures a pair: `raw` and `store` each run `n` operations and return how long they took.
/// Each side is calibrated to `plan.block`, both are warmed for `plan.warm_up` rounds, then
/// `plan.rounds` rounds run one block of each, the minimal store first in even rounds.
#[expect(
    clippy::cast_precision_loss,
    reason = "block counts are below 2^22, exact in f64"
)]
pub fn interleave(
    plan: Plan,
    mut raw: impl FnMut(u64) -> Duration,
    mut store: impl FnMut(u64) -> Duration,
) -> Measured {
    let n_raw = calibrate(&mut raw, plan.block);
    let n_store = calibrate(&mut store, plan.block);
    for _ in 0..plan.warm_up {
        raw(n_raw);
        store(n_store);
    }
    let (mut raws, mut stores, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..plan.rounds {
        let (r, s) = if round % 2 == 0 {
            let r = raw(n_raw);
            (r, store(n_store))
        } else {
            let s = store(n_store);
            (raw(n_raw), s)
        };
        let r = r.as_secs_f64() * 1e9 / n_raw as f64;
        let s = s.as_secs_f64() * 1e9 / n_store as f64;
        raws.push(r);
        stores.push(s);
        ratios.push(r / s);
    }
    ratios.sort_by(f64::total_cmp);
    Measured {
        raw_ns: median(&mut raws),
        store_ns: median(&mut stores),
        ratios,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A side of a fake pair on a machine that slows down steadily: each block costs `n`
    /// operations of `cost_ns`, times the machine's slowness, which grows by 1 % a block.
    fn side<'a>(cost_ns: f64, slowness: &'a Cell<f64>) -> impl FnMut(u64) -> Duration + 'a {
        move |n| {
            let s = slowness.get();
            slowness.set(s * 1.01);
            #[expect(clippy::cast_precision_loss, reason = "small counts, exact in f64")]
            Duration::from_secs_f64(n as f64 * cost_ns * s / 1e9)
        }
    }

    /// The machine got about twice as slow over the measurement; a pair measured one side
    /// after the other would be off by that much, the interleaved ratio is not.
    #[test]
    fn a_steady_drift_does_not_move_the_ratio() {
        let slowness = Cell::new(1.0);
        let measured = interleave(Plan::FULL, side(100.0, &slowness), side(125.0, &slowness));
        assert!(
            slowness.get() > 1.5,
            "the machine drifted: {}",
            slowness.get()
        );
        assert_eq!(measured.ratios.len(), Plan::FULL.rounds);
        // Each round's second block ran 1 % slower than its first, half the rounds the store's
        // and half the minimal store's: the order's swap every round keeps the median within
        // 0.01 % of the truth, where the rounds lie 1 % either side of it.
        assert!(
            (measured.ratio() - 0.8).abs() < 1e-4,
            "ratio {}",
            measured.ratio()
        );
        let (low, high) = (
            measured.ratios[0],
            measured.ratios[measured.ratios.len() - 1],
        );
        assert!((low - 0.8 / 1.01).abs() < 1e-6, "lowest {low}");
        assert!((high - 0.8 * 1.01).abs() < 1e-6, "highest {high}");
    }

    /// Calibration sizes a block to about `plan.block` of the side's time.
    #[test]
    fn a_block_takes_about_the_planned_time() {
        let mut calls = Vec::new();
        let n = calibrate(
            &mut |n| {
                calls.push(n);
                Duration::from_nanos(n * 1_000)
            },
            Duration::from_millis(150),
        );
        assert!((149_000..=151_000).contains(&n), "{n} operations");
        assert_eq!(calls.first(), Some(&1));
        assert!(calls.windows(2).all(|w| w[1] == 2 * w[0]));
    }
}
