//! The front door's protocols over real HTTP: a test service for each of
//! awsJson1_0, restJson1 and restXml (a trimmed copy of S3's own botocore
//! model) mounted next to Kinesis and DynamoDB on a bound server, driven by
//! a hyper client with SigV4-signed requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use ripstream_api::{BoxError, CallFuture, Reply, Request, Service, ServiceError, Spec};
use ripstream_server::auth::{Principals, sigv4};
use ripstream_server::{Server, ServerConfig};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const S3_MODEL: &str = include_str!("data/s3-2006-03-01-trimmed.json");

/// A restJson1 model in botocore's form, shaped like Kinesis Video Streams'.
const VIDEOS_MODEL: &str = r#"{
  "version": "2.0",
  "metadata": {"apiVersion": "2026-01-01", "endpointPrefix": "videos", "protocol": "rest-json",
               "serviceId": "Videos", "signatureVersion": "v4", "signingName": "videos"},
  "operations": {
    "CreateStream": {"name": "CreateStream", "http": {"method": "POST", "requestUri": "/streams/{StreamName}", "responseCode": 201},
      "input": {"shape": "CreateStreamInput"}, "output": {"shape": "CreateStreamOutput"},
      "errors": [{"shape": "ResourceInUseException"}]},
    "GetMedia": {"name": "GetMedia", "http": {"method": "GET", "requestUri": "/streams/{StreamName}/media/{Path+}"},
      "input": {"shape": "GetMediaInput"}, "output": {"shape": "GetMediaOutput"},
      "errors": [{"shape": "ResourceNotFoundException"}]},
    "ListStreams": {"name": "ListStreams", "http": {"method": "GET", "requestUri": "/streams"},
      "input": {"shape": "ListStreamsInput"}, "output": {"shape": "ListStreamsOutput"}},
    "DeleteStream": {"name": "DeleteStream", "http": {"method": "DELETE", "requestUri": "/streams/{StreamName}", "responseCode": 204},
      "input": {"shape": "DeleteStreamInput"}, "errors": [{"shape": "ResourceNotFoundException"}]},
    "PutMedia": {"name": "PutMedia", "http": {"method": "POST", "requestUri": "/putMedia"},
      "input": {"shape": "PutMediaInput"}, "output": {"shape": "PutMediaOutput"}}
  },
  "shapes": {
    "StreamName": {"type": "string", "min": 1, "max": 20, "pattern": "[a-z0-9-]+"},
    "Text": {"type": "string"},
    "Hours": {"type": "integer", "min": 1, "max": 8760},
    "Limit": {"type": "integer", "min": 1, "max": 100},
    "Count": {"type": "long"},
    "Time": {"type": "timestamp"},
    "Bytes": {"type": "blob"},
    "Tags": {"type": "map", "key": {"shape": "Text"}, "value": {"shape": "Text"}},
    "Names": {"type": "list", "member": {"shape": "StreamName"}},
    "CreateStreamInput": {"type": "structure", "required": ["StreamName"], "members": {
      "StreamName": {"shape": "StreamName", "location": "uri", "locationName": "StreamName"},
      "ClientToken": {"shape": "Text", "location": "header", "locationName": "x-amz-client-token"},
      "RetentionHours": {"shape": "Hours", "locationName": "retentionHours"},
      "Tags": {"shape": "Tags", "locationName": "tags"}}},
    "CreateStreamOutput": {"type": "structure", "members": {
      "StreamArn": {"shape": "Text", "locationName": "streamArn"},
      "CreatedAt": {"shape": "Time", "locationName": "createdAt"}}},
    "GetMediaInput": {"type": "structure", "required": ["StreamName", "Path"], "members": {
      "StreamName": {"shape": "StreamName", "location": "uri", "locationName": "StreamName"},
      "Path": {"shape": "Text", "location": "uri", "locationName": "Path"},
      "StartTime": {"shape": "Time", "location": "querystring", "locationName": "start-time"},
      "Limit": {"shape": "Limit", "location": "querystring", "locationName": "limit"},
      "Range": {"shape": "Text", "location": "header", "locationName": "Range"},
      "IfModifiedSince": {"shape": "Time", "location": "header", "locationName": "If-Modified-Since"}}},
    "GetMediaOutput": {"type": "structure", "members": {
      "Payload": {"shape": "Bytes"},
      "ContentType": {"shape": "Text", "location": "header", "locationName": "Content-Type"},
      "Fragment": {"shape": "Count", "location": "header", "locationName": "x-amz-fragment-number"},
      "Modified": {"shape": "Time", "location": "header", "locationName": "Last-Modified"},
      "Meta": {"shape": "Tags", "location": "headers", "locationName": "x-amz-meta-"},
      "Status": {"shape": "Limit", "location": "statusCode"}}, "payload": "Payload"},
    "ListStreamsInput": {"type": "structure", "members": {
      "Filters": {"shape": "Tags", "location": "querystring"}}},
    "ListStreamsOutput": {"type": "structure", "members": {
      "StreamNames": {"shape": "Names", "locationName": "streamNames"}}},
    "DeleteStreamInput": {"type": "structure", "required": ["StreamName"], "members": {
      "StreamName": {"shape": "StreamName", "location": "uri", "locationName": "StreamName"}}},
    "Media": {"type": "blob", "streaming": true},
    "PutMediaInput": {"type": "structure", "required": ["StreamName"], "members": {
      "StreamName": {"shape": "StreamName", "location": "header", "locationName": "x-amzn-stream-name"},
      "Payload": {"shape": "Media"}}, "payload": "Payload"},
    "PutMediaOutput": {"type": "structure", "members": {
      "Digest": {"shape": "Text", "locationName": "digest"},
      "Length": {"shape": "Count", "locationName": "length"}}},
    "ResourceNotFoundException": {"type": "structure", "members": {"Message": {"shape": "Text"}},
      "error": {"httpStatusCode": 404}, "exception": true},
    "ResourceInUseException": {"type": "structure", "members": {"Message": {"shape": "Text"}},
      "error": {"httpStatusCode": 409}, "exception": true}
  }
}"#;

/// An awsJson1_0 model.
const WIDGETS_MODEL: &str = r#"{
  "version": "2.0",
  "metadata": {"apiVersion": "2026-01-01", "endpointPrefix": "widgets", "jsonVersion": "1.0",
               "protocol": "json", "serviceId": "Widgets", "signatureVersion": "v4",
               "targetPrefix": "Widgets_20260101"},
  "operations": {
    "GetWidget": {"name": "GetWidget", "http": {"method": "POST", "requestUri": "/"},
      "input": {"shape": "GetWidgetInput"}, "output": {"shape": "GetWidgetOutput"}}
  },
  "shapes": {
    "Name": {"type": "string", "min": 1, "max": 10},
    "Size": {"type": "integer"},
    "GetWidgetInput": {"type": "structure", "required": ["Name"], "members": {"Name": {"shape": "Name"}}},
    "GetWidgetOutput": {"type": "structure", "members": {"Name": {"shape": "Name"}, "Size": {"shape": "Size"}}}
  }
}"#;

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN"
secret_access_key = "admin-secret"

[[principal]]
name = "reader"
access_key_id = "AKIDREADER"
secret_access_key = "reader-secret"
policy = '''{"Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::public/*"}]}'''
"#;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct TestError {
    code: &'static str,
    message: String,
}

impl ServiceError for TestError {
    fn code(&self) -> &'static str {
        self.code
    }
}

fn fail(code: &'static str, message: &str) -> Result<Value, TestError> {
    Err(TestError {
        code,
        message: message.into(),
    })
}

type Handler = fn(&str, &Value) -> (Vec<String>, Result<Value, TestError>);

/// What the service saw: operation, input, the resources it authorized.
type Seen = Arc<Mutex<Vec<(String, Value, Vec<String>)>>>;

/// A service whose operations are a function of their input; it authorizes
/// the resources the function names before answering, as real services do.
struct TestService {
    spec: Spec,
    handler: Handler,
    seen: Seen,
    /// Bytes of streamed bodies received so far, counted as they arrive.
    streamed: Arc<AtomicU64>,
}

impl TestService {
    fn new(model: &'static str, iam: &str, handler: Handler) -> (Arc<TestService>, Seen) {
        let seen = Seen::default();
        let svc = TestService {
            spec: Spec::from_model(model, iam).unwrap(),
            handler,
            seen: seen.clone(),
            streamed: Arc::default(),
        };
        (Arc::new(svc), seen)
    }
}

impl Service for TestService {
    fn spec(&self) -> &Spec {
        &self.spec
    }

    fn supports(&self, operation: &str) -> bool {
        operation != "CreateMultipartUploadUnsupported"
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        Box::pin(async move {
            let Request {
                operation,
                mut input,
                authorize,
                body,
                caller,
                ..
            } = request;
            // A streaming payload is read as it arrives, hashed and counted;
            // its error (a bad chunk, a short body) is the service's answer.
            if let Some(mut body) = body {
                let mut hasher = Sha256::new();
                let (mut length, mut pieces) = (0u64, 0u64);
                while let Some(piece) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await
                {
                    let piece = piece?;
                    hasher.update(&piece);
                    length += piece.len() as u64;
                    pieces += 1;
                    self.streamed
                        .fetch_add(piece.len() as u64, Ordering::SeqCst);
                }
                input["Streamed"] = json!({
                    "sha256": hex::encode(hasher.finalize()),
                    "length": length,
                    "pieces": pieces,
                });
            }
            let request = Request {
                operation,
                input,
                authorize,
                slot: None,
                body: None,
                caller,
            };
            let (resources, result) = (self.handler)(request.operation, &request.input);
            self.seen.lock().unwrap().push((
                request.operation.to_string(),
                request.input.clone(),
                resources.clone(),
            ));
            request.authorize.authorize(&resources)?;
            match result {
                Ok(Value::Null) => Ok(Reply::Empty),
                Ok(v) => Ok(Reply::Json(serde_json::to_vec(&v).unwrap())),
                Err(e) => Err(Box::new(e) as BoxError),
            }
        })
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or("").to_string()
}

fn videos(op: &str, input: &Value) -> (Vec<String>, Result<Value, TestError>) {
    let name = text(input, "StreamName");
    let arn = format!("arn:aws:videos:us-east-1:000000000000:stream/{name}");
    let result = match (op, name.as_str()) {
        ("CreateStream", "taken") => fail("ResourceInUseException", "The stream is taken"),
        ("CreateStream", _) => Ok(json!({"StreamArn": arn, "CreatedAt": 1_796_289_759.5})),
        ("GetMedia", "ghost") | ("DeleteStream", "ghost") => {
            fail("ResourceNotFoundException", "No such stream")
        }
        ("GetMedia", _) => {
            let echo = format!(
                "{}|{}|{}|{}|{}",
                text(input, "Path"),
                input["StartTime"],
                input["Limit"],
                text(input, "Range"),
                input["IfModifiedSince"]
            );
            Ok(json!({
                "Payload": b64(echo.as_bytes()),
                "ContentType": "video/webm",
                "Fragment": 42,
                "Modified": 1_796_289_759,
                "Meta": {"camera": "front"},
                "Status": if input.get("Range").is_some() { 206 } else { 200 },
            }))
        }
        ("ListStreams", _) => {
            let mut names: Vec<String> = input["Filters"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            Ok(json!({"StreamNames": names}))
        }
        ("DeleteStream", _) => Ok(Value::Null),
        ("PutMedia", _) => Ok(json!({
            "Digest": input["Streamed"]["sha256"],
            "Length": input["Streamed"]["length"],
        })),
        _ => fail("InternalFailure", "unexpected"),
    };
    let resources = if op == "ListStreams" {
        vec!["*".into()]
    } else {
        vec![arn]
    };
    (resources, result)
}

fn s3(op: &str, input: &Value) -> (Vec<String>, Result<Value, TestError>) {
    let bucket = text(input, "Bucket");
    let key = text(input, "Key");
    let resource = if key.is_empty() {
        format!("arn:aws:s3:::{bucket}")
    } else {
        format!("arn:aws:s3:::{bucket}/{key}")
    };
    let result = match op {
        "ListObjectsV2" if bucket == "nobucket" => {
            fail("NoSuchBucket", "The specified bucket does not exist")
        }
        "ListObjectsV2" => Ok(json!({
            "Name": bucket,
            "Prefix": input["Prefix"],
            "MaxKeys": input.get("MaxKeys").cloned().unwrap_or(json!(1000)),
            "KeyCount": 2,
            "IsTruncated": false,
            "Contents": [
                {"Key": "a/1", "Size": 3, "LastModified": 1_796_289_759, "ETag": "\"e1\""},
                {"Key": "a/2 & <b>", "Size": 4, "LastModified": 1_796_289_760.25, "ETag": "\"e2\""}
            ],
            "CommonPrefixes": [{"Prefix": "a/b/"}]
        })),
        "GetObject" if key == "missing" => fail("NoSuchKey", "The specified key does not exist."),
        "GetObject" => {
            let body = format!("hello {key}");
            Ok(json!({
                "Body": b64(body.as_bytes()),
                "ContentType": "text/plain",
                "ContentLength": body.len(),
                "ETag": "\"abc\"",
                "LastModified": 1_796_289_759,
                "Metadata": {"color": "blue"},
            }))
        }
        "HeadObject" if key == "missing" => fail("NoSuchKey", "The specified key does not exist."),
        "HeadObject" => Ok(json!({
            "ContentLength": format!("hello {key}").len(),
            "ContentType": "text/plain",
            "ETag": "\"abc\"",
            "Metadata": {"color": "blue"},
        })),
        // What arrived, as the ETag (its SHA-256) and the size.
        "PutObject" => Ok(json!({
            "ETag": format!("\"{}\"", text(&input["Streamed"], "sha256")),
            "Size": input["Streamed"]["length"],
        })),
        "CreateMultipartUpload" => Ok(json!({"Bucket": bucket, "Key": key, "UploadId": "up-1"})),
        "DeleteObject" => Ok(Value::Null),
        "CreateBucket" if bucket == "mine" => fail("BucketAlreadyOwnedByYou", "You already own it"),
        "CreateBucket" => Ok(json!({"Location": format!("/{bucket}")})),
        "PutBucketTagging" => Ok(Value::Null),
        _ => fail("InternalFailure", "unexpected"),
    };
    (vec![resource], result)
}

fn widgets(_: &str, input: &Value) -> (Vec<String>, Result<Value, TestError>) {
    let name = text(input, "Name");
    let result = if name == "missing" {
        fail("WidgetNotFoundException", "no such widget")
    } else {
        Ok(json!({"Name": name, "Size": 3}))
    };
    (
        vec![format!(
            "arn:aws:widgets:us-east-1:000000000000:widget/{name}"
        )],
        result,
    )
}

struct Harness {
    addr: String,
    videos: Seen,
    s3: Seen,
    /// Bytes the S3 test service has received of streamed bodies so far.
    s3_streamed: Arc<AtomicU64>,
    widgets: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(signed: bool) -> Harness {
        Harness::start_with(signed, false).await
    }

    /// `allow_unsigned`: anonymous mode serves requests with no signature.
    async fn start_with(signed: bool, allow_unsigned: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        let kinesis_config = ripstream_kinesis::ServiceConfig::new(dir.path());
        if signed {
            config.principals = Some(Arc::new(Principals::parse(CREDENTIALS).unwrap()));
        }
        // As the binary does: one context, Data Streams first.
        let ctx = ripstream_runtime::ServiceContext::open(kinesis_config.context()).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let kinesis = ripstream_kinesis::Service::open_in(&ctx, kinesis_config, &mut registry)
            .await
            .unwrap();
        let dynamo = ripstream_dynamo::Dynamo::open_in(&ctx).unwrap();
        let builtin: Vec<Arc<dyn Service>> = vec![
            Arc::new(ripstream_kinesis::api::KinesisApi::new(kinesis)),
            Arc::new(ripstream_dynamo::api::DynamoApi::new(dynamo)),
        ];
        config.allow_unsigned_requests = allow_unsigned;
        let mut server = Server::bind(config, registry, builtin).await.unwrap();
        let (w, widgets_seen) = TestService::new(WIDGETS_MODEL, "widgets", widgets);
        let (v, videos_seen) = TestService::new(VIDEOS_MODEL, "videos", videos);
        let (s, s3_seen) = TestService::new(S3_MODEL, "s3", s3);
        let s3_streamed = s.streamed.clone();
        server.mount(w).unwrap();
        server.mount(v).unwrap();
        server.mount(s).unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Harness {
            addr,
            videos: videos_seen,
            s3: s3_seen,
            s3_streamed,
            widgets: widgets_seen,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// One request, signed for `service` by `key` (unsigned when `None`).
    async fn send(&self, r: Req<'_>) -> Resp {
        let host = r
            .host
            .map(|h| format!("{h}:{}", self.port()))
            .unwrap_or(self.addr.clone());
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        headers.push(("host".into(), host));
        // Unsigned, an aws-chunked body is framed with a context nothing checks.
        let mut signing =
            sigv4::SigningContext::new("", "20260101T000000Z", "us-east-1", r.service, "");
        if let Some((akid, secret)) = r.key {
            let (amz_date, signature) = sign(
                r.method,
                r.path,
                r.service,
                akid,
                secret,
                &mut headers,
                r.body,
            );
            signing =
                sigv4::SigningContext::new(secret, &amz_date, "us-east-1", r.service, &signature);
        }
        headers.extend(r.added.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let body = match r.encode {
            Some(encode) => encode(&signing),
            None => r.body.to_vec(),
        };
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(r.method).uri(r.path);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = send
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap_or("")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

struct Req<'a> {
    method: &'a str,
    /// Path and query, as sent.
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    service: &'a str,
    key: Option<(&'a str, &'a str)>,
    host: Option<&'a str>,
    /// The body built once the request is signed (aws-chunked bodies chain
    /// from the request's signature), instead of `body`.
    encode: Option<Encoder<'a>>,
    /// Headers added after signing (by someone relaying the request).
    added: Vec<(&'a str, &'a str)>,
}

/// Builds a request body from the request's signing context.
type Encoder<'a> = &'a dyn Fn(&sigv4::SigningContext) -> Vec<u8>;

const ADMIN: Option<(&str, &str)> = Some(("AKIDADMIN", "admin-secret"));
const READER: Option<(&str, &str)> = Some(("AKIDREADER", "reader-secret"));

fn req<'a>(method: &'a str, path: &'a str, service: &'a str) -> Req<'a> {
    Req {
        method,
        path,
        headers: Vec::new(),
        body: b"",
        service,
        key: ADMIN,
        host: None,
        encode: None,
        added: Vec::new(),
    }
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The canonical path the SDKs sign: S3's as sent, every other service's
/// URI-encoded once more (each segment's bytes, `%` included).
fn canonical_path(path: &str, service: &str) -> String {
    if service == "s3" {
        return path.to_string();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// SigV4 in the Authorization header, the path signed as the SDKs sign it:
/// as sent for S3, URI-encoded once more for every other service.
fn sign(
    method: &str,
    path_and_query: &str,
    service: &str,
    akid: &str,
    secret: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
) -> (String, String) {
    sign_path(
        method,
        path_and_query,
        None,
        service,
        akid,
        secret,
        headers,
        body,
    )
}

/// [`sign`] with the canonical path given (`None`: as the SDKs build it).
#[allow(clippy::too_many_arguments)]
fn sign_path(
    method: &str,
    path_and_query: &str,
    canonical: Option<&str>,
    service: &str,
    akid: &str,
    secret: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let amz_date = sigv4::format_amz_date(now);
    let date = &amz_date[..8];
    // A payload hash the request names itself (STREAMING-*) is signed as given.
    let payload = match headers.iter().find(|(k, _)| k == "x-amz-content-sha256") {
        Some((_, v)) => v.clone(),
        None => {
            let hash = hex::encode(Sha256::digest(body));
            headers.push(("x-amz-content-sha256".into(), hash.clone()));
            hash
        }
    };
    headers.push(("x-amz-date".into(), amz_date.clone()));
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = canonical.map_or_else(|| canonical_path(path, service), str::to_string);
    let mut pairs: Vec<(String, String)> = sigv4::query_params(query)
        .into_iter()
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    pairs.sort();
    let canonical_query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut signed: Vec<(String, String)> = headers.clone();
    signed.sort();
    let canonical_headers: String = signed
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_list = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_list}\n{payload}"
    );
    let scope = format!("{date}/us-east-1/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = sigv4::signing_key(secret, date, "us-east-1", service);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    headers.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed_list}, Signature={signature}"),
    ));
    (amz_date, signature)
}

#[tokio::test]
async fn rest_json1_routes_binds_and_encodes() {
    let h = Harness::start(true).await;
    // Body members under their locationName, a header, a label; 201 from the model.
    let r = h
        .send(Req {
            headers: vec![
                ("x-amz-client-token", "tok-1"),
                ("content-type", "application/json"),
            ],
            body: br#"{"retentionHours": 24, "tags": {"team": "video"}}"#,
            ..req("POST", "/streams/cam-1", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(
        r.json(),
        json!({"streamArn": "arn:aws:videos:us-east-1:000000000000:stream/cam-1", "createdAt": 1_796_289_759.5})
    );
    {
        let seen = h.videos.lock().unwrap();
        let (op, input, resources) = seen.last().unwrap();
        assert_eq!(op, "CreateStream");
        assert_eq!(
            *input,
            json!({"StreamName": "cam-1", "ClientToken": "tok-1", "RetentionHours": 24, "Tags": {"team": "video"}})
        );
        assert_eq!(
            resources,
            &["arn:aws:videos:us-east-1:000000000000:stream/cam-1"]
        );
    }

    // A greedy label (percent-decoded), query parameters (an iso8601 timestamp,
    // an integer), headers (an http-date timestamp); the reply's blob payload,
    // headers, prefixed headers and status code member.
    let r = h
        .send(Req {
            headers: vec![("range", "bytes=0-9"), ("if-modified-since", "Thu, 03 Dec 2026 09:22:39 GMT")],
            ..req(
                "GET",
                "/streams/cam-1/media/2026/12/clip%20one.webm?start-time=2026-12-03T09%3A22%3A39.500Z&limit=5",
                "videos",
            )
        })
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{r:?}");
    assert_eq!(
        r.body,
        "2026/12/clip one.webm|1796289759.5|5|bytes=0-9|1796289759"
    );
    assert_eq!(r.header("content-type"), "video/webm");
    assert_eq!(r.header("x-amz-fragment-number"), "42");
    assert_eq!(r.header("x-amz-meta-camera"), "front");
    assert_eq!(r.header("last-modified"), "Thu, 03 Dec 2026 09:22:39 GMT");

    // A map bound to the whole query.
    let r = h.send(req("GET", "/streams?b=2&a=1", "videos")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"streamNames": ["a=1", "b=2"]}));

    // No output shape: the model's 204, no body.
    let r = h.send(req("DELETE", "/streams/cam-1", "videos")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");
    assert!(r.body.is_empty());

    // Errors: the type in x-amzn-ErrorType, {"message"} in the body, the
    // status from the error shape's httpStatusCode (the service says 400).
    let r = h.send(req("DELETE", "/streams/ghost", "videos")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "ResourceNotFoundException");
    assert_eq!(r.json(), json!({"message": "No such stream"}));
    let r = h.send(req("POST", "/streams/taken", "videos")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "ResourceInUseException");

    // Model validation of the bound input: a label breaking the pattern, a
    // query integer over its maximum, a query value of the wrong type, a body
    // that is not JSON.
    let r = h.send(req("POST", "/streams/Bad_Name", "videos")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "ValidationException");
    assert!(r.json()["message"].as_str().unwrap().contains("at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern"), "{r:?}");
    let r = h
        .send(req("GET", "/streams/cam-1/media/x?limit=500", "videos"))
        .await;
    assert_eq!(r.header("x-amzn-errortype"), "ValidationException", "{r:?}");
    assert!(r.body.contains("Value '500' at 'limit'"), "{r:?}");
    let r = h
        .send(req("GET", "/streams/cam-1/media/x?limit=many", "videos"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "SerializationException");
    let r = h
        .send(Req {
            body: b"{not json",
            ..req("POST", "/streams/cam-2", "videos")
        })
        .await;
    assert_eq!(
        r.header("x-amzn-errortype"),
        "SerializationException",
        "{r:?}"
    );

    // Scoped to this service, but no template matches.
    let r = h.send(req("PUT", "/nothing/here", "videos")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "UnknownOperationException");
    // A bad signature is refused before anything is bound.
    let before = h.videos.lock().unwrap().len();
    let r = h
        .send(Req {
            key: Some(("AKIDADMIN", "wrong-secret")),
            ..req("POST", "/streams/cam-3", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "InvalidSignatureException");
    assert_eq!(h.videos.lock().unwrap().len(), before);
    h.stop().await;
}

#[tokio::test]
async fn rest_xml_serves_s3_shapes() {
    let h = Harness::start(true).await;
    // ListObjectsV2: `?list-type=2` picks it over any other GET on a bucket;
    // the reply is S3's XML: its root name and namespace, flattened lists,
    // iso8601 timestamps, escaped text.
    let r = h
        .send(req(
            "GET",
            "/photos?list-type=2&prefix=a%2F&max-keys=2",
            "s3",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("content-type"), "application/xml");
    assert_eq!(
        r.body,
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
            "<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes>",
            "<Contents><ETag>&quot;e1&quot;</ETag><Key>a/1</Key><LastModified>2026-12-03T09:22:39.000Z</LastModified><Size>3</Size></Contents>",
            "<Contents><ETag>&quot;e2&quot;</ETag><Key>a/2 &amp; &lt;b&gt;</Key><LastModified>2026-12-03T09:22:40.250Z</LastModified><Size>4</Size></Contents>",
            "<IsTruncated>false</IsTruncated><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><Name>photos</Name><Prefix>a/</Prefix>",
            "</ListBucketResult>"
        )
    );
    assert_eq!(
        h.s3.lock().unwrap().last().unwrap().1,
        json!({"Bucket": "photos", "Prefix": "a/", "MaxKeys": 2})
    );

    // GetObject with a greedy key and an http-date header; the blob payload
    // is the body, members bound to headers (an http-date, `x-amz-meta-*`).
    let r = h
        .send(Req {
            headers: vec![("if-modified-since", "Wed, 02 Dec 2026 09:22:39 GMT")],
            ..req("GET", "/photos/2026/12/cat%20pic.jpg", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "hello 2026/12/cat pic.jpg");
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("content-length"), "25");
    assert_eq!(r.header("etag"), "\"abc\"");
    assert_eq!(r.header("last-modified"), "Thu, 03 Dec 2026 09:22:39 GMT");
    assert_eq!(r.header("x-amz-meta-color"), "blue");
    {
        let seen = h.s3.lock().unwrap();
        let (_, input, resources) = seen.last().unwrap();
        assert_eq!(
            *input,
            json!({"Bucket": "photos", "Key": "2026/12/cat pic.jpg", "IfModifiedSince": 1_796_203_359})
        );
        assert_eq!(resources, &["arn:aws:s3:::photos/2026/12/cat pic.jpg"]);
    }

    // HeadObject: the same template under HEAD; the declared length is sent
    // (there is no body to measure), errors have only their status.
    let r = h.send(req("HEAD", "/photos/cat.jpg", "s3")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("content-length"), "13");
    assert_eq!(r.header("x-amz-meta-color"), "blue");
    assert!(r.body.is_empty());
    assert_eq!(h.s3.lock().unwrap().last().unwrap().0, "HeadObject");
    let r = h.send(req("HEAD", "/photos/missing", "s3")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert!(r.body.is_empty());

    // Virtual-host style: the bucket comes from the Host.
    let r = h
        .send(Req {
            host: Some("photos.s3.localhost"),
            ..req("GET", "/cat.jpg", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "hello cat.jpg");
    let r = h
        .send(Req {
            host: Some("photos.s3.us-east-1.amazonaws.com"),
            ..req("GET", "/?list-type=2", "s3")
        })
        .await;
    assert!(r.body.contains("<Name>photos</Name>"), "{r:?}");

    // PutObject: the raw body as the blob payload, metadata headers as a
    // map, an rfc822 `Expires` as epoch seconds.
    let r = h
        .send(Req {
            headers: vec![
                ("content-type", "image/png"),
                ("x-amz-meta-owner", "ana"),
                ("x-amz-meta-Size", "big"),
                ("expires", "Thu, 03 Dec 2026 09:22:39 GMT"),
            ],
            body: b"\x89PNG\x00\xff",
            ..req("PUT", "/photos/new.png", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // The streaming payload reached the service as a stream, not as input.
    assert_eq!(
        r.header("etag"),
        format!("\"{}\"", hex::encode(Sha256::digest(b"\x89PNG\x00\xff")))
    );
    assert_eq!(r.header("x-amz-object-size"), "6");
    {
        let seen = h.s3.lock().unwrap();
        let input = &seen.last().unwrap().1;
        assert_eq!(input.get("Body"), None);
        assert_eq!(input["Metadata"], json!({"owner": "ana", "size": "big"}));
        // A string in S3's current model (it was a timestamp once).
        assert_eq!(input["Expires"], json!("Thu, 03 Dec 2026 09:22:39 GMT"));
        assert_eq!(input["ContentType"], json!("image/png"));
        assert_eq!(input["ContentLength"], json!(6));
    }

    // `?uploads` picks CreateMultipartUpload over PutObject's template; its
    // XML root is the one S3 writes.
    let r = h.send(req("POST", "/photos/big.bin?uploads", "s3")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.contains("<InitiateMultipartUploadResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>photos</Bucket><Key>big.bin</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>"), "{r:?}");
    assert_eq!(
        h.s3.lock().unwrap().last().unwrap().0,
        "CreateMultipartUpload"
    );

    // DeleteObject: the model's 204.
    let r = h.send(req("DELETE", "/photos/new.png", "s3")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{r:?}");

    // XML structure payloads decoded by their shapes.
    let r = h
        .send(Req {
            body: br#"<?xml version="1.0"?><CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>"#,
            headers: vec![("x-amz-acl", "private")],
            ..req("PUT", "/newbucket", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("location"), "/newbucket");
    assert_eq!(
        h.s3.lock().unwrap().last().unwrap().1,
        json!({"Bucket": "newbucket", "ACL": "private", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}})
    );
    let r = h
        .send(Req {
            body: b"<Tagging><TagSet><Tag><Key>a</Key><Value>1</Value></Tag><Tag><Key>b</Key><Value>x &amp; y</Value></Tag></TagSet></Tagging>",
            ..req("PUT", "/photos?tagging", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    {
        let seen = h.s3.lock().unwrap();
        let (op, input, _) = seen.last().unwrap();
        assert_eq!(op, "PutBucketTagging");
        assert_eq!(
            input["Tagging"],
            json!({"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "x & y"}]})
        );
    }

    // Errors: S3's XML with the request id, statuses from the model.
    let r = h.send(req("GET", "/photos/missing", "s3")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let id = r.header("x-amz-request-id").to_string();
    assert!(!id.is_empty());
    assert_eq!(
        r.body,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>{id}</RequestId></Error>"
        )
    );
    let r = h.send(req("PUT", "/mine", "s3")).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert!(
        r.body.contains("<Code>BucketAlreadyOwnedByYou</Code>"),
        "{r:?}"
    );
    let r = h.send(req("GET", "/nobucket?list-type=2", "s3")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    let r = h
        .send(Req {
            body: b"<Tagging><TagSet>",
            ..req("PUT", "/photos?tagging", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("<Code>MalformedXML</Code>"), "{r:?}");
    let r = h
        .send(req("GET", "/photos?list-type=2&max-keys=lots", "s3"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("<Code>InvalidArgument</Code>"), "{r:?}");
    // Required members: PutBucketTagging without its payload.
    let r = h.send(req("PUT", "/photos?tagging", "s3")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains(
            "at &apos;tagging&apos; failed to satisfy constraint: Member must not be null"
        ),
        "{r:?}"
    );

    // Authorization: the service asks for the ARN its input names; the
    // reader's policy allows GetObject on public/* only.
    let r = h
        .send(Req {
            key: READER,
            ..req("GET", "/public/a.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let r = h
        .send(Req {
            key: READER,
            ..req("GET", "/private/a.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.body.contains("<Code>AccessDenied</Code>"), "{r:?}");
    assert!(
        r.body
            .contains("s3:GetObject on resource: arn:aws:s3:::private/a.txt"),
        "{r:?}"
    );
    assert_eq!(
        h.s3.lock().unwrap().last().unwrap().2,
        ["arn:aws:s3:::private/a.txt"]
    );
    let r = h
        .send(Req {
            key: READER,
            ..req("DELETE", "/public/a.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    // Unsigned, while credentials are configured.
    let r = h
        .send(Req {
            key: None,
            ..req("GET", "/public/a.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.body.contains("<Code>AccessDenied</Code>"), "{r:?}");
    h.stop().await;
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One `aws-chunked` chunk signed as AWS's clients sign it, chained from
/// `previous` (the request's signature for the first), which becomes its
/// signature. An empty `data` is the final chunk.
fn signed_chunk(ctx: &sigv4::SigningContext, previous: &mut String, data: &[u8]) -> Vec<u8> {
    let to_sign = format!(
        "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{EMPTY_SHA256}\n{}",
        ctx.amz_date,
        ctx.scope,
        hex::encode(Sha256::digest(data))
    );
    let signature = hex::encode(ctx.sign(to_sign.as_bytes()));
    let mut out = format!("{:x};chunk-signature={signature}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    *previous = signature;
    out
}

/// The frames of a signed aws-chunked body: each chunk, then the final one.
fn signed_frames(ctx: &sigv4::SigningContext, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut previous = ctx.seed_signature.clone();
    let mut frames: Vec<Vec<u8>> = chunks
        .iter()
        .map(|c| signed_chunk(ctx, &mut previous, c))
        .collect();
    frames.push(signed_chunk(ctx, &mut previous, b""));
    frames
}

fn chunked_headers<'a>(mode: &'a str, decoded_length: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-amz-content-sha256", mode),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", decoded_length),
    ]
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Sha256::digest(data)))
}

/// A signed multi-chunk upload reaches the service chunk by chunk, intact;
/// a tampered, reordered or truncated body, or one not as long as declared,
/// ends the service's stream with the error S3 answers, and nothing is
/// accepted from it.
#[tokio::test]
async fn aws_chunked_uploads_are_verified_chunk_by_chunk() {
    let h = Harness::start(true).await;
    const SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    // Every chunk but the last at least S3's 8 KiB.
    let (a, b, c) = (vec![b'a'; 10_000], vec![b'b'; 9_000], b"tail".to_vec());
    let whole = [a.as_slice(), &b, &c].concat();
    let length = whole.len().to_string();
    let chunks = |ctx: &sigv4::SigningContext| signed_frames(ctx, &[&a, &b, &c]);

    let intact = |ctx: &sigv4::SigningContext| chunks(ctx).concat();
    let r = h
        .send(Req {
            headers: chunked_headers(SIGNED, &length),
            encode: Some(&intact),
            ..req("PUT", "/photos/chunked.bin", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), etag_of(&whole));
    assert_eq!(r.header("x-amz-object-size"), length);
    {
        let seen = h.s3.lock().unwrap();
        let streamed = &seen.last().unwrap().1["Streamed"];
        // Handed over as the chunks came, not as one buffer.
        assert!(streamed["pieces"].as_u64().unwrap() >= 3, "{streamed}");
    }
    let accepted = h.s3.lock().unwrap().len();

    let tampered = |ctx: &sigv4::SigningContext| {
        let mut body = chunks(ctx).concat();
        // A byte of the second chunk's data.
        let at = body.len() - 500;
        body[at] ^= 1;
        body
    };
    let reordered = |ctx: &sigv4::SigningContext| {
        let f = chunks(ctx);
        [f[1].clone(), f[0].clone(), f[2].clone(), f[3].clone()].concat()
    };
    let truncated = |ctx: &sigv4::SigningContext| chunks(ctx)[..3].concat();
    let longer = (whole.len() + 1).to_string();
    let cases: [(&str, Encoder<'_>, &str, StatusCode, &str); 4] = [
        (
            "tampered",
            &tampered,
            &length,
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
        ),
        (
            "reordered",
            &reordered,
            &length,
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
        ),
        (
            "truncated",
            &truncated,
            &length,
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
        ),
        (
            "wrong length",
            &intact,
            &longer,
            StatusCode::BAD_REQUEST,
            "IncompleteBody",
        ),
    ];
    for (case, encode, declared, status, code) in cases {
        let r = h
            .send(Req {
                headers: chunked_headers(SIGNED, declared),
                encode: Some(encode),
                ..req("PUT", "/photos/chunked.bin", "s3")
            })
            .await;
        assert_eq!(r.status, status, "{case}: {r:?}");
        assert!(
            r.body.contains(&format!("<Code>{code}</Code>")),
            "{case}: {r:?}"
        );
    }
    // No declared decoded length at all: refused before anything streams.
    let r = h
        .send(Req {
            headers: vec![
                ("x-amz-content-sha256", SIGNED),
                ("content-encoding", "aws-chunked"),
            ],
            encode: Some(&intact),
            ..req("PUT", "/photos/chunked.bin", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::LENGTH_REQUIRED, "{r:?}");

    // Unsigned chunks with a checksum trailer: checked against the data.
    let trailer_body = |checksum: &[u8]| {
        let sum = b64(&Sha256::digest(checksum));
        format!("4\r\ntail\r\n0\r\nx-amz-checksum-sha256:{sum}\r\n\r\n").into_bytes()
    };
    let good = |_: &sigv4::SigningContext| trailer_body(b"tail");
    let bad = |_: &sigv4::SigningContext| trailer_body(b"fail");
    let mut headers = chunked_headers("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "4");
    headers.push(("x-amz-trailer", "x-amz-checksum-sha256"));
    let r = h
        .send(Req {
            headers: headers.clone(),
            encode: Some(&good),
            ..req("PUT", "/photos/trailer.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), etag_of(b"tail"));
    let r = h
        .send(Req {
            headers,
            encode: Some(&bad),
            ..req("PUT", "/photos/trailer.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("<Code>BadDigest</Code>"), "{r:?}");
    assert_eq!(h.s3.lock().unwrap().len(), accepted + 1);
    h.stop().await;
}

/// UNSIGNED-PAYLOAD and hash-signed bodies stream too; a body that is not
/// the one whose hash was signed is refused at its end.
#[tokio::test]
async fn unsigned_and_hash_signed_bodies_stream() {
    let h = Harness::start(true).await;
    let r = h
        .send(Req {
            headers: vec![("x-amz-content-sha256", "UNSIGNED-PAYLOAD")],
            body: b"not signed",
            ..req("PUT", "/photos/u.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("etag"), etag_of(b"not signed"));
    let before = h.s3.lock().unwrap().len();
    let other = hex::encode(Sha256::digest(b"another body"));
    let r = h
        .send(Req {
            headers: vec![("x-amz-content-sha256", &other)],
            body: b"this body",
            ..req("PUT", "/photos/u.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(
        r.body.contains("<Code>XAmzContentSHA256Mismatch</Code>"),
        "{r:?}"
    );
    assert_eq!(h.s3.lock().unwrap().len(), before);
    h.stop().await;
}

/// Without credentials nothing is verified, but the aws-chunked framing is
/// still decoded: the service gets the data, never the chunk headers.
#[tokio::test]
async fn anonymous_aws_chunked_bodies_are_decoded() {
    // Unsigned requests allowed: these carry no Authorization at all.
    let h = Harness::start_with(false, true).await;
    let zeros = "0".repeat(64);
    let signed = format!("3;chunk-signature={zeros}\r\nabc\r\n0;chunk-signature={zeros}\r\n\r\n");
    for (mode, body) in [
        ("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", signed.as_bytes()),
        (
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            b"3\r\nabc\r\n0\r\n\r\n".as_slice(),
        ),
    ] {
        let r = h
            .send(Req {
                headers: chunked_headers(mode, "3"),
                body,
                key: None,
                ..req("PUT", "/photos/new.txt", "s3")
            })
            .await;
        assert_eq!(r.status, StatusCode::OK, "{mode}: {r:?}");
        assert_eq!(r.header("etag"), etag_of(b"abc"), "{mode}");
        assert_eq!(r.header("x-amz-object-size"), "3", "{mode}");
    }
    // The framing is still checked.
    let r = h
        .send(Req {
            headers: chunked_headers("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "4"),
            body: b"3\r\nabc\r\n0\r\n\r\n",
            key: None,
            ..req("PUT", "/photos/new.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("<Code>IncompleteBody</Code>"), "{r:?}");
    h.stop().await;
}

/// restJson1 (Kinesis Video's PutMedia shape): the payload streams, its
/// aws-chunked errors come back as JSON errors, and a service that takes no
/// aws-chunked bodies (this one's signing name is not Kinesis Video's) has
/// signed STREAMING-* payloads refused.
#[tokio::test]
async fn rest_json1_payloads_stream() {
    let h = Harness::start(true).await;
    let r = h
        .send(Req {
            headers: vec![("x-amzn-stream-name", "cam")],
            body: b"frames",
            ..req("POST", "/putMedia", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"digest": hex::encode(Sha256::digest(b"frames")), "length": 6})
    );
    let before = h.videos.lock().unwrap().len();
    let mut headers = chunked_headers("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "3");
    headers.push(("x-amzn-stream-name", "cam"));
    let intact = |ctx: &sigv4::SigningContext| signed_frames(ctx, &[b"abc"]).concat();
    let r = h
        .send(Req {
            headers,
            encode: Some(&intact),
            ..req("POST", "/putMedia", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        r.header("x-amzn-errortype"),
        "InvalidSignatureException",
        "{r:?}"
    );
    assert_eq!(h.videos.lock().unwrap().len(), before);
    h.stop().await;

    // Anonymous (unsigned allowed): the framing decoded, its errors in JSON.
    let h = Harness::start_with(false, true).await;
    let mut headers = chunked_headers("STREAMING-UNSIGNED-PAYLOAD-TRAILER", "3");
    headers.push(("x-amzn-stream-name", "cam"));
    let r = h
        .send(Req {
            headers: headers.clone(),
            body: b"3\r\nabc\r\n0\r\n\r\n",
            key: None,
            ..req("POST", "/putMedia", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.json()["digest"],
        json!(hex::encode(Sha256::digest(b"abc")))
    );
    let r = h
        .send(Req {
            headers,
            body: b"3\r\nabc\r\n",
            key: None,
            ..req("POST", "/putMedia", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "IncompleteBody", "{r:?}");
    assert!(r.json()["message"].is_string(), "{r:?}");
    h.stop().await;
}

/// A request body fed from a channel, as a client streams an upload.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// 64 MiB of signed chunks stream through: the service has bytes of the
/// body while the client is still sending it (so the server cannot be
/// holding the whole body), and gets it a chunk at a time. (Peak RSS is no
/// measure here: the other tests of this binary share the process.)
#[tokio::test]
async fn large_uploads_stream_without_being_buffered() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 64;
    let h = Harness::start(true).await;
    let path = "/photos/big.bin";
    let length = (CHUNK * CHUNKS).to_string();
    let mut headers: Vec<(String, String)> =
        chunked_headers("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", &length)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    headers.push(("host".into(), h.addr.clone()));
    let (akid, secret) = ADMIN.unwrap();
    let (amz_date, signature) = sign("PUT", path, "s3", akid, secret, &mut headers, b"");
    let ctx = sigv4::SigningContext::new(secret, &amz_date, "us-east-1", "s3", &signature);

    let stream = tokio::net::TcpStream::connect(&h.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::builder().method("PUT").uri(path);
    for (k, v) in &headers {
        request = request.header(k, v);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let response = tokio::spawn(send.send_request(request.body(ChannelBody(rx)).unwrap()));
    let streamed_before = h.s3_streamed.load(Ordering::SeqCst);
    let mut previous = ctx.seed_signature.clone();
    let mut hasher = Sha256::new();
    for i in 0..CHUNKS {
        let data: Vec<u8> = (0..CHUNK).map(|j| (i * 31 + j) as u8).collect();
        hasher.update(&data);
        tx.send(Bytes::from(signed_chunk(&ctx, &mut previous, &data)))
            .await
            .unwrap();
        if i == CHUNKS / 2 {
            // Half sent: the service must already have some of it.
            let mut waited = 0;
            while h.s3_streamed.load(Ordering::SeqCst) == streamed_before {
                assert!(waited < 600, "the service saw nothing of a half-sent body");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                waited += 1;
            }
        }
    }
    tx.send(Bytes::from(signed_chunk(&ctx, &mut previous, b"")))
        .await
        .unwrap();
    drop(tx);
    let r = response.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", hex::encode(hasher.finalize())));
    assert_eq!(
        h.s3_streamed.load(Ordering::SeqCst) - streamed_before,
        (CHUNK * CHUNKS) as u64
    );
    // Handed over piece by piece (a chunk at most), never as one buffer.
    {
        let seen = h.s3.lock().unwrap();
        let streamed = &seen.last().unwrap().1["Streamed"];
        assert!(
            streamed["pieces"].as_u64().unwrap() >= CHUNKS as u64,
            "{streamed}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn json_services_keep_working_beside_the_rest_ones() {
    let h = Harness::start(true).await;
    let json_call =
        |service: &'static str, target: &'static str, ct: &'static str, body: &'static [u8]| Req {
            headers: vec![("x-amz-target", target), ("content-type", ct)],
            body,
            ..req("POST", "/", service)
        };
    let r = h
        .send(json_call(
            "kinesis",
            "Kinesis_20131202.ListStreams",
            "application/x-amz-json-1.1",
            b"{}",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["StreamNames"], json!([]));
    let r = h
        .send(json_call(
            "dynamodb",
            "DynamoDB_20120810.ListTables",
            "application/x-amz-json-1.0",
            b"{}",
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["TableNames"], json!([]));
    // The awsJson1_0 test service: routed by its target prefix, validated by
    // its model, authorized on what it names.
    let r = h
        .send(json_call(
            "widgets",
            "Widgets_20260101.GetWidget",
            "application/x-amz-json-1.0",
            br#"{"Name": "gear"}"#,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"Name": "gear", "Size": 3}));
    assert_eq!(r.header("content-type"), "application/x-amz-json-1.0");
    assert_eq!(
        h.widgets.lock().unwrap().last().unwrap().2,
        ["arn:aws:widgets:us-east-1:000000000000:widget/gear"]
    );
    let r = h
        .send(json_call(
            "widgets",
            "Widgets_20260101.GetWidget",
            "application/x-amz-json-1.0",
            br#"{"Name": "much-too-long"}"#,
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.json()["__type"], "ValidationException");
    let r = h
        .send(json_call(
            "widgets",
            "Widgets_20260101.GetWidget",
            "application/x-amz-json-1.0",
            br#"{"Name": "missing"}"#,
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.json()["__type"], "WidgetNotFoundException");
    // The reader may not call it (no allow for widgets:GetWidget).
    let r = h
        .send(Req {
            key: READER,
            ..json_call(
                "widgets",
                "Widgets_20260101.GetWidget",
                "application/x-amz-json-1.0",
                br#"{"Name": "gear"}"#,
            )
        })
        .await;
    assert_eq!(r.json()["__type"], "AccessDeniedException", "{r:?}");
    // A Kinesis-signed GET is no REST service's: answered as before.
    let r = h.send(req("GET", "/", "kinesis")).await;
    assert!(r.body.contains("AccessDeniedException"), "{r:?}");
    assert!(h.s3.lock().unwrap().is_empty() && h.videos.lock().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn anonymous_requests_route_by_host_then_templates() {
    // By default anonymous mode wants a signature (checked for its form
    // only), answered in the service's protocol once the operation is known.
    let h = Harness::start(false).await;
    let r = h
        .send(Req {
            key: None,
            ..req("GET", "/streams?x=1", "videos")
        })
        .await;
    // The REST front ends answer it 403.
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert_eq!(
        r.header("x-amzn-errortype"),
        "MissingAuthenticationTokenException",
        "{r:?}"
    );
    let r = h
        .send(Req {
            key: None,
            headers: vec![("authorization", "X")],
            ..req("GET", "/streams?x=1", "videos")
        })
        .await;
    assert_eq!(
        r.header("x-amzn-errortype"),
        "IncompleteSignatureException",
        "{r:?}"
    );
    assert!(r.body.contains("Authorization=X"), "{r:?}");
    let r = h
        .send(Req {
            key: None,
            ..req("GET", "/photos/k", "s3")
        })
        .await;
    // S3 names it AccessDenied.
    assert!(r.body.contains("Missing Authentication Token"), "{r:?}");
    // A well-formed signature is enough, whatever its key.
    let r = h
        .send(Req {
            key: Some(("AKIDNOBODY", "whatever")),
            ..req("GET", "/streams?x=1", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(h.s3.lock().unwrap().is_empty());
    h.stop().await;

    let h = Harness::start_with(false, true).await;
    // No credential scope: `<bucket>.localhost` names the bucket.
    let r = h
        .send(Req {
            key: None,
            host: Some("photos.localhost"),
            ..req("GET", "/deep/key.txt", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body, "hello deep/key.txt");
    // Then the path templates of every REST service, in mount order.
    let r = h
        .send(Req {
            key: None,
            ..req("GET", "/streams?x=1", "videos")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json(), json!({"streamNames": ["x=1"]}));
    let r = h
        .send(Req {
            key: None,
            ..req("GET", "/photos/k", "s3")
        })
        .await;
    assert_eq!(r.body, "hello k", "{r:?}");
    h.stop().await;
}

/// A service with background work and a resource it refused at start-up:
/// its task says when it runs and, through `Dropped`, when it is dropped.
struct WithChores {
    inner: Arc<TestService>,
    started: tokio::sync::mpsc::UnboundedSender<()>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

struct Dropped(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Service for WithChores {
    fn spec(&self) -> &Spec {
        self.inner.spec()
    }

    fn supports(&self, operation: &str) -> bool {
        self.inner.supports(operation)
    }

    fn call<'a>(&'a self, request: Request<'a>) -> CallFuture<'a> {
        self.inner.call(request)
    }

    fn start(&self) -> Vec<ripstream_api::Task> {
        let (started, dropped) = (self.started.clone(), Dropped(self.dropped.clone()));
        vec![Box::pin(async move {
            let _dropped = dropped;
            let _ = started.send(());
            std::future::pending::<()>().await
        })]
    }

    fn unavailable(&self) -> Vec<String> {
        vec!["widget/lost".into()]
    }
}

#[tokio::test]
async fn services_background_work_runs_while_serving_and_is_dropped_at_shutdown() {
    let config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (inner, _) = TestService::new(WIDGETS_MODEL, "widgets", widgets);
    let svc = Arc::new(WithChores {
        inner,
        started,
        dropped: dropped.clone(),
    });
    let server = Server::bind(config, Default::default(), vec![svc])
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(std::time::Duration::from_secs(10), running.recv())
        .await
        .expect("the background task was started")
        .unwrap();
    // /health asks every service what it refused (names shown on loopback).
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""status":"degraded""#) && answer.contains("widget/lost"),
        "{answer}"
    );
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the background task is dropped before run returns"
    );
}

#[tokio::test]
async fn amz_headers_must_be_signed() {
    let h = Harness::start(true).await;
    // Signed metadata binds as before.
    let r = h
        .send(Req {
            headers: vec![("x-amz-meta-owner", "ana")],
            body: b"data",
            ..req("PUT", "/photos/signed.png", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Metadata (or any x-amz-* header) added to a signed request is refused
    // as S3 refuses it, naming the headers; the X-Ray trace header, which no
    // SDK signs, is not.
    let r = h
        .send(Req {
            headers: vec![("x-amz-meta-owner", "ana")],
            added: vec![
                ("x-amz-meta-owner2", "mallory"),
                ("x-amz-acl", "public-read"),
                (
                    "x-amzn-trace-id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793",
                ),
            ],
            body: b"data",
            ..req("PUT", "/photos/relayed.png", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(r.body.contains("<Code>AccessDenied</Code>"), "{r:?}");
    assert!(
        r.body
            .contains("<HeadersNotSigned>x-amz-acl, x-amz-meta-owner2</HeadersNotSigned>"),
        "{r:?}"
    );
    assert!(
        !h.s3
            .lock()
            .unwrap()
            .iter()
            .any(|(_, input, _)| input["Key"] == "relayed.png"),
        "the refused request reached the service"
    );
    // The X-Ray header alone is fine.
    let r = h
        .send(Req {
            added: vec![(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793",
            )],
            body: b"data",
            ..req("PUT", "/photos/traced.png", "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // A presigned URL is held to the same rule.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let url = presign("PUT", "/photos/presigned.png", &h.addr, now);
    let r = h
        .send(Req {
            added: vec![("x-amz-meta-owner", "mallory")],
            key: None,
            body: b"data",
            ..req("PUT", &url, "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{r:?}");
    assert!(
        r.body
            .contains("<HeadersNotSigned>x-amz-meta-owner</HeadersNotSigned>"),
        "{r:?}"
    );
    let r = h
        .send(Req {
            key: None,
            body: b"data",
            ..req("PUT", &url, "s3")
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    h.stop().await;
}

/// A presigned URL for `path` (host signed only, UNSIGNED-PAYLOAD), as
/// the SDKs' presigners build it.
fn presign(method: &str, path: &str, host: &str, now: i64) -> String {
    let amz_date = sigv4::format_amz_date(now);
    let date = &amz_date[..8];
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let mut pairs = [
        (
            "X-Amz-Algorithm".to_string(),
            "AWS4-HMAC-SHA256".to_string(),
        ),
        ("X-Amz-Credential".to_string(), format!("AKIDADMIN/{scope}")),
        ("X-Amz-Date".to_string(), amz_date.clone()),
        ("X-Amz-Expires".to_string(), "300".to_string()),
        ("X-Amz-SignedHeaders".to_string(), "host".to_string()),
    ]
    .map(|(k, v)| (uri_encode(&k), uri_encode(&v)));
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical = format!("{method}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = sigv4::signing_key("admin-secret", date, "us-east-1", "s3");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("{path}?{query}&X-Amz-Signature={signature}")
}

#[tokio::test]
async fn one_signature_covers_one_path() {
    let h = Harness::start(true).await;
    let send = |path: &'static str, headers: Vec<(String, String)>| {
        let addr = h.addr.clone();
        async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = http::Request::builder().method("GET").uri(path);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let resp = send
                .send_request(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            resp.status()
        }
    };
    // S3 signs the path as sent. A signature over `/photos/100%2525` (the
    // key `100%25`) is also the double encoding of `/photos/100%25` (the key
    // `100%`): it must not cover that other key.
    let mut headers = vec![("host".to_string(), h.addr.clone())];
    sign(
        "GET",
        "/photos/100%2525",
        "s3",
        "AKIDADMIN",
        "admin-secret",
        &mut headers,
        b"",
    );
    assert_eq!(
        send("/photos/100%2525", headers.clone()).await,
        StatusCode::OK
    );
    assert_eq!(send("/photos/100%25", headers).await, StatusCode::FORBIDDEN);
    // Every other service signs the double encoding only: a request to
    // Videos signed over its path as sent is refused.
    let mut headers = vec![("host".to_string(), h.addr.clone())];
    sign_path(
        "GET",
        "/streams/a%3Ab",
        Some("/streams/a%3Ab"),
        "videos",
        "AKIDADMIN",
        "admin-secret",
        &mut headers,
        b"",
    );
    assert_eq!(send("/streams/a%3Ab", headers).await, StatusCode::FORBIDDEN);
    h.stop().await;
}

#[tokio::test]
async fn a_decoded_slash_is_no_part_of_a_bucket_name() {
    let h = Harness::start(true).await;
    let before = h.s3.lock().unwrap().len();
    // `%2F` would make the bucket `photos/x`, whose ARN
    // (`arn:aws:s3:::photos/x`) is the object `x` in `photos`.
    let r = h.send(req("GET", "/photos%2Fx?list-type=2", "s3")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert!(r.body.contains("<Code>InvalidBucketName</Code>"), "{r:?}");
    let r = h.send(req("GET", "/photos%2Fx/key", "s3")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(h.s3.lock().unwrap().len(), before);
    // In a greedy label (the key) it is the key's own `/`.
    let r = h.send(req("GET", "/photos/a%2Fb", "s3")).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(h.s3.lock().unwrap().last().unwrap().1["Key"], "a/b");
    // Another service's label: its validation error.
    let r = h.send(req("DELETE", "/streams/a%2Fb", "videos")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{r:?}");
    assert_eq!(r.header("x-amzn-errortype"), "ValidationException", "{r:?}");
    h.stop().await;
}
