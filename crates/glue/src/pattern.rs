//! GetTables' `Expression`: "a regular expression pattern; only tables whose
//! names match it are returned", read the way the Hive metastore (whose
//! semantics Glue keeps) reads a table pattern: `*` is a wildcard for any
//! run of characters, `|` separates alternatives, the rest is a regular
//! expression, and a name must match the whole pattern, case-insensitively.

use regex::{Regex, RegexBuilder};

use crate::error::{Error, Result};

/// Compiled patterns stay small: an expression is at most 2,048 characters,
/// and this bounds what a hostile one can make the server build.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled `Expression`.
#[derive(Debug, Clone)]
pub struct NamePattern(Regex);

impl NamePattern {
    pub fn parse(expression: &str) -> Result<NamePattern> {
        let mut re = String::with_capacity(expression.len() + 16);
        let mut prev: Option<char> = None;
        let mut chars = expression.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    re.push('\\');
                    // An escape keeps its next character as it is (`\*` is a
                    // literal star); a trailing backslash is left for the
                    // regex compiler to refuse.
                    if let Some(n) = chars.next() {
                        re.push(n);
                    }
                    prev = None;
                    continue;
                }
                // `test*` is Hive's wildcard; `test.*` is already a regular
                // expression and means the same.
                '*' if prev != Some('.') => re.push_str(".*"),
                c => re.push(c),
            }
            prev = Some(c);
        }
        let build = |re: &str| {
            RegexBuilder::new(re)
                .case_insensitive(true)
                .size_limit(SIZE_LIMIT)
                .dfa_size_limit(SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    Error::InvalidInput(format!(
                        "Expression {expression} is not a valid pattern: {e}"
                    ))
                })
        };
        // On its own first: an expression such as `a)|(b` is unbalanced
        // alone but balanced inside the anchoring group, where it would
        // close the group early and match names only partly.
        build(&re)?;
        build(&format!("^(?:{re})$")).map(NamePattern)
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(pattern: &str, all: &[&'a str]) -> Vec<&'a str> {
        let p = NamePattern::parse(pattern).unwrap();
        all.iter().copied().filter(|n| p.matches(n)).collect()
    }

    const ALL: &[&str] = &["events", "events_2024", "clicks", "raw_events", "test"];

    #[test]
    fn a_star_is_a_wildcard_and_a_name_matches_whole() {
        assert_eq!(names("events*", ALL), vec!["events", "events_2024"]);
        assert_eq!(names("events.*", ALL), vec!["events", "events_2024"]);
        assert_eq!(names("*events", ALL), vec!["events", "raw_events"]);
        assert_eq!(names("event", ALL), Vec::<&str>::new());
        assert_eq!(names("events", ALL), vec!["events"]);
        assert_eq!(names("*", ALL), ALL.to_vec());
    }

    #[test]
    fn alternatives_and_regular_expressions() {
        assert_eq!(names("clicks|test", ALL), vec!["clicks", "test"]);
        assert_eq!(names("events_[0-9]+", ALL), vec!["events_2024"]);
        assert_eq!(names("t.st", ALL), vec!["test"]);
        assert_eq!(names("CLICKS", ALL), vec!["clicks"]);
        assert_eq!(names(r"a\*", &["a*", "ab", "a"]), vec!["a*"]);
        // Groups that close where they opened stay inside the anchors.
        assert_eq!(names("(click|event)s", ALL), vec!["events", "clicks"]);
    }

    #[test]
    fn malformed_patterns_are_invalid_input() {
        for bad in ["events(", "[a-", "a\\", "x)|(.*", "a)|(b"] {
            match NamePattern::parse(bad) {
                Err(Error::InvalidInput(m)) => assert!(m.contains(bad), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
