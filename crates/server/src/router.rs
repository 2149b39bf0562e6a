//! Routing: operator endpoints, then `X-Amz-Target` dispatch for the API.

use std::any::TypeId;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use ripstream_kinesis::Service;
use ripstream_kinesis::types::Empty;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{Instrument, debug, error, info_span};

use crate::AppState;
use crate::model::ServiceModel;
use crate::wire::WireError;

const JSON_11: &str = "application/x-amz-json-1.1";
/// DynamoDB's protocol, for the lease tables.
const JSON_10: &str = "application/x-amz-json-1.0";
const CBOR_11: &str = "application/x-amz-cbor-1.1";
/// Longest wait for a request body once its headers arrived.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const KINESIS_PREFIX: &str = "Kinesis_20131202";
const DYNAMODB_PREFIX: &str = "DynamoDB_20120810";

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
    let mut resp = match (&parts.method, parts.uri.path()) {
        _ if rebound => error_response(&WireError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "This server accepts unsigned requests only for a loopback host name (localhost, 127.0.0.1, [::1]).",
        )),
        // Operator endpoints live under a prefix no S3 bucket can take
        // (bucket names have no underscore); the short paths stay while no
        // bucket is named `health` or `metrics`.
        (&Method::GET, "/_ripstream/health" | "/health") => health(&state, &parts.headers),
        (&Method::GET, "/_ripstream/metrics" | "/metrics") => {
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
        // AWS ignores the path of API calls.
        (&Method::POST, _) => {
            let span = info_span!("request", id = %request_id);
            api(&state, &parts, body).instrument(span).await
        }
        _ => access_denied(),
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-RequestId", v);
    }
    let mut id2 = [0u8; 54];
    rand::fill(&mut id2[..]);
    if let Ok(v) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(id2)) {
        headers.insert("x-amz-id-2", v);
    }
    Ok(resp)
}

/// `GET /health`: 200 while serving. Streams refused because their data is
/// missing from disk make it `"status": "degraded"`: the server still serves
/// every other stream, so it stays in rotation. Their names are shown only
/// to whoever may read `/metrics` (stream names are not for anyone).
fn health(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    let damaged = state.service.damaged_streams();
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

/// What AWS answers to a request it cannot map to an operation at all.
fn access_denied() -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(
        b"<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n",
    )));
    *r.status_mut() = StatusCode::FORBIDDEN;
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
    if let Ok(v) = HeaderValue::from_str(e.code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

/// The wire protocol of a request, chosen by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `application/x-amz-json-1.1` (or `application/json`).
    Json,
    /// `application/x-amz-cbor-1.1`, the AWS SDK for Java v2's default.
    Cbor,
}

impl Protocol {
    /// Kinesis speaks JSON 1.1 and CBOR 1.1; DynamoDB speaks JSON 1.0.
    fn of(headers: &HeaderMap, dynamodb: bool) -> Option<Protocol> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/json" => Some(Protocol::Json),
            JSON_11 if !dynamodb => Some(Protocol::Json),
            CBOR_11 if !dynamodb => Some(Protocol::Cbor),
            JSON_10 if dynamodb => Some(Protocol::Json),
            _ => None,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Protocol::Json => JSON_11,
            Protocol::Cbor => CBOR_11,
        }
    }
}

/// Encodes responses and errors for one request.
pub(crate) struct Codec<'a> {
    protocol: Protocol,
    model: &'a ServiceModel,
    op: &'a str,
}

impl<'a> Codec<'a> {
    #[cfg(test)]
    pub(crate) fn for_tests(model: &'a ServiceModel, op: &'a str) -> Codec<'a> {
        Codec {
            protocol: Protocol::Json,
            model,
            op,
        }
    }
}

impl Codec<'_> {
    fn output<T: Serialize + 'static>(&self, out: &T) -> Result<Vec<u8>, WireError> {
        // Operations without output members answer with an empty body, as AWS does.
        if TypeId::of::<T>() == TypeId::of::<Empty>() {
            return Ok(Vec::new());
        }
        let fail = |e: String| WireError::internal(format!("could not encode the response: {e}"));
        match self.protocol {
            Protocol::Json => {
                // The hottest response has its own encoder (same JSON, less work).
                if let Some(records) = (out as &dyn std::any::Any)
                    .downcast_ref::<ripstream_kinesis::types::GetRecordsOutput>()
                {
                    return crate::fastjson::get_records(records).map_err(fail);
                }
                serde_json::to_vec(out).map_err(|e| fail(e.to_string()))
            }
            Protocol::Cbor => {
                let json = serde_json::to_value(out).map_err(|e| fail(e.to_string()))?;
                cbor_bytes(
                    &self
                        .model
                        .json_to_cbor(self.model.output_shape(self.op), json),
                )
                .map_err(fail)
            }
        }
    }
}

fn cbor_bytes(v: &ciborium::Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn error_response_in(e: &WireError, protocol: Protocol) -> Response<Body> {
    if protocol == Protocol::Json {
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
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(CBOR_11));
    if let Ok(v) = HeaderValue::from_str(e.code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
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

async fn api(state: &AppState, parts: &http::request::Parts, body: Incoming) -> Response<Body> {
    // Overloaded: answer at once with a retryable status instead of queueing
    // requests (and their bodies) without bound.
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        return shed(
            state,
            "The server is handling too many requests; retry with backoff.",
        );
    };
    let headers = &parts.headers;
    let started = Instant::now();
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (op, dynamodb) = match target.split_once('.') {
        Some((KINESIS_PREFIX, op)) if state.kinesis_model.has_operation(op) => {
            (Some(op.to_string()), false)
        }
        Some((DYNAMODB_PREFIX, op)) => (
            state
                .dynamodb_model
                .has_operation(op)
                .then(|| op.to_string()),
            true,
        ),
        _ => (None, false),
    };
    let label = op.as_deref().unwrap_or("unknown");
    // The metrics label of the service the request was routed to.
    let service = match (dynamodb, op.is_some()) {
        (true, _) => "dynamodb",
        (false, true) => "kinesis",
        (false, false) => "unknown",
    };
    let protocol = Protocol::of(headers, dynamodb);
    // Held until the response is produced, or by a streaming response body
    // for as long as it streams.
    let mut permit = Some(permit);
    let result = call(
        state,
        op.as_deref(),
        dynamodb,
        target,
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
                error!(operation = label, code = e.code, message = %crate::redact::message_for_log(&e.message), "request failed");
            } else {
                // Of the credentials a refused request presents, only the access key id is logged.
                let access_key = crate::redact::access_key_id(headers, parts.uri.query());
                debug!(operation = label, code = e.code, access_key = access_key.unwrap_or("-"), message = %crate::redact::message_for_log(&e.message), "request refused");
            }
            if dynamodb {
                let mut r = error_response(&e.for_dynamodb());
                r.headers_mut().remove("x-amzn-ErrorType");
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_10));
                return r;
            }
            error_response_in(&e, protocol.unwrap_or(Protocol::Json))
        }
    }
}

/// Checks a request in AWS's order: content type, body, syntax, target,
/// member types, constraints; then runs it.
// One pipeline's inputs; the service-contract refactor (one request context
// per service) folds them together.
#[allow(clippy::too_many_arguments)]
async fn call(
    state: &AppState,
    op: Option<&str>,
    dynamodb: bool,
    target: &str,
    protocol: Option<Protocol>,
    parts: &http::request::Parts,
    body: Incoming,
    slot: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Response<Body>, WireError> {
    // Buffered only within the server's memory budget (with what decoding
    // JSON will build), and cut off if it trickles in too slowly (slowloris).
    // The reservation lives as long as the bytes and their values.
    let (bytes, _reserved) = match crate::budget::collect_body(
        body,
        state.max_body_bytes,
        &state.budget,
        BODY_TIMEOUT,
        protocol == Some(Protocol::Json),
    )
    .await
    {
        Ok(b) => b,
        Err(crate::budget::BodyError::Busy) => {
            return Ok(shed(
                state,
                "The server is buffering too many request bytes; retry with backoff.",
            ));
        }
        Err(e) => return Err(e.to_wire()),
    };
    // Authenticate over the raw bytes before decoding anything: a client
    // without valid credentials cannot make the server parse its body.
    let signing_service = if dynamodb { "dynamodb" } else { "kinesis" };
    let principal = authenticate(state, parts, &bytes, signing_service)?;
    let Some(protocol) = protocol else {
        if bytes.is_empty() {
            return Err(if op.is_some() {
                WireError::serialization("")
            } else {
                WireError::unknown_operation()
            });
        }
        // Not a protocol this server speaks: answered as AWS does, before the target is read.
        return Ok(
            if target
                .split_once('.')
                .is_some_and(|(s, o)| !s.is_empty() && !o.is_empty())
            {
                let mut r =
                    Response::new(full(Bytes::from_static(b"<UnknownOperationException/>\n")));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            } else {
                access_denied()
            },
        );
    };
    let parsed: Option<Value> = match protocol {
        Protocol::Json => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object),
        Protocol::Cbor => state
            .kinesis_model
            .decode_cbor(op, &bytes)
            .filter(|v| matches!(v, ciborium::Value::Map(_)))
            .map(|v| {
                state
                    .kinesis_model
                    .cbor_to_json(op.and_then(|o| state.kinesis_model.input_shape(o)), v)
            }),
    };
    let Some(op) = op else {
        if parsed.is_none() {
            return Err(WireError::serialization(""));
        }
        return Err(WireError::unknown_operation());
    };
    let Some(mut value) = parsed else {
        return Err(WireError::serialization(""));
    };
    if dynamodb {
        return dynamodb_call(state, op, value, principal).await;
    }
    state.kinesis_model.validate(op, &mut value)?;
    state.kinesis_model.retain_defined_members(op, &mut value);
    let (region, account) = (
        &state.service.config().region,
        &state.service.config().account_id,
    );
    let action = format!("kinesis:{op}");
    // Every resource the typed input names is authorized against its
    // canonical ARN (see ripstream_kinesis::authz) before the operation runs.
    let authorize = |resources: &[String]| -> Result<(), WireError> {
        let Some(principal) = principal else {
            return Ok(());
        };
        for resource in resources {
            let policy = (resource != "*")
                .then(|| state.service.resource_policy(resource))
                .flatten();
            crate::auth::authorize(
                principal,
                region,
                account,
                &action,
                resource,
                policy.as_deref(),
            )?;
        }
        Ok(())
    };
    let codec = Codec {
        protocol,
        model: &state.kinesis_model,
        op,
    };
    if op == "SubscribeToShard" {
        let input: ripstream_kinesis::types::SubscribeToShardInput = decode(value)?;
        authorize(&state.service.resources(&input)?)?;

        // A subscription streams for minutes: its request's in-flight slot
        // stays taken until the subscription ends, so subscriptions cannot
        // grow without bound.
        let events = match slot.take() {
            Some(slot) => {
                state
                    .service
                    .subscribe_to_shard_holding(input, slot)
                    .await?
            }
            None => state.service.subscribe_to_shard(input).await?,
        };
        let encode: crate::eventstream::EventEncoder = match protocol {
            Protocol::Json => Box::new(|ev| serde_json::to_vec(ev).unwrap_or_default()),
            Protocol::Cbor => {
                let model = state.kinesis_model.clone();
                Box::new(move |ev| {
                    let json = serde_json::to_value(ev).unwrap_or_default();
                    cbor_bytes(&model.json_to_cbor(Some("SubscribeToShardEvent"), json))
                        .unwrap_or_default()
                })
            }
        };
        let body =
            crate::eventstream::SubscriptionBody::new(events, protocol == Protocol::Cbor, encode);
        let mut r = Response::new(body.boxed());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(crate::eventstream::CONTENT_TYPE),
        );
        return Ok(r);
    }
    let out = dispatch(&state.service, &codec, value, &authorize).await?;
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(protocol.content_type()),
    );
    Ok(r)
}

/// A DynamoDB request: the lease tables of Kinesis Client Libraries.
async fn dynamodb_call(
    state: &AppState,
    op: &str,
    mut value: Value,
    principal: Option<&crate::auth::Principal>,
) -> Result<Response<Body>, WireError> {
    state.dynamodb_model.validate(op, &mut value)?;
    state.dynamodb_model.retain_defined_members(op, &mut value);
    if let Some(principal) = principal {
        let account = &state.service.config().account_id;
        // Every table the operation touches must be allowed; an operation
        // that names none is refused, never allowed.
        let resources = state.dynamo.request_resources(op, &value)?;
        if resources.is_empty() {
            return Err(WireError::new(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                format!("The request names no resource to authorize for dynamodb:{op}."),
            ));
        }
        for resource in resources {
            crate::auth::authorize(
                principal,
                &state.service.config().region,
                account,
                &format!("dynamodb:{op}"),
                &resource,
                None,
            )?;
        }
    }
    if !ripstream_dynamo::Dynamo::supports(op) {
        return Err(WireError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("Operation {op} is not supported by Ripstream's DynamoDB-compatible subset."),
        ));
    }
    // Writes commit to the metadata store (an fsync): off the async workers.
    let dynamo = state.dynamo.clone();
    let op = op.to_string();
    let out = tokio::task::spawn_blocking(move || dynamo.call(&op, &value))
        .await
        .map_err(|e| WireError::internal(format!("the operation did not complete: {e}")))??;
    let bytes = serde_json::to_vec(&out)
        .map_err(|e| WireError::internal(format!("could not encode the response: {e}")))?;
    let mut r = Response::new(full(bytes));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_10));
    Ok(r)
}

/// The principal a request is signed by; `None` when the server has no
/// credentials configured (anonymous mode, loopback only).
fn authenticate<'a>(
    state: &'a AppState,
    parts: &http::request::Parts,
    body: &[u8],
    signing_service: &str,
) -> Result<Option<&'a crate::auth::Principal>, WireError> {
    let Some(principals) = &state.principals else {
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
    let region = &state.service.config().region;
    match crate::auth::sigv4::verify(&request, principals.as_ref(), region, signing_service, now)? {
        Some(claims) => Ok(principals.get(&claims.access_key_id)),
        None => Err(crate::auth::missing_token()),
    }
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, WireError> {
    serde_json::from_value(value).map_err(|e| WireError::serialization(e.to_string()))
}

macro_rules! operations {
    ($($name:literal => $method:ident),* $(,)?) => {
        #[cfg(test)]
        pub(crate) async fn dispatch_for_tests(svc: &Service, codec: &Codec<'_>, value: Value) -> Result<Vec<u8>, WireError> {
            dispatch(svc, codec, value, &|_: &[String]| Ok(())).await
        }

        /// Decodes the typed input, authorizes the resources it names, runs the operation.
        async fn dispatch(
            svc: &Service,
            codec: &Codec<'_>,
            value: Value,
            authorize: &(dyn Fn(&[String]) -> Result<(), WireError> + Sync),
        ) -> Result<Vec<u8>, WireError> {
            match codec.op {
                $($name => {
                    let input = decode(value)?;
                    authorize(&svc.resources(&input)?)?;
                    codec.output(&svc.$method(input).await?)
                })*
                other => Err(WireError::new(
                    StatusCode::BAD_REQUEST,
                    "UnknownOperationException",
                    format!("Operation {other} is not supported by this version of Ripstream."),
                )),
            }
        }
    };
}

operations! {
    "CreateStream" => create_stream,
    "DeleteStream" => delete_stream,
    "DescribeStream" => describe_stream,
    "DescribeStreamSummary" => describe_stream_summary,
    "ListStreams" => list_streams,
    "ListShards" => list_shards,
    "PutRecord" => put_record,
    "PutRecords" => put_records,
    "GetShardIterator" => get_shard_iterator,
    "GetRecords" => get_records,
    "IncreaseStreamRetentionPeriod" => increase_stream_retention_period,
    "DecreaseStreamRetentionPeriod" => decrease_stream_retention_period,
    "UpdateMaxRecordSize" => update_max_record_size,
    "UpdateStreamMode" => update_stream_mode,
    "EnableEnhancedMonitoring" => enable_enhanced_monitoring,
    "DisableEnhancedMonitoring" => disable_enhanced_monitoring,
    "DescribeLimits" => describe_limits,
    "AddTagsToStream" => add_tags_to_stream,
    "RemoveTagsFromStream" => remove_tags_from_stream,
    "ListTagsForStream" => list_tags_for_stream,
    "TagResource" => tag_resource,
    "UntagResource" => untag_resource,
    "ListTagsForResource" => list_tags_for_resource,
    "SplitShard" => split_shard,
    "MergeShards" => merge_shards,
    "UpdateShardCount" => update_shard_count,
    "UpdateStreamWarmThroughput" => update_stream_warm_throughput,
    "UpdateStreamRecordDistributionStrategy" => update_stream_record_distribution_strategy,
    "DescribeAccountSettings" => describe_account_settings,
    "UpdateAccountSettings" => update_account_settings,
    "RegisterStreamConsumer" => register_stream_consumer,
    "DescribeStreamConsumer" => describe_stream_consumer,
    "ListStreamConsumers" => list_stream_consumers,
    "DeregisterStreamConsumer" => deregister_stream_consumer,
    "PutResourcePolicy" => put_resource_policy,
    "GetResourcePolicy" => get_resource_policy,
    "DeleteResourcePolicy" => delete_resource_policy,
    "StartStreamEncryption" => start_stream_encryption,
    "StopStreamEncryption" => stop_stream_encryption,
}
