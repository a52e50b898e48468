//! Small validated values a request carries besides ids and usernames:
//! parse, don't validate, so a handler can only be given what the contract
//! allows.

use std::fmt;

/// A seat's kind (PROTOCOL.md, "Seat kinds and prices").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeatKind {
    Standard,
    Vip,
    Wheelchair,
    Companion,
}

impl SeatKind {
    /// Every kind, in the order the contract lists them.
    pub const ALL: [SeatKind; 4] = [
        SeatKind::Standard,
        SeatKind::Vip,
        SeatKind::Wheelchair,
        SeatKind::Companion,
    ];
    /// What `hold_best_available` chooses from when `kinds` is absent.
    pub const BEST_DEFAULT: [SeatKind; 2] = [SeatKind::Standard, SeatKind::Vip];

    /// The wire and SQL name.
    pub fn as_str(self) -> &'static str {
        match self {
            SeatKind::Standard => "standard",
            SeatKind::Vip => "vip",
            SeatKind::Wheelchair => "wheelchair",
            SeatKind::Companion => "companion",
        }
    }

    /// Exactly one of the four names (case matters: `VIP` is no kind).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for SeatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A TOTP code as `auth_verify` accepts it: exactly six ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl TotpCode {
    /// `None` unless `raw` is six ASCII digits (full-width digits are not).
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit())).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_kinds_are_exactly_the_four_names() {
        for k in SeatKind::ALL {
            assert_eq!(SeatKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(SeatKind::parse("VIP"), None);
        assert_eq!(SeatKind::parse(""), None);
    }

    #[test]
    fn codes_are_six_ascii_digits() {
        assert_eq!(TotpCode::parse("012345").unwrap().as_str(), "012345");
        for bad in ["12345", "1234567", "12345a", "１２３４５６", " 12345"] {
            assert!(TotpCode::parse(bad).is_none(), "{bad}");
        }
    }
}
