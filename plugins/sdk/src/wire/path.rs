//! Paths of field numbers (`"2.1"`) and what can be used as one.

use std::borrow::Cow;
use std::fmt;

use super::{WireError, MAX_DEPTH, MAX_FIELD_NUMBER};

/// A path of field numbers: `"2.1"` is field 1 of the message in field 2. Parse one once
/// (`"2.1".parse::<Path>()`, at `init`) to check it and reuse it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path(Vec<u32>);

impl Path {
    /// Checks a list of field numbers: 1 to [`MAX_DEPTH`] of them, each 1 to
    /// [`MAX_FIELD_NUMBER`].
    pub fn new(numbers: impl Into<Vec<u32>>) -> Result<Path, WireError> {
        let numbers = numbers.into();
        check_numbers(&numbers, || {
            numbers
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".")
        })?;
        Ok(Path(numbers))
    }

    /// The field numbers, outermost first.
    pub fn numbers(&self) -> &[u32] {
        &self.0
    }

    /// Whether `self` is `other` or leads into it (`"2"` is a prefix of `"2.1"`).
    pub fn is_prefix_of(&self, other: &Path) -> bool {
        other.0.starts_with(&self.0)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Path {
    type Err = WireError;

    fn from_str(s: &str) -> Result<Path, WireError> {
        let bad = |reason| WireError::BadPath {
            path: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let mut numbers = Vec::new();
        for part in s.split('.') {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("each part must be a field number"));
            }
            match part.parse::<u32>() {
                Ok(n) if (1..=MAX_FIELD_NUMBER).contains(&n) => numbers.push(n),
                _ => return Err(bad("field numbers are 1 to 536870911")),
            }
            if numbers.len() > MAX_DEPTH {
                return Err(WireError::TooDeep {
                    depth: s.split('.').count(),
                });
            }
        }
        Ok(Path(numbers))
    }
}

fn check_numbers(numbers: &[u32], show: impl Fn() -> String) -> Result<(), WireError> {
    if numbers.is_empty() {
        return Err(WireError::BadPath {
            path: show(),
            reason: "empty",
        });
    }
    if numbers.len() > MAX_DEPTH {
        return Err(WireError::TooDeep {
            depth: numbers.len(),
        });
    }
    if numbers.iter().any(|n| !(1..=MAX_FIELD_NUMBER).contains(n)) {
        return Err(WireError::BadPath {
            path: show(),
            reason: "field numbers are 1 to 536870911",
        });
    }
    Ok(())
}

/// What [`get`](super::get), [`first`](super::first) and [`rewrite`](super::rewrite) accept
/// as a path: a dotted string (`"2.1"`), a [`Path`], or field numbers (`[2, 1]`,
/// `&[2u32, 1][..]`).
pub trait AsPath {
    /// The checked field numbers.
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError>;
}

impl AsPath for str {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        Ok(Cow::Owned(self.parse::<Path>()?.0))
    }
}

impl AsPath for String {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        self.as_str().field_numbers()
    }
}

impl AsPath for Path {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        Ok(Cow::Borrowed(&self.0))
    }
}

impl AsPath for [u32] {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        check_numbers(self, || format!("{self:?}"))?;
        Ok(Cow::Borrowed(self))
    }
}

impl<const N: usize> AsPath for [u32; N] {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        self[..].field_numbers()
    }
}

impl<T: AsPath + ?Sized> AsPath for &T {
    fn field_numbers(&self) -> Result<Cow<'_, [u32]>, WireError> {
        (**self).field_numbers()
    }
}
