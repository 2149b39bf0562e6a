//! Starts the real `ripstream` binary on an ephemeral port and talks to it
//! with the official AWS SDK for Rust, or with raw HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_ripstream");

/// A running server with its own data directory; killed when dropped.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    dir: TempDir,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    stderr_path: PathBuf,
    scheme: &'static str,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> TestServer {
        TestServer::start_on("127.0.0.1:0", extra)
    }

    /// Starts listening on `listen` (such as `0.0.0.0:0`) with extra flags.
    pub fn start_on(listen: &str, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("server.log");
        let mut s = TestServer {
            child: None,
            addr: String::new(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            stderr_path,
            scheme: "http",
        };
        s.spawn(listen);
        s
    }

    /// Starts with extra flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_path = dir.path().join("server.log");
        let mut s = TestServer {
            child: None,
            addr: String::new(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stderr_path,
            scheme: "http",
        };
        s.spawn("127.0.0.1:0");
        s
    }

    /// Replaces the environment variables of the next [`TestServer::restart`].
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Waits for the server to exit by itself; `false` if it still runs
    /// after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    fn spawn(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("log file");
        // RIPSTREAM_TEST_BIN runs the suite against another build (say, the
        // last release, to see a new test fail there).
        let bin = std::env::var("RIPSTREAM_TEST_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .env("RIPSTREAM_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start ripstream");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", self.log());
            }
        };
        self.scheme = if line.contains("https://") {
            "https"
        } else {
            "http"
        };
        let addr = line
            .rsplit("://")
            .next()
            .expect("address in the start-up line")
            .trim()
            .to_string();
        self.addr = addr;
        self.child = Some(child);
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The server's process id.
    pub fn process_id(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to sync or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the extra `serve` flags used by the next [`TestServer::restart`].
    pub fn set_extra(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        // A server still running holds the data directory: the new one
        // could not open it, and the old one would outlive the test.
        if self.child.is_some() {
            self.terminate();
        }
        let addr = self.addr.clone();
        for _ in 0..50 {
            self.spawn_or_retry(&addr);
            if self.child.is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart on {addr}; log:\n{}", self.log());
    }

    fn spawn_or_retry(&mut self, addr: &str) {
        // The port may linger briefly after a kill; retry until it binds.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn(addr)));
        if result.is_err() {
            self.child = None;
        }
    }

    pub fn client(&self) -> Client {
        client_for(&self.url())
    }

    /// Files under the data directory (recursively) whose name ends with `suffix`.
    pub fn files_ending_with(&self, suffix: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.data_dir(), &mut |p| {
            if p.to_string_lossy().ends_with(suffix) {
                out.push(p.to_path_buf());
            }
        });
        out.sort();
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, f);
            } else {
                f(&p);
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An SDK client without retries, so tests see each response as it is.
pub fn client_for(url: &str) -> Client {
    client_with(url, "AKIDTEST", "secret")
}

/// An SDK client signing with the given keys.
pub fn client_with(url: &str, access_key: &str, secret: &str) -> Client {
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(access_key, secret, None, None, "test"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

/// The AWS error code of a failed SDK call.
pub fn code<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .map(String::from)
        .unwrap_or_else(|| format!("not a service error: {e:?}"))
}

/// The message of a failed SDK call.
pub fn message<E, R>(e: &aws_sdk_kinesis::error::SdkError<E, R>) -> String
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.message())
        .unwrap_or_default()
        .to_string()
}

/// A raw HTTP/1.1 response.
pub struct RawResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A well-formed SigV4 `Authorization` header no key verifies: what the
/// default (anonymous) mode requires of a request, which checks the form
/// of a signature only.
pub const DUMMY_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";

/// Sends one request over HTTP/1.1 (or HTTP/2 with prior knowledge), with
/// [`DUMMY_AUTHORIZATION`] (and an `X-Amz-Date`) unless the request carries
/// a signature of its own (an `Authorization` header or `X-Amz-Algorithm`).
pub async fn raw(
    addr: &str,
    h2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut signed = headers.to_vec();
    if !has("authorization") && !path.contains("X-Amz-Algorithm") {
        signed.push(("authorization", DUMMY_AUTHORIZATION));
        if !has("x-amz-date") && !has("date") {
            signed.push(("x-amz-date", "20260101T000000Z"));
        }
    }
    raw_unsigned(addr, h2, method, path, &signed, body).await
}

/// Sends one request exactly as given (no signature added).
pub async fn raw_unsigned(
    addr: &str,
    h2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> RawResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    // HTTP/2 carries the authority in the URI (`:authority`); HTTP/1.1
    // clients send the path (origin form) and name the host in `Host`.
    let uri = if h2 {
        format!("http://{addr}{path}")
    } else {
        path.to_string()
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    if !h2 && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("h2 request")
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        send.send_request(req).await.expect("request")
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    RawResponse {
        status,
        headers,
        body,
    }
}

/// POSTs a Kinesis JSON request (with [`DUMMY_AUTHORIZATION`]).
pub async fn api(addr: &str, operation: &str, body: &str) -> RawResponse {
    let target = format!("Kinesis_20131202.{operation}");
    raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        body.as_bytes().to_vec(),
    )
    .await
}

/// POSTs a Kinesis JSON request with no signature at all.
pub async fn api_unsigned(addr: &str, operation: &str, body: &str) -> RawResponse {
    let target = format!("Kinesis_20131202.{operation}");
    raw_unsigned(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        body.as_bytes().to_vec(),
    )
    .await
}

/// Creates a provisioned stream with `shards` shards.
pub async fn create_stream(c: &Client, name: &str, shards: i32) {
    c.create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
}

/// Reads every record of a shard from the trim horizon to the current end.
pub async fn read_shard(
    c: &Client,
    stream: &str,
    shard: &str,
) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut it = c
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("iterator")
        .shard_iterator
        .expect("an iterator");
    let mut out = Vec::new();
    loop {
        let r = c
            .get_records()
            .shard_iterator(&it)
            .send()
            .await
            .expect("get records");
        let n = r.records().len();
        out.extend(r.records().iter().cloned());
        match r.next_shard_iterator() {
            Some(next) if n > 0 || r.millis_behind_latest().unwrap_or(0) > 0 => {
                it = next.to_string()
            }
            _ => return out,
        }
    }
}

/// An SDK client that speaks HTTP/2 with prior knowledge (cleartext), as the
/// Java and Rust SDKs do for SubscribeToShard over TLS.
pub fn h2_client_for(addr: &str) -> Client {
    let connector = H2Connector {
        addr: addr.to_string(),
        sender: Default::default(),
    };
    let http_client = aws_smithy_runtime_api::client::http::http_client_fn(move |_, _| {
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(connector.clone())
    });
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .http_client(http_client)
        .build();
    Client::from_conf(conf)
}

type H2Sender = hyper::client::conn::http2::SendRequest<aws_smithy_types::body::SdkBody>;

#[derive(Debug, Clone)]
struct H2Connector {
    addr: String,
    sender: std::sync::Arc<tokio::sync::Mutex<Option<H2Sender>>>,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for H2Connector {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let this = self.clone();
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::new(async move {
            let req = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let mut send = {
                let mut guard = this.sender.lock().await;
                if guard.as_ref().is_none_or(|s| s.is_closed()) {
                    let stream = tokio::net::TcpStream::connect(&this.addr)
                        .await
                        .map_err(|e| ConnectorError::io(e.into()))?;
                    let (send, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        hyper_util::rt::TokioIo::new(stream),
                    )
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?;
                    tokio::spawn(conn);
                    *guard = Some(send);
                }
                guard.clone().expect("connected above")
            };
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            let resp = resp.map(aws_smithy_types::body::SdkBody::from_body_1_x);
            aws_smithy_runtime_api::client::orchestrator::HttpResponse::try_from(resp)
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}
