use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of a stream: how many events it holds.
///
/// The first event of a stream has version 1, and versions have no gaps, so a stream's
/// version is also its length. [`Version::ZERO`] is the version of a stream that has no
/// events yet.
///
/// # Examples
///
/// ```
/// use cqrs_core::Version;
///
/// let v = Version::ZERO.next();
/// assert_eq!(v, Version::START);
/// assert_eq!(v.get(), 1);
/// assert_eq!(v.to_string(), "1");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of an empty (or not yet created) stream.
    pub const ZERO: Self = Self(0);
    /// The version of a stream's first event; read a whole stream from here.
    pub const START: Self = Self(1);

    /// Wraps a raw version number.
    #[must_use]
    pub const fn new(version: u64) -> Self {
        Self(version)
    }

    /// The raw version number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    ///
    /// # Panics
    ///
    /// Panics if the version is `u64::MAX`, which no stream can reach.
    #[must_use]
    pub const fn next(self) -> Self {
        match self.0.checked_add(1) {
            Some(v) => Self(v),
            None => panic!("stream version overflow"),
        }
    }

    /// This version moved `n` events forward.
    ///
    /// # Panics
    ///
    /// Panics on overflow, which no stream can reach.
    #[must_use]
    pub const fn add(self, n: u64) -> Self {
        match self.0.checked_add(n) {
            Some(v) => Self(v),
            None => panic!("stream version overflow"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

/// The position of an event in the global log of a store.
///
/// Positions grow in commit order: once a reader has seen position *p*, no event with a
/// lower position becomes visible later (the gap-safety invariant every store keeps).
/// Positions start at 1; a store may leave holes between them (PostgreSQL does when a
/// transaction rolls back), so they are ordered but not necessarily contiguous.
///
/// # Examples
///
/// ```
/// use cqrs_core::Position;
///
/// assert!(Position::START > Position::ZERO);
/// assert_eq!(Position::new(41).next(), Position::new(42));
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(u64);

impl Position {
    /// Before the first event: the checkpoint of a projection that has seen nothing.
    pub const ZERO: Self = Self(0);
    /// The lowest position an event can have; read the whole log from here.
    pub const START: Self = Self(1);

    /// Wraps a raw position.
    #[must_use]
    pub const fn new(position: u64) -> Self {
        Self(position)
    }

    /// The raw position.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The position after this one: where a reader that has processed `self` continues.
    ///
    /// # Panics
    ///
    /// Panics if the position is `u64::MAX`, which no log can reach.
    #[must_use]
    pub const fn next(self) -> Self {
        match self.0.checked_add(1) {
            Some(v) => Self(v),
            None => panic!("log position overflow"),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Position {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

/// What a writer expects a stream's version to be when it appends: optimistic concurrency.
///
/// # Examples
///
/// ```
/// use cqrs_core::{ExpectedVersion, Version};
///
/// assert!(ExpectedVersion::Any.matches(Version::new(7)));
/// assert!(ExpectedVersion::NoStream.matches(Version::ZERO));
/// assert!(!ExpectedVersion::Exact(Version::new(3)).matches(Version::new(4)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet (have no events).
    NoStream,
    /// The stream must be at exactly this version. `Exact(Version::ZERO)` means the same as
    /// [`ExpectedVersion::NoStream`].
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    #[must_use]
    pub fn matches(self, actual: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == Version::ZERO,
            Self::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

impl From<Version> for ExpectedVersion {
    fn from(v: Version) -> Self {
        Self::Exact(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_zero_means_no_stream() {
        assert!(ExpectedVersion::Exact(Version::ZERO).matches(Version::ZERO));
        assert!(!ExpectedVersion::Exact(Version::ZERO).matches(Version::START));
        assert!(!ExpectedVersion::NoStream.matches(Version::START));
    }

    #[test]
    fn versions_serialize_as_plain_numbers() {
        assert_eq!(serde_json::to_string(&Version::new(5)).unwrap(), "5");
        assert_eq!(serde_json::to_string(&Position::new(9)).unwrap(), "9");
    }
}
