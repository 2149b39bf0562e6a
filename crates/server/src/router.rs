//! Routing: operator endpoints, then `X-Amz-Target` dispatch for the API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ripstream_api::{Authorize, BoxError, Reply};
use serde_json::Value;
use tracing::{Instrument, debug, error, info_span};

use crate::wire::WireError;
use crate::{AppState, Mounted};

const JSON_11: &str = "application/x-amz-json-1.1";
const CBOR_11: &str = "application/x-amz-cbor-1.1";
/// Longest wait for a request body once its headers arrived.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub(crate) async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    // Anonymous mode trusts whoever reaches the loopback listener; a browser
    // steered here by DNS rebinding names a foreign host, so it is refused.
    let rebound = state.principals.is_none()
        && state.loopback_listener
        && !crate::guard::names_only_loopback(&parts.uri, &parts.headers);
    let origin = parts
        .headers
        .get(http::header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    // AWS lets any origin in because every request must still be signed with
    // a secret. Anonymous mode needs no secret, so there only pages served
    // from this machine may call it: any other site would otherwise drive the
    // server from a visitor's browser.
    let foreign_origin =
        state.principals.is_none() && origin.is_some_and(|o| !crate::guard::is_loopback_origin(o));
    // Routing as AWS's front ends do it: a SigV4 credential scope names the
    // service first; without one, X-Amz-Target, then the Host (virtual-host
    // S3), then the models' path templates.
    let scoped_index = scoped_service(&state, &parts);
    let scoped = scoped_index.map(|i| protocol_of(&state.services[i]));
    let operator = match parts.uri.path() {
        "/_ripstream/health" | "/_ripstream/metrics" => true,
        // The short paths give way to a bucket of that name, and to any
        // request signed for a service that routes by path (S3).
        path @ ("/health" | "/metrics") => {
            scoped != Some(Scoped::Rest) && !state.services.iter().any(|m| m.api.claims_path(path))
        }
        _ => false,
    };
    let no_target = !parts.headers.contains_key("x-amz-target");
    let (try_query, try_rest) = match scoped {
        Some(kind) => (kind == Scoped::Query, kind == Scoped::Rest),
        None => (no_target, no_target),
    };
    // Browsers never see the operator endpoints: metrics and health are not
    // for cross-origin pages.
    let cors = origin.is_some() && !foreign_origin && !operator;
    if foreign_origin {
        let mut r = error_response(&WireError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "This server accepts unsigned requests, so only pages served from this machine (a loopback origin) may call it.",
        ));
        stamp_ids(r.headers_mut(), &request_id);
        return Ok(r);
    }
    // A signature over `:authority` must not route by another `Host`.
    // A rebound request is refused below as such, whatever its authority says.
    if !rebound && !crate::guard::host_and_authority_agree(&parts.uri, &parts.headers) {
        let mut r = error_response(&WireError::new(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureException",
            "The Host header and the request's authority name different hosts.",
        ));
        stamp_ids(r.headers_mut(), &request_id);
        return Ok(r);
    }
    // A browser's CORS preflight, answered as AWS answers it for browser SDKs.
    if cors && parts.method == Method::OPTIONS && !rebound {
        let mut r = cors_preflight(&parts.headers);
        stamp_ids(r.headers_mut(), &request_id);
        return Ok(r);
    }
    let mut resp = match (&parts.method, parts.uri.path()) {
        _ if rebound => error_response(&WireError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "This server accepts unsigned requests only for a loopback host name (localhost, 127.0.0.1, [::1]).",
        )),
        // Operator endpoints live under a prefix no S3 bucket can take
        // (bucket names have no underscore); the short paths stay while no
        // bucket is named `health` or `metrics`.
        (&Method::GET, "/_ripstream/health" | "/health") if operator => {
            health(&state, &parts.headers)
        }
        (&Method::GET, "/_ripstream/metrics" | "/metrics") if operator => {
            let mut out = String::new();
            let access = crate::guard::metrics_access(
                state.loopback_listener,
                state.metrics_token.as_deref(),
                &parts.headers,
            );
            match access
                .map(|()| prometheus_client::encoding::text::encode(&mut out, &state.registry))
            {
                Err(status) => {
                    let mut r = text(
                        status,
                        "text/plain",
                        "metrics need the configured bearer token\n".into(),
                    );
                    if status == StatusCode::UNAUTHORIZED {
                        r.headers_mut().insert(
                            http::header::WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer"),
                        );
                    }
                    r
                }
                Ok(Ok(())) => text(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    out,
                ),
                Ok(Err(_)) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "metrics encoding failed".into(),
                ),
            }
        }
        // awsQuery (STS): by credential scope, or an unsigned form.
        _ if try_query && let Some(routed) = crate::query::route(&state, &parts) => {
            let span = info_span!("request", id = %request_id);
            crate::query::serve(&state, &parts, body, routed, &request_id)
                .instrument(span)
                .await
        }
        // The REST protocols (no X-Amz-Target): service and operation from
        // the credential scope, the Host and the models' path templates.
        _ if try_rest && let Some(routed) = crate::rest::route(&state, &parts) => {
            let span = info_span!("request", id = %request_id);
            crate::rest::serve(&state, &parts, body, routed, &request_id)
                .instrument(span)
                .await
        }
        // AWS ignores the path of API calls.
        (&Method::POST, _) => {
            let span = info_span!("request", id = %request_id);
            api(&state, &parts, body, scoped_index)
                .instrument(span)
                .await
        }
        _ => access_denied(),
    };
    let headers = resp.headers_mut();
    stamp_ids(headers, &request_id);
    if cors {
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date",
            ),
        );
    }
    Ok(resp)
}

/// The protocol of the service a request's SigV4 credential scope names,
/// if it names a mounted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scoped {
    Json,
    Rest,
    Query,
}

fn protocol_of(m: &Mounted) -> Scoped {
    if m.query.is_some() {
        Scoped::Query
    } else if m.rest.is_some() {
        Scoped::Rest
    } else {
        Scoped::Json
    }
}

/// The first mounted service whose signing name the request's credential
/// scope names.
fn scoped_service(state: &AppState, parts: &http::request::Parts) -> Option<usize> {
    let params = crate::auth::sigv4::query_params(parts.uri.query().unwrap_or(""));
    let scope = crate::rest::scope_service(parts, &params)?;
    state
        .services
        .iter()
        .position(|m| m.api.spec().signing_name == scope)
}

/// The ids every response carries, the front door's early refusals and
/// CORS preflights included: `x-amzn-RequestId` and `x-amz-id-2`.
fn stamp_ids(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", v);
    }
    // AWS sends 64 to 80 random bytes here; 72 is what its front ends send.
    let mut id2 = [0u8; 72];
    rand::fill(&mut id2[..]);
    if let Ok(v) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(id2)) {
        headers.insert("x-amz-id-2", v);
    }
}

/// `GET /health`: 200 while serving. Streams refused because their data is
/// missing from disk make it `"status": "degraded"`: the server still serves
/// every other stream, so it stays in rotation. Their names are shown only
/// to whoever may read `/metrics` (stream names are not for anyone).
fn health(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    let damaged: Vec<String> = state
        .services
        .iter()
        .flat_map(|m| m.api.unavailable())
        .collect();
    let may_see_names = crate::guard::metrics_access(
        state.loopback_listener,
        state.metrics_token.as_deref(),
        headers,
    )
    .is_ok();
    let body = match (damaged.is_empty(), may_see_names) {
        (true, _) => serde_json::json!({"status": "ok"}),
        (false, true) => serde_json::json!({"status": "degraded", "damaged_streams": damaged}),
        (false, false) => {
            serde_json::json!({"status": "degraded", "damaged_stream_count": damaged.len()})
        }
    };
    text(StatusCode::OK, "application/json", body.to_string())
}

/// What AWS answers to a request it cannot map to an operation at all (a
/// GET, PUT or DELETE on any path of a JSON service): 403 with an XML body,
/// as AWS's recorded answers show.
fn access_denied() -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(
        b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n",
    )));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

/// An XML body with no content type, as AWS's front end sends it.
fn xml_status(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(body)));
    *r.status_mut() = status;
    r
}

/// Does `X-Amz-Target` have the form `Service.Operation` (both parts
/// non-empty), whether or not a service or operation of those names exists?
fn target_has_operation_form(headers: &HeaderMap) -> bool {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = target.split('.');
    matches!((parts.next(), parts.next()), (Some(s), Some(o)) if !s.is_empty() && !o.is_empty())
}

/// The answer to a CORS preflight (`OPTIONS` with `Origin`): everything is
/// allowed from anywhere, the requested headers and method echoed, cached
/// for two days, no body.
fn cors_preflight(request: &HeaderMap) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    let headers = r.headers_mut();
    headers.insert(
        http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        http::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("172800"),
    );
    for (asked, allowed) in [
        (
            http::header::ACCESS_CONTROL_REQUEST_HEADERS,
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        ),
        (
            http::header::ACCESS_CONTROL_REQUEST_METHOD,
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
        ),
    ] {
        if let Some(v) = request.get(&asked) {
            headers.insert(allowed, v.clone());
        }
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_11));
    r
}

fn error_response(e: &WireError) -> Response<Body> {
    let mut r = json_response(e.json_body());
    *r.status_mut() = e.status;
    e.add_headers(r.headers_mut());
    if let Ok(v) = HeaderValue::from_str(e.code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

/// The encoding of a request of the JSON protocols, chosen by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// The service's JSON content type (or `application/json` where the
    /// operator allows it).
    Json,
    /// `application/x-amz-cbor-1.1`, the AWS SDK for Java v2's default for Kinesis.
    Cbor,
    /// `application/json`: the old Coral protocol, whose errors AWS still
    /// answers in its envelope.
    Coral,
}

impl Protocol {
    /// A JSON service takes its own JSON version, CBOR where its spec says
    /// so, and `application/json` as AWS does (or as JSON 1.1 if allowed).
    fn of(headers: &HeaderMap, spec: &ripstream_api::Spec, plain_json: bool) -> Option<Protocol> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json" if plain_json => Some(Protocol::Json),
            "application/json" => Some(Protocol::Coral),
            CBOR_11 if spec.cbor => Some(Protocol::Cbor),
            ct if Some(ct) == spec.protocol.json_content_type() => Some(Protocol::Json),
            _ => None,
        }
    }
}

/// AWS's answer in the old Coral protocol's envelope (`application/json`).
fn coral_envelope(status: StatusCode, error_type: &str) -> Response<Body> {
    let body = serde_json::json!({
        "Output": {"__type": format!("com.amazon.coral.service#{error_type}")},
        "Version": "1.0",
    });
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The content type of a JSON service's responses.
fn json_content_type(spec: &ripstream_api::Spec) -> &'static str {
    spec.protocol.json_content_type().unwrap_or(JSON_11)
}

/// Encodes a reply in the request's protocol, guided by the model.
fn encode_reply(
    mounted: &Mounted,
    op: &str,
    protocol: Protocol,
    reply: Reply,
) -> Result<Response<Body>, WireError> {
    let fail = |e: String| WireError::internal(format!("could not encode the response: {e}"));
    let spec = mounted.api.spec();
    let (content_type, bytes) = match (reply, protocol) {
        (Reply::Empty, Protocol::Json | Protocol::Coral) => (json_content_type(spec), Vec::new()),
        (Reply::Empty, Protocol::Cbor) => (CBOR_11, Vec::new()),
        (Reply::Json(bytes), Protocol::Json | Protocol::Coral) => (json_content_type(spec), bytes),
        (Reply::Json(bytes), Protocol::Cbor) => {
            let json: Value = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
            let cbor = mounted
                .model
                .json_to_cbor(mounted.model.output_shape(op), json);
            (CBOR_11, cbor_bytes(&cbor).map_err(fail)?)
        }
        (Reply::Payload { .. }, _) => {
            return Err(fail(
                "a raw payload is only sent over the REST protocols".into(),
            ));
        }
        (Reply::Events(events), protocol) => {
            let encode: crate::eventstream::EventEncoder = match protocol {
                Protocol::Json | Protocol::Coral => {
                    Box::new(|_, ev| serde_json::to_vec(&ev).unwrap_or_default())
                }
                Protocol::Cbor => {
                    let model = mounted.model.clone();
                    Box::new(move |shape, ev| {
                        cbor_bytes(&model.json_to_cbor(Some(shape), ev)).unwrap_or_default()
                    })
                }
            };
            let body = crate::eventstream::SubscriptionBody::new(
                events,
                protocol == Protocol::Cbor,
                encode,
            );
            let mut r = Response::new(body.boxed());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(crate::eventstream::CONTENT_TYPE),
            );
            return Ok(r);
        }
    };
    let mut r = Response::new(full(bytes));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

fn cbor_bytes(v: &ciborium::Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// An error in the request's encoding; a request in no encoding the service
/// speaks gets CBOR, as AWS answers it.
fn error_response_in(e: &WireError, protocol: Option<Protocol>) -> Response<Body> {
    if protocol == Some(Protocol::Json) {
        return error_response(e);
    }
    let mut map = vec![(
        ciborium::Value::Text("__type".into()),
        ciborium::Value::Text(e.code.into()),
    )];
    if !e.message.is_empty() {
        map.push((
            ciborium::Value::Text("message".into()),
            ciborium::Value::Text(e.message.clone()),
        ));
    }
    let mut r = Response::new(full(
        cbor_bytes(&ciborium::Value::Map(map)).unwrap_or_default(),
    ));
    *r.status_mut() = e.status;
    e.add_headers(r.headers_mut());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CBOR_11));
    if let Ok(v) = HeaderValue::from_str(e.code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

pub(crate) const IN_FLIGHT_TOO_MANY: &str =
    "The server is handling too many requests; retry with backoff.";
pub(crate) const RECEIVING_TOO_MANY: &str =
    "The server is receiving too many request bodies; retry with backoff.";
pub(crate) const BUFFERING_TOO_MANY: &str =
    "The server is buffering too many request bytes; retry with backoff.";

/// Held while a request's body arrives. Bodies that trickle in hold these
/// slots, not the in-flight ones, so they cannot keep requests that are
/// ready to run from running; per source, so one peer's requests (over any
/// number of connections and HTTP/2 streams) cannot take them all.
pub(crate) struct Receiving {
    _all: Option<tokio::sync::OwnedSemaphorePermit>,
    _source: Option<crate::conn::SourceGuard>,
}

/// The receiving slots of a request, or `None` when its source or the
/// server has too many bodies arriving. A request whose body has ended
/// already (no body, or HTTP/2 END_STREAM on its headers) waits for nothing.
pub(crate) fn begin_receiving(
    state: &AppState,
    parts: &http::request::Parts,
    body: &Incoming,
) -> Option<Receiving> {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return Some(Receiving {
            _all: None,
            _source: None,
        });
    }
    let source = match parts.extensions.get::<crate::conn::Peer>() {
        Some(peer) => Some(state.receiving_per_source.try_acquire(peer.0)?),
        None => None,
    };
    let all = state.receiving.clone().try_acquire_owned().ok()?;
    Some(Receiving {
        _all: Some(all),
        _source: source,
    })
}

/// An in-flight slot, taken once a request's body is there; `None` when
/// overloaded: answered at once with a retryable status instead of queueing.
pub(crate) fn take_in_flight(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    state.in_flight.clone().try_acquire_owned().ok()
}

/// The retryable answer of an overloaded server (too many requests, or too
/// many buffered bytes).
fn shed(state: &AppState, message: &str) -> Response<Body> {
    state
        .metrics
        .observe("ripstream", "shed", 0.0, Some("ServiceUnavailable"));
    let mut r = error_response(&WireError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        message,
    ));
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

/// The JSON pipeline; `scoped` is the first service the credential scope
/// names, if any.
async fn api(
    state: &AppState,
    parts: &http::request::Parts,
    body: Incoming,
    scoped: Option<usize>,
) -> Response<Body> {
    let headers = &parts.headers;
    let started = Instant::now();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `Prefix.Operation` picks the service by its model's target prefix,
    // among those the credential scope names when it names any (a request
    // signed for Kinesis never reaches DynamoDB); a request no service
    // claims is answered as the scope's first service, or the first service
    // (Kinesis), answers unknown operations.
    let in_scope = |i: usize| {
        scoped.is_none_or(|s| {
            state.services[i].api.spec().signing_name == state.services[s].api.spec().signing_name
        })
    };
    let fallback = scoped.unwrap_or(0);
    let (index, op) = match target.split_once('.') {
        Some((prefix, op)) => match state.service_for_target(prefix).filter(|&i| in_scope(i)) {
            Some(i) => (
                i,
                state.services[i]
                    .model
                    .has_operation(op)
                    .then(|| op.to_string()),
            ),
            None => (fallback, None),
        },
        None => (fallback, None),
    };
    let mounted = &state.services[index];
    let spec = mounted.api.spec();
    let label = op.as_deref().unwrap_or("unknown");
    // The metrics label of the service the request was routed to.
    let service = if op.is_some() || index != 0 {
        spec.metrics_name.as_str()
    } else {
        "unknown"
    };
    let protocol = Protocol::of(headers, spec, state.allow_plain_json);
    // The in-flight slot, taken once the body has arrived; held until the
    // response is produced, or by a streaming response body for as long as
    // it streams.
    let mut permit = None;
    let result = call(
        state,
        mounted,
        op.as_deref(),
        protocol,
        parts,
        body,
        &mut permit,
    )
    .await;
    let elapsed = started.elapsed();
    match result {
        Ok(resp) => {
            state
                .metrics
                .observe(service, label, elapsed.as_secs_f64(), None);
            debug!(operation = label, micros = elapsed.as_micros() as u64, "ok");
            resp
        }
        Err(e) => {
            state
                .metrics
                .observe(service, label, elapsed.as_secs_f64(), Some(e.code));
            if e.status.is_server_error() {
                error!(operation = label, code = e.code, message = %crate::redact::message_for_log(&e.message), cause = %e.cause_for_log(), "request failed");
            } else {
                // Of the credentials a refused request presents, only the access key id is logged.
                let access_key = crate::redact::access_key_id(headers, parts.uri.query());
                debug!(operation = label, code = e.code, access_key = access_key.unwrap_or("-"), message = %crate::redact::message_for_log(&e.message), "request refused");
            }
            if spec.coral_error_types {
                // DynamoDB's front end: Coral's namespaced types, no
                // x-amzn-ErrorType header, its own JSON version.
                let mut r = error_response(&e.for_dynamodb());
                r.headers_mut().remove("x-amzn-ErrorType");
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(json_content_type(spec)),
                );
                return r;
            }
            error_response_in(&e, protocol)
        }
    }
}

/// The front door's policy check for one request, handed to the service,
/// which calls it with the canonical ARNs its typed input names.
pub(crate) struct PolicyCheck<'a> {
    pub(crate) principal: Option<&'a crate::auth::Principal>,
    pub(crate) service: &'a dyn ripstream_api::Service,
    /// Every service on the port: an action on another service's resource
    /// (a delivery stream reading a Kinesis stream) is judged with that
    /// service's resource policy too.
    pub(crate) services: &'a [crate::Mounted],
    pub(crate) action: String,
    pub(crate) region: &'a str,
    pub(crate) account: &'a str,
}

impl Authorize for PolicyCheck<'_> {
    fn authorize(&self, resources: &[String]) -> Result<(), BoxError> {
        self.authorize_action(&self.action, resources)
    }

    fn authorize_action(&self, action: &str, resources: &[String]) -> Result<(), BoxError> {
        let Some(principal) = self.principal else {
            return Ok(());
        };
        // A resource policy speaks only of its own service's actions (a
        // Firehose stream's policy says nothing of S3), so the policy that
        // judges an action is the one of the service the action belongs to.
        let prefix = action.split_once(':').map(|(p, _)| p);
        let owner: Option<&dyn ripstream_api::Service> =
            if prefix == Some(self.service.spec().iam_prefix.as_str()) {
                Some(self.service)
            } else {
                self.services
                    .iter()
                    .map(|m| m.api.as_ref())
                    .find(|s| Some(s.spec().iam_prefix.as_str()) == prefix)
            };
        for resource in resources {
            let policy = owner
                .filter(|_| resource != "*")
                .and_then(|s| s.resource_policy(resource));
            crate::auth::authorize(
                principal,
                self.region,
                self.account,
                action,
                resource,
                policy.as_deref(),
            )?;
        }
        Ok(())
    }
}

/// One pipeline for every JSON-protocol service, in AWS's order: admission
/// and the memory budget, SigV4 over the raw body (with credentials),
/// content type, syntax, target, the signature's form (anonymous mode),
/// member types, constraints; then the service runs the operation,
/// authorizing what its typed input names before it acts.
async fn call(
    state: &AppState,
    mounted: &Mounted,
    op: Option<&str>,
    protocol: Option<Protocol>,
    parts: &http::request::Parts,
    body: Incoming,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Response<Body>, WireError> {
    let spec = mounted.api.spec();
    let Some(receiving) = begin_receiving(state, parts, &body) else {
        return Ok(shed(state, RECEIVING_TOO_MANY));
    };
    // Buffered only within the server's memory budget (with what decoding
    // JSON will build), and cut off if it trickles in too slowly (slowloris).
    // The reservation lives as long as the bytes and their values.
    let (bytes, _reserved) = match crate::budget::collect_body(
        body,
        state.max_body_bytes,
        &state.budget,
        BODY_TIMEOUT,
        if protocol == Some(Protocol::Json) {
            crate::budget::Decoded::Json
        } else {
            crate::budget::Decoded::Bytes
        },
    )
    .await
    {
        Ok(b) => b,
        Err(crate::budget::BodyError::Busy) => {
            return Ok(shed(state, BUFFERING_TOO_MANY));
        }
        Err(e) => return Err(e.to_wire()),
    };
    drop(receiving);
    match take_in_flight(state) {
        Some(p) => *slot = Some(p),
        None => return Ok(shed(state, IN_FLIGHT_TOO_MANY)),
    }
    // With credentials, authenticate over the raw bytes before decoding
    // anything: a client without valid credentials cannot make the server
    // parse its body. Anonymous mode checks the signature's form below,
    // where AWS answers it.
    let principal = if authenticates_first(state) {
        authenticate(state, parts, &bytes, &spec.signing_name)?
    } else {
        refuse_unverified_streaming(parts)?;
        None
    };
    // A content type the service does not speak (or `application/json`
    // with no body) is answered in CBOR: SerializationException for a valid
    // target, UnknownOperationException otherwise, before anything is parsed.
    // `application/json` with a body gets the old Coral protocol's envelope.
    let protocol = match protocol {
        Some(Protocol::Coral) if !bytes.is_empty() => {
            let is_object = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object());
            return Ok(if is_object {
                coral_envelope(StatusCode::NOT_FOUND, "UnknownOperationException")
            } else {
                coral_envelope(StatusCode::BAD_REQUEST, "SerializationException")
            });
        }
        // A body in a content type no JSON service speaks is not taken for
        // an API call at all: AWS answers in XML, 404 when the target names
        // an operation's form (`Service.Operation`), 403 otherwise.
        None if !bytes.is_empty() => {
            return Ok(if target_has_operation_form(&parts.headers) {
                xml_status(StatusCode::NOT_FOUND, b"<UnknownOperationException/>\n")
            } else {
                access_denied()
            });
        }
        Some(Protocol::Coral) | None => {
            return Err(if op.is_some() {
                WireError::serialization("")
            } else {
                WireError::unknown_operation()
            });
        }
        Some(p) => p,
    };
    let model = &mounted.model;
    let parsed: Option<Value> = match protocol {
        Protocol::Json | Protocol::Coral => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object),
        Protocol::Cbor => model
            .decode_cbor(op, &bytes)
            .filter(|v| matches!(v, ciborium::Value::Map(_)))
            .map(|v| model.cbor_to_json(op.and_then(|o| model.input_shape(o)), v)),
    };
    let Some(op) = op else {
        // Without an operation only a body that is there and does not parse
        // is a serialization error; an empty one is an unknown operation.
        if parsed.is_none() && !bytes.is_empty() {
            return Err(WireError::serialization(""));
        }
        return Err(WireError::unknown_operation());
    };
    let Some(mut value) = parsed else {
        return Err(WireError::serialization(""));
    };
    if !authenticates_first(state) {
        authenticate(state, parts, &bytes, &spec.signing_name)?;
    }
    model.validate(op, &mut value)?;
    model.retain_defined_members(op, &mut value);
    if !mounted.api.supports(op) {
        return Err(WireError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Operation {op} is not supported by this version of Ripstream."),
        ));
    }
    let reply = run_operation(state, mounted, op, value, None, principal, slot).await?;
    encode_reply(mounted, op, protocol, reply)
}

/// Hands a validated request to its service with the front door's policy
/// check; the same last step for every protocol.
pub(crate) async fn run_operation(
    state: &AppState,
    mounted: &Mounted,
    op: &str,
    input: Value,
    body: Option<ripstream_api::BodyStream>,
    principal: Option<&crate::auth::Principal>,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Reply, WireError> {
    let check = PolicyCheck {
        principal,
        service: mounted.api.as_ref(),
        services: &state.services,
        action: format!("{}:{op}", mounted.api.spec().iam_prefix),
        region: &state.region,
        account: &state.account,
    };
    let arn = principal.map(|p| p.arn(&state.region, &state.account));
    let caller = match (principal, &arn) {
        (Some(p), Some(arn)) => ripstream_api::Caller::Principal {
            name: &p.name,
            access_key_id: &p.access_key_id,
            arn,
        },
        _ => ripstream_api::Caller::Anonymous,
    };
    let request = ripstream_api::Request {
        operation: op,
        input,
        authorize: &check,
        caller,
        // A streaming reply keeps the request's in-flight slot until it ends.
        slot: slot.take().map(|s| Box::new(s) as Box<dyn Send + Sync>),
        body,
    };
    Ok(mounted.api.call(request).await?)
}

fn streaming_not_supported() -> WireError {
    WireError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "aws-chunked request bodies (a STREAMING-* x-amz-content-sha256) are not supported yet",
    )
}

/// Whether signatures are verified before anything is decoded: with
/// credentials configured (a client without valid credentials must not make
/// the server parse its body). Anonymous mode checks a signature's form
/// where AWS does, after the content type, the syntax and the operation
/// were found good and before the members are validated, so its answers
/// come in AWS's order.
pub(crate) fn authenticates_first(state: &AppState) -> bool {
    state.principals.is_some()
}

/// Refuses an aws-chunked body in anonymous mode, where no signature is
/// verified: it must not reach a service as its data.
pub(crate) fn refuse_unverified_streaming(parts: &http::request::Parts) -> Result<(), WireError> {
    let streaming = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("STREAMING-"));
    if streaming {
        return Err(streaming_not_supported());
    }
    Ok(())
}

/// Anonymous mode: a signature need only be well formed (no key is looked
/// up), and none at all is refused unless the operator allows unsigned requests.
pub(crate) fn check_anonymous_signature(
    state: &AppState,
    parts: &http::request::Parts,
) -> Result<(), WireError> {
    let signed = crate::auth::sigv4::check_form(&parts.headers, parts.uri.query().unwrap_or(""))?;
    if !signed && !state.allow_unsigned_requests {
        return Err(crate::auth::missing_token());
    }
    Ok(())
}

/// The principal a request is signed by; `None` when the server has no
/// credentials configured (anonymous mode, loopback only), where a
/// well-formed signature is accepted without any key, and no signature at
/// all only where the operator allows unsigned requests.
pub(crate) fn authenticate<'a>(
    state: &'a AppState,
    parts: &http::request::Parts,
    body: &[u8],
    signing_service: &str,
) -> Result<Option<&'a crate::auth::Principal>, WireError> {
    let Some(principals) = &state.principals else {
        refuse_unverified_streaming(parts)?;
        check_anonymous_signature(state, parts)?;
        return Ok(None);
    };
    let request = crate::auth::sigv4::RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        host: parts.uri.authority().map(|a| a.as_str()),
        headers: &parts.headers,
        body,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match crate::auth::sigv4::verify(
        &request,
        principals.as_ref(),
        &state.region,
        signing_service,
        now,
    )? {
        // Only the REST pipeline decodes aws-chunked bodies (it does so
        // before it gets here); taken as it came, the body's unverified
        // framing would reach a JSON service as its data.
        Some(claims) if claims.streaming.is_some() => Err(streaming_not_supported()),
        Some(claims) => Ok(principals.get(&claims.access_key_id)),
        None => Err(crate::auth::missing_token()),
    }
}
