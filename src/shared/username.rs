//! The `Username` type: parse, don't validate. A `Username` can only hold a
//! name the contract allows (3 to 32 of `a-z 0-9 _ . -` after lower-casing).

use std::fmt;

/// A valid, normalised (lower-case) username.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    /// Lower-cases and checks a name; `None` when it breaks the rules.
    pub fn parse(raw: &str) -> Option<Self> {
        // ASCII lower-casing only: Unicode's would fold look-alikes into the
        // alphabet (the Kelvin sign U+212A becomes `k`), letting another
        // spelling name the same user.
        let name = raw.to_ascii_lowercase();
        let len = name.chars().count();
        let ok = (3..=32).contains(&len)
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        ok.then_some(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Username;

    #[test]
    fn normalises_and_checks() {
        assert_eq!(Username::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(Username::parse("a.b_c-9").unwrap().as_str(), "a.b_c-9");
        assert!(Username::parse("ab").is_none());
        assert!(Username::parse(&"a".repeat(33)).is_none());
        assert!(Username::parse(&"a".repeat(32)).is_some());
        assert!(Username::parse("al ice").is_none());
        assert!(Username::parse("alïce").is_none());
        // Kelvin sign lower-cases to 'k' in Unicode: still refused, not folded.
        assert!(Username::parse("\u{212A}elvin").is_none());
    }
}
