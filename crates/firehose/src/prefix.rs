//! S3 object keys as Firehose writes them: the prefix expressions
//! (`!{timestamp:...}`, `!{firehose:...}`) with AWS's validation rules, the
//! default `YYYY/MM/dd/HH/` prefix, and the object name
//! `<stream>-<version>-<yyyy-MM-dd-HH-mm-ss>-<uuid><extension>`.
//!
//! ```
//! use ripstream_firehose::prefix::Template;
//! let t = Template::parse("logs/!{timestamp:yyyy}/").unwrap();
//! // 2026-12-03T17:04:05Z
//! assert_eq!(t.render(1_796_317_445_000, None, &mut rand::rng()), "logs/2026/");
//! ```

use rand::Rng;

/// A UTC civil time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    /// The civil time of a Unix time in milliseconds, in UTC (Firehose's
    /// default zone).
    pub fn from_ms(ms: i64) -> UtcTime {
        use chrono::{Datelike, Timelike};
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        UtcTime {
            year: i64::from(t.year()),
            month: t.month(),
            day: t.day(),
            hour: t.hour(),
            minute: t.minute(),
            second: t.second(),
        }
    }
}

/// One element of a `java.time.format.DateTimeFormatter` pattern, the subset
/// Firehose users write in prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    /// `yyyy`/`uuuu`: the year, four digits at least.
    Year4,
    /// `yy`/`uu`: the last two digits of the year.
    Year2,
    /// `M`, `d`, `H`, `m`, `s` (unpadded) or doubled (two digits).
    Month(bool),
    Day(bool),
    Hour(bool),
    Minute(bool),
    Second(bool),
    Literal(String),
}

fn parse_java_pattern(pattern: &str) -> Result<Vec<Field>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push(Field::Literal("'".into()));
                i += 2;
                continue;
            }
            let mut lit = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quote in pattern '{pattern}'")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        lit.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        lit.push(ch);
                        i += 1;
                    }
                }
            }
            out.push(Field::Literal(lit));
        } else if c.is_ascii_alphabetic() {
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            let field = match (c, n) {
                ('y' | 'u', 4) => Field::Year4,
                ('y' | 'u', 2) => Field::Year2,
                ('M', 1 | 2) => Field::Month(n == 2),
                ('d', 1 | 2) => Field::Day(n == 2),
                ('H', 1 | 2) => Field::Hour(n == 2),
                ('m', 1 | 2) => Field::Minute(n == 2),
                ('s', 1 | 2) => Field::Second(n == 2),
                _ => {
                    return Err(format!(
                        "the pattern letters '{}' in '{pattern}' are not supported (supported: yyyy, yy, MM, dd, HH, mm, ss, quoted literals)",
                        c.to_string().repeat(n)
                    ));
                }
            };
            out.push(field);
            i += n;
        } else {
            out.push(Field::Literal(c.to_string()));
            i += 1;
        }
    }
    Ok(out)
}

fn format_fields(fields: &[Field], t: &UtcTime, out: &mut String) {
    use std::fmt::Write;
    let num = |out: &mut String, v: u32, pad: bool| {
        let _ = if pad {
            write!(out, "{v:02}")
        } else {
            write!(out, "{v}")
        };
    };
    for f in fields {
        match f {
            Field::Year4 => {
                let _ = write!(out, "{:04}", t.year);
            }
            Field::Year2 => {
                let _ = write!(out, "{:02}", t.year.rem_euclid(100));
            }
            Field::Month(p) => num(out, t.month, *p),
            Field::Day(p) => num(out, t.day, *p),
            Field::Hour(p) => num(out, t.hour, *p),
            Field::Minute(p) => num(out, t.minute, *p),
            Field::Second(p) => num(out, t.second, *p),
            Field::Literal(s) => out.push_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Timestamp(Vec<Field>),
    RandomString,
    ErrorOutputType,
}

/// A parsed Prefix or ErrorOutputPrefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The characters of `!{firehose:random-string}`.
const RANDOM_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

impl Template {
    /// Parses a prefix; the error says what is wrong, for an
    /// InvalidArgumentException.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("!{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let body = &rest[start + 2..];
            let end = body.find('}').ok_or_else(|| {
                format!(
                    "The expression starting at '{}' is not closed with '}}'.",
                    &rest[start..]
                )
            })?;
            let expr = &body[..end];
            let (ns, arg) = expr.split_once(':').ok_or_else(|| {
                format!(
                    "The expression '!{{{expr}}}' has no namespace: expected !{{namespace:value}}."
                )
            })?;
            let part = match (ns, arg) {
                ("timestamp", pattern) => Part::Timestamp(parse_java_pattern(pattern)?),
                ("firehose", "random-string") => Part::RandomString,
                ("firehose", "error-output-type") => Part::ErrorOutputType,
                ("firehose", other) => {
                    return Err(format!(
                        "'{other}' is not a valid firehose expression: expected random-string or error-output-type."
                    ));
                }
                ("partitionKeyFromQuery" | "partitionKeyFromLambda", _) => {
                    return Err(format!(
                        "The expression '!{{{expr}}}' needs dynamic partitioning, which this server does not support yet."
                    ));
                }
                (other, _) => {
                    return Err(format!(
                        "'{other}' is not a valid expression namespace: expected timestamp, firehose, partitionKeyFromQuery or partitionKeyFromLambda."
                    ));
                }
            };
            parts.push(part);
            rest = &body[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether any `!{...}` expression is in it.
    pub fn has_expressions(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    fn has_error_output_type(&self) -> bool {
        self.parts.contains(&Part::ErrorOutputType)
    }

    /// The prefix for a buffer whose first record arrived at `ms`;
    /// `error_type` fills `!{firehose:error-output-type}`.
    pub fn render(&self, ms: i64, error_type: Option<&str>, rng: &mut impl Rng) -> String {
        let t = UtcTime::from_ms(ms);
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Timestamp(fields) => format_fields(fields, &t, &mut out),
                Part::RandomString => {
                    for _ in 0..11 {
                        let i = rng.random_range(0..RANDOM_ALPHABET.len());
                        out.push(RANDOM_ALPHABET[i] as char);
                    }
                }
                Part::ErrorOutputType => out.push_str(error_type.unwrap_or("processing-failed")),
            }
        }
        out
    }
}

/// The prefix AWS puts before object names when Prefix has no expression:
/// `YYYY/MM/dd/HH/` of the first record's arrival, in UTC.
pub fn default_time_prefix(ms: i64) -> String {
    let t = UtcTime::from_ms(ms);
    format!("{:04}/{:02}/{:02}/{:02}/", t.year, t.month, t.day, t.hour)
}

/// Checks Prefix and ErrorOutputPrefix by AWS's rules for custom prefixes,
/// and that the keys they make are ones the object store can hold.
pub fn validate(prefix: Option<&str>, error_prefix: Option<&str>) -> Result<(), String> {
    let prefix = prefix.unwrap_or("");
    let error_prefix = error_prefix.unwrap_or("");
    let p = Template::parse(prefix)?;
    let e = Template::parse(error_prefix)?;
    if p.has_error_output_type() {
        return Err(
            "The expression !{firehose:error-output-type} is not allowed in Prefix; use it in ErrorOutputPrefix."
                .into(),
        );
    }
    if p.has_expressions() && error_prefix.is_empty() {
        return Err(
            "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions.".into(),
        );
    }
    if e.has_expressions() && !e.has_error_output_type() {
        return Err(
            "ErrorOutputPrefix must contain !{firehose:error-output-type} when it contains expressions."
                .into(),
        );
    }
    for (name, t) in [("Prefix", &p), ("ErrorOutputPrefix", &e)] {
        let sample = t.render(0, Some("processing-failed"), &mut rand::rng());
        check_key_segments(&sample).map_err(|why| {
            format!(
                "{name} '{}' {why}",
                if name == "Prefix" {
                    prefix
                } else {
                    error_prefix
                }
            )
        })?;
    }
    Ok(())
}

/// The embedded object store keeps objects as files, so a key cannot have
/// empty, `.` or `..` path segments (S3 itself would accept them).
fn check_key_segments(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        return Err("must not start with '/'.".into());
    }
    let segments: Vec<&str> = prefix.split('/').collect();
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if (s.is_empty() && !last) || *s == "." || *s == ".." {
            return Err("makes keys with empty, '.' or '..' path segments, which the embedded object store cannot hold.".into());
        }
    }
    Ok(())
}

/// The full key of one delivered object: the prefix (or the default time
/// prefix after a literal one) and the object name.
pub fn object_key(
    prefix: &Template,
    first_arrival_ms: i64,
    stream: &str,
    version: u64,
    extension: &str,
    rng: &mut impl Rng,
) -> String {
    object_key_for(
        prefix,
        first_arrival_ms,
        stream,
        version,
        extension,
        None,
        rng,
    )
}

/// [`object_key`] of an error output: `error_type` fills
/// `!{firehose:error-output-type}` (`processing-failed` when `None`).
pub fn object_key_for(
    prefix: &Template,
    first_arrival_ms: i64,
    stream: &str,
    version: u64,
    extension: &str,
    error_type: Option<&str>,
    rng: &mut impl Rng,
) -> String {
    let mut key = prefix.render(first_arrival_ms, error_type, rng);
    if !prefix.has_expressions() {
        key.push_str(&default_time_prefix(first_arrival_ms));
    }
    let t = UtcTime::from_ms(first_arrival_ms);
    let id = uuid::Uuid::new_v4();
    key.push_str(&format!(
        "{stream}-{version}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{id}{extension}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    ));
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03T17:04:05.123Z
    const T: i64 = 1_796_317_445_123;

    #[test]
    fn civil_time_is_exact() {
        assert_eq!(
            UtcTime::from_ms(T),
            UtcTime {
                year: 2026,
                month: 12,
                day: 3,
                hour: 17,
                minute: 4,
                second: 5
            }
        );
        assert_eq!(UtcTime::from_ms(0).year, 1970);
        // A leap day.
        let t = UtcTime::from_ms(951_782_400_000); // 2000-02-29T00:00:00Z
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
        assert_eq!(default_time_prefix(T), "2026/12/03/17/");
    }

    #[test]
    fn timestamp_expressions_follow_java_patterns() {
        let r = |p: &str| {
            Template::parse(p)
                .unwrap()
                .render(T, None, &mut rand::rng())
        };
        assert_eq!(r("!{timestamp:yyyy/MM/dd/HH}/"), "2026/12/03/17/");
        assert_eq!(
            r("year=!{timestamp:yyyy}/month=!{timestamp:MM}/"),
            "year=2026/month=12/"
        );
        assert_eq!(r("!{timestamp:yy-M-d H:m:s}"), "26-12-3 17:4:5");
        assert_eq!(r("!{timestamp:'y'yyyy'at''s'}"), "y2026at's");
        assert_eq!(r("!{timestamp:HHmmss}"), "170405");
        assert!(Template::parse("!{timestamp:YYYY}").is_err());
        assert!(Template::parse("!{timestamp:SSS}").is_err());
        assert!(Template::parse("!{timestamp:'open}").is_err());
    }

    #[test]
    fn firehose_expressions() {
        let t = Template::parse("a/!{firehose:random-string}/").unwrap();
        let s = t.render(T, None, &mut rand::rng());
        assert_eq!(s.len(), "a//".len() + 11);
        assert!(s[2..13].bytes().all(|b| b.is_ascii_alphanumeric()));
        let e = Template::parse("err/!{firehose:error-output-type}/").unwrap();
        assert_eq!(
            e.render(T, Some("processing-failed"), &mut rand::rng()),
            "err/processing-failed/"
        );
        assert!(Template::parse("!{firehose:nope}").is_err());
        assert!(Template::parse("!{partitionKeyFromQuery:id}").is_err());
        assert!(Template::parse("!{other:x}").is_err());
        assert!(Template::parse("!{timestamp:yyyy").is_err());
        assert!(Template::parse("!{nonamespace}").is_err());
        assert!(!Template::parse("plain/").unwrap().has_expressions());
    }

    #[test]
    fn prefix_rules() {
        assert!(validate(None, None).is_ok());
        assert!(validate(Some("logs/"), None).is_ok());
        // Expressions in Prefix need an ErrorOutputPrefix.
        assert!(validate(Some("!{timestamp:yyyy}/"), None).is_err());
        assert!(validate(Some("!{timestamp:yyyy}/"), Some("errors/")).is_ok());
        // error-output-type belongs in ErrorOutputPrefix only.
        assert!(validate(Some("!{firehose:error-output-type}/"), Some("e/")).is_err());
        // Expressions in ErrorOutputPrefix need error-output-type.
        assert!(validate(None, Some("e/!{timestamp:yyyy}/")).is_err());
        assert!(
            validate(
                None,
                Some("e/!{firehose:error-output-type}/!{timestamp:yyyy}/")
            )
            .is_ok()
        );
        // Keys the file-backed store cannot hold.
        assert!(validate(Some("/abs/"), None).is_err());
        assert!(validate(Some("a//b/"), None).is_err());
        assert!(validate(Some("../up/"), None).is_err());
        assert!(validate(Some("logs"), None).is_ok());
    }

    #[test]
    fn object_names_as_aws_writes_them() {
        let literal = Template::parse("logs/").unwrap();
        let key = object_key(&literal, T, "orders", 1, ".gz", &mut rand::rng());
        assert!(
            key.starts_with("logs/2026/12/03/17/orders-1-2026-12-03-17-04-05-"),
            "{key}"
        );
        assert!(key.ends_with(".gz"));
        let uuid = &key["logs/2026/12/03/17/orders-1-2026-12-03-17-04-05-".len()..key.len() - 3];
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        // With expressions, no default time prefix is added.
        let custom = Template::parse("d=!{timestamp:yyyy-MM-dd}/").unwrap();
        let key = object_key(&custom, T, "s", 3, "", &mut rand::rng());
        assert!(
            key.starts_with("d=2026-12-03/s-3-2026-12-03-17-04-05-"),
            "{key}"
        );
        let none = Template::parse("").unwrap();
        assert!(
            object_key(&none, T, "s", 1, "", &mut rand::rng()).starts_with("2026/12/03/17/s-1-")
        );
    }
}
