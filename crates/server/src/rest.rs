//! The REST protocols (`restJson1`, `restXml`): operations found by their
//! model's HTTP bindings instead of `X-Amz-Target`, inputs bound from the
//! URI, query, headers and body into the same JSON form the JSON protocols
//! hand their services, and replies encoded back the same way.
//!
//! A service's route table is built once at mount from its botocore model:
//! each operation's `http.method` and `http.requestUri` template (`{Label}`,
//! greedy `{Key+}`, literal query parts such as `?uploads` or
//! `?list-type=2`), ordered so that the more specific template wins, as AWS's
//! front ends pick them. Binding follows each input member's `location`
//! (`uri`, `querystring`, `header`, `headers`, body) and the shape's
//! `payload`; timestamps take each location's default format unless the model
//! names one (`timestampFormat`).
//!
//! A streaming blob payload (S3 PutObject's `Body`) is handed to the service
//! as `Request::body` instead of being buffered, and `aws-chunked` bodies
//! are decoded with their chunk signatures checked as they are read
//! (`crate::streamed`). Not here yet: event stream replies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ripstream_api::{Protocol, Reply};
use serde_json::{Map, Value};
use tracing::{debug, error};

use crate::wire::WireError;
use crate::{AppState, Mounted};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Deepest XML element nesting accepted in a request body: far beyond any
/// model's shapes, far below what would exhaust a stack.
const MAX_XML_DEPTH: usize = 64;
/// Most attributes of one XML element (S3's have one or two, `xmlns:xsi`
/// and `xsi:type` in grants).
const MAX_XML_ATTRIBUTES: usize = 32;
/// Most elements of one XML body: S3's largest documents (DeleteObjects'
/// 1000 objects, lifecycle's 1000 rules) have a few tens of thousands.
const MAX_XML_ELEMENTS: usize = 100_000;
/// Longest wait for a request body once its headers arrived.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{Name}`, possibly with literal text around it in the segment.
    Label {
        name: String,
        prefix: String,
        suffix: String,
    },
    /// `{Name+}`: the rest of the path, slashes included.
    Greedy(String),
}

impl Segment {
    /// Lower is more specific.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Label { prefix, suffix, .. } if !prefix.is_empty() || !suffix.is_empty() => 1,
            Segment::Label { .. } => 2,
            Segment::Greedy(_) => 3,
        }
    }
}

/// An operation's HTTP binding.
#[derive(Debug, Clone)]
struct Route {
    method: Method,
    segments: Vec<Segment>,
    /// Literal query parts: `?uploads` (present) or `?list-type=2` (that value).
    query: Vec<(String, Option<String>)>,
    operation: String,
    /// Query parameters and headers (lower case) the request must carry,
    /// set only where several operations share this method and template
    /// (S3's `PUT /{Bucket}/{Key+}` is PutObject, CopyObject with
    /// `x-amz-copy-source`, UploadPart with `partNumber` and `uploadId`): the
    /// operation's required members in those places tell them apart, as
    /// S3's front end does.
    required_params: Vec<String>,
    required_headers: Vec<String>,
}

impl Route {
    fn parse(method: &str, uri: &str, operation: &str) -> Result<Route, String> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{operation}: bad method {method}"))?;
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut segments = Vec::new();
        let trimmed = path.trim_start_matches('/');
        if !trimmed.is_empty() {
            for seg in trimmed.split('/') {
                segments.push(match (seg.find('{'), seg.rfind('}')) {
                    (Some(open), Some(close)) if open < close => {
                        let name = &seg[open + 1..close];
                        let (prefix, suffix) = (&seg[..open], &seg[close + 1..]);
                        match name.strip_suffix('+') {
                            Some(n) if prefix.is_empty() && suffix.is_empty() => {
                                Segment::Greedy(n.to_string())
                            }
                            _ => Segment::Label {
                                name: name.trim_end_matches('+').to_string(),
                                prefix: prefix.to_string(),
                                suffix: suffix.to_string(),
                            },
                        }
                    }
                    _ => Segment::Literal(percent_decode(seg)),
                });
            }
        }
        if segments
            .iter()
            .rev()
            .skip(1)
            .any(|s| matches!(s, Segment::Greedy(_)))
        {
            return Err(format!("{operation}: a greedy label must end the path"));
        }
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (percent_decode(k), Some(percent_decode(v))),
                None => (percent_decode(p), None),
            })
            .collect();
        Ok(Route {
            method,
            segments,
            query,
            operation: operation.to_string(),
            required_params: Vec::new(),
            required_headers: Vec::new(),
        })
    }

    /// Whether a request carries what tells this operation from the others
    /// of the same template.
    fn requirements_met(&self, params: &[(String, String)], headers: &HeaderMap) -> bool {
        self.required_params
            .iter()
            .all(|p| params.iter().any(|(k, _)| k == p))
            && self
                .required_headers
                .iter()
                .all(|h| headers.contains_key(h.as_str()))
    }

    /// The labels of a matching path (percent-decoded), or `None`.
    fn matches(&self, path: &str, params: &[(String, String)]) -> Option<Vec<(String, String)>> {
        let raw = path.strip_prefix('/').unwrap_or(path);
        let segs: Vec<&str> = if raw.is_empty() {
            Vec::new()
        } else {
            raw.split('/').collect()
        };
        let mut labels = Vec::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Greedy(name) => {
                    let rest = segs.get(i..).unwrap_or(&[]).join("/");
                    if rest.is_empty() {
                        return None;
                    }
                    labels.push((name.clone(), percent_decode(&rest)));
                    i = segs.len();
                    break;
                }
                Segment::Literal(lit) => {
                    if percent_decode(segs.get(i)?) != *lit {
                        return None;
                    }
                }
                Segment::Label {
                    name,
                    prefix,
                    suffix,
                } => {
                    let s = segs.get(i)?;
                    let inner = s
                        .strip_prefix(prefix.as_str())?
                        .strip_suffix(suffix.as_str())?;
                    if inner.is_empty() {
                        return None;
                    }
                    labels.push((name.clone(), percent_decode(inner)));
                }
            }
            i += 1;
        }
        // One trailing slash is the same resource (`/bucket/`).
        match segs.get(i..) {
            None | Some([]) | Some([""]) => {}
            Some(_) => return None,
        }
        for (k, v) in &self.query {
            let present = params
                .iter()
                .any(|(pk, pv)| pk == k && v.as_ref().is_none_or(|v| v == pv));
            if !present {
                return None;
            }
        }
        Some(labels)
    }
}

/// What the codec needs to know of one operation.
#[derive(Debug, Clone)]
struct OpInfo {
    input: Option<String>,
    output: Option<String>,
    /// The `http.responseCode` of a success.
    status: StatusCode,
    /// The output's root element name (restXml), when the operation's output
    /// reference names one.
    output_root: Option<String>,
    output_namespace: Option<String>,
}

/// A REST service's route table and the shapes its codec reads.
#[derive(Debug)]
pub(crate) struct RestModel {
    protocol: Protocol,
    shapes: Map<String, Value>,
    /// Most specific first.
    routes: Vec<Route>,
    ops: HashMap<String, OpInfo>,
    /// `error.httpStatusCode` of each error shape.
    error_status: HashMap<String, StatusCode>,
    /// `metadata.xmlNamespace`, the default namespace of XML replies.
    xml_namespace: Option<String>,
}

fn namespace_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("uri").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl RestModel {
    /// Builds the route table of a REST model.
    pub(crate) fn parse(text: &str, protocol: Protocol) -> Result<RestModel, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let shapes = doc
            .get("shapes")
            .and_then(Value::as_object)
            .cloned()
            .ok_or("model has no shapes")?;
        let operations = doc
            .get("operations")
            .and_then(Value::as_object)
            .ok_or("model has no operations")?;
        let mut routes = Vec::new();
        let mut ops = HashMap::new();
        for (name, op) in operations {
            let http = &op["http"];
            let (Some(method), Some(uri)) = (http["method"].as_str(), http["requestUri"].as_str())
            else {
                return Err(format!("{name}: no http.method and http.requestUri"));
            };
            routes.push(Route::parse(method, uri, name)?);
            let status = http["responseCode"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            let shape = |side: &str| op[side]["shape"].as_str().map(String::from);
            ops.insert(
                name.clone(),
                OpInfo {
                    input: shape("input"),
                    output: shape("output"),
                    status,
                    output_root: op["output"]["locationName"].as_str().map(String::from),
                    output_namespace: namespace_of(&op["output"]["xmlNamespace"]),
                },
            );
        }
        // Operations sharing a method and template are told apart by the
        // query parameters and headers they require.
        let shared: Vec<bool> = routes
            .iter()
            .map(|r| {
                routes.iter().any(|o| {
                    o.operation != r.operation
                        && o.method == r.method
                        && o.segments == r.segments
                        && o.query == r.query
                })
            })
            .collect();
        for (route, shared) in routes.iter_mut().zip(shared) {
            if !shared {
                continue;
            }
            let Some(input) = ops
                .get(&route.operation)
                .and_then(|o: &OpInfo| o.input.clone())
            else {
                continue;
            };
            let input = shapes.get(&input).and_then(Value::as_object);
            let required: Vec<&str> = input
                .and_then(|s| s.get("required"))
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let members = input
                .and_then(|s| s.get("members"))
                .and_then(Value::as_object);
            for name in required {
                let Some(m) = members.and_then(|m| m.get(name)).and_then(Value::as_object) else {
                    continue;
                };
                let wire = location_name(m, name).to_string();
                match location(m) {
                    "querystring" => route.required_params.push(wire),
                    "header" => route.required_headers.push(wire.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        // Position by position, literal before label before greedy; then the
        // template with more literal query parts; then the operation that
        // requires more of the request.
        routes.sort_by(|a, b| {
            let ra: Vec<u8> = a.segments.iter().map(Segment::rank).collect();
            let rb: Vec<u8> = b.segments.iter().map(Segment::rank).collect();
            let needs = |r: &Route| r.required_params.len() + r.required_headers.len();
            ra.cmp(&rb)
                .then(b.query.len().cmp(&a.query.len()))
                .then(needs(b).cmp(&needs(a)))
                .then(a.operation.cmp(&b.operation))
        });
        let error_status = shapes
            .iter()
            .filter_map(|(name, s)| {
                let code = s["error"]["httpStatusCode"].as_u64()?;
                let status = StatusCode::from_u16(u16::try_from(code).ok()?).ok()?;
                let code = s["error"]["code"].as_str().unwrap_or(name);
                Some((code.to_string(), status))
            })
            .collect();
        Ok(RestModel {
            protocol,
            shapes,
            routes,
            ops,
            error_status,
            xml_namespace: namespace_of(&doc["metadata"]["xmlNamespace"]),
        })
    }

    /// The operation a request names, with its path labels.
    fn find(
        &self,
        method: &Method,
        path: &str,
        params: &[(String, String)],
        headers: &HeaderMap,
    ) -> Option<(&str, Vec<(String, String)>)> {
        self.routes
            .iter()
            .filter(|r| r.method == *method && r.requirements_met(params, headers))
            .find_map(|r| Some((r.operation.as_str(), r.matches(path, params)?)))
    }

    /// A non-greedy label of `op`'s template that decoded to a value with
    /// `/`: `%2F` would make one bucket (or stream) name look like a path,
    /// and resource ARNs built from it collide with real paths.
    fn label_with_slash<'a>(&self, op: &str, labels: &'a [(String, String)]) -> Option<&'a str> {
        let route = self.routes.iter().find(|r| r.operation == op)?;
        labels
            .iter()
            .filter(|(_, v)| v.contains('/'))
            .find(|(name, _)| {
                route
                    .segments
                    .iter()
                    .any(|s| matches!(s, Segment::Label { name: n, .. } if n == name))
            })
            .map(|(name, _)| name.as_str())
    }

    /// Whether any template of this service matches the path (any method).
    fn any_path_matches(&self, path: &str, params: &[(String, String)]) -> bool {
        self.routes
            .iter()
            .any(|r| r.matches(path, params).is_some())
    }

    fn shape(&self, name: &str) -> Option<&Map<String, Value>> {
        self.shapes.get(name).and_then(Value::as_object)
    }

    fn type_of(&self, name: &str) -> &str {
        self.shape(name)
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn members(&self, shape: &str) -> Vec<(&str, &Map<String, Value>)> {
        self.shape(shape)
            .and_then(|s| s.get("members"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_object()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn payload_of(&self, shape: &str) -> Option<&str> {
        self.shape(shape)?.get("payload")?.as_str()
    }

    /// Whether `op`'s input payload is a streaming blob (`"streaming": true`
    /// on the member or its shape), handed to the service as a stream.
    fn streams_payload(&self, op: &str) -> bool {
        let Some(input) = self.ops.get(op).and_then(|o| o.input.as_deref()) else {
            return false;
        };
        let Some(payload) = self.payload_of(input) else {
            return false;
        };
        self.members(input)
            .iter()
            .find(|(n, _)| *n == payload)
            .is_some_and(|(_, m)| {
                let shape = member_shape(m);
                self.type_of(shape) == "blob"
                    && (flag(Some(m), "streaming") || flag(self.shape(shape), "streaming"))
            })
    }

    /// The status a service error is answered with: its shape's
    /// `httpStatusCode` when the model has one, else what the service says.
    fn error_status(&self, code: &str, fallback: StatusCode) -> StatusCode {
        self.error_status.get(code).copied().unwrap_or(fallback)
    }
}

fn member_shape(m: &Map<String, Value>) -> &str {
    m.get("shape").and_then(Value::as_str).unwrap_or("")
}

fn location(m: &Map<String, Value>) -> &str {
    m.get("location").and_then(Value::as_str).unwrap_or("")
}

fn location_name<'a>(m: &'a Map<String, Value>, default: &'a str) -> &'a str {
    m.get("locationName")
        .and_then(Value::as_str)
        .unwrap_or(default)
}

fn flag(m: Option<&Map<String, Value>>, key: &str) -> bool {
    m.and_then(|m| m.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn ref_of<'a>(shape: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Map<String, Value>> {
    shape?.get(key)?.as_object()
}

/// Where a value travels, which decides its default timestamp format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Header,
    Uri,
    Xml,
    Json,
}

fn timestamp_format<'a>(
    model: &'a RestModel,
    member: Option<&'a Map<String, Value>>,
    shape: &str,
    place: Place,
) -> &'a str {
    member
        .and_then(|m| m.get("timestampFormat"))
        .or_else(|| model.shape(shape).and_then(|s| s.get("timestampFormat")))
        .and_then(Value::as_str)
        .unwrap_or(match place {
            Place::Header => "rfc822",
            Place::Uri | Place::Xml => "iso8601",
            Place::Json => "unixTimestamp",
        })
}

// ---------------------------------------------------------------- timestamps

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn epoch_number(secs: f64) -> Value {
    if secs.fract() == 0.0 && secs.abs() < 9e15 {
        Value::from(secs as i64)
    } else {
        serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number)
    }
}

/// `2026-12-03T09:22:39.123Z` (an offset instead of `Z` is applied).
pub(crate) fn parse_iso8601(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let basic = format!(
        "{}{}{}T{}{}{}Z",
        s.get(0..4)?,
        s.get(5..7)?,
        s.get(8..10)?,
        s.get(11..13)?,
        s.get(14..16)?,
        s.get(17..19)?
    );
    let whole = crate::auth::sigv4::parse_amz_date(&basic)? as f64;
    let mut rest = s.get(19..)?;
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &r[..digits]).parse::<f64>().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest.get(1..)?.split_once(':')?;
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    Some(whole + frac - offset as f64)
}

/// `Thu, 03 Dec 2026 09:22:39 GMT`.
fn parse_http_date(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if *zone != "GMT" && *zone != "UTC" {
        return None;
    }
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    let mut hms = time.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    let basic = format!("{year:04}{month:02}{day:02}T{h:0>2}{m:0>2}{sec:0>2}Z");
    crate::auth::sigv4::parse_amz_date(&basic).map(|t| t as f64)
}

/// First and last second of years 1 to 9999, the years the formats can write.
const MIN_SECS: f64 = -62_135_596_800.0;
const MAX_SECS: f64 = 253_402_300_799.0;

/// `2026-12-03T09:22:39.000Z`, as S3 writes them.
pub(crate) fn format_iso8601(secs: f64) -> String {
    let secs = secs.clamp(MIN_SECS, MAX_SECS);
    let mut whole = secs.floor() as i64;
    let mut millis = ((secs - secs.floor()) * 1000.0).round() as u32;
    if millis >= 1000 {
        whole += 1;
        millis -= 1000;
    }
    chrono::DateTime::from_timestamp(whole, millis * 1_000_000)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `Thu, 03 Dec 2026 09:22:39 GMT` (RFC 7231's IMF-fixdate).
fn format_http_date(secs: f64) -> String {
    let secs = secs.clamp(MIN_SECS, MAX_SECS);
    chrono::DateTime::from_timestamp(secs.floor() as i64, 0)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn parse_timestamp(text: &str, format: &str) -> Option<f64> {
    let text = text.trim();
    match format {
        "unixTimestamp" => text.parse::<f64>().ok().filter(|f| f.is_finite()),
        "rfc822" => parse_http_date(text).or_else(|| parse_iso8601(text)),
        _ => parse_iso8601(text).or_else(|| parse_http_date(text)),
    }
}

fn format_timestamp(v: &Value, format: &str) -> Option<String> {
    let secs = v.as_f64()?;
    Some(match format {
        "unixTimestamp" => match epoch_number(secs) {
            Value::Number(n) => n.to_string(),
            _ => return None,
        },
        "rfc822" => format_http_date(secs),
        _ => format_iso8601(secs),
    })
}

// ------------------------------------------------------------ text scalars

use crate::auth::sigv4::percent_decode;

/// A scalar read from text (a label, a query parameter, a header, an XML
/// element) in the JSON form of its shape; a value that is not of the
/// shape's type is left as text for validation to refuse.
fn scalar_from_text(
    model: &RestModel,
    member: Option<&Map<String, Value>>,
    shape: &str,
    text: &str,
    place: Place,
) -> Value {
    let t = text.trim();
    match model.type_of(shape) {
        "integer" | "long" => t
            .parse::<i64>()
            .map_or(Value::String(text.into()), Value::from),
        "float" | "double" => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text.into()), Value::Number),
        "boolean" if t.eq_ignore_ascii_case("true") => Value::Bool(true),
        "boolean" if t.eq_ignore_ascii_case("false") => Value::Bool(false),
        "timestamp" => parse_timestamp(t, timestamp_format(model, member, shape, place))
            .map_or(Value::String(text.into()), epoch_number),
        _ => Value::String(text.into()),
    }
}

fn scalar_to_text(
    model: &RestModel,
    member: Option<&Map<String, Value>>,
    shape: &str,
    v: &Value,
    place: Place,
) -> Option<String> {
    if model.type_of(shape) == "timestamp" {
        return format_timestamp(v, timestamp_format(model, member, shape, place));
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------- XML in

/// An XML element as read from a request body.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Reads a whole XML document (quick-xml does the parsing); `Err` for
/// anything malformed, a DTD, or nesting deeper than [`MAX_XML_DEPTH`].
fn parse_xml(bytes: &[u8]) -> Result<Element, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    let mut elements = 0usize;
    let name_of = |e: &quick_xml::events::BytesStart| -> Result<Element, String> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        // quick-xml's duplicate check compares each attribute with every
        // earlier one; with the count capped, a duplicate is harmless (the
        // first is the one read).
        for a in e.attributes().with_checks(false) {
            if attrs.len() >= MAX_XML_ATTRIBUTES {
                return Err(format!(
                    "an element has more than {MAX_XML_ATTRIBUTES} attributes"
                ));
            }
            let a = a.map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
            attrs.push((key, value));
        }
        Ok(Element {
            name,
            attrs,
            ..Element::default()
        })
    };
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        if matches!(event, Event::Start(_) | Event::Empty(_)) {
            elements += 1;
            if elements > MAX_XML_ELEMENTS {
                return Err(format!("more than {MAX_XML_ELEMENTS} elements"));
            }
        }
        match event {
            Event::Start(e) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                if stack.len() >= MAX_XML_DEPTH {
                    return Err("elements nested too deep".into());
                }
                stack.push(name_of(&e)?);
            }
            Event::Empty(e) => {
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                let el = name_of(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err("unbalanced end tag".into());
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.xml_content().map_err(|e| e.to_string())?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err("text outside the root element".into()),
                }
            }
            Event::CData(t) => {
                let text = t.decode().map_err(|e| e.to_string())?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?
                            .to_string()
                    }
                };
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&resolved);
                }
            }
            Event::DocType(_) => return Err("a DTD is not accepted".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("unclosed element".into());
    }
    root.ok_or_else(|| "no root element".into())
}

impl RestModel {
    /// An XML element in the JSON form of `shape`.
    fn xml_to_form(
        &self,
        member: Option<&Map<String, Value>>,
        shape: &str,
        el: &Element,
        depth: usize,
    ) -> Value {
        if depth > MAX_XML_DEPTH {
            return Value::Null;
        }
        let s = self.shape(shape);
        match self.type_of(shape) {
            "structure" | "union" => {
                let mut out = Map::new();
                for (name, m) in self.members(shape) {
                    let ms = member_shape(m);
                    let wire = location_name(m, name);
                    if flag(Some(m), "xmlAttribute") {
                        if let Some((_, v)) = el.attrs.iter().find(|(k, _)| k == wire) {
                            out.insert(
                                name.into(),
                                scalar_from_text(self, Some(m), ms, v, Place::Xml),
                            );
                        }
                        continue;
                    }
                    let flattened = flag(Some(m), "flattened") || flag(self.shape(ms), "flattened");
                    let kind = self.type_of(ms);
                    if flattened && kind == "list" {
                        let item_ref = ref_of(self.shape(ms), "member");
                        let item_shape = item_ref.map_or("", member_shape);
                        let item_name = item_ref
                            .and_then(|r| r.get("locationName"))
                            .and_then(Value::as_str)
                            .unwrap_or(wire);
                        let items: Vec<Value> = el
                            .all(item_name)
                            .map(|c| self.xml_to_form(item_ref, item_shape, c, depth + 1))
                            .collect();
                        if !items.is_empty() {
                            out.insert(name.into(), Value::Array(items));
                        }
                    } else if flattened && kind == "map" {
                        let entries: Vec<&Element> = el.all(wire).collect();
                        if !entries.is_empty() {
                            out.insert(name.into(), self.xml_map(ms, entries, depth));
                        }
                    } else if let Some(c) = el.child(wire) {
                        out.insert(name.into(), self.xml_to_form(Some(m), ms, c, depth + 1));
                    }
                }
                Value::Object(out)
            }
            "list" => {
                let item_ref = ref_of(s, "member");
                let item_shape = item_ref.map_or("", member_shape);
                let item_name =
                    location_name(item_ref.unwrap_or(&Map::new()), "member").to_string();
                Value::Array(
                    el.all(&item_name)
                        .map(|c| self.xml_to_form(item_ref, item_shape, c, depth + 1))
                        .collect(),
                )
            }
            "map" => self.xml_map(shape, el.all("entry").collect(), depth),
            _ => scalar_from_text(self, member, shape, &el.text, Place::Xml),
        }
    }

    /// Map entries (`<entry><key/><value/></entry>`, or the flattened form's
    /// repeated elements) as a JSON object.
    fn xml_map(&self, shape: &str, entries: Vec<&Element>, depth: usize) -> Value {
        let s = self.shape(shape);
        let key_ref = ref_of(s, "key");
        let value_ref = ref_of(s, "value");
        let empty = Map::new();
        let key_name = location_name(key_ref.unwrap_or(&empty), "key");
        let value_name = location_name(value_ref.unwrap_or(&empty), "value");
        let value_shape = value_ref.map_or("", member_shape);
        let mut out = Map::new();
        for e in entries {
            let Some(k) = e.child(key_name) else { continue };
            let v = e.child(value_name).map_or(Value::Null, |v| {
                self.xml_to_form(value_ref, value_shape, v, depth + 1)
            });
            out.insert(k.text.clone(), v);
        }
        Value::Object(out)
    }
}

// --------------------------------------------------------------- XML out

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

fn ns_attr(ns: &Value) -> String {
    match ns {
        Value::String(uri) => format!(" xmlns=\"{}\"", escape(uri)),
        Value::Object(o) => match (
            o.get("uri").and_then(Value::as_str),
            o.get("prefix").and_then(Value::as_str),
        ) {
            (Some(uri), Some(p)) => format!(" xmlns:{p}=\"{}\"", escape(uri)),
            (Some(uri), None) => format!(" xmlns=\"{}\"", escape(uri)),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

impl RestModel {
    /// Writes `<name>` holding `v` in the XML form of `shape`.
    fn write_xml(
        &self,
        out: &mut String,
        name: &str,
        member: Option<&Map<String, Value>>,
        shape: &str,
        v: &Value,
        extra_attrs: &str,
    ) {
        let s = self.shape(shape);
        let ns = member
            .and_then(|m| m.get("xmlNamespace"))
            .or_else(|| s.and_then(|s| s.get("xmlNamespace")))
            .map(ns_attr)
            .unwrap_or_default();
        match (self.type_of(shape), v) {
            ("structure" | "union", Value::Object(obj)) => {
                let mut attrs = String::new();
                let mut body = String::new();
                for (mname, m) in self.members(shape) {
                    let Some(mv) = obj.get(mname).filter(|x| !x.is_null()) else {
                        continue;
                    };
                    let ms = member_shape(m);
                    let wire = location_name(m, mname);
                    if flag(Some(m), "xmlAttribute") {
                        if let Some(t) = scalar_to_text(self, Some(m), ms, mv, Place::Xml) {
                            attrs.push_str(&format!(" {wire}=\"{}\"", escape(&t)));
                        }
                        continue;
                    }
                    self.write_member(&mut body, wire, m, ms, mv);
                }
                out.push_str(&format!("<{name}{ns}{extra_attrs}{attrs}>{body}</{name}>"));
            }
            ("list", Value::Array(items)) => {
                let item_ref = ref_of(s, "member");
                let item_shape = item_ref.map_or("", member_shape);
                let empty = Map::new();
                let item_name = location_name(item_ref.unwrap_or(&empty), "member");
                out.push_str(&format!("<{name}{ns}{extra_attrs}>"));
                for item in items {
                    self.write_xml(out, item_name, item_ref, item_shape, item, "");
                }
                out.push_str(&format!("</{name}>"));
            }
            ("map", Value::Object(obj)) => {
                out.push_str(&format!("<{name}{ns}{extra_attrs}>"));
                for (k, val) in obj {
                    out.push_str("<entry>");
                    self.write_map_entry(out, shape, k, val);
                    out.push_str("</entry>");
                }
                out.push_str(&format!("</{name}>"));
            }
            _ => {
                if let Some(t) = scalar_to_text(self, member, shape, v, Place::Xml) {
                    out.push_str(&format!("<{name}{ns}{extra_attrs}>{}</{name}>", escape(&t)));
                }
            }
        }
    }

    /// A structure member, flattened lists and maps as repeated elements.
    fn write_member(
        &self,
        out: &mut String,
        wire: &str,
        m: &Map<String, Value>,
        ms: &str,
        v: &Value,
    ) {
        let flattened = flag(Some(m), "flattened") || flag(self.shape(ms), "flattened");
        match (self.type_of(ms), v) {
            ("list", Value::Array(items)) if flattened => {
                let item_ref = ref_of(self.shape(ms), "member");
                let item_shape = item_ref.map_or("", member_shape);
                let item_name = item_ref
                    .and_then(|r| r.get("locationName"))
                    .and_then(Value::as_str)
                    .unwrap_or(wire);
                for item in items {
                    self.write_xml(out, item_name, item_ref, item_shape, item, "");
                }
            }
            ("map", Value::Object(obj)) if flattened => {
                for (k, val) in obj {
                    out.push_str(&format!("<{wire}>"));
                    self.write_map_entry(out, ms, k, val);
                    out.push_str(&format!("</{wire}>"));
                }
            }
            _ => self.write_xml(out, wire, Some(m), ms, v, ""),
        }
    }

    fn write_map_entry(&self, out: &mut String, shape: &str, k: &str, v: &Value) {
        let s = self.shape(shape);
        let empty = Map::new();
        let key_ref = ref_of(s, "key").unwrap_or(&empty);
        let value_ref = ref_of(s, "value").unwrap_or(&empty);
        let key_name = location_name(key_ref, "key");
        let value_name = location_name(value_ref, "value");
        out.push_str(&format!("<{key_name}>{}</{key_name}>", escape(k)));
        self.write_xml(
            out,
            value_name,
            Some(value_ref),
            member_shape(value_ref),
            v,
            "",
        );
    }
}

// ------------------------------------------------------ JSON wire <-> form

impl RestModel {
    /// A restJson1 body value (members under their `locationName`,
    /// timestamps in their format) in the JSON form (member names, epoch
    /// seconds).
    fn json_to_form(&self, member: Option<&Map<String, Value>>, shape: &str, v: Value) -> Value {
        match (self.type_of(shape), v) {
            ("structure" | "union", Value::Object(mut obj)) => {
                let mut out = Map::new();
                for (name, m) in self.members(shape) {
                    if let Some(mv) = obj.remove(location_name(m, name)) {
                        out.insert(name.into(), self.json_to_form(Some(m), member_shape(m), mv));
                    }
                }
                Value::Object(out)
            }
            ("list", Value::Array(items)) => {
                let item = ref_of(self.shape(shape), "member");
                let item_shape = item.map_or("", member_shape);
                Value::Array(
                    items
                        .into_iter()
                        .map(|i| self.json_to_form(item, item_shape, i))
                        .collect(),
                )
            }
            ("map", Value::Object(obj)) => {
                let value = ref_of(self.shape(shape), "value");
                let value_shape = value.map_or("", member_shape);
                Value::Object(
                    obj.into_iter()
                        .map(|(k, x)| (k, self.json_to_form(value, value_shape, x)))
                        .collect(),
                )
            }
            ("timestamp", Value::String(s)) => {
                match parse_timestamp(&s, timestamp_format(self, member, shape, Place::Json)) {
                    Some(secs) => epoch_number(secs),
                    None => Value::String(s),
                }
            }
            (_, v) => v,
        }
    }

    /// The reverse of [`RestModel::json_to_form`].
    fn form_to_json(&self, member: Option<&Map<String, Value>>, shape: &str, v: Value) -> Value {
        match (self.type_of(shape), v) {
            ("structure" | "union", Value::Object(mut obj)) => {
                let mut out = Map::new();
                for (name, m) in self.members(shape) {
                    if let Some(mv) = obj.remove(name).filter(|x| !x.is_null()) {
                        out.insert(
                            location_name(m, name).to_string(),
                            self.form_to_json(Some(m), member_shape(m), mv),
                        );
                    }
                }
                Value::Object(out)
            }
            ("list", Value::Array(items)) => {
                let item = ref_of(self.shape(shape), "member");
                let item_shape = item.map_or("", member_shape);
                Value::Array(
                    items
                        .into_iter()
                        .map(|i| self.form_to_json(item, item_shape, i))
                        .collect(),
                )
            }
            ("map", Value::Object(obj)) => {
                let value = ref_of(self.shape(shape), "value");
                let value_shape = value.map_or("", member_shape);
                Value::Object(
                    obj.into_iter()
                        .map(|(k, x)| (k, self.form_to_json(value, value_shape, x)))
                        .collect(),
                )
            }
            ("timestamp", v @ Value::Number(_)) => {
                match timestamp_format(self, member, shape, Place::Json) {
                    "unixTimestamp" => v,
                    f => format_timestamp(&v, f).map_or(v, Value::String),
                }
            }
            (_, v) => v,
        }
    }
}

// ------------------------------------------------------------ binding

/// The parts of a request that binding reads.
struct Sources<'a> {
    headers: &'a HeaderMap,
    labels: &'a [(String, String)],
    params: &'a [(String, String)],
    body: &'a Bytes,
}

/// The query parameters of a presigned request, which are the signature's
/// and never an operation's.
fn is_signature_param(name: &str) -> bool {
    matches!(
        name,
        "X-Amz-Algorithm"
            | "X-Amz-Credential"
            | "X-Amz-Date"
            | "X-Amz-Expires"
            | "X-Amz-SignedHeaders"
            | "X-Amz-Signature"
            | "X-Amz-Security-Token"
    )
}

fn header_text(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

impl RestModel {
    fn malformed(&self, why: &str) -> WireError {
        match self.protocol {
            Protocol::RestXml => WireError::new(
                StatusCode::BAD_REQUEST,
                "MalformedXML",
                format!(
                    "The XML you provided was not well-formed or did not validate against our published schema: {why}"
                ),
            ),
            _ => WireError::serialization(why.to_string()),
        }
    }

    /// A structured body (JSON or XML, by protocol) in the JSON form of `shape`.
    fn decode_body(
        &self,
        member: Option<&Map<String, Value>>,
        shape: &str,
        body: &[u8],
    ) -> Result<Value, WireError> {
        match self.protocol {
            Protocol::RestXml => {
                let root = parse_xml(body).map_err(|e| self.malformed(&e))?;
                Ok(self.xml_to_form(member, shape, &root, 0))
            }
            _ => {
                let v: Value = serde_json::from_slice(body)
                    .map_err(|_| WireError::serialization("Body is not valid JSON"))?;
                if !v.is_object() {
                    return Err(WireError::serialization("Expected a JSON object"));
                }
                Ok(self.json_to_form(member, shape, v))
            }
        }
    }

    /// The input of `op` in its JSON form, bound from every part of the request.
    fn bind(&self, op: &str, req: &Sources<'_>) -> Result<Value, WireError> {
        let mut out = Map::new();
        let Some(input) = self.ops.get(op).and_then(|o| o.input.as_deref()) else {
            return Ok(Value::Object(out));
        };
        let members = self.members(input);
        let payload = self.payload_of(input);
        // Query parameters no member names, for a map bound to the whole query.
        let named: Vec<&str> = members
            .iter()
            .filter(|(_, m)| location(m) == "querystring" && m.contains_key("locationName"))
            .map(|(n, m)| location_name(m, n))
            .collect();
        let mut body_members = false;
        for &(name, m) in &members {
            let ms = member_shape(m);
            let kind = self.type_of(ms);
            let wire = location_name(m, name);
            let value = match location(m) {
                "uri" => req
                    .labels
                    .iter()
                    .find(|(k, _)| k == wire)
                    .map(|(_, v)| scalar_from_text(self, Some(m), ms, v, Place::Uri)),
                "querystring" if kind == "map" => {
                    let value_ref = ref_of(self.shape(ms), "value");
                    let value_shape = value_ref.map_or("", member_shape);
                    let many = self.type_of(value_shape) == "list";
                    let mut map = Map::new();
                    for (k, v) in req
                        .params
                        .iter()
                        .filter(|(k, _)| !named.contains(&k.as_str()) && !is_signature_param(k))
                    {
                        if many {
                            let entry = map
                                .entry(k.clone())
                                .or_insert_with(|| Value::Array(Vec::new()));
                            if let Value::Array(a) = entry {
                                a.push(Value::String(v.clone()));
                            }
                        } else {
                            map.entry(k.clone())
                                .or_insert_with(|| Value::String(v.clone()));
                        }
                    }
                    (!map.is_empty()).then_some(Value::Object(map))
                }
                "querystring" if kind == "list" => {
                    let item = ref_of(self.shape(ms), "member");
                    let item_shape = item.map_or("", member_shape);
                    let items: Vec<Value> = req
                        .params
                        .iter()
                        .filter(|(k, _)| k == wire)
                        .map(|(_, v)| scalar_from_text(self, item, item_shape, v, Place::Uri))
                        .collect();
                    (!items.is_empty()).then_some(Value::Array(items))
                }
                "querystring" => req
                    .params
                    .iter()
                    .find(|(k, _)| k == wire)
                    .map(|(_, v)| scalar_from_text(self, Some(m), ms, v, Place::Uri)),
                "header" if kind == "list" => {
                    let item = ref_of(self.shape(ms), "member");
                    let item_shape = item.map_or("", member_shape);
                    let items: Vec<Value> = req
                        .headers
                        .get_all(wire)
                        .iter()
                        .flat_map(|v| {
                            header_text(v)
                                .split(',')
                                .map(|s| s.trim().to_string())
                                .collect::<Vec<_>>()
                        })
                        .filter(|s| !s.is_empty())
                        .map(|s| scalar_from_text(self, item, item_shape, &s, Place::Header))
                        .collect();
                    (!items.is_empty()).then_some(Value::Array(items))
                }
                "header" => req.headers.get(wire).map(|v| {
                    let text = header_text(v);
                    // S3 reads enum-valued headers whatever their case: the
                    // AWS C++ SDK inside pyarrow (pyiceberg's reads) sends
                    // `x-amz-checksum-mode: enabled`.
                    let text = self
                        .shape(ms)
                        .and_then(|s| s.get("enum"))
                        .and_then(Value::as_array)
                        .and_then(|e| {
                            e.iter()
                                .filter_map(Value::as_str)
                                .find(|x| x.eq_ignore_ascii_case(&text))
                        })
                        .map_or(text.clone(), str::to_string);
                    scalar_from_text(self, Some(m), ms, &text, Place::Header)
                }),
                "headers" => {
                    let prefix = wire.to_ascii_lowercase();
                    let map: Map<String, Value> = req
                        .headers
                        .iter()
                        .filter_map(|(k, v)| {
                            let key = k.as_str().strip_prefix(prefix.as_str())?;
                            Some((key.to_string(), Value::String(header_text(v))))
                        })
                        .collect();
                    (!map.is_empty()).then_some(Value::Object(map))
                }
                "statusCode" => None,
                _ if payload == Some(name) => {
                    if req.body.is_empty() {
                        None
                    } else {
                        match kind {
                            "blob" => Some(Value::String(
                                base64::engine::general_purpose::STANDARD.encode(req.body),
                            )),
                            "string" => Some(Value::String(
                                std::str::from_utf8(req.body)
                                    .map_err(|_| self.malformed("the body is not UTF-8"))?
                                    .to_string(),
                            )),
                            _ => Some(self.decode_body(Some(m), ms, req.body)?),
                        }
                    }
                }
                _ => {
                    body_members = true;
                    None
                }
            };
            if let Some(v) = value {
                out.insert(name.to_string(), v);
            }
        }
        // Members that travel in the body itself (no payload member).
        if body_members && payload.is_none() && !req.body.is_empty() {
            let Value::Object(from_body) = self.decode_body(None, input, req.body)? else {
                return Err(self.malformed("expected a structure"));
            };
            for (name, m) in &members {
                if location(m).is_empty()
                    && let Some(v) = from_body.get(*name)
                {
                    out.insert(name.to_string(), v.clone());
                }
            }
        }
        Ok(Value::Object(out))
    }

    // ------------------------------------------------------------ replies

    fn content_type(&self) -> &'static str {
        match self.protocol {
            Protocol::RestXml => "application/xml",
            _ => "application/json",
        }
    }

    /// A reply's JSON form spread over status, headers and body.
    fn encode(&self, op: &str, method: &Method, reply: Reply) -> Result<Response<Body>, WireError> {
        let info = self.ops.get(op);
        let mut status = info.map_or(StatusCode::OK, |o| o.status);
        let output = info.and_then(|o| o.output.as_deref());
        let mut raw: Option<ripstream_api::Payload> = None;
        let value = match reply {
            Reply::Empty => Value::Object(Map::new()),
            Reply::Json(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| WireError::internal(format!("could not encode the response: {e}")))?,
            Reply::Payload {
                output,
                body,
                status: replaced,
            } => {
                if let Some(s) = replaced {
                    status = s;
                }
                raw = Some(body);
                serde_json::from_slice(&output).map_err(|e| {
                    WireError::internal(format!("could not encode the response: {e}"))
                })?
            }
            Reply::Events(_) => {
                return Err(WireError::internal(
                    "event stream replies are not supported over the REST protocols yet",
                ));
            }
        };
        let Value::Object(mut obj) = value else {
            return Err(WireError::internal("the reply is not a structure"));
        };
        let mut headers = HeaderMap::new();
        let mut body: Vec<u8> = Vec::new();
        let mut content_type: Option<&'static str> = None;
        if let Some(output) = output {
            let payload = self.payload_of(output);
            let members = self.members(output);
            let mut has_body_members = false;
            for &(name, m) in &members {
                let ms = member_shape(m);
                let wire = location_name(m, name);
                match location(m) {
                    "header" => {
                        let Some(v) = obj.remove(name).filter(|x| !x.is_null()) else {
                            continue;
                        };
                        // The body's real length wins over a declared one,
                        // except for HEAD, whose body is never sent.
                        if wire.eq_ignore_ascii_case("content-length") && method != Method::HEAD {
                            continue;
                        }
                        let text = match &v {
                            Value::Array(items) => {
                                let item = ref_of(self.shape(ms), "member");
                                let item_shape = item.map_or("", member_shape);
                                Some(
                                    items
                                        .iter()
                                        .filter_map(|i| {
                                            scalar_to_text(self, item, item_shape, i, Place::Header)
                                        })
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                )
                            }
                            v => scalar_to_text(self, Some(m), ms, v, Place::Header),
                        };
                        insert_header(&mut headers, wire, text);
                    }
                    "headers" => {
                        if let Some(Value::Object(map)) = obj.remove(name) {
                            for (k, v) in map {
                                insert_header(
                                    &mut headers,
                                    &format!("{wire}{k}"),
                                    v.as_str().map(String::from),
                                );
                            }
                        }
                    }
                    "statusCode" => {
                        if let Some(code) = obj
                            .remove(name)
                            .and_then(|v| v.as_u64())
                            .and_then(|c| u16::try_from(c).ok())
                            .and_then(|c| StatusCode::from_u16(c).ok())
                        {
                            status = code;
                        }
                    }
                    "" if payload == Some(name) => {
                        let Some(v) = obj.remove(name).filter(|x| !x.is_null()) else {
                            continue;
                        };
                        match (self.type_of(ms), v) {
                            ("blob", Value::String(s)) => {
                                body = base64::engine::general_purpose::STANDARD
                                    .decode(s.as_bytes())
                                    .map_err(|_| WireError::internal("a blob is not base64"))?;
                                content_type = Some("application/octet-stream");
                            }
                            ("string", Value::String(s)) => {
                                body = s.into_bytes();
                                content_type = Some("text/plain");
                            }
                            (_, v) => {
                                body = match self.protocol {
                                    Protocol::RestXml => {
                                        let mut out = String::from(
                                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                                        );
                                        self.write_xml(&mut out, wire, Some(m), ms, &v, "");
                                        out.into_bytes()
                                    }
                                    _ => serde_json::to_vec(&self.form_to_json(Some(m), ms, v))
                                        .unwrap_or_default(),
                                };
                                content_type = Some(self.content_type());
                            }
                        }
                    }
                    "" => has_body_members = true,
                    _ => {}
                }
            }
            if has_body_members && payload.is_none() {
                body = match self.protocol {
                    Protocol::RestXml => {
                        let root = info
                            .and_then(|o| o.output_root.as_deref())
                            .or_else(|| self.shape(output)?.get("locationName")?.as_str())
                            .unwrap_or(output);
                        let ns = info
                            .and_then(|o| o.output_namespace.clone())
                            .or_else(|| {
                                self.shape(output)?
                                    .get("xmlNamespace")
                                    .and_then(namespace_of)
                            })
                            .or_else(|| self.xml_namespace.clone())
                            .map(|uri| format!(" xmlns=\"{}\"", escape(&uri)))
                            .unwrap_or_default();
                        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
                        self.write_xml_root(&mut out, root, output, &obj, &ns);
                        out.into_bytes()
                    }
                    _ => serde_json::to_vec(&self.form_to_json(None, output, Value::Object(obj)))
                        .unwrap_or_default(),
                };
                content_type = Some(self.content_type());
            }
        }
        let body = match raw {
            Some(ripstream_api::Payload::Bytes(raw)) => {
                content_type = Some("application/octet-stream");
                full(raw)
            }
            Some(ripstream_api::Payload::Document(raw)) => {
                content_type = Some(self.content_type());
                full(raw)
            }
            Some(ripstream_api::Payload::Stream { len, stream }) => {
                content_type = Some("application/octet-stream");
                if method == Method::HEAD {
                    full(Bytes::new())
                } else {
                    // The declared length, so hyper sends Content-Length
                    // (and cuts the connection if the stream falls short).
                    BodyExt::boxed(PayloadBody {
                        len,
                        sent: 0,
                        stream: std::sync::Mutex::new(stream),
                    })
                }
            }
            None => full(body),
        };
        // 304 and HEAD carry no body; a 304's headers describe the object.
        let content_type = content_type.filter(|_| status != StatusCode::NOT_MODIFIED);
        if let Some(ct) = content_type
            && !headers.contains_key(CONTENT_TYPE)
        {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        let mut r = Response::new(body);
        *r.status_mut() = status;
        r.headers_mut().extend(headers);
        Ok(r)
    }

    /// The root element of an XML reply: the output structure's body members.
    fn write_xml_root(
        &self,
        out: &mut String,
        root: &str,
        shape: &str,
        obj: &Map<String, Value>,
        ns: &str,
    ) {
        let mut attrs = String::new();
        let mut body = String::new();
        for (mname, m) in self.members(shape) {
            if !location(m).is_empty() {
                continue;
            }
            let Some(mv) = obj.get(mname).filter(|x| !x.is_null()) else {
                continue;
            };
            let ms = member_shape(m);
            let wire = location_name(m, mname);
            if flag(Some(m), "xmlAttribute") {
                if let Some(t) = scalar_to_text(self, Some(m), ms, mv, Place::Xml) {
                    attrs.push_str(&format!(" {wire}=\"{}\"", escape(&t)));
                }
                continue;
            }
            self.write_member(&mut body, wire, m, ms, mv);
        }
        out.push_str(&format!("<{root}{ns}{attrs}>{body}</{root}>"));
    }

    /// An error in the protocol's encoding, with the status its model gives it.
    fn error_response(&self, e: &WireError, request_id: &str) -> Response<Body> {
        let (code, status) = front_door_code(self.protocol, e.code, e.status);
        let status = self.error_status(code, status);
        let (content_type, body) = match self.protocol {
            Protocol::RestXml => {
                let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>");
                out.push_str(&format!("<Code>{}</Code>", escape(code)));
                out.push_str(&format!("<Message>{}</Message>", escape(&e.message)));
                for (k, v) in e.extra.iter().flat_map(|x| x.iter()) {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => continue,
                    };
                    out.push_str(&format!("<{k}>{}</{k}>", escape(&text)));
                }
                out.push_str(&format!(
                    "<RequestId>{}</RequestId></Error>",
                    escape(request_id)
                ));
                ("application/xml", out.into_bytes())
            }
            _ => {
                let mut body = Map::new();
                body.insert("message".into(), e.message.clone().into());
                if let Some(extra) = &e.extra {
                    for (k, v) in extra.iter() {
                        body.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                (
                    "application/json",
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        e.add_headers(r.headers_mut());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.protocol == Protocol::RestJson1
            && let Ok(v) = HeaderValue::from_str(code)
        {
            r.headers_mut().insert("x-amzn-ErrorType", v);
        }
        if self.protocol == Protocol::RestXml
            && let Ok(v) = HeaderValue::from_str(request_id)
        {
            r.headers_mut().insert("x-amz-request-id", v);
        }
        r
    }
}

fn insert_header(headers: &mut HeaderMap, name: &str, value: Option<String>) {
    let Some(value) = value else { return };
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value.as_bytes()),
    ) {
        (Ok(n), Ok(v)) => {
            headers.insert(n, v);
        }
        _ => debug!(
            header = name,
            "an output header cannot be encoded; left out"
        ),
    }
}

/// The codes and statuses the REST front ends give the front door's own
/// errors (S3's for restXml; 403 for authentication failures of restJson1).
fn front_door_code(
    protocol: Protocol,
    code: &'static str,
    status: StatusCode,
) -> (&'static str, StatusCode) {
    let forbidden = StatusCode::FORBIDDEN;
    match (protocol, code) {
        (Protocol::RestXml, "AccessDeniedException" | "MissingAuthenticationTokenException") => {
            ("AccessDenied", forbidden)
        }
        (Protocol::RestXml, "InvalidSignatureException") => ("SignatureDoesNotMatch", forbidden),
        (Protocol::RestXml, "UnrecognizedClientException") => ("InvalidAccessKeyId", forbidden),
        (Protocol::RestXml, "IncompleteSignatureException") => {
            ("AuthorizationHeaderMalformed", StatusCode::BAD_REQUEST)
        }
        (Protocol::RestXml, "ValidationException" | "SerializationException") => {
            ("InvalidArgument", StatusCode::BAD_REQUEST)
        }
        (Protocol::RestXml, "ServiceUnavailableException") => ("SlowDown", status),
        (Protocol::RestXml, "InternalFailure") => ("InternalError", status),
        (Protocol::RestXml, "RequestTimeoutException") => {
            ("RequestTimeout", StatusCode::BAD_REQUEST)
        }
        (Protocol::RestXml, "UnknownOperationException") => {
            ("MethodNotAllowed", StatusCode::METHOD_NOT_ALLOWED)
        }
        (
            _,
            "AccessDeniedException"
            | "MissingAuthenticationTokenException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException",
        ) => (code, forbidden),
        (_, "UnknownOperationException") => (code, StatusCode::NOT_FOUND),
        _ => (code, status),
    }
}

/// A streamed raw payload of exactly `len` bytes.
struct PayloadBody {
    len: u64,
    sent: u64,
    /// In a mutex only to be `Sync` as the response body must be; it is
    /// reached through `get_mut`, never locked.
    stream: std::sync::Mutex<ripstream_api::BodyStream>,
}

impl hyper::body::Body for PayloadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::task::Poll;
        if self.sent >= self.len {
            return Poll::Ready(None);
        }
        let polled = {
            let stream = self
                .stream
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            stream.as_mut().poll_next(cx)
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                // Never more than declared.
                let room = usize::try_from(self.len - self.sent).unwrap_or(usize::MAX);
                let chunk = if chunk.len() > room {
                    chunk.slice(..room)
                } else {
                    chunk
                };
                self.sent += chunk.len() as u64;
                Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                // The status went out long ago: logged here or nowhere.
                error!(code = e.code(), error = %ripstream_api::Chain(&*e), "a streamed reply failed");
                self.sent = self.len;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                if self.sent < self.len {
                    error!(
                        sent = self.sent,
                        len = self.len,
                        "a streamed reply ended short"
                    );
                }
                self.sent = self.len;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len - self.sent.min(self.len))
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

// ----------------------------------------------------------- routing

/// The service and operation a REST request names.
#[derive(Debug)]
pub(crate) struct Routed {
    service: usize,
    /// `None`: the credential scope names this service, but none of its
    /// templates matches (answered in the service's protocol).
    operation: Option<String>,
    labels: Vec<(String, String)>,
    params: Vec<(String, String)>,
}

/// The SigV4 credential scope's service, from the Authorization header or a
/// presigned query.
pub(crate) fn scope_service(
    parts: &http::request::Parts,
    params: &[(String, String)],
) -> Option<String> {
    let credential = match parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // Read by the verifier's own parser, so the service routed to is the
        // one whose scope is verified.
        Some(auth) => crate::auth::sigv4::header_credential(auth)?,
        None => params
            .iter()
            .find(|(k, _)| k == "X-Amz-Credential")
            .map(|(_, v)| v.clone())?,
    };
    let scope: Vec<&str> = credential.split('/').collect();
    (scope.len() == 5).then(|| scope[3].to_string())
}

/// The bucket of a virtual-host-style S3 request: `<bucket>.s3.<...>`,
/// `<bucket>.s3-<region>.<...>` or `<bucket>.localhost`.
fn virtual_host_bucket(parts: &http::request::Parts) -> Option<String> {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))?;
    if host.starts_with('[') {
        return None;
    }
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let bucket = if let Some(at) = name.find(".s3.").or_else(|| name.find(".s3-")) {
        &name[..at]
    } else {
        name.strip_suffix(".localhost")?
    };
    (!bucket.is_empty() && bucket != "s3").then(|| bucket.to_string())
}

fn is_rest(m: &Mounted) -> bool {
    m.rest.is_some()
}

/// The REST service and operation a request names, or `None` when it is no
/// REST service's (the JSON pipeline or a refusal answers it): by the SigV4
/// credential scope, then by Host for virtual-host-style S3, then by the
/// services' path templates.
pub(crate) fn route(state: &AppState, parts: &http::request::Parts) -> Option<Routed> {
    if !state.services.iter().any(is_rest) {
        return None;
    }
    let params = crate::auth::sigv4::query_params(parts.uri.query().unwrap_or(""));
    let path_for = |m: &Mounted| -> String {
        let path = parts.uri.path();
        match virtual_host_bucket(parts) {
            Some(bucket) if m.api.spec().signing_name == "s3" => {
                format!("/{bucket}{}", if path == "/" { "" } else { path })
            }
            _ => path.to_string(),
        }
    };
    let found = |service: usize| -> Option<Routed> {
        let m = &state.services[service];
        let rest = m.rest.as_ref()?;
        let path = path_for(m);
        let (op, labels) = rest.find(&parts.method, &path, &params, &parts.headers)?;
        Some(Routed {
            service,
            operation: Some(op.to_string()),
            labels,
            params: params.clone(),
        })
    };
    if let Some(scope) = scope_service(parts, &params) {
        // Several services may sign with one name (Kinesis Video's control
        // plane and its media API both sign as `kinesisvideo`): the one
        // whose templates match, else the first answers.
        let scoped: Vec<usize> = (0..state.services.len())
            .filter(|&i| {
                let m = &state.services[i];
                is_rest(m) && m.api.spec().signing_name == scope
            })
            .collect();
        let service = *scoped.first()?;
        return Some(scoped.iter().find_map(|&i| found(i)).unwrap_or(Routed {
            service,
            operation: None,
            labels: Vec::new(),
            params,
        }));
    }
    if virtual_host_bucket(parts).is_some()
        && let Some(service) = state
            .services
            .iter()
            .position(|m| is_rest(m) && m.api.spec().signing_name == "s3")
    {
        return Some(found(service).unwrap_or(Routed {
            service,
            operation: None,
            labels: Vec::new(),
            params,
        }));
    }
    // Without a scope or a virtual host, a POST to `/` or in a JSON or CBOR
    // content type belongs to the JSON protocols, which ignore the path (an
    // unsigned Kinesis call without X-Amz-Target gets Kinesis's answer, not
    // S3's); no S3 operation is a POST to `/`.
    let json_like = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start().to_ascii_lowercase();
            ct.starts_with("application/x-amz-json") || ct.starts_with("application/x-amz-cbor")
        });
    if parts.method == Method::POST && (parts.uri.path() == "/" || json_like) {
        return None;
    }
    let candidates: Vec<usize> = (0..state.services.len())
        .filter(|&i| is_rest(&state.services[i]))
        .collect();
    if let Some(r) = candidates.iter().find_map(|&i| found(i)) {
        return Some(r);
    }
    // A path one service's templates know, with a method none of them takes.
    candidates
        .into_iter()
        .find(|&i| {
            let m = &state.services[i];
            m.rest
                .as_ref()
                .is_some_and(|r| r.any_path_matches(&path_for(m), &params))
        })
        .map(|service| Routed {
            service,
            operation: None,
            labels: Vec::new(),
            params,
        })
}

/// The REST pipeline, in the order of the JSON one: admission and the
/// memory budget, SigV4 over the raw body, binding, model validation,
/// undefined members dropped, then the service, authorizing what its typed
/// input names before it acts; the reply (or error) encoded per protocol.
pub(crate) async fn serve(
    state: &AppState,
    parts: &http::request::Parts,
    body: Incoming,
    routed: Routed,
    request_id: &str,
) -> Response<Body> {
    let started = Instant::now();
    let mounted = &state.services[routed.service];
    let Some(rest) = mounted.rest.clone() else {
        return full_status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let spec = mounted.api.spec();
    let label = routed.operation.clone().unwrap_or_else(|| "unknown".into());
    // Taken once the body has arrived (or starts streaming to the service).
    let mut permit = None;
    let result = pipeline(state, mounted, &rest, parts, body, routed, &mut permit).await;
    let elapsed = started.elapsed();
    match result {
        Ok(Ok(resp)) => {
            state
                .metrics
                .observe(&spec.metrics_name, &label, elapsed.as_secs_f64(), None);
            debug!(operation = %label, micros = elapsed.as_micros() as u64, "ok");
            resp
        }
        Ok(Err(overloaded)) => shed(state, &rest, request_id, overloaded),
        Err(e) => {
            state.metrics.observe(
                &spec.metrics_name,
                &label,
                elapsed.as_secs_f64(),
                Some(e.code),
            );
            if e.status.is_server_error() {
                error!(operation = %label, code = e.code, message = %crate::redact::message_for_log(&e.message), cause = %e.cause_for_log(), "request failed");
            } else {
                let access_key = crate::redact::access_key_id(&parts.headers, parts.uri.query());
                debug!(operation = %label, code = e.code, access_key = access_key.unwrap_or("-"), message = %crate::redact::message_for_log(&e.message), "request refused");
            }
            rest.error_response(&e, request_id)
        }
    }
}

fn full_status(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// The retryable answer of an overloaded server, in the service's protocol.
fn shed(state: &AppState, rest: &RestModel, request_id: &str, message: &str) -> Response<Body> {
    state
        .metrics
        .observe("ripstream", "shed", 0.0, Some("ServiceUnavailable"));
    let mut r = rest.error_response(
        &WireError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            message,
        ),
        request_id,
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// The principal and claims of a request whose body has not been read: the
/// signature checked over the payload hash `x-amz-content-sha256` names,
/// which the body is then held to as it streams. `(None, None)` in
/// anonymous mode.
fn authenticate_before_body<'a>(
    state: &'a AppState,
    parts: &http::request::Parts,
    signing_service: &str,
) -> Result<
    (
        Option<&'a crate::auth::Principal>,
        Option<crate::auth::sigv4::Claims>,
    ),
    WireError,
> {
    let Some(principals) = &state.principals else {
        return Ok((None, None));
    };
    let request = crate::auth::sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        host: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body: &[],
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match crate::auth::sigv4::verify_streamed(
        &request,
        principals.as_ref(),
        &state.region,
        signing_service,
        now,
    )? {
        Some(claims) => Ok((principals.get(&claims.access_key_id), Some(claims))),
        None => Err(crate::auth::missing_token()),
    }
}

/// S3's rule, for every REST service (whose inputs bind headers): a signed
/// request's `x-amz-*` headers must all be signed, in the header or a
/// presigned URL alike, else `403 AccessDenied` naming them. Checked with
/// credentials only; anonymous mode verifies no signature.
fn check_amz_headers_signed(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<(), WireError> {
    if state.principals.is_none() {
        return Ok(());
    }
    let unsigned =
        crate::auth::sigv4::headers_not_signed(&parts.headers, parts.uri.query().unwrap_or(""))?;
    if unsigned.is_empty() {
        return Ok(());
    }
    let mut e = WireError::new(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        "There were headers present in the request which were not signed",
    );
    let mut extra = Map::new();
    extra.insert("HeadersNotSigned".into(), unsigned.join(", ").into());
    e.extra = Some(Box::new(extra));
    Err(e)
}

/// `Ok(Err(message))`: shed, overloaded.
async fn pipeline(
    state: &AppState,
    mounted: &Mounted,
    rest: &RestModel,
    parts: &http::request::Parts,
    body: hyper::body::Incoming,
    routed: Routed,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Result<Response<Body>, &'static str>, WireError> {
    let spec = mounted.api.spec();
    check_amz_headers_signed(state, parts)?;
    let Some(receiving) = crate::router::begin_receiving(state, parts, &body) else {
        return Ok(Err(crate::router::RECEIVING_TOO_MANY));
    };
    // Whether decoding will build values beyond the bytes (a structured body).
    let structured = routed.operation.as_deref().is_some_and(|op| {
        rest.ops
            .get(op)
            .and_then(|o| o.input.as_deref())
            .is_some_and(|input| match rest.payload_of(input) {
                Some(p) => rest
                    .members(input)
                    .iter()
                    .find(|(n, _)| *n == p)
                    .is_some_and(|(_, m)| {
                        !matches!(rest.type_of(member_shape(m)), "blob" | "string")
                    }),
                None => true,
            })
    });
    let decoded = match (structured, rest.protocol) {
        (false, _) => crate::budget::Decoded::Bytes,
        (true, Protocol::RestXml) => crate::budget::Decoded::Xml,
        (true, _) => crate::budget::Decoded::Json,
    };
    let streams = routed
        .operation
        .as_deref()
        .is_some_and(|op| rest.streams_payload(op));
    let dialect = crate::streamed::dialect(rest.protocol);
    let chunked = crate::streamed::chunked_mode(&parts.headers);
    let claimed_hash = crate::streamed::payload_hash(&parts.headers);
    let unsigned = parts
        .headers
        .get("x-amz-content-sha256")
        .is_some_and(|v| v == "UNSIGNED-PAYLOAD");
    // A body streams when its operation's payload does and the signature can
    // be checked before it arrives (a hash, UNSIGNED-PAYLOAD or aws-chunked
    // named in x-amz-content-sha256); aws-chunked bodies are decoded as
    // they arrive for every operation. Other bodies are buffered within the
    // memory budget and verified whole.
    let (bytes, body_stream, principal, _reserved) =
        if chunked.is_some() || (streams && (unsigned || claimed_hash.is_some())) {
            let (principal, claims) = authenticate_before_body(state, parts, &spec.signing_name)?;
            let mut streamed = match (chunked, &claims) {
                (Some(mode), Some(claims)) => {
                    // A service that takes no aws-chunked bodies has them judged as
                    // hashes by SigV4, which a STREAMING-* value never is.
                    if claims.streaming.is_none() {
                        return Err(WireError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidSignatureException",
                            format!(
                                "{} payloads are not accepted by this service.",
                                mode.as_str()
                            ),
                        ));
                    }
                    let decoder = crate::auth::chunked::ChunkedDecoder::for_request(
                        &parts.headers,
                        claims,
                        crate::auth::chunked::Limits::default(),
                    )
                    .map_err(|e| e.to_wire(dialect))?
                    .ok_or_else(|| WireError::internal("aws-chunked claims without a decoder"))?;
                    crate::streamed::StreamedBody::chunked(
                        body,
                        decoder,
                        dialect,
                        BODY_TIMEOUT,
                        &state.budget,
                    )
                }
                // Anonymous mode: nothing to verify, but the framing is never data.
                (Some(mode), None) => {
                    let decoder = crate::auth::chunked::ChunkedDecoder::unverified_for_request(
                        &parts.headers,
                        mode,
                        crate::auth::chunked::Limits::default(),
                    )
                    .map_err(|e| e.to_wire(dialect))?;
                    crate::streamed::StreamedBody::chunked(
                        body,
                        decoder,
                        dialect,
                        BODY_TIMEOUT,
                        &state.budget,
                    )
                }
                (None, claims) => crate::streamed::StreamedBody::plain(
                    body,
                    claims.as_ref().and(claimed_hash),
                    dialect,
                    BODY_TIMEOUT,
                ),
            };
            if streams {
                (Bytes::new(), Some(streamed), principal, None)
            } else {
                let collected = crate::budget::collect_body(
                    &mut streamed,
                    state.max_body_bytes,
                    &state.budget,
                    BODY_TIMEOUT,
                    decoded,
                )
                .await;
                match collected {
                    Ok((bytes, reserved)) => (bytes, None, principal, Some(reserved)),
                    Err(crate::budget::BodyError::Busy) => {
                        return Ok(Err(crate::router::BUFFERING_TOO_MANY));
                    }
                    Err(e) => return Err(streamed.take_failure().unwrap_or_else(|| e.to_wire())),
                }
            }
        } else {
            let (bytes, reserved) = match crate::budget::collect_body(
                body,
                state.max_body_bytes,
                &state.budget,
                BODY_TIMEOUT,
                decoded,
            )
            .await
            {
                Ok(b) => b,
                Err(crate::budget::BodyError::Busy) => {
                    return Ok(Err(crate::router::BUFFERING_TOO_MANY));
                }
                Err(e) => return Err(e.to_wire()),
            };
            // With credentials, authenticate over the raw bytes before
            // decoding anything; anonymous mode checks the signature's form
            // where AWS does, once the operation is known and its input bound.
            let principal = if crate::router::authenticates_first(state) {
                crate::router::authenticate(state, parts, &bytes, &spec.signing_name)?
            } else {
                None
            };
            if streams {
                // Signed over a body hash the client left for the server to
                // compute: verified whole, then handed over as a stream.
                let streamed = crate::streamed::StreamedBody::buffered(bytes, dialect);
                (Bytes::new(), Some(streamed), principal, Some(reserved))
            } else {
                (bytes, None, principal, Some(reserved))
            }
        };
    // A body that streams to the service is still arriving while it runs.
    let _receiving = body_stream.is_some().then_some(receiving);
    match crate::router::take_in_flight(state) {
        Some(p) => *slot = Some(p),
        None => return Ok(Err(crate::router::IN_FLIGHT_TOO_MANY)),
    }
    let Some(op) = routed.operation.as_deref() else {
        return Err(WireError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!(
                "No operation of this service matches {} {}",
                parts.method,
                parts.uri.path()
            ),
        ));
    };
    if let Some(label) = rest.label_with_slash(op, &routed.labels) {
        return Err(match (rest.protocol, label) {
            (Protocol::RestXml, "Bucket") => WireError::new(
                StatusCode::BAD_REQUEST,
                "InvalidBucketName",
                "The specified bucket is not valid.",
            ),
            _ => WireError::new(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                format!("The {label} in the request's path must not contain '/'."),
            ),
        });
    }
    let incoming = Sources {
        headers: &parts.headers,
        labels: &routed.labels,
        params: &routed.params,
        body: &bytes,
    };
    let mut value = rest.bind(op, &incoming)?;
    if !crate::router::authenticates_first(state) {
        // The body (aws-chunked or not) was decoded without verification above.
        crate::router::check_anonymous_signature(state, parts)?;
    }
    mounted.model.validate(op, &mut value)?;
    mounted.model.retain_defined_members(op, &mut value);
    if !mounted.api.supports(op) {
        return Err(match rest.protocol {
            Protocol::RestXml => WireError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                format!("Operation {op} is not supported by this version of Ripstream."),
            ),
            _ => WireError::new(
                StatusCode::BAD_REQUEST,
                "UnknownOperationException",
                format!("Operation {op} is not supported by this version of Ripstream."),
            ),
        });
    }
    let body_stream = body_stream.map(|b| Box::pin(b) as ripstream_api::BodyStream);
    let reply =
        crate::router::run_operation(state, mounted, op, value, body_stream, principal, slot)
            .await?;
    rest.encode(op, &parts.method, reply).map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(method: &str, uri: &str) -> Route {
        Route::parse(method, uri, "Op").unwrap()
    }

    fn params(q: &str) -> Vec<(String, String)> {
        crate::auth::sigv4::query_params(q)
    }

    #[test]
    fn templates_bind_labels_greedy_keys_and_literal_query_parts() {
        let get = route("GET", "/{Bucket}/{Key+}");
        assert_eq!(
            get.matches("/b/a/b%20c/d", &[]),
            Some(vec![
                ("Bucket".into(), "b".into()),
                ("Key".into(), "a/b c/d".into())
            ])
        );
        assert_eq!(get.matches("/b", &[]), None);
        assert_eq!(get.matches("/b/", &[]), None);
        let list = route("GET", "/{Bucket}?list-type=2");
        assert!(
            list.matches("/b", &params("list-type=2&prefix=x"))
                .is_some()
        );
        assert!(list.matches("/b/", &params("list-type=2")).is_some());
        assert!(list.matches("/b", &params("list-type=1")).is_none());
        let uploads = route("POST", "/{Bucket}/{Key+}?uploads");
        assert!(uploads.matches("/b/k", &params("uploads")).is_some());
        assert!(uploads.matches("/b/k", &[]).is_none());
        let mixed = route("GET", "/streams/{Name}/shard-{Id}");
        assert_eq!(
            mixed.matches("/streams/s/shard-7", &[]),
            Some(vec![("Name".into(), "s".into()), ("Id".into(), "7".into())])
        );
        assert!(mixed.matches("/streams/s/shard-", &[]).is_none());
        assert!(Route::parse("GET", "/{Key+}/x", "Op").is_err());
    }

    #[test]
    fn the_more_specific_template_wins() {
        let model = json!({
            "metadata": {"protocol": "rest-xml", "endpointPrefix": "x"},
            "operations": {
                "GetObject": {"http": {"method": "GET", "requestUri": "/{Bucket}/{Key+}"}},
                "GetAcl": {"http": {"method": "GET", "requestUri": "/{Bucket}/{Key+}?acl"}},
                "ListObjects": {"http": {"method": "GET", "requestUri": "/{Bucket}"}},
                "ListObjectsV2": {"http": {"method": "GET", "requestUri": "/{Bucket}?list-type=2"}},
                "Special": {"http": {"method": "GET", "requestUri": "/{Bucket}/special"}},
                "ListBuckets": {"http": {"method": "GET", "requestUri": "/"}}
            },
            "shapes": {}
        });
        let m = RestModel::parse(&model.to_string(), Protocol::RestXml).unwrap();
        let op = |path: &str, q: &str| {
            m.find(&Method::GET, path, &params(q), &HeaderMap::new())
                .map(|(o, _)| o.to_string())
        };
        assert_eq!(op("/b/k", "").as_deref(), Some("GetObject"));
        assert_eq!(op("/b/k", "acl").as_deref(), Some("GetAcl"));
        assert_eq!(op("/b", "").as_deref(), Some("ListObjects"));
        assert_eq!(op("/b", "list-type=2").as_deref(), Some("ListObjectsV2"));
        assert_eq!(op("/b/special", "").as_deref(), Some("Special"));
        assert_eq!(op("/", "").as_deref(), Some("ListBuckets"));
        assert_eq!(
            m.find(&Method::PUT, "/b", &[], &HeaderMap::new())
                .map(|x| x.0),
            None
        );
    }

    #[test]
    fn operations_of_one_template_are_told_apart_by_what_they_require() {
        // S3's PUT /{Bucket}/{Key+}: PutObject, CopyObject (a required
        // header), UploadPart (required query parameters).
        let model = json!({
            "metadata": {"protocol": "rest-xml", "endpointPrefix": "x"},
            "operations": {
                "PutObject": {"http": {"method": "PUT", "requestUri": "/{Bucket}/{Key+}"},
                    "input": {"shape": "PutIn"}},
                "CopyObject": {"http": {"method": "PUT", "requestUri": "/{Bucket}/{Key+}"},
                    "input": {"shape": "CopyIn"}},
                "UploadPart": {"http": {"method": "PUT", "requestUri": "/{Bucket}/{Key+}"},
                    "input": {"shape": "PartIn"}},
                "Lone": {"http": {"method": "POST", "requestUri": "/{Bucket}"},
                    "input": {"shape": "LoneIn"}}
            },
            "shapes": {
                "S": {"type": "string"},
                "PutIn": {"type": "structure", "required": ["Bucket", "Key"], "members": {
                    "Bucket": {"shape": "S", "location": "uri", "locationName": "Bucket"},
                    "Key": {"shape": "S", "location": "uri", "locationName": "Key"}}},
                "CopyIn": {"type": "structure", "required": ["Bucket", "Key", "CopySource"], "members": {
                    "Bucket": {"shape": "S", "location": "uri", "locationName": "Bucket"},
                    "Key": {"shape": "S", "location": "uri", "locationName": "Key"},
                    "CopySource": {"shape": "S", "location": "header", "locationName": "x-amz-copy-source"}}},
                "PartIn": {"type": "structure", "required": ["Bucket", "Key", "PartNumber", "UploadId"], "members": {
                    "Bucket": {"shape": "S", "location": "uri", "locationName": "Bucket"},
                    "Key": {"shape": "S", "location": "uri", "locationName": "Key"},
                    "PartNumber": {"shape": "S", "location": "querystring", "locationName": "partNumber"},
                    "UploadId": {"shape": "S", "location": "querystring", "locationName": "uploadId"}}},
                "LoneIn": {"type": "structure", "required": ["Token"], "members": {
                    "Token": {"shape": "S", "location": "header", "locationName": "x-token"}}}
            }
        });
        let m = RestModel::parse(&model.to_string(), Protocol::RestXml).unwrap();
        let op = |method: Method, q: &str, headers: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(*k, HeaderValue::from_static(v));
            }
            m.find(
                &method,
                if method == Method::POST { "/b" } else { "/b/k" },
                &params(q),
                &h,
            )
            .map(|(o, _)| o.to_string())
        };
        assert_eq!(op(Method::PUT, "", &[]).as_deref(), Some("PutObject"));
        assert_eq!(
            op(Method::PUT, "", &[("x-amz-copy-source", "src/k")]).as_deref(),
            Some("CopyObject")
        );
        assert_eq!(
            op(Method::PUT, "partNumber=1&uploadId=u", &[]).as_deref(),
            Some("UploadPart")
        );
        // Half of UploadPart's parameters: a plain PutObject, as S3 reads it.
        assert_eq!(
            op(Method::PUT, "partNumber=1", &[]).as_deref(),
            Some("PutObject")
        );
        // A template no other operation shares is routed without its
        // required members (validation then names what is missing).
        assert_eq!(op(Method::POST, "", &[]).as_deref(), Some("Lone"));
    }

    #[tokio::test]
    async fn a_raw_payload_reply_keeps_its_bytes_status_and_headers() {
        let model = json!({
            "metadata": {"protocol": "rest-xml", "endpointPrefix": "x"},
            "operations": {
                "GetObject": {"http": {"method": "GET", "requestUri": "/{Bucket}/{Key+}"},
                    "output": {"shape": "Out"}}
            },
            "shapes": {
                "S": {"type": "string"},
                "B": {"type": "blob", "streaming": true},
                "Out": {"type": "structure", "payload": "Body", "members": {
                    "Body": {"shape": "B"},
                    "ETag": {"shape": "S", "location": "header", "locationName": "ETag"},
                    "ContentRange": {"shape": "S", "location": "header", "locationName": "Content-Range"},
                    "ContentType": {"shape": "S", "location": "header", "locationName": "Content-Type"}}}
            }
        });
        let m = RestModel::parse(&model.to_string(), Protocol::RestXml).unwrap();
        let reply = Reply::Payload {
            output: br#"{"ETag": "\"abc\"", "ContentRange": "bytes 1-3/10"}"#.to_vec(),
            body: ripstream_api::Payload::Bytes(Bytes::from_static(b"\x00\xffz")),
            status: Some(StatusCode::PARTIAL_CONTENT),
        };
        let r = m.encode("GetObject", &Method::GET, reply).unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()["etag"], "\"abc\"");
        assert_eq!(r.headers()["content-range"], "bytes 1-3/10");
        assert_eq!(r.headers()["content-type"], "application/octet-stream");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"\x00\xffz");
        // A streamed payload: its declared length, its pieces in order.
        struct Pieces(Vec<Bytes>);
        impl futures_core::Stream for Pieces {
            type Item = Result<Bytes, ripstream_api::BoxError>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                let next = (!self.0.is_empty()).then(|| Ok(self.0.remove(0)));
                std::task::Poll::Ready(next)
            }
        }
        let reply = Reply::Payload {
            output: b"{}".to_vec(),
            body: ripstream_api::Payload::Stream {
                len: 6,
                stream: Box::pin(Pieces(vec![
                    Bytes::from_static(b"abc"),
                    Bytes::from_static(b"defXYZ"),
                ])),
            },
            status: None,
        };
        let r = m.encode("GetObject", &Method::GET, reply).unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(hyper::body::Body::size_hint(r.body()).exact(), Some(6));
        let body = r.into_body().collect().await.unwrap().to_bytes();
        // Never more than declared.
        assert_eq!(&body[..], b"abcdef");
        // 304: the validators, no body and no content type.
        let reply = Reply::Payload {
            output: br#"{"ETag": "\"abc\""}"#.to_vec(),
            body: ripstream_api::Payload::Bytes(Bytes::new()),
            status: Some(StatusCode::NOT_MODIFIED),
        };
        let r = m.encode("GetObject", &Method::GET, reply).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(!r.headers().contains_key("content-type"));
        assert_eq!(r.headers()["etag"], "\"abc\"");
    }

    #[test]
    fn timestamps_in_each_format() {
        assert_eq!(parse_iso8601("2026-12-03T09:22:39Z"), Some(1_796_289_759.0));
        assert_eq!(
            parse_iso8601("2026-12-03T09:22:39.5Z"),
            Some(1_796_289_759.5)
        );
        assert_eq!(
            parse_iso8601("2026-12-03T10:22:39+01:00"),
            Some(1_796_289_759.0)
        );
        assert_eq!(parse_iso8601("2026-12-03 09:22:39Z"), None);
        assert_eq!(format_iso8601(1_796_289_759.0), "2026-12-03T09:22:39.000Z");
        assert_eq!(
            format_http_date(1_796_289_759.0),
            "Thu, 03 Dec 2026 09:22:39 GMT"
        );
        assert_eq!(
            parse_http_date("Thu, 03 Dec 2026 09:22:39 GMT"),
            Some(1_796_289_759.0)
        );
        assert_eq!(parse_http_date("Thu, 03 Dec 2026 09:22:39"), None);
        assert_eq!(format_http_date(0.0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // Out of the formats' range: clamped, never a broken string or a panic.
        assert_eq!(format_iso8601(1e300), "9999-12-31T23:59:59.000Z");
        assert_eq!(format_http_date(-1e300), "Mon, 01 Jan 0001 00:00:00 GMT");
    }

    #[test]
    fn xml_attributes_and_elements_are_capped() {
        let tag = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
            format!("<r{attrs}/>")
        };
        assert_eq!(parse_xml(tag(32).as_bytes()).unwrap().attrs.len(), 32);
        assert!(parse_xml(tag(33).as_bytes()).is_err());
        // A million attributes on one tag are refused after the 33rd, not
        // compared pairwise.
        let started = std::time::Instant::now();
        assert!(parse_xml(tag(1_000_000).as_bytes()).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Duplicates are not looked for (the first is read).
        assert!(parse_xml(b"<r a=\"1\" a=\"2\"/>").is_ok());
        let many = |n: usize| format!("<r>{}</r>", "<e/>".repeat(n - 1));
        assert!(parse_xml(many(MAX_XML_ELEMENTS).as_bytes()).is_ok());
        assert!(parse_xml(many(MAX_XML_ELEMENTS + 1).as_bytes()).is_err());
    }

    #[test]
    fn xml_is_refused_when_malformed_deep_or_with_a_dtd() {
        assert!(parse_xml(b"<a><b>x</b></a>").is_ok());
        assert!(parse_xml(b"<a><b>x</a>").is_err());
        assert!(parse_xml(b"<a>").is_err());
        assert!(parse_xml(b"").is_err());
        assert!(parse_xml(b"<a/><b/>").is_err());
        assert!(parse_xml(b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>").is_err());
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert!(parse_xml(deep.as_bytes()).is_err());
        let el = parse_xml(b"<a k=\"1&amp;2\">x &lt; y&#33;<![CDATA[<z>]]></a>").unwrap();
        assert_eq!(el.text, "x < y!<z>");
        assert_eq!(el.attrs, vec![("k".to_string(), "1&2".to_string())]);
    }

    proptest::proptest! {
        /// Whatever a client sends (paths, queries, headers, bodies, XML)
        /// is routed, bound and parsed without a panic.
        #[test]
        fn hostile_requests_never_panic(
            path in "(/[a-zA-Z0-9%./+ -]{0,12}){0,5}",
            query in "[a-z0-9=&%-]{0,30}",
            header in "[ -~]{0,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            xml in "(<[a-zA-Z]{1,3}( a=\"[a-z&;]{0,4}\")?/?>|</[a-zA-Z]{1,3}>|[a-z&;#0-9x ]{0,5}|<!\\[CDATA\\[x\\]\\]>){0,20}",
        ) {
            let model = RestModel::parse(
                include_str!("../tests/data/s3-2006-03-01-trimmed.json"),
                Protocol::RestXml,
            )
            .unwrap();
            let json_model = RestModel::parse(
                include_str!("../tests/data/s3-2006-03-01-trimmed.json"),
                Protocol::RestJson1,
            )
            .unwrap();
            let params = params(&query);
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&header) {
                for name in ["if-modified-since", "content-length", "x-amz-meta-a", "x-amz-acl"] {
                    headers.insert(name, v.clone());
                }
            }
            for method in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
                for m in [&model, &json_model] {
                    if let Some((op, labels)) = m.find(&method, &path, &params, &HeaderMap::new()) {
                        for b in [Bytes::from(body.clone()), Bytes::from(xml.clone())] {
                            let sources = Sources {
                                headers: &headers,
                                labels: &labels,
                                params: &params,
                                body: &b,
                            };
                            let _ = m.bind(op, &sources);
                        }
                    }
                }
            }
            let _ = parse_xml(xml.as_bytes());
            let _ = parse_xml(&body);
            let _ = parse_iso8601(&header);
            let _ = parse_http_date(&header);
        }
    }

    #[test]
    fn a_query_map_leaves_out_the_signature_of_a_presigned_request() {
        let model = json!({
            "metadata": {"protocol": "rest-json", "endpointPrefix": "x"},
            "operations": {"List": {"http": {"method": "GET", "requestUri": "/items"},
                "input": {"shape": "ListInput"}}},
            "shapes": {
                "S": {"type": "string"},
                "Filters": {"type": "map", "key": {"shape": "S"}, "value": {"shape": "S"}},
                "ListInput": {"type": "structure", "members": {
                    "Prefix": {"shape": "S", "location": "querystring", "locationName": "prefix"},
                    "Filters": {"shape": "Filters", "location": "querystring"}}}
            }
        });
        let m = RestModel::parse(&model.to_string(), Protocol::RestJson1).unwrap();
        let params = params(
            "prefix=p&color=red&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2Fb&X-Amz-Date=20261203T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=ff&X-Amz-Security-Token=t",
        );
        let sources = Sources {
            headers: &HeaderMap::new(),
            labels: &[],
            params: &params,
            body: &Bytes::new(),
        };
        assert_eq!(
            m.bind("List", &sources).unwrap(),
            json!({"Prefix": "p", "Filters": {"color": "red"}})
        );
    }

    #[test]
    fn virtual_hosts_name_buckets() {
        let parts = |host: &str| {
            let (p, ()) = http::Request::builder()
                .uri("/k")
                .header("host", host)
                .body(())
                .unwrap()
                .into_parts();
            p
        };
        assert_eq!(
            virtual_host_bucket(&parts("my.bucket.s3.us-east-1.amazonaws.com")).as_deref(),
            Some("my.bucket")
        );
        assert_eq!(
            virtual_host_bucket(&parts("b.localhost:4566")).as_deref(),
            Some("b")
        );
        assert_eq!(virtual_host_bucket(&parts("s3.amazonaws.com")), None);
        assert_eq!(virtual_host_bucket(&parts("s3.localhost")), None);
        assert_eq!(virtual_host_bucket(&parts("localhost:4566")), None);
        assert_eq!(virtual_host_bucket(&parts("127.0.0.1:4566")), None);
    }
}
