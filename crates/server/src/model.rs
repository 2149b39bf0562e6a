//! Request validation driven by the AWS service model.
//!
//! AWS checks a request in two passes before the operation runs: member types
//! (a mismatch is a `SerializationException`), then the model's constraints
//! (`required`, `min`/`max` lengths and values, `pattern`, `enum`), all of
//! which are reported together in one `ValidationException`. This module
//! loads the botocore model vendored in `model/` and applies both passes to
//! any operation, so every operation gets AWS's checks and messages without
//! a hand-written validator each.

use std::collections::HashMap;

use serde_json::Value;

use crate::wire::WireError;

/// At most this many constraint violations are listed in one message.
const MAX_REPORTED: usize = 10;

#[derive(Debug)]
enum Kind {
    Structure {
        members: Vec<(String, String)>,
        required: Vec<String>,
    },
    List {
        member: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    Map {
        key: String,
        value: String,
        min: Option<u64>,
        max: Option<u64>,
    },
    Str {
        min: Option<u64>,
        max: Option<u64>,
        pattern: Option<(String, regex_lite::Regex)>,
        enums: Option<Vec<String>>,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
        int32: bool,
    },
    Float,
    Boolean,
    Blob {
        min: Option<u64>,
        max: Option<u64>,
    },
    Timestamp,
    Other,
}

/// A service model: its operations and shapes.
#[derive(Debug)]
pub struct ServiceModel {
    shapes: HashMap<String, Kind>,
    inputs: HashMap<String, Option<String>>,
    outputs: HashMap<String, Option<String>>,
    /// The Java package of the service's classes, as validation messages show them.
    java_package: String,
    /// Most CBOR data items accepted in a request of each operation.
    cbor_limits: HashMap<String, usize>,
}

/// Items of a shape without a bound (or nested too deep to bound).
const UNBOUNDED_ITEMS: u64 = 1 << 40;
/// Most CBOR data items in any request: a generous multiple of the largest
/// well-formed one (PutRecords, about 3,500), far below the millions a
/// 16 MiB body of one-byte items would become.
const MAX_CBOR_ITEMS: usize = 100_000;

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Java `String.length()`: UTF-16 code units, which is what AWS's limits count.
fn java_len(s: &str) -> u64 {
    s.encode_utf16().count() as u64
}

/// Longest rendering of one value in a validation message: the list of a
/// hostile request may hold millions of entries, and only the first ten
/// messages are sent anyway.
const MAX_RENDERED: usize = 64 * 1024;

/// How AWS renders a value inside a validation message (Java `toString`),
/// cut at [`MAX_RENDERED`] bytes with `...`.
fn render(v: &Value) -> String {
    let mut out = String::new();
    render_into(v, &mut out);
    bounded(out)
}

fn bounded(mut out: String) -> String {
    if out.len() > MAX_RENDERED {
        let mut end = MAX_RENDERED;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

/// Appends at most what still fits (plus a little) of `s`.
fn push_bounded(out: &mut String, s: &str) {
    let room = (MAX_RENDERED + 1).saturating_sub(out.len());
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&s[..end]);
}

fn render_into(v: &Value, out: &mut String) {
    if out.len() > MAX_RENDERED {
        return;
    }
    match v {
        Value::Null => out.push_str("null"),
        Value::String(s) => push_bounded(out, s),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if out.len() > MAX_RENDERED {
                    return;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if out.len() > MAX_RENDERED {
                    return;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                push_bounded(out, k);
                out.push('=');
                render_into(x, out);
            }
            out.push('}');
        }
    }
}

/// Reads the header structure of a CBOR body without building anything and
/// counts its data items (the pieces of indefinite-length strings included);
/// `false` as soon as they exceed `limit`. Malformed input is left for the
/// decoder to refuse.
pub fn cbor_items_within(bytes: &[u8], limit: usize) -> bool {
    let mut at = 0usize;
    let mut count = 0usize;
    while at < bytes.len() {
        let initial = bytes[at];
        at += 1;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let Some(raw) = bytes.get(at..at + n) else {
                    return true;
                };
                at += n;
                raw.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b))
            }
            // Indefinite length, or the break that ends one.
            31 => {
                if major == 7 {
                    continue;
                }
                u64::MAX
            }
            _ => return true,
        };
        count += 1;
        let left = limit.saturating_sub(count) as u64;
        if count > limit {
            return false;
        }
        match major {
            2 | 3 if arg != u64::MAX => {
                let Some(next) = usize::try_from(arg).ok().and_then(|n| at.checked_add(n)) else {
                    return true;
                };
                at = next;
            }
            // Every element is at least one more item, so an announced count
            // over the budget is refused before reading on.
            4 if arg != u64::MAX && arg > left => return false,
            5 if arg != u64::MAX && arg.saturating_mul(2) > left => return false,
            _ => {}
        }
    }
    true
}

impl ServiceModel {
    /// The Kinesis Data Streams model, for the codec's own tests.
    #[cfg(test)]
    pub(crate) fn kinesis() -> ServiceModel {
        ServiceModel::parse(ripstream_kinesis::api::MODEL)
            .expect("the vendored Kinesis model is valid")
    }

    /// Parses a botocore `service-2.json`.
    pub fn parse(text: &str) -> Result<ServiceModel, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut shapes = HashMap::new();
        let num = |s: &Value, k: &str| s.get(k).and_then(Value::as_f64);
        for (name, s) in doc["shapes"].as_object().ok_or("model has no shapes")? {
            let min_u = num(s, "min").map(|v| v as u64);
            let max_u = num(s, "max").map(|v| v as u64);
            let kind = match s["type"].as_str().unwrap_or("") {
                "structure" => Kind::Structure {
                    members: s["members"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v["shape"].as_str().unwrap_or("").to_string())
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    required: s["required"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                "list" => Kind::List {
                    member: s["member"]["shape"].as_str().unwrap_or("").to_string(),
                    min: min_u,
                    max: max_u,
                },
                "map" => Kind::Map {
                    key: s["key"]["shape"].as_str().unwrap_or("").to_string(),
                    value: s["value"]["shape"].as_str().unwrap_or("").to_string(),
                    min: min_u,
                    max: max_u,
                },
                "string" => Kind::Str {
                    min: min_u,
                    max: max_u,
                    // A few patterns use Unicode classes (`\p{L}`) that
                    // regex-lite lacks; none of them is on a shape that the
                    // served operations read, so they are not enforced.
                    pattern: s["pattern"].as_str().and_then(|p| {
                        regex_lite::Regex::new(&format!("^(?:{p})$"))
                            .ok()
                            .map(|re| (p.to_string(), re))
                    }),
                    enums: s["enum"].as_array().map(|e| {
                        aws_enum_order(
                            &e.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect::<Vec<_>>(),
                        )
                    }),
                },
                t @ ("integer" | "long") => Kind::Integer {
                    min: num(s, "min").map(|v| v as i64),
                    max: num(s, "max").map(|v| v as i64),
                    int32: t == "integer",
                },
                "double" | "float" => Kind::Float,
                "boolean" => Kind::Boolean,
                "blob" => Kind::Blob {
                    min: min_u,
                    max: max_u,
                },
                "timestamp" => Kind::Timestamp,
                _ => Kind::Other,
            };
            shapes.insert(name.clone(), kind);
        }
        let ops = doc["operations"]
            .as_object()
            .ok_or("model has no operations")?;
        let shape_of = |side: &str| {
            ops.iter()
                .map(|(name, op)| (name.clone(), op[side]["shape"].as_str().map(String::from)))
                .collect::<HashMap<_, _>>()
        };
        let prefix = doc["metadata"]["endpointPrefix"].as_str().unwrap_or("");
        let version = doc["metadata"]["apiVersion"].as_str().unwrap_or("");
        let mut model = ServiceModel {
            shapes,
            inputs: shape_of("input"),
            outputs: shape_of("output"),
            java_package: format!("com.amazonaws.{prefix}.v{}", version.replace('-', "")),
            cbor_limits: HashMap::new(),
        };
        // Four times the largest valid request, so a request a little over a
        // list's limit still reaches validation and gets AWS's message.
        model.cbor_limits = model
            .inputs
            .iter()
            .map(|(op, input)| {
                let bound = input.as_deref().map_or(1, |s| model.items_bound(s, 0));
                let limit = bound.saturating_mul(4).saturating_add(1024);
                (op.clone(), limit.min(MAX_CBOR_ITEMS as u64) as usize)
            })
            .collect();
        Ok(model)
    }

    /// The most data items a valid value of `shape` holds (keys included).
    fn items_bound(&self, shape: &str, depth: usize) -> u64 {
        if depth > 16 {
            return UNBOUNDED_ITEMS;
        }
        let inner = |s: &str| self.items_bound(s, depth + 1);
        match self.shapes.get(shape) {
            Some(Kind::Structure { members, .. }) => members.iter().fold(1u64, |a, (_, m)| {
                a.saturating_add(1).saturating_add(inner(m))
            }),
            Some(Kind::List { member, max, .. }) => max
                .unwrap_or(UNBOUNDED_ITEMS)
                .saturating_mul(inner(member))
                .saturating_add(1),
            Some(Kind::Map { value, max, .. }) => max
                .unwrap_or(UNBOUNDED_ITEMS)
                .saturating_mul(inner(value).saturating_add(1))
                .saturating_add(1),
            Some(Kind::Timestamp) => 2,
            _ => 1,
        }
    }

    /// Decodes a CBOR request body of `op`, refusing (`None`, as for a
    /// malformed body) one with more data items than any valid request of
    /// the operation could hold before building a single value: a 16 MiB body
    /// of one-byte items would otherwise become gigabytes of values.
    pub fn decode_cbor(&self, op: Option<&str>, bytes: &[u8]) -> Option<ciborium::Value> {
        let limit = op
            .and_then(|o| self.cbor_limits.get(o))
            .copied()
            .unwrap_or(1024);
        if !cbor_items_within(bytes, limit) {
            return None;
        }
        ciborium::from_reader(bytes).ok()
    }

    /// The input shape of an operation.
    pub fn input_shape(&self, op: &str) -> Option<&str> {
        self.inputs.get(op)?.as_deref()
    }

    /// The output shape of an operation.
    pub fn output_shape(&self, op: &str) -> Option<&str> {
        self.outputs.get(op)?.as_deref()
    }

    /// Converts a CBOR request body to the JSON form the validator and the
    /// service read: byte strings become base64 blobs, and timestamps (CBOR tag
    /// 1, in epoch milliseconds as the AWS SDKs send them, or seconds) become
    /// epoch seconds.
    pub fn cbor_to_json(&self, shape: Option<&str>, v: ciborium::Value) -> Value {
        use ciborium::Value as C;
        let kind = shape.and_then(|s| self.shapes.get(s));
        match (kind, v) {
            (Some(Kind::Timestamp), v) => {
                let raw = match v {
                    C::Tag(_, inner) => *inner,
                    other => other,
                };
                let n = match raw {
                    C::Integer(i) => i128::from(i) as f64,
                    C::Float(f) => f,
                    other => return self.cbor_to_json(None, other),
                };
                // Milliseconds from the SDKs; seconds from anyone following the CBOR tag's definition.
                let secs = if n.abs() > 1e11 { n / 1000.0 } else { n };
                serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number)
            }
            (k, C::Map(entries)) => {
                let members: Option<&Vec<(String, String)>> = match k {
                    Some(Kind::Structure { members, .. }) => Some(members),
                    _ => None,
                };
                let map_value = match k {
                    Some(Kind::Map { value, .. }) => Some(value.as_str()),
                    _ => None,
                };
                let mut obj = serde_json::Map::new();
                for (key, val) in entries {
                    let C::Text(key) = key else { continue };
                    let member_shape = match members {
                        Some(m) => m.iter().find(|(n, _)| *n == key).map(|(_, s)| s.as_str()),
                        None => map_value,
                    };
                    obj.insert(key, self.cbor_to_json(member_shape, val));
                }
                Value::Object(obj)
            }
            (k, C::Array(items)) => {
                let member = match k {
                    Some(Kind::List { member, .. }) => Some(member.as_str()),
                    _ => None,
                };
                Value::Array(
                    items
                        .into_iter()
                        .map(|i| self.cbor_to_json(member, i))
                        .collect(),
                )
            }
            (_, C::Bytes(b)) => {
                use base64::Engine;
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (_, C::Text(t)) => Value::String(t),
            (_, C::Integer(i)) => {
                let i = i128::from(i);
                i64::try_from(i)
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(i as f64))
            }
            (_, C::Float(f)) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            (_, C::Bool(b)) => Value::Bool(b),
            (_, C::Tag(_, inner)) => self.cbor_to_json(None, *inner),
            (_, _) => Value::Null,
        }
    }

    /// Converts a JSON response to CBOR: base64 blobs back to byte strings and
    /// epoch seconds to CBOR tag 1 with epoch milliseconds (what the AWS SDKs read).
    pub fn json_to_cbor(&self, shape: Option<&str>, v: Value) -> ciborium::Value {
        use ciborium::Value as C;
        let kind = shape.and_then(|s| self.shapes.get(s));
        match (kind, v) {
            (Some(Kind::Blob { .. }), Value::String(s)) => match ripstream_api::decode_base64(&s) {
                Some(b) => C::Bytes(b),
                None => C::Text(s),
            },
            (Some(Kind::Timestamp), Value::Number(n)) => {
                let ms = (n.as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
                C::Tag(1, Box::new(C::Integer(ms.into())))
            }
            (k, Value::Object(obj)) => {
                let members: Option<&Vec<(String, String)>> = match k {
                    Some(Kind::Structure { members, .. }) => Some(members),
                    _ => None,
                };
                let map_value = match k {
                    Some(Kind::Map { value, .. }) => Some(value.as_str()),
                    _ => None,
                };
                C::Map(
                    obj.into_iter()
                        .map(|(key, val)| {
                            let member_shape = match members {
                                Some(m) => {
                                    m.iter().find(|(n, _)| *n == key).map(|(_, s)| s.as_str())
                                }
                                None => map_value,
                            };
                            (C::Text(key), self.json_to_cbor(member_shape, val))
                        })
                        .collect(),
                )
            }
            (k, Value::Array(items)) => {
                let member = match k {
                    Some(Kind::List { member, .. }) => Some(member.as_str()),
                    _ => None,
                };
                C::Array(
                    items
                        .into_iter()
                        .map(|i| self.json_to_cbor(member, i))
                        .collect(),
                )
            }
            (_, Value::String(s)) => C::Text(s),
            (_, Value::Number(n)) => match n.as_i64() {
                Some(i) => C::Integer(i.into()),
                None => C::Float(n.as_f64().unwrap_or(0.0)),
            },
            (_, Value::Bool(b)) => C::Bool(b),
            (_, Value::Null) => C::Null,
        }
    }

    /// Drops the top-level members the model does not define for `op`, so
    /// nothing downstream (routing, authorization, the operation) can read a
    /// member AWS would ignore.
    pub fn retain_defined_members(&self, op: &str, body: &mut Value) {
        let members = self
            .input_shape(op)
            .and_then(|shape| match self.shapes.get(shape) {
                Some(Kind::Structure { members, .. }) => Some(members),
                _ => None,
            });
        if let Value::Object(map) = body {
            match members {
                Some(members) => map.retain(|k, _| members.iter().any(|(m, _)| m == k)),
                None => map.clear(),
            }
        }
    }

    /// Whether the model defines this operation.
    pub fn has_operation(&self, op: &str) -> bool {
        self.inputs.contains_key(op)
    }

    /// Checks a request body of `op`: types first (coercing numbers the way
    /// AWS does: integers truncated and clamped), then constraints.
    pub fn validate(&self, op: &str, body: &mut Value) -> Result<(), WireError> {
        let Some(Some(input)) = self.inputs.get(op) else {
            return Ok(());
        };
        self.check_types(input, body)?;
        let mut errors = Vec::new();
        self.check_constraints(input, body, "", &mut errors);
        if errors.is_empty() {
            return Ok(());
        }
        // The walk stops at the cap; a last message may still have been added.
        errors.truncate(MAX_REPORTED);
        let n = errors.len();
        Err(WireError::validation(format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            errors.join("; ")
        )))
    }

    fn check_types(&self, shape: &str, v: &mut Value) -> Result<(), WireError> {
        let Some(kind) = self.shapes.get(shape) else {
            return Ok(());
        };
        if v.is_null() {
            return Ok(());
        }
        let err = |m: String| Err(WireError::serialization(m));
        match kind {
            Kind::Structure { members, .. } => match v {
                Value::Object(obj) => {
                    for (name, member_shape) in members {
                        if let Some(mv) = obj.get_mut(name) {
                            self.check_types(member_shape, mv)?;
                        }
                    }
                    Ok(())
                }
                Value::Array(_) => err(START_LIST.into()),
                _ => err("Expected null".into()),
            },
            Kind::List { member, .. } => match v {
                Value::Array(items) => {
                    for item in items {
                        self.check_types(member, item)?;
                    }
                    Ok(())
                }
                Value::Object(_) => err(START_MAP.into()),
                _ => err("Expected list or null".into()),
            },
            Kind::Map { key, value, .. } => match v {
                Value::Object(obj) => {
                    for (k, item) in obj.iter_mut() {
                        self.check_types(key, &mut Value::String(k.clone()))?;
                        self.check_types(value, item)?;
                    }
                    Ok(())
                }
                Value::Array(_) => err(START_LIST.into()),
                _ => err("Expected map or null".into()),
            },
            Kind::Str { .. } => match v {
                Value::String(_) => Ok(()),
                other => err(scalar_type_error(other, "an String")),
            },
            Kind::Integer { int32, .. } => match v {
                Value::Number(n) => {
                    // Coral truncates fractions and clamps 32-bit integers instead of refusing them.
                    let mut x = n
                        .as_i64()
                        .or_else(|| n.as_f64().map(|f| f.trunc().clamp(-9.2e18, 9.2e18) as i64));
                    if *int32 {
                        x = x.map(|x| x.min(i64::from(i32::MAX)));
                    }
                    *v = Value::from(x.unwrap_or(i64::MAX));
                    Ok(())
                }
                other => err(scalar_type_error(
                    other,
                    if *int32 { "an Integer" } else { "an Long" },
                )),
            },
            Kind::Float => match v {
                Value::Number(_) => Ok(()),
                other => err(scalar_type_error(other, "an Double")),
            },
            Kind::Boolean => match v {
                Value::Bool(_) => Ok(()),
                Value::String(s) => err(format!(
                    "'{}' can not be converted to an Boolean",
                    s.to_uppercase()
                )),
                other => err(scalar_type_error(other, "an Boolean")),
            },
            Kind::Blob { .. } => match v {
                Value::String(s) => match base64_problem(s) {
                    None => Ok(()),
                    Some(p) => err(format!("'{s}' can not be converted to a Blob: {p}")),
                },
                other => err(scalar_type_error(other, "a Blob")),
            },
            Kind::Timestamp => match v {
                Value::Number(_) => Ok(()),
                other => err(scalar_type_error(other, "milliseconds since epoch")),
            },
            Kind::Other => Ok(()),
        }
    }

    /// Collects the first [`MAX_REPORTED`] violations, in AWS's order, and
    /// stops walking once it has them: a request with millions of broken
    /// entries must not build millions of messages.
    fn check_constraints(&self, shape: &str, v: &Value, path: &str, errors: &mut Vec<String>) {
        if errors.len() >= MAX_REPORTED {
            return;
        }
        let Some(kind) = self.shapes.get(shape) else {
            return;
        };
        let fail = |errors: &mut Vec<String>, value: Option<&Value>, rule: String| {
            let shown = match value {
                Some(val) => format!("Value '{}' at", render(val)),
                None => "Value null at".to_string(),
            };
            errors.push(format!(
                "{shown} '{path}' failed to satisfy constraint: Member must {rule}"
            ));
        };
        match kind {
            Kind::Structure { members, required } => {
                let obj = v.as_object();
                for (name, member_shape) in members {
                    if errors.len() >= MAX_REPORTED {
                        return;
                    }
                    let child_path = if path.is_empty() {
                        lower_first(name)
                    } else {
                        format!("{path}.{}", lower_first(name))
                    };
                    match obj.and_then(|o| o.get(name)).filter(|x| !x.is_null()) {
                        Some(mv) => self.check_constraints(member_shape, mv, &child_path, errors),
                        None if required.contains(name) => errors.push(format!(
                            "Value null at '{child_path}' failed to satisfy constraint: Member must not be null"
                        )),
                        None => {}
                    }
                }
            }
            Kind::List { member, min, max } => {
                let items = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
                let n = items.len() as u64;
                for rule in length_rules(*min, *max, n) {
                    errors.push(format!(
                        "Value '{}' at '{path}' failed to satisfy constraint: Member must {rule}",
                        self.render_list(member, items)
                    ));
                }
                let mut member_broken = false;
                for (i, item) in items.iter().enumerate() {
                    if errors.len() >= MAX_REPORTED {
                        return;
                    }
                    if item.is_null() {
                        continue;
                    }
                    match self.shapes.get(member) {
                        Some(Kind::Structure { .. }) => self.check_constraints(
                            member,
                            item,
                            &format!("{path}.{}.member", i + 1),
                            errors,
                        ),
                        _ => {
                            // One broken item is enough for the list's message.
                            if !self.scalar_rules(member, item).is_empty() {
                                member_broken = true;
                                break;
                            }
                        }
                    }
                }
                if member_broken {
                    let all = self.declared_rules(member);
                    fail(
                        errors,
                        Some(v),
                        format!("satisfy constraint: [{}]", member_rules(&all)),
                    );
                }
            }
            Kind::Map {
                key,
                value,
                min,
                max,
            } => {
                let obj = v.as_object();
                let n = obj.map_or(0, |o| o.len() as u64);
                length_rules(*min, *max, n)
                    .into_iter()
                    .for_each(|r| fail(errors, Some(v), r));
                if let Some(obj) = obj {
                    if obj
                        .keys()
                        .any(|k| !self.scalar_rules(key, &Value::String(k.clone())).is_empty())
                    {
                        let all = self.declared_rules(key);
                        errors.push(format!(
                            "Value '{}' at '{path}' failed to satisfy constraint: Map keys must satisfy constraint: [{}]",
                            render(v),
                            member_rules(&all)
                        ));
                    }
                    if obj
                        .values()
                        .any(|x| !x.is_null() && !self.scalar_rules(value, x).is_empty())
                    {
                        let all = self.declared_rules(value);
                        errors.push(format!(
                            "Value '{}' at '{path}' failed to satisfy constraint: Map value must satisfy constraint: [{}]",
                            render(v),
                            member_rules(&all)
                        ));
                    }
                }
            }
            Kind::Blob { .. } => {
                for rule in self.scalar_rules(shape, v) {
                    errors.push(format!(
                        "Value at '{path}' failed to satisfy constraint: Member must {rule}"
                    ));
                }
            }
            _ => {
                for rule in self.scalar_rules(shape, v) {
                    fail(errors, Some(v), rule);
                }
            }
        }
    }

    /// A list as Java's `toString` shows it: structures by class name.
    fn render_list(&self, member: &str, items: &[Value]) -> String {
        let mut out = String::from("[");
        for (i, item) in items.iter().enumerate() {
            if out.len() > MAX_RENDERED {
                break;
            }
            if i > 0 {
                out.push_str(", ");
            }
            match self.shapes.get(member) {
                Some(Kind::Structure { .. }) => {
                    out.push_str(&self.java_package);
                    out.push('.');
                    out.push_str(member);
                    out.push_str("@c965e310");
                }
                _ => render_into(item, &mut out),
            }
        }
        out.push(']');
        bounded(out)
    }

    /// The rules a scalar value breaks, as "Member must …" completions.
    fn scalar_rules(&self, shape: &str, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        match self.shapes.get(shape) {
            Some(Kind::Str {
                min,
                max,
                pattern,
                enums,
            }) => {
                let Some(s) = v.as_str() else { return out };
                if let Some(e) = enums
                    && !e.iter().any(|x| x == s)
                {
                    out.push(format!("satisfy enum value set: [{}]", e.join(", ")));
                }
                if let Some((p, re)) = pattern
                    && !re.is_match(s)
                {
                    out.push(format!("satisfy regular expression pattern: {p}"));
                }
                out.extend(length_rules(*min, *max, java_len(s)));
            }
            Some(Kind::Integer { min, max, .. }) => {
                let Some(n) = v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)) else {
                    return out;
                };
                if let Some(m) = min
                    && n < *m
                {
                    out.push(format!("have value greater than or equal to {m}"));
                }
                if let Some(m) = max
                    && n > *m
                {
                    out.push(format!("have value less than or equal to {m}"));
                }
            }
            Some(Kind::Blob { min, max }) => {
                // Types were checked first, so the text is valid base64.
                if let Some(s) = v.as_str() {
                    out.extend(length_rules(*min, *max, base64_decoded_len(s)));
                }
            }
            _ => {}
        }
        out
    }

    /// Every rule a scalar shape declares, for "Member must satisfy constraint: [...]".
    fn declared_rules(&self, shape: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Kind::Str {
            min,
            max,
            pattern,
            enums,
        }) = self.shapes.get(shape)
        {
            // A list of enum values (ShardLevelMetrics) names the set.
            if let Some(e) = enums {
                out.push(format!("satisfy enum value set: [{}]", e.join(", ")));
            }
            if let Some(m) = max {
                out.push(format!("have length less than or equal to {m}"));
            }
            if let Some(m) = min {
                out.push(format!("have length greater than or equal to {m}"));
            }
            if let Some((p, _)) = pattern {
                out.push(format!("satisfy regular expression pattern: {p}"));
            }
        }
        out
    }
}

fn length_rules(min: Option<u64>, max: Option<u64>, n: u64) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = min
        && n < m
    {
        out.push(format!("have length greater than or equal to {m}"));
    }
    if let Some(m) = max
        && n > m
    {
        out.push(format!("have length less than or equal to {m}"));
    }
    out
}

fn member_rules(rules: &[String]) -> String {
    rules
        .iter()
        .map(|r| format!("Member must {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const START_LIST: &str = "Start of list found where not expected";
const START_MAP: &str = "Start of structure or map found where not expected.";

/// The message AWS gives when a scalar member has the wrong JSON type.
fn scalar_type_error(found: &Value, target: &str) -> String {
    match found {
        Value::Array(_) => START_LIST.into(),
        Value::Object(_) => START_MAP.into(),
        Value::Number(_) => {
            format!(
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to {target}"
            )
        }
        Value::Bool(_) => format!("class java.lang.Boolean can not be converted to {target}"),
        Value::String(_) => format!("class java.lang.String can not be converted to {target}"),
        Value::Null => String::new(),
    }
}

/// What is wrong with a base64 blob, checked in the order AWS checks it.
fn base64_problem(s: &str) -> Option<String> {
    // The common case, valid canonical base64 (padded, zero trailing bits),
    // costs one SIMD check that writes nothing; only a failure pays for
    // finding AWS's exact complaint.
    if base64_simd::STANDARD.check(s.as_bytes()).is_ok() {
        return None;
    }
    if !s.len().is_multiple_of(4) {
        return Some(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {}",
            s.len()
        ));
    }
    let bytes = s.as_bytes();
    let pad_from = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b'=').count();
    for (i, &b) in bytes.iter().enumerate() {
        let ok =
            b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || (b == b'=' && i >= pad_from);
        if !ok || (b == b'=' && i + 2 < bytes.len()) {
            return Some(format!("Invalid Base64 character: '{}'", b as char));
        }
    }
    // (sic) AWS's own spelling.
    Some("Invalid last non-pad Base64 character dectected".into())
}

/// Decoded length of valid base64, from its text alone.
fn base64_decoded_len(s: &str) -> u64 {
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count().min(2);
    (s.len() / 4 * 3).saturating_sub(pad) as u64
}

/// Java's `String.hashCode`.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Enum values in the order AWS lists them: the iteration order of a small
/// Java hash set (bucket = hashCode & 15), ties in model order.
fn aws_enum_order(values: &[String]) -> Vec<String> {
    let mut v: Vec<(usize, &String)> = values.iter().enumerate().collect();
    v.sort_by_key(|(i, s)| (java_hash(s) & 15, *i));
    v.into_iter().map(|(_, s)| s.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(op: &str, mut body: Value) -> Result<(), WireError> {
        ServiceModel::kinesis().validate(op, &mut body)
    }

    proptest::proptest! {
        /// The SIMD check must accept exactly what the base64 crate's strict
        /// standard engine (padding required, zero trailing bits) accepts,
        /// and the two must agree on the bytes.
        #[test]
        fn simd_base64_agrees_with_the_strict_engine(
            s in "[A-Za-z0-9+/=_\\-. ]{0,40}",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
        ) {
            use base64::Engine;
            let strict = base64::engine::general_purpose::STANDARD;
            let ours = base64_simd::STANDARD;
            proptest::prop_assert_eq!(ours.check(s.as_bytes()).is_ok(), strict.decode(&s).is_ok());
            if let Ok(want) = strict.decode(&s) {
                proptest::prop_assert_eq!(ours.decode_to_vec(&s).ok(), Some(want));
            }
            let encoded = strict.encode(&bytes);
            proptest::prop_assert_eq!(ours.encode_to_string(&bytes), encoded.clone());
            proptest::prop_assert!(base64_problem(&encoded).is_none());
            // Canonical text with every trailing-bit pattern, as clients may send it.
            if !bytes.is_empty() && bytes.len() % 3 != 0 {
                let mut raw = encoded.into_bytes();
                let last = raw.iter().rposition(|&b| b != b'=').unwrap_or(0);
                for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" {
                    raw[last] = *c;
                    let text = std::str::from_utf8(&raw).unwrap_or_default();
                    proptest::prop_assert_eq!(ours.check(&raw).is_ok(), strict.decode(text).is_ok());
                }
            }
        }
    }

    #[test]
    fn model_loads_every_operation() {
        let m = ServiceModel::kinesis();
        for op in [
            "PutRecord",
            "PutRecords",
            "GetRecords",
            "CreateStream",
            "SubscribeToShard",
        ] {
            assert!(m.has_operation(op), "{op}");
        }
        assert!(!m.has_operation("Nope"));
    }

    #[test]
    fn missing_required_member() {
        let e = check("CreateStream", json!({})).unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'streamName' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn pattern_length_and_range() {
        let e = check(
            "CreateStream",
            json!({"StreamName": "bad name!", "ShardCount": 0}),
        )
        .unwrap_err();
        assert!(
            e.message.starts_with("2 validation errors detected: "),
            "{}",
            e.message
        );
        assert!(e.message.contains("Value 'bad name!' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"));
        assert!(e.message.contains("Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1"));
        let e = check("GetRecords", json!({"ShardIterator": "x", "Limit": 100000})).unwrap_err();
        assert!(e.message.contains("Value '100000' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 10000"));
    }

    #[test]
    fn nested_list_paths_are_one_based() {
        let e = check(
            "PutRecords",
            json!({"StreamName": "s", "Records": [{"Data": "", "PartitionKey": "a"}, {"PartitionKey": "b"}]}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value null at 'records.2.member.data' failed to satisfy constraint: Member must not be null"
        );
    }

    #[test]
    fn enums_and_wrong_types() {
        let e = check(
            "GetShardIterator",
            json!({"StreamName": "s", "ShardId": "shardId-0", "ShardIteratorType": "NOPE"}),
        )
        .unwrap_err();
        assert!(e.message.contains("Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]"), "{}", e.message);
        let e = check(
            "EnableEnhancedMonitoring",
            json!({"StreamName": "s", "ShardLevelMetrics": ["IncomingBytes", "Vibes"]}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "1 validation error detected: Value '[IncomingBytes, Vibes]' at 'shardLevelMetrics' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [ALL, WriteProvisionedThroughputExceeded, IteratorAgeMilliseconds, IncomingBytes, OutgoingRecords, ReadProvisionedThroughputExceeded, IncomingRecords, OutgoingBytes]]"
        );
        let e = check("CreateStream", json!({"StreamName": 1})).unwrap_err();
        assert_eq!(e.code, "SerializationException");
        let e = check(
            "CreateStream",
            json!({"StreamName": "s", "ShardCount": "1"}),
        )
        .unwrap_err();
        assert_eq!(e.code, "SerializationException");
        let e = check(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "k", "Data": "!!!"}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "'!!!' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3"
        );
        let e = check(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "k", "Data": "a-b_"}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "'a-b_' can not be converted to a Blob: Invalid Base64 character: '-'"
        );
        let e = check(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "k", "Data": "+/+="}),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character dectected"
        );
        let e = check("CreateStream", json!({"StreamName": true})).unwrap_err();
        assert_eq!(
            e.message,
            "class java.lang.Boolean can not be converted to an String"
        );
        let e = check("CreateStream", json!({"StreamName": "s", "Tags": []})).unwrap_err();
        assert_eq!(e.message, "Start of list found where not expected");
        let e = check("PutRecords", json!({"StreamName": "s", "Records": "x"})).unwrap_err();
        assert_eq!(e.message, "Expected list or null");
        let e = check("PutRecords", json!({"StreamName": "s", "Records": ["x"]})).unwrap_err();
        assert_eq!(e.message, "Expected null");
        assert!(
            check(
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": "k", "Data": "aGVsbG8="})
            )
            .is_ok()
        );
    }

    #[test]
    fn integers_are_truncated_and_clamped() {
        let m = ServiceModel::kinesis();
        let mut body = json!({"ShardIterator": "x", "Limit": 5.9});
        m.validate("GetRecords", &mut body).unwrap();
        assert_eq!(body["Limit"], json!(5));
        let mut body = json!({"ShardIterator": "x", "Limit": 1e12});
        let e = m.validate("GetRecords", &mut body).unwrap_err();
        assert!(
            e.message.contains("Value '2147483647' at 'limit'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn at_most_ten_errors_are_listed() {
        let records: Vec<Value> = (0..501).map(|_| json!({"PartitionKey": "k"})).collect();
        let e = check("PutRecords", json!({"StreamName": "s", "Records": records})).unwrap_err();
        assert!(e.message.starts_with("10 validation errors detected: Value '[com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310"), "{}", &e.message[..200]);
        assert_eq!(e.message.matches("; ").count(), 9);
    }

    #[test]
    fn cbor_item_limits_follow_the_model() {
        let m = ServiceModel::kinesis();
        // 500 entries of three members each (7 items), four times over, plus slack.
        let put_records = m.cbor_limits["PutRecords"];
        assert!(
            (4 * 3500 + 1024..16_000).contains(&put_records),
            "{put_records}"
        );
        assert!(m.cbor_limits.values().all(|&l| l <= MAX_CBOR_ITEMS));
        assert!(cbor_items_within(&[0x82, 0x01, 0x02], 3));
        assert!(!cbor_items_within(&[0x82, 0x01, 0x02], 2));
        // An announced length over the budget is refused before reading on.
        assert!(!cbor_items_within(
            &[0x9b, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            1000
        ));
    }

    #[test]
    fn java_hash_order_matches_aws() {
        assert_eq!(java_hash("hello"), 99162322);
        let v: Vec<String> = [
            "AT_SEQUENCE_NUMBER",
            "AFTER_SEQUENCE_NUMBER",
            "TRIM_HORIZON",
            "LATEST",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            aws_enum_order(&v),
            [
                "AFTER_SEQUENCE_NUMBER",
                "LATEST",
                "AT_SEQUENCE_NUMBER",
                "TRIM_HORIZON"
            ]
        );
    }

    #[test]
    fn tag_map_and_key_list_rules() {
        let long = "k".repeat(129);
        let e = check(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": {long.clone(): "v"}}),
        )
        .unwrap_err();
        assert!(e.message.contains("Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]"), "{}", e.message);
        let e = check(
            "RemoveTagsFromStream",
            json!({"StreamName": "s", "TagKeys": ["a", long, "b"]}),
        )
        .unwrap_err();
        assert!(e.message.contains("at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to 128"), "{}", e.message);
    }
}
