//! Validated user and function names. Both are `[a-z0-9-]`, start with a letter and
//! do not end with `-`; users are 3–32 characters, functions 1–40 (SPEC.md).
//! Holding one of these types is proof the string passed the rules, so paths,
//! SQL and Kubernetes object names built from them need no further checks.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} name {shown:?} is invalid: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub shown: String,
    pub reason: &'static str,
}

fn check(kind: &'static str, s: &str, min: usize, max: usize) -> Result<(), NameError> {
    let fail = |reason| NameError {
        kind,
        // Never echo back something huge; 64 characters is plenty to recognise it.
        shown: s.chars().take(64).collect(),
        reason,
    };
    if s.len() < min || s.len() > max {
        return Err(fail(if kind == "user" {
            "it must be 3 to 32 characters long"
        } else {
            "it must be 1 to 40 characters long"
        }));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(fail(
            "only lowercase letters a-z, digits 0-9 and '-' are allowed",
        ));
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(fail("it must start with a letter"));
    }
    if s.ends_with('-') {
        return Err(fail("it must not end with '-'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($ty:ident, $kind:literal, $min:literal, $max:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check($kind, s, $min, $max).map(|()| Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        // Hash and Eq agree with `str`'s, so maps keyed by names are looked
        // up with a borrowed `&str` (the router's request path, no allocation).
        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(UserName, "user", 3, 32);

/// True when `s` would parse as a `UserName`, without allocating (router hot path).
pub fn is_user_name(s: &str) -> bool {
    check("user", s, 3, 32).is_ok()
}

/// True when `s` would parse as a `FunctionName`, without allocating.
pub fn is_function_name(s: &str) -> bool {
    check("function", s, 1, 40).is_ok()
}
name_type!(FunctionName, "function", 1, 40);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["abc", "a1-b2", "alice", &"a".repeat(32)] {
            assert!(UserName::parse(ok).is_ok(), "{ok}");
        }
        for ok in ["a", "x9", "hello-world", &"f".repeat(40)] {
            assert!(FunctionName::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_reason() {
        for bad in [
            "", "ab", "Abc", "-ab", "ab-", "1ab", "a_b", "a.b", "../x", "a/b", "ä-bc",
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse(&"a".repeat(33)).is_err());
        for bad in ["", "A", "-a", "a-", "../x", "é", "a b", "9a"] {
            let err = FunctionName::parse(bad).unwrap_err();
            assert!(!err.reason.is_empty());
        }
        assert!(FunctionName::parse(&"a".repeat(41)).is_err());
    }
}
