//! The awsQuery protocol (STS): `POST /` with a form body (or a query
//! string) naming `Action` and `Version`, answered in XML.
//!
//! One codec for every awsQuery service: the form is bound into the same
//! JSON form the JSON protocols hand their services, guided by the model's
//! shapes (`Member.member.N` lists, `Map.entry.N.key`/`.value` maps,
//! `Struct.Member` nesting), and the JSON-form output is written as
//! `<OpResponse><OpResult>..</OpResult><ResponseMetadata>..` under the
//! model's `xmlNamespace`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ripstream_api::Reply;
use serde_json::{Map, Value};
use tracing::{debug, error};

use crate::wire::WireError;
use crate::{AppState, Mounted};

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

const FORM: &str = "application/x-www-form-urlencoded";
/// Longest wait for a request body once its headers arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Deepest nesting of shapes bound from a form or written as XML.
const MAX_DEPTH: usize = 32;
/// Largest awsQuery body: STS requests are tiny (a session policy is at most
/// 2048 packed characters), and the body's form becomes a map.
const MAX_BODY: usize = 64 * 1024;
/// Most form parameters (body and URL together) of one request; STS's
/// largest requests (50 tags, 10 policy ARNs) have fewer than 200.
const MAX_PARAMETERS: usize = 1000;

/// An awsQuery service's model, as its codec reads it.
#[derive(Debug)]
pub(crate) struct QueryModel {
    namespace: String,
    version: String,
    ops: HashMap<String, QueryOp>,
    shapes: Map<String, Value>,
}

/// An operation's shapes, and the element its reply's members go under.
#[derive(Debug, Clone, Default)]
struct QueryOp {
    input: Option<String>,
    output: Option<String>,
    result_wrapper: Option<String>,
}

impl QueryModel {
    pub(crate) fn parse(text: &str) -> Result<QueryModel, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let meta = &doc["metadata"];
        let version = meta["apiVersion"]
            .as_str()
            .ok_or("an awsQuery model needs metadata.apiVersion")?
            .to_string();
        let namespace = meta["xmlNamespace"].as_str().unwrap_or("").to_string();
        let mut ops = HashMap::new();
        for (name, op) in doc["operations"]
            .as_object()
            .ok_or("model has no operations")?
        {
            let shape = |k: &str| op[k]["shape"].as_str().map(String::from);
            let op = QueryOp {
                input: shape("input"),
                output: shape("output"),
                result_wrapper: op["output"]["resultWrapper"].as_str().map(String::from),
            };
            ops.insert(name.clone(), op);
        }
        let shapes = doc["shapes"].as_object().cloned().unwrap_or_default();
        Ok(QueryModel {
            namespace,
            version,
            ops,
            shapes,
        })
    }

    fn shape(&self, name: &str) -> Option<&Value> {
        self.shapes.get(name)
    }

    fn type_of(&self, name: &str) -> &str {
        self.shape(name)
            .and_then(|s| s["type"].as_str())
            .unwrap_or("")
    }

    /// Binds the form's parameters under `prefix` into the JSON form of
    /// `shape`; `None` when the form has none of it.
    fn bind(
        &self,
        shape: &str,
        prefix: &str,
        form: &HashMap<String, String>,
        depth: usize,
    ) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let s = self.shape(shape)?;
        let at = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        match self.type_of(shape) {
            "structure" => {
                let mut out = Map::new();
                for (name, m) in s["members"].as_object()? {
                    let wire = m["locationName"].as_str().unwrap_or(name);
                    let member = m["shape"].as_str().unwrap_or("");
                    if let Some(v) = self.bind(member, &at(wire), form, depth + 1) {
                        out.insert(name.clone(), v);
                    }
                }
                (!out.is_empty() || (prefix.is_empty() && depth == 0)).then_some(Value::Object(out))
            }
            "list" => {
                let member = s["member"]["shape"].as_str().unwrap_or("");
                let item = if s["flattened"].as_bool() == Some(true) {
                    prefix.to_string()
                } else {
                    at(s["member"]["locationName"].as_str().unwrap_or("member"))
                };
                let mut items = Vec::new();
                // Items are numbered from 1 without gaps; a form can name at
                // most as many as it has parameters.
                for n in 1..=form.len() {
                    match self.bind(member, &format!("{item}.{n}"), form, depth + 1) {
                        Some(v) => items.push(v),
                        None => break,
                    }
                }
                // `List=` (no items) is how the SDKs send an empty list.
                (!items.is_empty() || form.get(prefix).is_some_and(String::is_empty))
                    .then_some(Value::Array(items))
            }
            "map" => {
                let entry = if s["flattened"].as_bool() == Some(true) {
                    prefix.to_string()
                } else {
                    at("entry")
                };
                let key_name = s["key"]["locationName"].as_str().unwrap_or("key");
                let value_name = s["value"]["locationName"].as_str().unwrap_or("value");
                let value_shape = s["value"]["shape"].as_str().unwrap_or("");
                let mut out = Map::new();
                for n in 1..=form.len() {
                    let Some(key) = form.get(&format!("{entry}.{n}.{key_name}")) else {
                        break;
                    };
                    let value = self
                        .bind(
                            value_shape,
                            &format!("{entry}.{n}.{value_name}"),
                            form,
                            depth + 1,
                        )
                        .unwrap_or(Value::Null);
                    out.insert(key.clone(), value);
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            kind => {
                let text = form.get(prefix)?;
                Some(scalar(kind, text))
            }
        }
    }

    /// Writes the JSON form `v` of `shape` as the XML of awsQuery replies.
    fn write(&self, out: &mut String, shape: &str, v: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(s) = self.shape(shape) else { return };
        match (self.type_of(shape), v) {
            ("structure", Value::Object(fields)) => {
                for (name, m) in s["members"].as_object().into_iter().flatten() {
                    let Some(field) = fields.get(name).filter(|f| !f.is_null()) else {
                        continue;
                    };
                    let wire = m["locationName"].as_str().unwrap_or(name);
                    let member = m["shape"].as_str().unwrap_or("");
                    let flattened = self
                        .shape(member)
                        .is_some_and(|t| t["flattened"].as_bool() == Some(true));
                    if flattened {
                        // A flattened list repeats its element in place of a wrapper.
                        self.write_items(out, member, wire, field, depth);
                        continue;
                    }
                    out.push_str(&format!("<{wire}>"));
                    self.write(out, member, field, depth + 1);
                    out.push_str(&format!("</{wire}>"));
                }
            }
            ("list", _) => {
                let element = s["member"]["locationName"].as_str().unwrap_or("member");
                self.write_items(out, shape, element, v, depth);
            }
            ("map", Value::Object(entries)) => {
                let key_name = s["key"]["locationName"].as_str().unwrap_or("key");
                let value_name = s["value"]["locationName"].as_str().unwrap_or("value");
                let value_shape = s["value"]["shape"].as_str().unwrap_or("");
                for (k, val) in entries {
                    out.push_str(&format!(
                        "<entry><{key_name}>{}</{key_name}><{value_name}>",
                        escape(k)
                    ));
                    self.write(out, value_shape, val, depth + 1);
                    out.push_str(&format!("</{value_name}></entry>"));
                }
            }
            ("timestamp", Value::Number(n)) => {
                out.push_str(&crate::rest::format_iso8601(n.as_f64().unwrap_or(0.0)));
            }
            (_, Value::String(text)) => out.push_str(&escape(text)),
            (_, Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            (_, Value::Number(n)) => out.push_str(&n.to_string()),
            _ => {}
        }
    }

    fn write_items(&self, out: &mut String, list: &str, element: &str, v: &Value, depth: usize) {
        let member = self
            .shape(list)
            .and_then(|s| s["member"]["shape"].as_str())
            .unwrap_or("");
        for item in v.as_array().into_iter().flatten() {
            out.push_str(&format!("<{element}>"));
            self.write(out, member, item, depth + 1);
            out.push_str(&format!("</{element}>"));
        }
    }

    /// The reply of `op`: its output's members under `<OpResult>` (the
    /// model's `resultWrapper`), then the request id.
    fn encode(&self, op: &str, reply: Reply, request_id: &str) -> Result<String, WireError> {
        let QueryOp {
            output,
            result_wrapper: wrapper,
            ..
        } = self.ops.get(op).cloned().unwrap_or_default();
        let mut out = format!("<{op}Response xmlns=\"{}\">", escape(&self.namespace));
        match reply {
            Reply::Empty => {}
            Reply::Json(bytes) => {
                let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    WireError::internal(format!("could not encode the response: {e}"))
                })?;
                let wrapper = wrapper.unwrap_or_else(|| format!("{op}Result"));
                out.push_str(&format!("<{wrapper}>"));
                if let Some(shape) = output {
                    self.write(&mut out, &shape, &value, 0);
                }
                out.push_str(&format!("</{wrapper}>"));
            }
            Reply::Events(_) => {
                return Err(WireError::internal(
                    "an event stream cannot be sent over awsQuery",
                ));
            }
            Reply::Payload { .. } => {
                return Err(WireError::internal(
                    "a raw payload cannot be sent over awsQuery",
                ));
            }
        }
        out.push_str(&format!(
            "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{op}Response>",
            escape(request_id)
        ));
        Ok(out)
    }

    /// `<ErrorResponse>`, with AWS's awsQuery names for the front door's
    /// errors (`SignatureDoesNotMatch`, `ValidationError`, ...).
    fn error_response(&self, e: &WireError, request_id: &str) -> Response<Body> {
        let (code, status) = front_door_code(e.code, e.status);
        let kind = if status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let body = format!(
            "<ErrorResponse xmlns=\"{}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            escape(&self.namespace),
            escape(code),
            escape(&e.message),
            escape(request_id)
        );
        let mut r = xml(status, body);
        e.add_headers(r.headers_mut());
        r
    }
}

/// A scalar parameter in the JSON form its shape's type takes; a value of
/// the wrong syntax stays a string, so validation reports it as it does
/// for JSON.
fn scalar(kind: &str, text: &str) -> Value {
    match kind {
        "integer" | "long" => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| text.into()),
        "float" | "double" => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| text.into()),
        "boolean" => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => text.into(),
        },
        "timestamp" => crate::rest::parse_iso8601(text)
            .or_else(|| text.parse::<f64>().ok())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| text.into()),
        // Strings, and blobs (base64 in both the form and the JSON form).
        _ => text.into(),
    }
}

/// The awsQuery codes of the front door's own errors, as STS names them.
fn front_door_code(code: &'static str, status: StatusCode) -> (&'static str, StatusCode) {
    let forbidden = StatusCode::FORBIDDEN;
    match code {
        "InvalidSignatureException" => ("SignatureDoesNotMatch", forbidden),
        "UnrecognizedClientException" => ("InvalidClientTokenId", forbidden),
        "MissingAuthenticationTokenException" => ("MissingAuthenticationToken", forbidden),
        "IncompleteSignatureException" => ("IncompleteSignature", StatusCode::BAD_REQUEST),
        "AccessDeniedException" => ("AccessDenied", forbidden),
        "ValidationException" => ("ValidationError", StatusCode::BAD_REQUEST),
        "SerializationException" => ("InvalidParameterValue", StatusCode::BAD_REQUEST),
        "ServiceUnavailableException" => ("ServiceUnavailable", status),
        "RequestTimeoutException" => ("RequestTimeout", StatusCode::BAD_REQUEST),
        _ => (code, status),
    }
}

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

fn xml(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    r
}

/// `a=1&b=x+y`: form encoding, where `+` is a space.
/// How a form's text is decoded: a body as `application/x-www-form-urlencoded`
/// (`+` is a space; the body is signed by its hash, so that is unambiguous),
/// the URL's query as SigV4 decodes it for the signature (`+` is itself),
/// so the parameters bound are the parameters signed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FormText {
    Body,
    UrlQuery,
}

/// Adds `text`'s parameters to `into` (the first of a name wins). `None`
/// when the request has more than [`MAX_PARAMETERS`] pairs in all, counted
/// as they are read, so a body of a million tiny keys is never a map.
fn parse_form(text: &str, how: FormText, into: &mut HashMap<String, String>) -> Option<()> {
    let mut seen = into.len();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        seen += 1;
        if seen > MAX_PARAMETERS {
            return None;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| match how {
            FormText::Body => crate::auth::sigv4::percent_decode(&s.replace('+', " ")),
            FormText::UrlQuery => crate::auth::sigv4::percent_decode(s),
        };
        into.entry(decode(k)).or_insert_with(|| decode(v));
    }
    Some(())
}

fn too_many_parameters() -> WireError {
    WireError::new(
        StatusCode::BAD_REQUEST,
        "MalformedQueryString",
        format!("The request has more than {MAX_PARAMETERS} parameters."),
    )
}

/// Whether a request presents a signature of either kind (however malformed).
fn carries_signature(parts: &http::request::Parts) -> bool {
    parts.headers.contains_key(http::header::AUTHORIZATION)
        || crate::auth::sigv4::query_params(parts.uri.query().unwrap_or(""))
            .iter()
            .any(|(k, _)| k.starts_with("X-Amz-"))
}

fn is_form(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM))
}

/// The awsQuery service a request without `X-Amz-Target` is for: the one
/// its SigV4 credential scope names, else (unsigned) the first one, when the
/// request is a form `POST` or a `GET` naming an `Action`. `by_scope` tells
/// the pipeline whether the body's `Action` may still pick another.
#[derive(Debug)]
pub(crate) struct Routed {
    service: usize,
    by_scope: bool,
}

pub(crate) fn route(state: &AppState, parts: &http::request::Parts) -> Option<Routed> {
    let is_query = |m: &Mounted| m.query.is_some();
    let first = state.services.iter().position(is_query)?;
    let params = crate::auth::sigv4::query_params(parts.uri.query().unwrap_or(""));
    if let Some(scope) = crate::rest::scope_service(parts, &params) {
        let service = state
            .services
            .iter()
            .position(|m| is_query(m) && m.api.spec().signing_name == scope)?;
        return Some(Routed {
            service,
            by_scope: true,
        });
    }
    let action_in_query = params.iter().any(|(k, _)| k == "Action");
    let ours = match parts.method {
        Method::POST => is_form(parts),
        Method::GET => action_in_query,
        _ => false,
    };
    ours.then_some(Routed {
        service: first,
        by_scope: false,
    })
}

/// The awsQuery pipeline, in the order of the others: admission and the
/// memory budget, SigV4 over the raw body, `Action` and `Version`, binding,
/// model validation, undefined members dropped, then the service.
pub(crate) async fn serve(
    state: &AppState,
    parts: &http::request::Parts,
    body: Incoming,
    routed: Routed,
    request_id: &str,
) -> Response<Body> {
    let started = Instant::now();
    // Taken once the body has arrived.
    let mut permit = None;
    let mut service = routed.service;
    let mut label = String::from("unknown");
    let result = pipeline(
        state,
        parts,
        body,
        &routed,
        &mut service,
        &mut label,
        &mut permit,
        request_id,
    )
    .await;
    let elapsed = started.elapsed();
    let mounted = &state.services[service];
    let name = mounted.api.spec().metrics_name.as_str();
    match result {
        Ok(Ok(resp)) => {
            state
                .metrics
                .observe(name, &label, elapsed.as_secs_f64(), None);
            debug!(operation = %label, micros = elapsed.as_micros() as u64, "ok");
            resp
        }
        Ok(Err(overloaded)) => shed(state, service, request_id, overloaded),
        Err(e) => {
            state
                .metrics
                .observe(name, &label, elapsed.as_secs_f64(), Some(e.code));
            if e.status.is_server_error() {
                error!(operation = %label, code = e.code, message = %crate::redact::message_for_log(&e.message), cause = %e.cause_for_log(), "request failed");
            } else {
                let access_key = crate::redact::access_key_id(&parts.headers, parts.uri.query());
                debug!(operation = %label, code = e.code, access_key = access_key.unwrap_or("-"), message = %crate::redact::message_for_log(&e.message), "request refused");
            }
            match &mounted.query {
                Some(q) => q.error_response(&e, request_id),
                None => xml(e.status, String::new()),
            }
        }
    }
}

fn shed(state: &AppState, service: usize, request_id: &str, message: &str) -> Response<Body> {
    state
        .metrics
        .observe("ripstream", "shed", 0.0, Some("ServiceUnavailable"));
    let e = WireError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        message,
    );
    let mut r = match &state.services[service].query {
        Some(q) => q.error_response(&e, request_id),
        None => xml(e.status, String::new()),
    };
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// `Ok(Err(message))`: shed, overloaded.
#[allow(clippy::too_many_arguments)]
async fn pipeline(
    state: &AppState,
    parts: &http::request::Parts,
    body: Incoming,
    routed: &Routed,
    service: &mut usize,
    label: &mut String,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    request_id: &str,
) -> Result<Result<Response<Body>, &'static str>, WireError> {
    let Some(receiving) = crate::router::begin_receiving(state, parts, &body) else {
        return Ok(Err(crate::router::RECEIVING_TOO_MANY));
    };
    let (bytes, _reserved) = match crate::budget::collect_body(
        body,
        state.max_body_bytes.min(MAX_BODY),
        &state.budget,
        BODY_TIMEOUT,
        crate::budget::Decoded::Bytes,
    )
    .await
    {
        Ok(b) => b,
        Err(crate::budget::BodyError::Busy) => return Ok(Err(crate::router::BUFFERING_TOO_MANY)),
        Err(e) => return Err(e.to_wire()),
    };
    drop(receiving);
    match crate::router::take_in_flight(state) {
        Some(p) => *slot = Some(p),
        None => return Ok(Err(crate::router::IN_FLIGHT_TOO_MANY)),
    }
    let signing = state.services[*service].api.spec().signing_name.clone();
    // Authenticate over the raw bytes before decoding anything.
    let principal = crate::router::authenticate(state, parts, &bytes, &signing)?;
    let mut form = HashMap::new();
    if is_form(parts) {
        parse_form(&String::from_utf8_lossy(&bytes), FormText::Body, &mut form)
            .ok_or_else(too_many_parameters)?;
    }
    // Parameters may come in the query string too (GET), the body's first.
    parse_form(
        parts.uri.query().unwrap_or(""),
        FormText::UrlQuery,
        &mut form,
    )
    .ok_or_else(too_many_parameters)?;
    let Some(action) = form.get("Action").filter(|a| !a.is_empty()).cloned() else {
        return Err(WireError::new(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "Missing Action",
        ));
    };
    // Unsigned, the action picks among the awsQuery services. A signed
    // request stays with the service it was verified for.
    if !routed.by_scope
        && !carries_signature(parts)
        && let Some(i) = state.services.iter().position(|m| {
            m.query
                .as_ref()
                .is_some_and(|q| q.ops.contains_key(&action))
        })
    {
        *service = i;
    }
    let mounted = &state.services[*service];
    let Some(query) = mounted.query.as_ref() else {
        return Err(WireError::internal(
            "an awsQuery route to a service without its codec",
        ));
    };
    let version = form.get("Version").map(String::as_str).unwrap_or("");
    // AWS looks operations up by action and version together, so an
    // unknown action and a missing or other version get the same answer.
    if version != query.version
        || !query.ops.contains_key(&action)
        || !mounted.api.supports(&action)
    {
        let shown = if version.is_empty() {
            "NO_VERSION_SPECIFIED"
        } else {
            version
        };
        return Err(WireError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {action} for version {shown}"),
        ));
    }
    *label = action.clone();
    let op = action.as_str();
    let mut value = match query.ops.get(op).and_then(|o| o.input.as_deref()) {
        Some(input) => query
            .bind(input, "", &form, 0)
            .unwrap_or_else(|| Value::Object(Map::new())),
        None => Value::Object(Map::new()),
    };
    mounted.model.validate(op, &mut value)?;
    mounted.model.retain_defined_members(op, &mut value);
    let reply =
        crate::router::run_operation(state, mounted, op, value, None, principal, slot).await?;
    let body = query.encode(op, reply, request_id)?;
    Ok(Ok(xml(StatusCode::OK, body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model() -> QueryModel {
        let m = json!({
            "metadata": {"protocol": "query", "apiVersion": "2026-01-01", "xmlNamespace": "https://x/doc/"},
            "operations": {"Op": {"input": {"shape": "In"}, "output": {"shape": "Out", "resultWrapper": "OpResult"}}},
            "shapes": {
                "In": {"type": "structure", "members": {
                    "Name": {"shape": "S"}, "Count": {"shape": "I"}, "On": {"shape": "B"},
                    "Tags": {"shape": "Tags"}, "Attrs": {"shape": "Attrs"}, "Empty": {"shape": "Tags"},
                    "Inner": {"shape": "Inner"}, "Bad": {"shape": "I"}}},
                "Inner": {"type": "structure", "members": {"Name": {"shape": "S"}}},
                "Tags": {"type": "list", "member": {"shape": "S"}},
                "Attrs": {"type": "map", "key": {"shape": "S"}, "value": {"shape": "S"}},
                "Out": {"type": "structure", "members": {
                    "Arn": {"shape": "S"}, "When": {"shape": "T"}, "Tags": {"shape": "Tags"},
                    "Attrs": {"shape": "Attrs"}}},
                "S": {"type": "string"}, "I": {"type": "integer"}, "B": {"type": "boolean"},
                "T": {"type": "timestamp"}
            }
        });
        QueryModel::parse(&m.to_string()).unwrap()
    }

    #[test]
    fn forms_bind_into_the_json_form_by_the_model() {
        let mut form = HashMap::new();
        parse_form(
            "Action=Op&Version=2026-01-01&Name=a+b%2Bc&Count=7&On=true&Tags.member.1=x&Tags.member.2=y&Tags.member.4=gap&Attrs.entry.1.key=k&Attrs.entry.1.value=v&Empty=&Inner.Name=n&Bad=seven&Unknown=1",
            FormText::Body,
            &mut form,
        )
        .unwrap();
        let v = model().bind("In", "", &form, 0).unwrap();
        assert_eq!(
            v,
            json!({"Name": "a b+c", "Count": 7, "On": true, "Tags": ["x", "y"],
                   "Attrs": {"k": "v"}, "Empty": [], "Inner": {"Name": "n"}, "Bad": "seven"})
        );
        assert_eq!(model().bind("In", "", &HashMap::new(), 0), Some(json!({})));
    }

    #[test]
    fn the_url_query_binds_as_it_is_signed() {
        // `+` and `%2B` are one character to SigV4 in the URL's query, so
        // they must bind as one; in a form body `+` is a space.
        let mut signed_plus = HashMap::new();
        parse_form("Name=a%2Bb", FormText::UrlQuery, &mut signed_plus).unwrap();
        let mut literal_plus = HashMap::new();
        parse_form("Name=a+b", FormText::UrlQuery, &mut literal_plus).unwrap();
        assert_eq!(signed_plus, literal_plus);
        assert_eq!(signed_plus["Name"], "a+b");
        let mut body = HashMap::new();
        parse_form("Name=a+b", FormText::Body, &mut body).unwrap();
        assert_eq!(body["Name"], "a b");
    }

    #[test]
    fn forms_have_at_most_a_thousand_parameters() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        };
        let mut form = HashMap::new();
        assert!(parse_form(&many(1000), FormText::Body, &mut form).is_some());
        // The URL's pairs count with the body's.
        assert!(parse_form("one=more", FormText::UrlQuery, &mut form).is_none());
        let mut form = HashMap::new();
        assert!(parse_form(&many(1001), FormText::Body, &mut form).is_none());
        // Repeated names count each time they are read.
        let mut form = HashMap::new();
        assert!(parse_form(&"a=1&".repeat(1001), FormText::Body, &mut form).is_none());
    }

    #[test]
    fn replies_are_written_under_the_result_wrapper() {
        let reply = Reply::Json(
            json!({"Arn": "a<b", "When": 0, "Tags": ["x"], "Attrs": {"k": "v"}})
                .to_string()
                .into_bytes(),
        );
        assert_eq!(
            model().encode("Op", reply, "rid").unwrap(),
            "<OpResponse xmlns=\"https://x/doc/\"><OpResult><Arn>a&lt;b</Arn><Attrs><entry><key>k</key><value>v</value></entry></Attrs><Tags><member>x</member></Tags><When>1970-01-01T00:00:00.000Z</When></OpResult><ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></OpResponse>"
        );
    }

    #[test]
    fn front_door_errors_take_the_query_names() {
        let e = WireError::new(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureException",
            "bad & sig",
        );
        let r = model().error_response(&e, "rid");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/xml");
        let e = WireError::internal("disk & co");
        let (code, status) = front_door_code(e.code, e.status);
        assert_eq!(
            (code, status),
            ("InternalFailure", StatusCode::INTERNAL_SERVER_ERROR)
        );
        let (code, _) = front_door_code("ValidationException", StatusCode::BAD_REQUEST);
        assert_eq!(code, "ValidationError");
    }
}
