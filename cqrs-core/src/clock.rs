use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use futures::future::BoxFuture;
use tokio::sync::watch;

/// Where the framework gets the time: the repository's timestamps, scheduled commands and
/// process-manager deadlines all ask a `Clock`.
///
/// Inject a [`ManualClock`] in tests, so that a 15-minute timeout fires when the test says
/// so instead of after 15 minutes of sleep.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Clock, SystemClock};
///
/// let clock = SystemClock;
/// let now = clock.now();
/// assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0, "kept to the microsecond");
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time, to the microsecond.
    fn now(&self) -> DateTime<Utc>;

    /// Completes once the clock has reached `deadline`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the wait and nothing else.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The operating system's clock, sleeping on tokio's timer.
///
/// # Examples
///
/// ```
/// use cqrs_core::{Clock, SystemClock};
///
/// # tokio_test::block_on(async {
/// let clock = SystemClock;
/// clock.sleep_until(clock.now()).await; // already reached: returns at once
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Sleeping in bounded steps keeps a jump of the wall clock from stretching a wait.
            loop {
                let left = deadline - Utc::now();
                if left <= Duration::zero() {
                    return;
                }
                let step = left
                    .to_std()
                    .unwrap_or_default()
                    .min(std::time::Duration::from_secs(60));
                tokio::time::sleep(step).await;
            }
        })
    }
}

/// A clock that moves only when told to: the clock for tests.
///
/// Every future returned by [`Clock::sleep_until`] wakes as soon as [`ManualClock::advance`]
/// or [`ManualClock::set`] moves the time past its deadline. Clones share one time.
///
/// # Examples
///
/// ```
/// use chrono::Duration;
/// use cqrs_core::{Clock, ManualClock};
///
/// # tokio_test::block_on(async {
/// let clock = ManualClock::new("2026-01-01T09:00:00Z".parse().unwrap());
/// let wake = clock.sleep_until(clock.now() + Duration::minutes(15));
/// clock.advance(Duration::minutes(15));
/// wake.await; // returns at once: the clock has reached the deadline
/// assert_eq!(clock.now().to_rfc3339(), "2026-01-01T09:15:00+00:00");
/// # });
/// ```
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock stopped at `start` (cut to microseconds).
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(truncate_to_micros(start))),
        }
    }

    /// Moves the clock forward by `by`, waking every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|now| *now = truncate_to_micros(*now + by));
    }

    /// Sets the clock to `to`, waking every sleeper whose deadline has come.
    pub fn set(&self, to: DateTime<Utc>) {
        self.now.send_replace(truncate_to_micros(to));
    }
}

impl Default for ManualClock {
    /// A clock stopped at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default())
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock")
            .field(&*self.now.borrow())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, so a deadline already passed returns
            // at once; the sender lives as long as any clone of the clock.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

/// Cuts `t` to whole microseconds, the precision every store keeps.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_in_deadline_order() {
        let clock = ManualClock::default();
        let start = clock.now();
        let early = tokio::spawn(clock.sleep_until(start + Duration::seconds(10)));
        let late = tokio::spawn(clock.sleep_until(start + Duration::seconds(20)));
        tokio::task::yield_now().await;
        clock.advance(Duration::seconds(10));
        early.await.unwrap();
        assert!(!late.is_finished());
        clock.advance(Duration::seconds(10));
        late.await.unwrap();
    }
}
