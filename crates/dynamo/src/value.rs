//! DynamoDB attribute values: parsing from the JSON wire form, validation as
//! DynamoDB does it, ordering, equality and sizes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::DynamoError;
use crate::number::Number;

/// One item: attribute name to value.
pub type Item = BTreeMap<String, AttributeValue>;

/// A DynamoDB attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    S(String),
    N(Number),
    B(Vec<u8>),
    Bool(bool),
    Null,
    Ss(Vec<String>),
    Ns(Vec<Number>),
    Bs(Vec<Vec<u8>>),
    M(Item),
    L(Vec<AttributeValue>),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Result<Vec<u8>, DynamoError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| {
            DynamoError::Serialization(
                "Base64 encoded length is expected a multiple of 4 bytes but found: 1".into(),
            )
        })
}

fn invalid(msg: impl std::fmt::Display) -> DynamoError {
    DynamoError::Validation(format!("One or more parameter values were invalid: {msg}"))
}

impl AttributeValue {
    /// The type descriptor, as DynamoDB names it (`S`, `N`, `SS`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::Bool(_) => "BOOL",
            AttributeValue::Null => "NULL",
            AttributeValue::Ss(_) => "SS",
            AttributeValue::Ns(_) => "NS",
            AttributeValue::Bs(_) => "BS",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
        }
    }

    /// Parses the wire form `{"S": "..."}` and friends.
    pub fn from_json(v: &Value) -> Result<AttributeValue, DynamoError> {
        let Some(obj) = v.as_object() else {
            return Err(DynamoError::Serialization(
                "Unexpected value type in payload".into(),
            ));
        };
        let mut set = obj.iter().filter(|(_, v)| !v.is_null());
        let Some((kind, inner)) = set.next() else {
            return Err(DynamoError::Validation(
                "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes".into(),
            ));
        };
        if set.next().is_some() {
            return Err(DynamoError::Validation(
                "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes".into(),
            ));
        }
        let string = |v: &Value| -> Result<String, DynamoError> {
            v.as_str().map(String::from).ok_or_else(|| {
                DynamoError::Serialization("Unexpected value type in payload".into())
            })
        };
        let list = |v: &Value| -> Result<Vec<Value>, DynamoError> {
            v.as_array().cloned().ok_or_else(|| {
                DynamoError::Serialization("Unexpected value type in payload".into())
            })
        };
        Ok(match kind.as_str() {
            "S" => AttributeValue::S(string(inner)?),
            "N" => AttributeValue::N(Number::parse(&string(inner)?)?),
            "B" => AttributeValue::B(unb64(&string(inner)?)?),
            "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(|| {
                DynamoError::Serialization("Unexpected value type in payload".into())
            })?),
            "NULL" => match inner.as_bool() {
                Some(true) => AttributeValue::Null,
                Some(false) => {
                    return Err(invalid(
                        "Null attribute value types must have the value of true",
                    ));
                }
                None => {
                    return Err(DynamoError::Serialization(
                        "Unexpected value type in payload".into(),
                    ));
                }
            },
            "SS" => {
                let items = list(inner)?
                    .iter()
                    .map(string)
                    .collect::<Result<Vec<_>, _>>()?;
                check_set(&items, "string", |s| s.clone())?;
                AttributeValue::Ss(items)
            }
            "NS" => {
                let raw = list(inner)?
                    .iter()
                    .map(string)
                    .collect::<Result<Vec<_>, _>>()?;
                let items = raw
                    .iter()
                    .map(|s| Number::parse(s))
                    .collect::<Result<Vec<_>, _>>()?;
                check_set(&items, "number", |n| n.to_string())?;
                AttributeValue::Ns(items)
            }
            "BS" => {
                let items = list(inner)?
                    .iter()
                    .map(|v| string(v).and_then(|s| unb64(&s)))
                    .collect::<Result<Vec<_>, _>>()?;
                check_set(&items, "binary", |b| b64(b))?;
                AttributeValue::Bs(items)
            }
            "M" => {
                let Some(m) = inner.as_object() else {
                    return Err(DynamoError::Serialization(
                        "Unexpected value type in payload".into(),
                    ));
                };
                AttributeValue::M(item_from_json(m)?)
            }
            "L" => AttributeValue::L(
                list(inner)?
                    .iter()
                    .map(AttributeValue::from_json)
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(DynamoError::Validation(
                    "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes".into(),
                ));
            }
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        let (k, v) = match self {
            AttributeValue::S(s) => ("S", Value::String(s.clone())),
            AttributeValue::N(n) => ("N", Value::String(n.to_string())),
            AttributeValue::B(b) => ("B", Value::String(b64(b))),
            AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
            AttributeValue::Null => ("NULL", Value::Bool(true)),
            AttributeValue::Ss(v) => (
                "SS",
                Value::Array(v.iter().cloned().map(Value::String).collect()),
            ),
            AttributeValue::Ns(v) => (
                "NS",
                Value::Array(v.iter().map(|n| Value::String(n.to_string())).collect()),
            ),
            AttributeValue::Bs(v) => (
                "BS",
                Value::Array(v.iter().map(|b| Value::String(b64(b))).collect()),
            ),
            AttributeValue::M(m) => ("M", Value::Object(item_to_json(m))),
            AttributeValue::L(l) => ("L", Value::Array(l.iter().map(|v| v.to_json()).collect())),
        };
        let mut m = Map::new();
        m.insert(k.into(), v);
        Value::Object(m)
    }

    /// Ordering within one scalar type (S, N, B), as key conditions and
    /// comparisons use it; `None` for different or non-scalar types.
    pub fn compare(&self, other: &AttributeValue) -> Option<Ordering> {
        match (self, other) {
            (AttributeValue::S(a), AttributeValue::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (AttributeValue::N(a), AttributeValue::N(b)) => Some(a.cmp(b)),
            (AttributeValue::B(a), AttributeValue::B(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Equality as conditions see it: sets compare as sets.
    pub fn same(&self, other: &AttributeValue) -> bool {
        fn set_eq<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.len() == b.len() && a.iter().all(|x| b.contains(x))
        }
        match (self, other) {
            (AttributeValue::Ss(a), AttributeValue::Ss(b)) => set_eq(a, b),
            (AttributeValue::Ns(a), AttributeValue::Ns(b)) => set_eq(a, b),
            (AttributeValue::Bs(a), AttributeValue::Bs(b)) => set_eq(a, b),
            (AttributeValue::M(a), AttributeValue::M(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.same(w)))
            }
            (AttributeValue::L(a), AttributeValue::L(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            _ => self == other,
        }
    }

    /// The `size()` of a value, as condition expressions define it; numbers,
    /// booleans and nulls have none (the condition is then false).
    pub fn size(&self) -> Option<usize> {
        Some(match self {
            AttributeValue::S(s) => s.len(),
            AttributeValue::B(b) => b.len(),
            AttributeValue::Ss(v) => v.len(),
            AttributeValue::Ns(v) => v.len(),
            AttributeValue::Bs(v) => v.len(),
            AttributeValue::M(m) => m.len(),
            AttributeValue::L(l) => l.len(),
            AttributeValue::N(_) | AttributeValue::Bool(_) | AttributeValue::Null => return None,
        })
    }

    /// Levels of maps and lists inside this value (0 for a scalar or set).
    pub fn depth(&self) -> usize {
        match self {
            AttributeValue::M(m) => 1 + m.values().map(AttributeValue::depth).max().unwrap_or(0),
            AttributeValue::L(l) => 1 + l.iter().map(AttributeValue::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// Approximate stored size in bytes (DynamoDB's item size rules).
    pub fn stored_size(&self) -> usize {
        match self {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => n.to_string().len().div_ceil(2) + 1,
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null => 1,
            AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
            AttributeValue::Ns(v) => v.iter().map(|n| n.to_string().len().div_ceil(2) + 1).sum(),
            AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
            AttributeValue::M(m) => 3 + item_size(m) + m.len(),
            AttributeValue::L(l) => 3 + l.iter().map(|v| v.stored_size() + 1).sum::<usize>(),
        }
    }
}

fn check_set<T: PartialEq>(
    items: &[T],
    kind: &str,
    show: impl Fn(&T) -> String,
) -> Result<(), DynamoError> {
    if items.is_empty() {
        return Err(invalid(format!("An {kind} set  may not be empty")));
    }
    for (i, x) in items.iter().enumerate() {
        if items[..i].contains(x) {
            return Err(invalid(format!(
                "Input collection [{}] contains duplicates.",
                items.iter().map(&show).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

/// Parses an item (or key) map.
pub fn item_from_json(m: &Map<String, Value>) -> Result<Item, DynamoError> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), AttributeValue::from_json(v)?)))
        .collect()
}

/// Parses an optional item member of a request.
pub fn item_member(v: Option<&Value>) -> Result<Option<Item>, DynamoError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => item_from_json(m).map(Some),
        Some(_) => Err(DynamoError::Serialization(
            "Unexpected value type in payload".into(),
        )),
    }
}

/// The wire form of an item.
pub fn item_to_json(item: &Item) -> Map<String, Value> {
    item.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()
}

/// Approximate stored size of an item in bytes: names plus values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.stored_size()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_every_type() {
        let v = json!({"M": {
            "s": {"S": "x"}, "n": {"N": "1.50"}, "b": {"B": "AAE="}, "t": {"BOOL": true},
            "z": {"NULL": true}, "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1", "2"]},
            "bs": {"BS": ["AA=="]}, "l": {"L": [{"S": "y"}, {"N": "-0"}]}
        }});
        let a = AttributeValue::from_json(&v).unwrap();
        let back = a.to_json();
        assert_eq!(back["M"]["n"], json!({"N": "1.5"}));
        assert_eq!(back["M"]["l"]["L"][1], json!({"N": "0"}));
        assert_eq!(AttributeValue::from_json(&back).unwrap(), a);
    }

    #[test]
    fn rejects_what_dynamodb_rejects() {
        for bad in [
            json!({}),
            json!({"S": "a", "N": "1"}),
            json!({"NULL": false}),
            json!({"SS": []}),
            json!({"SS": ["a", "a"]}),
            json!({"N": "abc"}),
            json!({"NS": ["1", "1.0"]}),
        ] {
            assert!(AttributeValue::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sets_compare_as_sets() {
        let a = AttributeValue::from_json(&json!({"SS": ["a", "b"]})).unwrap();
        let b = AttributeValue::from_json(&json!({"SS": ["b", "a"]})).unwrap();
        assert!(a.same(&b));
        let x = AttributeValue::from_json(&json!({"N": "10"})).unwrap();
        let y = AttributeValue::from_json(&json!({"N": "9.99"})).unwrap();
        assert_eq!(x.compare(&y), Some(Ordering::Greater));
    }
}
