//! Dates and timestamps as the two SerDes read them, to UTC microseconds.
//!
//! OpenX reads (as AWS documents for Firehose) `yyyy-MM-dd'T'HH:mm:ss[.S…]'Z'`
//! and other ISO 8601 offsets, `yyyy-[M]M-[d]d HH:mm:ss[.S…]`, epoch seconds
//! and epoch milliseconds (an integer of more than ten digits is taken as
//! milliseconds) and fractional epoch seconds. The Hive JSON SerDe tries
//! each of `TimestampFormats` (Joda-Time patterns, or `millis`), then
//! `java.sql.Timestamp.valueOf`'s `yyyy-[m]m-[d]d hh:mm:ss[.f…]`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde_json::Value;

use crate::OptionsError;

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

/// `yyyy-MM-dd` (one-digit month and day accepted) as days since the epoch.
pub(crate) fn date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    i32::try_from(d.signed_duration_since(EPOCH).num_days()).ok()
}

fn micros(dt: NaiveDateTime) -> Option<i64> {
    Some(dt.and_utc().timestamp_micros())
}

/// `yyyy-[m]m-[d]d hh:mm:ss[.f…]`: the fraction may have up to nine digits
/// (kept to the microsecond).
fn sql_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date_part, time_part) = s.split_once(' ')?;
    let d = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    let (hms, frac) = time_part.split_once('.').unwrap_or((time_part, ""));
    let t = NaiveTime::parse_from_str(hms, "%H:%M:%S").ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().enumerate() {
        nanos += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    micros(d.and_time(t))?.checked_add((nanos / 1000) as i64)
}

fn epoch_number(v: &Value) -> Option<i64> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    if let Ok(i) = text.parse::<i64>() {
        let digits = text.trim_start_matches('-').len();
        return if digits > 10 {
            i.checked_mul(1000)
        } else {
            i.checked_mul(1_000_000)
        };
    }
    let f: f64 = text.parse().ok()?;
    let us = (f * 1e6).round();
    (us.is_finite() && us.abs() < 9.2e18).then_some(us as i64)
}

pub(crate) fn openx_timestamp(v: &Value) -> Option<i64> {
    if let Some(us) = epoch_number(v) {
        return Some(us);
    }
    let s = v.as_str()?.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    if let Some(us) = sql_timestamp(s) {
        return Some(us);
    }
    // ISO 8601 without an offset, or with `T` and no seconds' fraction.
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return micros(dt);
        }
    }
    None
}

pub(crate) fn hive_timestamp(v: &Value, formats: &[TimestampFormat]) -> Option<i64> {
    for f in formats {
        if let Some(us) = f.read(v) {
            return Some(us);
        }
    }
    sql_timestamp(v.as_str()?)
}

/// One of HiveJsonSerDe's `TimestampFormats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `millis`: epoch milliseconds (a number or a numeric string).
    Millis,
    Joda(JodaFormat),
}

/// A Joda-Time pattern, translated to chrono's format syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JodaFormat {
    pub pattern: String,
    chrono: String,
    has_offset: bool,
    has_time: bool,
}

impl TimestampFormat {
    pub fn parse(s: &str) -> Result<TimestampFormat, OptionsError> {
        if s == "millis" {
            return Ok(TimestampFormat::Millis);
        }
        let err = |why: &str| OptionsError::TimestampFormat {
            format: s.to_string(),
            why: why.to_string(),
        };
        let chars: Vec<char> = s.chars().collect();
        let mut out = String::new();
        let (mut has_offset, mut has_time) = (false, false);
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // Quoted literal; '' is a quote.
                let mut j = i + 1;
                if j < chars.len() && chars[j] == '\'' {
                    out.push('\'');
                    i += 2;
                    continue;
                }
                let mut closed = false;
                while j < chars.len() {
                    if chars[j] == '\'' {
                        if j + 1 < chars.len() && chars[j + 1] == '\'' {
                            out.push('\'');
                            j += 2;
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    push_literal(&mut out, chars[j]);
                    j += 1;
                }
                if !closed {
                    return Err(err("an unclosed quote"));
                }
                i = j + 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                push_literal(&mut out, c);
                i += 1;
                continue;
            }
            let mut n = 1;
            while i + n < chars.len() && chars[i + n] == c {
                n += 1;
            }
            let spec = match (c, n) {
                ('y' | 'Y', 2) => "%y",
                ('y' | 'Y', _) => "%Y",
                ('M', 1 | 2) => "%m",
                ('M', 3) => "%b",
                ('M', _) => "%B",
                ('d', 1 | 2) => "%d",
                ('D', _) => "%j",
                ('E', 1..=3) => "%a",
                ('E', _) => "%A",
                ('a', _) => "%p",
                ('H', 1 | 2) => "%H",
                ('k', 1 | 2) => "%H",
                ('h', 1 | 2) => "%I",
                ('K', 1 | 2) => "%I",
                ('m', 1 | 2) => "%M",
                ('s', 1 | 2) => "%S",
                ('S', 3) => "%3f",
                ('S', 6) => "%6f",
                ('S', 9) => "%9f",
                ('Z', 1) => "%z",
                ('Z', 2) => "%:z",
                _ => {
                    return Err(err(&format!(
                        "the field {} is not supported",
                        c.to_string().repeat(n)
                    )));
                }
            };
            match c {
                'Z' => has_offset = true,
                'H' | 'k' | 'h' | 'K' | 'm' | 's' | 'S' => has_time = true,
                _ => {}
            }
            out.push_str(spec);
            i += n;
        }
        Ok(TimestampFormat::Joda(JodaFormat {
            pattern: s.to_string(),
            chrono: out,
            has_offset,
            has_time,
        }))
    }

    fn read(&self, v: &Value) -> Option<i64> {
        match self {
            TimestampFormat::Millis => {
                let ms = match v {
                    Value::Number(n) => n.as_i64()?,
                    Value::String(s) => s.trim().parse().ok()?,
                    _ => return None,
                };
                ms.checked_mul(1000)
            }
            TimestampFormat::Joda(j) => {
                let s = v.as_str()?.trim();
                if j.has_offset {
                    DateTime::parse_from_str(s, &j.chrono)
                        .ok()
                        .map(|d| d.timestamp_micros())
                } else if j.has_time {
                    micros(NaiveDateTime::parse_from_str(s, &j.chrono).ok()?)
                } else {
                    micros(
                        NaiveDate::parse_from_str(s, &j.chrono)
                            .ok()?
                            .and_time(NaiveTime::MIN),
                    )
                }
            }
        }
    }
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}
