//! The value types every part of the domain shares: typed ids, seat quantities, people and
//! access codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new id, ordered by creation time (UUID v7).
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }
    };
}

id_type!(
    /// A conference.
    ConferenceId
);
id_type!(
    /// A seat type of a conference.
    SeatTypeId
);
id_type!(
    /// A registrant's order (also the id of its seat reservation and registration process).
    OrderId
);
id_type!(
    /// A payment through the simulated third-party processor.
    PaymentId
);

/// How many seats of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatQuantity {
    /// The seat type.
    pub seat_type: SeatTypeId,
    /// How many seats.
    pub quantity: u32,
}

impl SeatQuantity {
    /// `quantity` seats of `seat_type`.
    #[must_use]
    pub fn new(seat_type: SeatTypeId, quantity: u32) -> Self {
        Self {
            seat_type,
            quantity,
        }
    }

    /// `seats` with each seat type once, its quantities summed (saturating), in the order
    /// each first appears: what an order asking for one seat type twice means.
    ///
    /// ```
    /// use conference_example::domain::{SeatQuantity, SeatTypeId};
    /// let (a, b) = (SeatTypeId::new(), SeatTypeId::new());
    /// let merged = SeatQuantity::merged(vec![
    ///     SeatQuantity::new(a, 2),
    ///     SeatQuantity::new(b, 1),
    ///     SeatQuantity::new(a, 3),
    /// ]);
    /// assert_eq!(merged, [SeatQuantity::new(a, 5), SeatQuantity::new(b, 1)]);
    /// ```
    #[must_use]
    pub fn merged(seats: Vec<Self>) -> Vec<Self> {
        let mut merged: Vec<Self> = Vec::with_capacity(seats.len());
        for seat in seats {
            match merged.iter_mut().find(|m| m.seat_type == seat.seat_type) {
                Some(m) => m.quantity = m.quantity.saturating_add(seat.quantity),
                None => merged.push(seat),
            }
        }
        merged
    }
}

/// A person: a registrant or an attendee.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersonalInfo {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email address (compared without regard to case).
    pub email: String,
}

impl PersonalInfo {
    /// The longest email accepted, in bytes: it fits a tag (`registrant:` and the email), by
    /// which the registrant's orders are found.
    pub const MAX_EMAIL_LEN: usize = 180;

    /// The longest first or last name, in characters.
    pub const MAX_NAME_LEN: usize = 100;

    /// Checks that every field is present and the email looks like one.
    ///
    /// # Errors
    ///
    /// A message naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.first_name.trim().is_empty() {
            return Err("the first name is required".into());
        }
        if self.last_name.trim().is_empty() {
            return Err("the last name is required".into());
        }
        for (field, name) in [("first", &self.first_name), ("last", &self.last_name)] {
            if name.chars().count() > Self::MAX_NAME_LEN {
                return Err(format!(
                    "the {field} name has at most {} characters",
                    Self::MAX_NAME_LEN
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(format!("the {field} name holds a control character"));
            }
        }
        if !is_email(&self.email) {
            return Err(format!("{:?} is not an email address", self.email));
        }
        if self.email.len() > Self::MAX_EMAIL_LEN {
            return Err(format!(
                "an email address has at most {} characters",
                Self::MAX_EMAIL_LEN
            ));
        }
        Ok(())
    }

    /// Whether `self` and `other` have the same email, ignoring case.
    #[must_use]
    pub fn same_email(&self, other: &str) -> bool {
        self.email.eq_ignore_ascii_case(other)
    }
}

/// Two people are the same when their emails match (ignoring case) and their names match
/// exactly, as in the CQRS Journey.
impl PartialEq for PersonalInfo {
    fn eq(&self, other: &Self) -> bool {
        self.same_email(&other.email)
            && self.first_name == other.first_name
            && self.last_name == other.last_name
    }
}

impl Eq for PersonalInfo {}

/// Whether `email` looks like an address: one `@`, something before it, and a dotted domain
/// after it, with no spaces.
#[must_use]
pub fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain
            .split('.')
            .collect::<Vec<_>>()
            .split_last()
            .is_some_and(|(tld, rest)| {
                tld.len() >= 2 && !rest.is_empty() && rest.iter().all(|p| !p.is_empty())
            })
}

/// The alphabet of access codes: no `I`, `L`, `O` or `0`, which read alike.
const ACCESS_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ123456789";

/// A code that, with an email, finds an order or opens a conference's admin pages, so that
/// nobody needs an account: 12 characters of 32 (60 bits) as issued today; the 6-character
/// codes issued before are still read.
///
/// How long guessing one takes at the rate the server allows is worked out in the web
/// server's throttle (`src/web/throttle.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccessCode(String);

impl AccessCode {
    /// How many characters a code issued today has.
    pub const LEN: usize = 12;

    /// How many characters a code issued before codes grew has.
    pub const OLD_LEN: usize = 6;

    /// A fresh random code.
    #[must_use]
    pub fn generate() -> Self {
        // The first 6 bytes of a v4 UUID are random (its version and variant bits come
        // after); 256 is a multiple of the alphabet's 32, so each character is uniform.
        let (a, b) = (Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes());
        Self(
            a[..6]
                .iter()
                .chain(&b[..6])
                .map(|b| {
                    char::from(ACCESS_CODE_ALPHABET[usize::from(*b) % ACCESS_CODE_ALPHABET.len()])
                })
                .collect(),
        )
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccessCode {
    type Err = String;

    /// Reads a code, ignoring case and surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let code = s.trim().to_ascii_uppercase();
        if [Self::LEN, Self::OLD_LEN].contains(&code.len())
            && code.bytes().all(|b| ACCESS_CODE_ALPHABET.contains(&b))
        {
            Ok(Self(code))
        } else {
            Err(format!("{s:?} is not an access code"))
        }
    }
}

impl fmt::Display for AccessCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_loosely_but_sanely() {
        for good in ["ana@example.com", "a.b+c@mail.example.org"] {
            assert!(is_email(good), "{good}");
        }
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "a@b@c.com",
            "ana@.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn people_match_by_email_ignoring_case_and_by_exact_names() {
        let ana = PersonalInfo {
            first_name: "Ana".into(),
            last_name: "Lima".into(),
            email: "ana@example.com".into(),
        };
        let shouting = PersonalInfo {
            email: "ANA@EXAMPLE.COM".into(),
            ..ana.clone()
        };
        assert_eq!(ana, shouting);
        let renamed = PersonalInfo {
            first_name: "ana".into(),
            ..ana.clone()
        };
        assert_ne!(ana, renamed);
    }

    #[test]
    fn access_codes_are_twelve_unambiguous_characters_and_read_back() {
        for _ in 0..100 {
            let code = AccessCode::generate();
            assert_eq!(code.as_str().len(), AccessCode::LEN);
            assert!(!code.as_str().contains(['I', 'L', 'O', '0']));
            assert_eq!(code.as_str().to_lowercase().parse::<AccessCode>(), Ok(code));
        }
        assert!("ABCDE".parse::<AccessCode>().is_err());
        assert!("ABCDE0".parse::<AccessCode>().is_err());
        assert!("ABCDEFGH".parse::<AccessCode>().is_err());
        // A code issued before codes grew still reads.
        assert!("ABC123".parse::<AccessCode>().is_ok());
    }
}
