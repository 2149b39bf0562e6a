//! The awsQuery protocol over real HTTP: STS mounted as the binary mounts
//! it (after Data Streams and DynamoDB), driven by a hyper client with
//! SigV4-signed and unsigned form requests.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use ripstream_api::Service;
use ripstream_server::auth::{Principals, sigv4};
use ripstream_server::{Server, ServerConfig};
use sha2::{Digest, Sha256};

const CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN"
secret_access_key = "admin-secret"

[[principal]]
name = "reader"
access_key_id = "AKIDREADER"
secret_access_key = "reader-secret"
policy = '''{"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}'''
"#;

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const IDENTITY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";

struct Harness {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The text of the first `<tag>` element.
    fn element(&self, tag: &str) -> &str {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let Some(at) = self.body.find(&open) else {
            return "";
        };
        let rest = &self.body[at + open.len()..];
        &rest[..rest.find(&close).unwrap_or(0)]
    }
}

impl Harness {
    async fn start(signed: bool) -> Harness {
        Harness::start_with(signed, false).await
    }

    /// `allow_unsigned`: anonymous mode serves requests with no signature.
    async fn start_with(signed: bool, allow_unsigned: bool) -> Harness {
        Harness::start_tuned(signed, allow_unsigned, |_| {}).await
    }

    /// `tune` adjusts the server's limits before it binds.
    async fn start_tuned(
        signed: bool,
        allow_unsigned: bool,
        tune: impl FnOnce(&mut ServerConfig),
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        tune(&mut config);
        let mut kinesis_config = ripstream_kinesis::ServiceConfig::new(dir.path());
        kinesis_config.account_id = "123456789012".into();
        config.account = kinesis_config.account_id.clone();
        if signed {
            config.principals = Some(Arc::new(Principals::parse(CREDENTIALS).unwrap()));
        }
        config.allow_unsigned_requests = allow_unsigned;
        let ctx = ripstream_runtime::ServiceContext::open(kinesis_config.context()).unwrap();
        let mut registry = prometheus_client::registry::Registry::default();
        let kinesis = ripstream_kinesis::Service::open_in(&ctx, kinesis_config, &mut registry)
            .await
            .unwrap();
        let dynamo = ripstream_dynamo::Dynamo::open_in(&ctx).unwrap();
        let services: Vec<Arc<dyn Service>> = vec![
            Arc::new(ripstream_kinesis::api::KinesisApi::new(kinesis)),
            Arc::new(ripstream_dynamo::api::DynamoApi::new(dynamo)),
            Arc::new(ripstream_sts::Sts::new(&ctx.region, &ctx.account_id)),
        ];
        let server = Server::bind(config, registry, services).await.unwrap();
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
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        key: Option<(&str, &str)>,
    ) -> Resp {
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        headers.push(("host".into(), self.addr.clone()));
        let service = if headers.iter().any(|(k, _)| k == "x-amz-target") {
            "kinesis"
        } else {
            "sts"
        };
        if let Some((akid, secret)) = key {
            sign(method, path, service, akid, secret, &mut headers, body);
        }
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = send
            .send_request(req.body(Full::new(Bytes::from(body.to_vec()))).unwrap())
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

    async fn sts(&self, body: &[u8], key: Option<(&str, &str)>) -> Resp {
        self.send("POST", "/", &[("content-type", FORM)], body, key)
            .await
    }

    async fn metrics(&self) -> String {
        self.send("GET", "/metrics", &[], b"", None).await.body
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

const ADMIN: Option<(&str, &str)> = Some(("AKIDADMIN", "admin-secret"));
const READER: Option<(&str, &str)> = Some(("AKIDREADER", "reader-secret"));
const GET_IDENTITY: &str = "/?Action=GetCallerIdentity&Version=2011-06-15";

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

/// SigV4 in the Authorization header, the path signed as sent (STS signs
/// `/`, the same in both of SigV4's forms).
fn sign(
    method: &str,
    path_and_query: &str,
    service: &str,
    akid: &str,
    secret: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
) {
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
}

/// An awsQuery error: its type, code and request id.
fn assert_error(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.header("content-type"), "text/xml");
    assert!(
        r.body.starts_with(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>"
        ),
        "{r:?}"
    );
    assert_eq!(r.element("Code"), code, "{r:?}");
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    assert_eq!(r.element("Type"), kind);
    assert_eq!(r.element("RequestId"), r.header("x-amzn-requestid"));
}

fn counted(metrics: &str, what: &str) -> bool {
    metrics
        .lines()
        .any(|l| !l.starts_with('#') && l.contains("service=\"sts\"") && l.contains(what))
}

#[tokio::test]
async fn signed_callers_get_their_own_identity() {
    let h = Harness::start(true).await;
    let r = h.sts(IDENTITY, ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.header("content-type"), "text/xml");
    assert!(
        r.body.starts_with(
            "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>"
        ),
        "{r:?}"
    );
    assert_eq!(r.element("Arn"), "arn:aws:iam::123456789012:user/admin");
    assert_eq!(r.element("Account"), "123456789012");
    let admin_id = ripstream_sts::user_id("123456789012", "admin");
    assert_eq!(r.element("UserId"), admin_id);
    assert!(admin_id.starts_with("AIDA"));
    assert_eq!(r.element("RequestId"), r.header("x-amzn-requestid"));
    assert!(
        r.body
            .ends_with("</ResponseMetadata></GetCallerIdentityResponse>")
    );

    // No permission is needed, so even a principal denied everything learns who it is.
    let r = h.sts(IDENTITY, READER).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.element("Arn"), "arn:aws:iam::123456789012:user/reader");
    assert_ne!(r.element("UserId"), admin_id);

    // Parameters in the query string of a signed GET.
    let r = h.send("GET", GET_IDENTITY, &[], b"", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.element("Arn"), "arn:aws:iam::123456789012:user/admin");

    // Data Streams on the same port is untouched by the new routes.
    let r = h
        .send(
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ],
            b"{}",
            ADMIN,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(r.body.contains("StreamNames"), "{r:?}");

    let m = h.metrics().await;
    assert!(counted(&m, "operation=\"GetCallerIdentity\""), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn authentication_failures_are_awsquery_errors() {
    let h = Harness::start(true).await;
    let r = h.sts(IDENTITY, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "MissingAuthenticationToken");
    let r = h.sts(IDENTITY, Some(("AKIDADMIN", "wrong-secret"))).await;
    assert_error(&r, StatusCode::FORBIDDEN, "SignatureDoesNotMatch");
    let r = h.sts(IDENTITY, Some(("AKIDNOBODY", "x"))).await;
    assert_error(&r, StatusCode::FORBIDDEN, "InvalidClientTokenId");
    h.stop().await;
}

#[tokio::test]
async fn actions_and_versions_are_checked_as_aws_does() {
    let h = Harness::start(true).await;
    let r = h.sts(b"Action=AssumeRole&Version=2011-06-15", ADMIN).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidAction");
    assert_eq!(
        r.element("Message"),
        "Could not find operation AssumeRole for version 2011-06-15"
    );
    let r = h.sts(b"Action=GetCallerIdentity", ADMIN).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidAction");
    assert_eq!(
        r.element("Message"),
        "Could not find operation GetCallerIdentity for version NO_VERSION_SPECIFIED"
    );
    let r = h
        .sts(b"Action=GetCallerIdentity&Version=2010-01-01", ADMIN)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidAction");
    let r = h.sts(b"Version=2011-06-15", ADMIN).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "MissingAction");
    // Parameters the operation does not define are ignored, as AWS ignores them.
    let r = h
        .sts(
            b"Action=GetCallerIdentity&Version=2011-06-15&Extra.member.1=x",
            ADMIN,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    let m = h.metrics().await;
    assert!(counted(&m, "InvalidAction"), "{m}");
    h.stop().await;
}

#[tokio::test]
async fn anonymous_mode_answers_with_the_account_root() {
    // Anonymous mode still wants a signature (any well-formed one)...
    let h = Harness::start(false).await;
    let r = h.sts(IDENTITY, None).await;
    assert_error(&r, StatusCode::FORBIDDEN, "MissingAuthenticationToken");
    h.stop().await;
    // ...unless unsigned requests are allowed.
    let h = Harness::start_with(false, true).await;
    // Unsigned: routed by the form's content type, the action picking STS.
    let r = h.sts(IDENTITY, None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.element("Arn"), "arn:aws:iam::123456789012:root");
    assert_eq!(r.element("UserId"), "123456789012");
    assert_eq!(r.element("Account"), "123456789012");
    let r = h.send("GET", GET_IDENTITY, &[], b"", None).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.element("Account"), "123456789012");
    let r = h.sts(b"Action=Nope&Version=2011-06-15", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "InvalidAction");
    h.stop().await;
}

/// Opens a connection from `source` (another loopback address than the
/// harness's client uses) and sends a request's headers that promise a body
/// which never comes.
async fn slow_body(addr: &str, source: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\nx-amz-target: Kinesis_20131202.ListStreams\r\n\
         content-type: application/x-amz-json-1.1\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn slow_bodies_do_not_take_the_in_flight_slots() {
    let h = Harness::start_tuned(false, true, |c| {
        c.max_in_flight = 4;
        c.max_receiving = 64;
        c.max_receiving_per_source = 8;
    })
    .await;
    // Twice as many trickling bodies as there are in-flight slots, all from
    // one source.
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(slow_body(&h.addr, "127.0.0.2").await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // One more from that source is over its cap, answered at once.
    let mut extra = slow_body(&h.addr, "127.0.0.2").await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut extra, &mut answer),
    )
    .await
    .expect("an over-cap request is answered at once")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("ServiceUnavailableException"), "{answer}");
    // Another client's request with a body still runs.
    let r = h
        .send(
            "POST",
            "/",
            &[
                ("x-amz-target", "Kinesis_20131202.ListStreams"),
                ("content-type", "application/x-amz-json-1.1"),
            ],
            b"{}",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // So does an STS request.
    let r = h.sts(IDENTITY, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    drop(slow);
    h.stop().await;
}

#[tokio::test]
async fn awsquery_bodies_and_parameter_counts_are_capped() {
    let h = Harness::start(true).await;
    // A body over 64 KiB is refused before it becomes a map.
    let mut big = IDENTITY.to_vec();
    big.extend_from_slice(b"&Pad=");
    big.resize(65 * 1024, b'x');
    let r = h.sts(&big, ADMIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body.contains("65536 bytes"), "{}", r.body);
    // So is a form of more than 1000 parameters, before Action is read.
    let mut many = IDENTITY.to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("&k{i}=").as_bytes());
    }
    let r = h.sts(&many, ADMIN).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.element("Code"), "MalformedQueryString", "{}", r.body);
    // A real request is still served.
    let r = h.sts(IDENTITY, ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    h.stop().await;
}
