//! Throttling per client and per account, with token buckets: guesses (owner credentials and
//! order lookups) and order placements.
//!
//! Each key (a client's address, an account's email) has a bucket of `burst` tokens,
//! refilled by one every `refill`; a request whose keys have an empty bucket is refused
//! (`429` with `Retry-After`) without being looked at. For guesses ([`BURST`] and [`REFILL`])
//! only failures take a token, so an owner who types their code right is never held up; for
//! orders every placement takes one.
//!
//! The arithmetic: an account takes at most 10 wrong guesses, then one every 6 s, 14,400 a
//! day, whatever the number of clients guessing. A 12-character code (32 letters and digits:
//! 2⁶⁰ codes) then takes about 4·10¹³ days to find on average; a 6-character one, issued
//! before codes grew (2³⁰), about 37,000 days.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// Failed attempts a key may make at once.
pub(crate) const BURST: u32 = 10;

/// How often a key gets one more attempt.
pub(crate) const REFILL: Duration = Duration::from_secs(6);

/// The most keys kept: past it, keys whose bucket is full again are forgotten.
const MAX_KEYS: usize = 100_000;

/// Tokens per key.
#[derive(Debug)]
pub(crate) struct Throttle {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for Throttle {
    /// The throttle of guesses: [`BURST`] failures, then one every [`REFILL`].
    fn default() -> Self {
        Self::new(BURST, REFILL)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts left, as of `at` (fractional: refilled continuously).
    left: f64,
    at: Instant,
}

impl Bucket {
    fn now(self, now: Instant, burst: u32, refill: Duration) -> f64 {
        let refilled = now.duration_since(self.at).as_secs_f64() / refill.as_secs_f64();
        (self.left + refilled).min(f64::from(burst))
    }
}

impl Throttle {
    /// A throttle of `burst` tokens per key, refilled by one every `refill` (at least 1 ms).
    pub(crate) fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst: burst.max(1),
            refill: refill.max(Duration::from_millis(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes a token from every key, unless one is out of them: then answers how long to
    /// wait, and takes nothing.
    pub(crate) fn spend(&self, keys: &[String]) -> Result<(), Duration> {
        if let Some(wait) = self.wait(keys) {
            return Err(wait);
        }
        self.failed(keys);
        Ok(())
    }

    /// Runs `check` (a credential check: `None` when it fails) unless a key is out of
    /// attempts, in which case it answers how long to wait. A failed check takes one attempt
    /// from every key.
    pub(crate) fn attempt<T>(
        &self,
        keys: &[String],
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Duration> {
        if let Some(wait) = self.wait(keys) {
            return Err(wait);
        }
        let checked = check();
        if checked.is_none() {
            self.failed(keys);
        }
        Ok(checked)
    }

    /// How long an attempt with `keys` must wait, if one of them is out of attempts.
    pub(crate) fn wait(&self, keys: &[String]) -> Option<Duration> {
        let now = Instant::now();
        let buckets = self.lock();
        keys.iter()
            .filter_map(|key| buckets.get(key))
            .map(|bucket| bucket.now(now, self.burst, self.refill))
            .filter(|left| *left < 1.0)
            .map(|left| self.refill.mul_f64(1.0 - left))
            .max()
    }

    /// Takes one token from every key: a check with them failed.
    pub(crate) fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let (burst, refill) = (self.burst, self.refill);
        let mut buckets = self.lock();
        if buckets.len() >= MAX_KEYS {
            buckets.retain(|_, bucket| bucket.now(now, burst, refill) < f64::from(burst));
        }
        for key in keys {
            let bucket = buckets.entry(key.clone()).or_insert(Bucket {
                left: f64::from(burst),
                at: now,
            });
            *bucket = Bucket {
                left: bucket.now(now, burst, refill) - 1.0,
                at: now,
            };
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The keys of one attempt at `account` (an email, of a `kind` of account) from `client`.
pub(crate) fn keys(kind: &str, account: &str, client: Client) -> [String; 2] {
    [
        format!(
            "client:{}",
            client.0.map_or_else(String::new, |ip| ip.to_string())
        ),
        format!("{kind}:{}", account.trim().to_ascii_lowercase()),
    ]
}

/// The client's address, as the server accepted its connection (none when the router runs
/// without [`serve_with`](crate::web::serve_with), as in unit tests). Behind a proxy it is
/// the proxy's: the per-account limit still holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_empty_a_key_and_successes_take_nothing() {
        let throttle = Throttle::default();
        let keys = keys("owner", "Ana@Example.com", Client(None));
        for _ in 0..50 {
            assert_eq!(throttle.attempt(&keys, || Some(())), Ok(Some(())));
        }
        for _ in 0..BURST {
            assert_eq!(throttle.attempt(&keys, || None::<()>), Ok(None));
        }
        let wait = throttle
            .attempt(&keys, || Some(()))
            .expect_err("out of attempts: even a right code waits");
        assert!(wait > Duration::ZERO && wait <= REFILL, "{wait:?}");
        // Another account from another client is not held up.
        let other = keys_of("bo@example.com");
        assert_eq!(throttle.attempt(&other, || Some(())), Ok(Some(())));
    }

    #[test]
    fn every_order_takes_a_token_and_clients_are_apart() {
        let throttle = Throttle::new(3, Duration::from_secs(60));
        let (a, b) = (
            ["client:192.0.2.1".to_owned()],
            ["client:192.0.2.2".to_owned()],
        );
        for _ in 0..3 {
            assert_eq!(throttle.spend(&a), Ok(()));
        }
        let wait = throttle.spend(&a).expect_err("out of tokens");
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
        assert_eq!(throttle.spend(&b), Ok(()), "another client is not held up");
    }

    fn keys_of(email: &str) -> [String; 2] {
        keys("owner", email, Client(Some(IpAddr::from([192, 0, 2, 1]))))
    }
}
