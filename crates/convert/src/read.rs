//! JSON values read against Hive types, the way the two SerDes Firehose
//! offers read them: field names matched case-insensitively (OpenX: unless
//! `CaseInsensitive` is false), unknown keys ignored, missing keys and
//! `null` as NULL, primitives coerced from strings (`"12"` fills an `int`),
//! any JSON value accepted by a string column (objects and arrays as their
//! JSON text). What cannot be read fails the whole record.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::hive::HiveType;
use crate::time;
use crate::{Column, Deserializer, RecordError};

/// One value checked against its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// Unscaled, at the column's scale.
    Decimal(i128),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    List(Vec<Cell>),
    Map(Vec<(Cell, Cell)>),
    Struct(Vec<Cell>),
}

/// A record read against the schema: one cell per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub(crate) Vec<Cell>);

pub(crate) fn row(
    columns: &[Column],
    de: &Deserializer,
    record: &[u8],
) -> Result<Row, RecordError> {
    let v: Value =
        serde_json::from_slice(record).map_err(|e| RecordError::NotJson(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(RecordError::NotObject);
    };
    let keys = Keys::of(de, &obj);
    // Column names are Hive's, case-insensitive; of two mappings of one
    // column, the first counts. A map, so the cost is per key, not per
    // column times mapping.
    let mut mapped: HashMap<String, &str> = HashMap::new();
    if let Deserializer::OpenX(o) = de {
        for (col, key) in &o.column_to_json_key {
            mapped
                .entry(col.to_ascii_lowercase())
                .or_insert(key.as_str());
        }
    }
    let mut cells = Vec::with_capacity(columns.len());
    for c in columns {
        let json_key = if mapped.is_empty() {
            None
        } else {
            mapped.get(&c.name.to_ascii_lowercase()).copied()
        };
        let value = match json_key {
            // A mapped key is matched as written, then as folded.
            Some(k) => obj.get(k).or_else(|| keys.get(k)),
            None => keys.get(&c.name),
        };
        cells.push(cell(de, &c.ty, value, &c.name)?);
    }
    Ok(Row(cells))
}

/// An object's keys as the deserializer matches them, hashed so a wide
/// schema against a wide record costs columns plus keys, not their product.
struct Keys<'a> {
    fold: bool,
    entries: HashMap<String, &'a Value>,
}

impl<'a> Keys<'a> {
    fn of(de: &Deserializer, obj: &'a Map<String, Value>) -> Keys<'a> {
        let (fold, dots) = match de {
            Deserializer::OpenX(o) => (o.case_insensitive, o.convert_dots_to_underscores),
            // The Hive JSON SerDe matches field names case-insensitively.
            Deserializer::Hive(_) => (true, false),
        };
        // Inserted in order, so of keys that fold alike the last stays.
        let entries = obj
            .iter()
            .map(|(k, v)| {
                let mut k = if fold { k.to_lowercase() } else { k.clone() };
                if dots {
                    k = k.replace('.', "_");
                }
                (k, v)
            })
            .collect();
        Keys { fold, entries }
    }

    /// The value of a name; of duplicate keys (`A` and `a` folded), the
    /// last, as a streaming JSON parser would leave it.
    fn get(&self, name: &str) -> Option<&'a Value> {
        if self.fold {
            self.entries.get(&name.to_lowercase()).copied()
        } else {
            self.entries.get(name).copied()
        }
    }
}

fn bad(path: &str, ty: &HiveType, why: impl Into<String>) -> RecordError {
    RecordError::Value {
        path: path.to_string(),
        ty: ty.to_string(),
        why: why.into(),
    }
}

/// A JSON number or numeric string as an integer within `min..=max`.
fn integer(v: &Value, min: i64, max: i64) -> Result<i64, String> {
    let n = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i,
            None if n.is_u64() => return Err("out of range".into()),
            None => return Err(format!("{n} is not an integer")),
        },
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("{s:?} is not an integer"))?,
        other => return Err(format!("{} is not a number", kind(other))),
    };
    if n < min || n > max {
        return Err(format!("{n} is out of range"));
    }
    Ok(n)
}

fn float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
        Value::String(s) => match s.trim() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            t => t.parse().map_err(|_| format!("{s:?} is not a number")),
        },
        other => Err(format!("{} is not a number", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A decimal's text (a JSON number's shortest form, or a string) as an
/// unscaled integer at `scale`, rounded half up as Hive's `HiveDecimal`
/// does; more than `precision` digits fails.
pub(crate) fn decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (
            &t[..i],
            t[i + 1..]
                .parse::<i32>()
                .map_err(|_| format!("{text:?} is not a decimal"))?,
        ),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{text:?} is not a decimal"));
    }
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    // The value is digits × 10^(exp - frac.len()); we want it × 10^scale.
    let shift = exp as i64 - frac.len() as i64 + scale as i64;
    let mut kept: Vec<u8>;
    let mut round_up = false;
    if shift >= 0 {
        kept = digits.clone();
        kept.extend(std::iter::repeat_n(0, shift.min(80) as usize));
    } else {
        let drop = (-shift) as usize;
        if drop > digits.len() {
            kept = Vec::new();
        } else {
            kept = digits[..digits.len() - drop].to_vec();
            round_up = digits[digits.len() - drop] >= 5;
        }
    }
    let first = kept.iter().position(|&d| d != 0).unwrap_or(kept.len());
    let kept = &kept[first..];
    if kept.len() > precision as usize {
        return Err(format!(
            "{text:?} has more than {precision} digits at scale {scale}"
        ));
    }
    let mut n: i128 = 0;
    for &d in kept {
        n = n * 10 + d as i128;
    }
    if round_up {
        n += 1;
        if n >= 10i128.pow(precision as u32) {
            return Err(format!(
                "{text:?} has more than {precision} digits at scale {scale}"
            ));
        }
    }
    Ok(if neg { -n } else { n })
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn cell(
    de: &Deserializer,
    ty: &HiveType,
    v: Option<&Value>,
    path: &str,
) -> Result<Cell, RecordError> {
    let Some(v) = v else {
        return Ok(Cell::Null);
    };
    if v.is_null() {
        return Ok(Cell::Null);
    }
    let b = |why: String| bad(path, ty, why);
    Ok(match ty {
        HiveType::Boolean => match v {
            Value::Bool(x) => Cell::Bool(*x),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Cell::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Cell::Bool(false),
            other => return Err(b(format!("{} is not a boolean", kind(other)))),
        },
        HiveType::TinyInt => Cell::Int(integer(v, i8::MIN as i64, i8::MAX as i64).map_err(b)?),
        HiveType::SmallInt => Cell::Int(integer(v, i16::MIN as i64, i16::MAX as i64).map_err(b)?),
        HiveType::Int => Cell::Int(integer(v, i32::MIN as i64, i32::MAX as i64).map_err(b)?),
        HiveType::BigInt => Cell::Int(integer(v, i64::MIN, i64::MAX).map_err(b)?),
        HiveType::Float | HiveType::Double => Cell::Float(float(v).map_err(b)?),
        HiveType::Decimal { precision, scale } => match v {
            Value::Number(n) => {
                Cell::Decimal(decimal(&n.to_string(), *precision, *scale).map_err(b)?)
            }
            Value::String(s) => Cell::Decimal(decimal(s, *precision, *scale).map_err(b)?),
            other => return Err(b(format!("{} is not a number", kind(other)))),
        },
        HiveType::String => Cell::Str(text_of(v)),
        // Hive pads char and truncates both to their length on write; the
        // Parquet column is a plain string, so the value is cut to length.
        HiveType::Char(n) | HiveType::Varchar(n) => {
            Cell::Str(text_of(v).chars().take(*n as usize).collect())
        }
        HiveType::Binary => match v {
            Value::String(s) => Cell::Bytes(s.as_bytes().to_vec()),
            other => return Err(b(format!("{} is not a string", kind(other)))),
        },
        HiveType::Date => match v {
            Value::String(s) => Cell::Date(
                time::date(s).ok_or_else(|| b(format!("{s:?} is not a yyyy-MM-dd date")))?,
            ),
            other => return Err(b(format!("{} is not a date string", kind(other)))),
        },
        HiveType::Timestamp => {
            let micros = match de {
                Deserializer::OpenX(_) => time::openx_timestamp(v),
                Deserializer::Hive(formats) => time::hive_timestamp(v, formats),
            };
            Cell::Timestamp(
                micros.ok_or_else(|| b(format!("{v} is not a timestamp this SerDe reads")))?,
            )
        }
        HiveType::Array(elem) => match v {
            Value::Array(items) => Cell::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| cell(de, elem, Some(x), &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            other => return Err(b(format!("{} is not an array", kind(other)))),
        },
        HiveType::Map(kt, vt) => match v {
            Value::Object(o) => {
                let mut entries = Vec::with_capacity(o.len());
                for (k, x) in o {
                    let kp = format!("{path}.{k}");
                    let key = cell(de, kt, Some(&Value::String(k.clone())), &kp)?;
                    entries.push((key, cell(de, vt, Some(x), &kp)?));
                }
                Cell::Map(entries)
            }
            other => return Err(b(format!("{} is not an object", kind(other)))),
        },
        HiveType::Struct(fields) => match v {
            Value::Object(o) => {
                let keys = Keys::of(de, o);
                Cell::Struct(
                    fields
                        .iter()
                        .map(|f| cell(de, &f.ty, keys.get(&f.name), &format!("{path}.{}", f.name)))
                        .collect::<Result<_, _>>()?,
                )
            }
            other => return Err(b(format!("{} is not an object", kind(other)))),
        },
    })
}
