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
    /// The civil time of a Unix time in milliseconds in a zone
    /// (CustomTimeZone); UTC when `None`.
    pub fn in_zone(ms: i64, zone: Option<&jiff::tz::TimeZone>) -> UtcTime {
        let Some(tz) = zone else {
            return UtcTime::from_ms(ms);
        };
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(t) => {
                let z = t.to_zoned(tz.clone());
                UtcTime {
                    year: i64::from(z.year()),
                    month: z.month() as u32,
                    day: z.day() as u32,
                    hour: z.hour() as u32,
                    minute: z.minute() as u32,
                    second: z.second() as u32,
                }
            }
            Err(_) => UtcTime::from_ms(ms),
        }
    }

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
    /// `!{partitionKeyFromQuery:k}`: a key of the MetadataExtraction query.
    QueryKey(String),
    /// `!{partitionKeyFromLambda:k}`: a key of the function's
    /// `metadata.partitionKeys`.
    LambdaKey(String),
}

/// Where a partition key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeySource {
    Query,
    Lambda,
}

/// The partition keys of one record (or one partition): by source and
/// name, the values as they go into the prefix.
pub type PartitionKeys = std::collections::BTreeMap<(KeySource, String), String>;

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
                ("partitionKeyFromQuery" | "partitionKeyFromLambda", "") => {
                    return Err(format!(
                        "The expression '!{{{expr}}}' names no partition key."
                    ));
                }
                ("partitionKeyFromQuery", k) => Part::QueryKey(k.to_string()),
                ("partitionKeyFromLambda", k) => Part::LambdaKey(k.to_string()),
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

    /// Whether an object's key gets the default `YYYY/MM/dd/HH/` after the
    /// prefix: AWS appends it to a Prefix without a timestamp expression,
    /// except a dynamically partitioned one (its keys place the objects),
    /// and never to an ErrorOutputPrefix with expressions (those always
    /// hold `!{firehose:error-output-type}`).
    pub fn appends_default_time(&self) -> bool {
        !self.parts.iter().any(|p| {
            matches!(
                p,
                Part::Timestamp(_) | Part::QueryKey(_) | Part::LambdaKey(_) | Part::ErrorOutputType
            )
        })
    }

    fn has_error_output_type(&self) -> bool {
        self.parts.contains(&Part::ErrorOutputType)
    }

    /// The partition keys the template uses, by source.
    pub fn partition_keys(&self) -> impl Iterator<Item = (KeySource, &str)> {
        self.parts.iter().filter_map(|p| match p {
            Part::QueryKey(k) => Some((KeySource::Query, k.as_str())),
            Part::LambdaKey(k) => Some((KeySource::Lambda, k.as_str())),
            _ => None,
        })
    }

    /// Whether a `!{partitionKeyFrom...}` expression is in it.
    pub fn has_partition_keys(&self) -> bool {
        self.partition_keys().next().is_some()
    }

    /// The prefix for a buffer whose first record arrived at `ms`;
    /// `error_type` fills `!{firehose:error-output-type}`.
    pub fn render(&self, ms: i64, error_type: Option<&str>, rng: &mut impl Rng) -> String {
        self.render_with(&Render::utc(ms, error_type), rng)
    }

    /// The prefix with everything a dynamically partitioned stream fills:
    /// the zone timestamps are in, and the partition's keys (a key missing
    /// renders empty; the engine checks keys before rendering).
    pub fn render_with(&self, r: &Render<'_>, rng: &mut impl Rng) -> String {
        let t = UtcTime::in_zone(r.ms, r.zone);
        let error_type = r.error_type;
        let key = |src: KeySource, k: &str| {
            r.keys
                .and_then(|m| m.get(&(src, k.to_string())))
                .map(String::as_str)
                .unwrap_or("")
        };
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
                Part::QueryKey(k) => out.push_str(key(KeySource::Query, k)),
                Part::LambdaKey(k) => out.push_str(key(KeySource::Lambda, k)),
            }
        }
        out
    }
}

/// What a prefix is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Render<'a> {
    /// The arrival of the object's oldest record.
    pub ms: i64,
    /// CustomTimeZone; UTC when `None`.
    pub zone: Option<&'a jiff::tz::TimeZone>,
    pub error_type: Option<&'a str>,
    pub keys: Option<&'a PartitionKeys>,
}

impl<'a> Render<'a> {
    pub fn utc(ms: i64, error_type: Option<&'a str>) -> Render<'a> {
        Render {
            ms,
            zone: None,
            error_type,
            keys: None,
        }
    }
}

/// Reads a CustomTimeZone: an IANA zone name (`America/New_York`), or
/// UTC for none. The error is the InvalidArgumentException's message.
pub fn time_zone(name: Option<&str>) -> Result<Option<jiff::tz::TimeZone>, String> {
    match name {
        None | Some("") | Some("UTC") => Ok(None),
        Some(z) => jiff::tz::TimeZone::get(z)
            .map(Some)
            .map_err(|_| format!("CustomTimeZone {z} is not a valid time zone.")),
    }
}

/// A rendered prefix (dynamic partitioning) as the embedded store can hold
/// it: its path segments checked.
pub fn check_rendered(prefix: &str) -> Result<(), String> {
    check_key_segments(prefix).map_err(|why| format!("The evaluated prefix '{prefix}' {why}"))
}

/// The prefix AWS puts before object names when Prefix has no expression:
/// `YYYY/MM/dd/HH/` of the first record's arrival, in UTC.
pub fn default_time_prefix(ms: i64) -> String {
    default_time_prefix_in(ms, None)
}

/// [`default_time_prefix`] in a CustomTimeZone.
pub fn default_time_prefix_in(ms: i64, zone: Option<&jiff::tz::TimeZone>) -> String {
    let t = UtcTime::in_zone(ms, zone);
    format!("{:04}/{:02}/{:02}/{:02}/", t.year, t.month, t.day, t.hour)
}

/// Checks Prefix and ErrorOutputPrefix by AWS's rules for custom prefixes,
/// and that the keys they make are ones the object store can hold.
pub fn validate(prefix: Option<&str>, error_prefix: Option<&str>) -> Result<(), String> {
    validate_with(prefix, error_prefix, false)
}

/// [`validate`] with dynamic partitioning on or off: on, Prefix must use a
/// partition key and ErrorOutputPrefix must be given (and use none); off,
/// partition keys are refused.
pub fn validate_with(
    prefix: Option<&str>,
    error_prefix: Option<&str>,
    partitioning: bool,
) -> Result<(), String> {
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
    if partitioning {
        if !p.has_partition_keys() {
            return Err("Prefix must contain a !{partitionKeyFromQuery:key} or !{partitionKeyFromLambda:key} expression when dynamic partitioning is enabled.".into());
        }
        if error_prefix.is_empty() {
            return Err(
                "ErrorOutputPrefix cannot be null or empty when dynamic partitioning is enabled."
                    .into(),
            );
        }
    } else if p.has_partition_keys() {
        return Err("The partitionKeyFromQuery and partitionKeyFromLambda namespaces can only be used when dynamic partitioning is enabled.".into());
    }
    if e.has_partition_keys() {
        return Err(
            "ErrorOutputPrefix cannot contain partitionKeyFromQuery or partitionKeyFromLambda expressions."
                .into(),
        );
    }
    if e.has_expressions() && !e.has_error_output_type() {
        return Err(
            "ErrorOutputPrefix must contain !{firehose:error-output-type} when it contains expressions."
                .into(),
        );
    }
    for (name, t) in [("Prefix", &p), ("ErrorOutputPrefix", &e)] {
        let sample_keys: PartitionKeys = t
            .partition_keys()
            .map(|(s, k)| ((s, k.to_string()), "k".to_string()))
            .collect();
        let sample = t.render_with(
            &Render {
                keys: Some(&sample_keys),
                ..Render::utc(0, Some("processing-failed"))
            },
            &mut rand::rng(),
        );
        // AWS: neither may be longer than 512 characters once evaluated
        // (partition keys counted at one character each here, so this
        // refuses only what can never fit).
        if sample.chars().count() > MAX_EVALUATED_PREFIX {
            return Err(format!(
                "{name} cannot be greater than {MAX_EVALUATED_PREFIX} characters after it is evaluated."
            ));
        }
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

/// The longest a Prefix or ErrorOutputPrefix may be once evaluated.
pub const MAX_EVALUATED_PREFIX: usize = 512;

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
    object_key_with(
        prefix,
        &Render::utc(first_arrival_ms, error_type),
        stream,
        version,
        extension,
        rng,
    )
}

/// [`object_key_for`] in a CustomTimeZone and with a partition's keys.
pub fn object_key_with(
    prefix: &Template,
    r: &Render<'_>,
    stream: &str,
    version: u64,
    extension: &str,
    rng: &mut impl Rng,
) -> String {
    let first_arrival_ms = r.ms;
    let mut key = prefix.render_with(r, rng);
    if prefix.appends_default_time() {
        key.push_str(&default_time_prefix_in(first_arrival_ms, r.zone));
    }
    let t = UtcTime::in_zone(first_arrival_ms, r.zone);
    // From `rng`, so a caller that seeds it gets the same key again.
    let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
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
        assert!(Template::parse("!{partitionKeyFromQuery:}").is_err());
        let t = Template::parse("c=!{partitionKeyFromQuery:id}/d=!{partitionKeyFromLambda:d}/")
            .unwrap();
        let keys: PartitionKeys = [
            ((KeySource::Query, "id".to_string()), "7".to_string()),
            ((KeySource::Lambda, "d".to_string()), "x".to_string()),
        ]
        .into();
        let r = Render {
            keys: Some(&keys),
            ..Render::utc(T, None)
        };
        assert_eq!(t.render_with(&r, &mut rand::rng()), "c=7/d=x/");
        assert!(Template::parse("!{other:x}").is_err());
        assert!(Template::parse("!{timestamp:yyyy").is_err());
        assert!(Template::parse("!{nonamespace}").is_err());
        assert!(!Template::parse("plain/").unwrap().has_expressions());
    }

    #[test]
    fn the_default_time_follows_a_prefix_without_a_timestamp() {
        let rng = &mut rand::rng();
        let mut key =
            |p: &str| object_key_for(&Template::parse(p).unwrap(), T, "s", 1, "", None, rng);
        // AWS's rule: no timestamp expression, the default time is appended
        // (a random string is not a timestamp).
        let k = key("r=!{firehose:random-string}/");
        assert!(k.contains("/2026/12/03/17/s-1-2026-12-03-17-04-05-"), "{k}");
        assert!(key("logs/").starts_with("logs/2026/12/03/17/s-1-"));
        let k = key("y=!{timestamp:yyyy}/");
        assert!(k.starts_with("y=2026/s-1-"), "{k}");
        assert!(
            !Template::parse("c=!{partitionKeyFromQuery:id}/")
                .unwrap()
                .appends_default_time()
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(validate(None, None).is_ok());
        let long = "a/".repeat(257);
        let e = validate(Some(&long), None).unwrap_err();
        assert!(e.contains("512"), "{e}");
        assert!(validate(Some(&long[..512]), None).is_ok());
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
    fn partitioning_prefix_rules() {
        let q = Some("c=!{partitionKeyFromQuery:c}/");
        assert!(validate(q, Some("e/")).is_err(), "keys need partitioning");
        assert!(validate_with(q, Some("e/"), true).is_ok());
        assert!(
            validate_with(q, None, true).is_err(),
            "an error prefix is required"
        );
        assert!(
            validate_with(Some("plain/"), Some("e/"), true).is_err(),
            "a key is required"
        );
        assert!(
            validate_with(
                q,
                Some("e/!{partitionKeyFromQuery:c}/!{firehose:error-output-type}/"),
                true
            )
            .is_err()
        );
        assert!(
            validate_with(
                Some("!{partitionKeyFromLambda:x}/!{timestamp:yyyy}/"),
                Some("e/!{firehose:error-output-type}/"),
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn custom_time_zones() {
        let ny = time_zone(Some("America/New_York")).unwrap();
        assert!(ny.is_some());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
        assert_eq!(time_zone(Some("UTC")).unwrap(), None);
        // 2026-12-03T17:04:05Z is 12:04:05 in New York (EST, UTC-5).
        let t = UtcTime::in_zone(T, ny.as_ref());
        assert_eq!((t.day, t.hour, t.minute), (3, 12, 4));
        assert_eq!(default_time_prefix_in(T, ny.as_ref()), "2026/12/03/12/");
        let tokyo = time_zone(Some("Asia/Tokyo")).unwrap();
        let p = Template::parse("!{timestamp:yyyy-MM-dd HH}/").unwrap();
        let r = Render {
            zone: tokyo.as_ref(),
            ..Render::utc(T, None)
        };
        assert_eq!(p.render_with(&r, &mut rand::rng()), "2026-12-04 02/");
        let key = object_key_with(
            &Template::parse("").unwrap(),
            &r,
            "s",
            1,
            "",
            &mut rand::rng(),
        );
        assert!(
            key.starts_with("2026/12/04/02/s-1-2026-12-04-02-04-05-"),
            "{key}"
        );
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
