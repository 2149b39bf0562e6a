//! The Lambda processor without Lambda: a function configured in the
//! server's TOML (`[functions.NAME] command = [...]` or `url = "..."`) that
//! a LambdaArn `arn:aws:lambda:<region>:<account>:function:NAME[:qualifier]`
//! resolves to. It speaks Firehose's data-transformation format exactly:
//! one JSON request, one JSON response, per invocation (on stdin and
//! stdout, or as an HTTP POST and its answer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::warn;

/// A configured transformation function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionConfig {
    /// A program and its arguments, run once per invocation.
    Command(Vec<String>),
    /// A URL the request is POSTed to; the response body is the
    /// function's response.
    Url(HttpFunction),
}

/// A function behind an `http://` or `https://` URL, with its HTTP client
/// (`ripstream-delivery`'s: no redirects, no proxies, a 10 s connect
/// timeout). The URL is the operator's, so plain http is allowed and no
/// allow-list of networks applies.
#[derive(Debug, Clone)]
pub struct HttpFunction {
    url: ripstream_delivery::Url,
    ca_file: Option<PathBuf>,
    client: ripstream_delivery::Client,
}

/// Equal when configured alike (the client is made from the same).
impl PartialEq for HttpFunction {
    fn eq(&self, other: &HttpFunction) -> bool {
        self.url == other.url && self.ca_file == other.ca_file
    }
}

impl Eq for HttpFunction {}

/// Why a `[functions.NAME] url` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FunctionUrlError {
    #[error(
        "url {0:?} is not an http:// or https:// URL with a host (and no user:password@ or #fragment)"
    )]
    Url(String),
    #[error("ca_file is for https:// URLs; {0:?} is not one")]
    CaFileWithoutHttps(String),
    #[error(transparent)]
    Client(#[from] ripstream_delivery::ClientError),
}

impl HttpFunction {
    /// A function at `url`, its server's certificate checked against the
    /// platform's roots and those of `ca_file` (a PEM file, read now).
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<HttpFunction, FunctionUrlError> {
        let parsed = ripstream_delivery::parse_url(url, true)
            .map_err(|_| FunctionUrlError::Url(url.to_string()))?;
        let mut builder = ripstream_delivery::ClientBuilder::new();
        if let Some(ca) = ca_file {
            if parsed.scheme() != "https" {
                return Err(FunctionUrlError::CaFileWithoutHttps(url.to_string()));
            }
            builder = builder.ca_file(ca)?;
        }
        Ok(HttpFunction {
            url: parsed,
            ca_file: ca_file.map(Path::to_path_buf),
            client: builder.build()?,
        })
    }

    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

/// The configured functions by name.
pub type Functions = BTreeMap<String, FunctionConfig>;

/// Lambda's largest synchronous invocation payload.
pub const PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// How long one invocation may run (Lambda's default for Firehose
/// transformations is well under this; a hung command must not stall
/// delivery forever).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(300);

/// The function name an ARN names: `arn:aws:lambda:<region>:<account>:function:NAME[:qualifier]`.
pub fn function_name(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() < 7 || parts.len() > 8 || parts[0] != "arn" || parts[2] != "lambda" {
        return None;
    }
    (parts[5] == "function" && !parts[6].is_empty()).then_some(parts[6])
}

/// One record sent to the function.
#[derive(Debug, Clone)]
pub struct InRecord {
    pub arrival_ms: i64,
    pub data: Vec<u8>,
    /// The source record's metadata, for a stream-sourced delivery stream.
    pub metadata: Option<crate::source::RecordMetadata>,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(Vec<u8>),
    Dropped,
    /// Error code and message, as the error output records them.
    Failed(String, String),
}

/// Why an invocation as a whole failed (retried, then every record of it
/// goes to the error output with this code).
#[derive(Debug, Clone)]
pub struct InvokeError {
    pub code: &'static str,
    pub message: String,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The request body for a batch: AWS's shape, with `sourceKinesisStreamArn`
/// and each record's `kinesisRecordMetadata` when the delivery stream reads
/// a Kinesis stream.
pub fn request(
    invocation_id: &str,
    stream_arn: &str,
    source_stream_arn: Option<&str>,
    region: &str,
    records: &[InRecord],
) -> Value {
    let recs: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut rec = json!({
                "recordId": i.to_string(),
                "approximateArrivalTimestamp": r.arrival_ms,
                "data": b64().encode(&r.data),
            });
            if let Some(m) = &r.metadata {
                rec["kinesisRecordMetadata"] = serde_json::to_value(m).unwrap_or(Value::Null);
            }
            rec
        })
        .collect();
    let mut req = json!({
        "invocationId": invocation_id,
        "deliveryStreamArn": stream_arn,
        "region": region,
        "records": recs,
    });
    if let Some(arn) = source_stream_arn {
        req["sourceKinesisStreamArn"] = json!(arn);
    }
    req
}

/// Reads a response: one outcome per request record, in order. Records the
/// response does not mention are failed, as AWS fails them.
pub fn parse_response(body: &[u8], n: usize) -> Result<Vec<Outcome>, InvokeError> {
    Ok(parse_response_with_keys(body, n)?
        .into_iter()
        .map(|(o, _)| o)
        .collect())
}

/// Where a function's `metadata.otfMetadata` members are kept among a
/// record's partition keys: under names no partition key can have (those
/// with control characters are refused), so a partition key cannot pass
/// for an Iceberg record's table or operation.
pub const OTF_KEY_PREFIX: &str = "\u{0}otfMetadata.";

/// A record's `metadata.partitionKeys` (dynamic partitioning): scalar
/// values as strings, with its `metadata.otfMetadata` under
/// [`OTF_KEY_PREFIX`]; `Err` names what is wrong.
fn partition_keys(r: &Value) -> Result<Option<BTreeMap<String, String>>, String> {
    let mut out = BTreeMap::new();
    let keys = r.get("metadata").and_then(|m| m.get("partitionKeys"));
    let obj = match keys {
        None => None,
        Some(k) => Some(
            k.as_object()
                .ok_or("metadata.partitionKeys is not an object")?,
        ),
    };
    for (k, v) in obj.into_iter().flatten() {
        if k.chars().any(char::is_control) {
            return Err(
                "metadata.partitionKeys has a key with control characters, which no prefix can name"
                    .into(),
            );
        }
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => return Err(format!("metadata.partitionKeys.{k} is not a string")),
        };
        if s.len() > crate::jq::MAX_VALUE_BYTES {
            return Err(format!(
                "metadata.partitionKeys.{k} is longer than {} bytes",
                crate::jq::MAX_VALUE_BYTES
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "metadata.partitionKeys.{k} holds control characters, which an object key cannot"
            ));
        }
        out.insert(k.clone(), s);
    }
    // An Iceberg destination's routing (`metadata.otfMetadata`), kept
    // with the partition keys (a stream has one or the other) under names
    // of its own.
    if let Some(otf) = r.get("metadata").and_then(|m| m.get("otfMetadata")) {
        let Some(obj) = otf.as_object() else {
            return Err("metadata.otfMetadata is not an object".into());
        };
        for k in [
            crate::iceberg::ROUTE_DATABASE,
            crate::iceberg::ROUTE_TABLE,
            crate::iceberg::ROUTE_OPERATION,
        ] {
            match obj.get(k) {
                None | Some(Value::Null) => {}
                Some(Value::String(v))
                    if v.len() <= crate::jq::MAX_VALUE_BYTES
                        && !v.chars().any(char::is_control) =>
                {
                    out.insert(format!("{OTF_KEY_PREFIX}{k}"), v.clone());
                }
                Some(_) => {
                    return Err(format!(
                        "metadata.otfMetadata.{k} is not a string of at most {} bytes without control characters",
                        crate::jq::MAX_VALUE_BYTES
                    ));
                }
            }
        }
    }
    Ok((keys.is_some() || !out.is_empty()).then_some(out))
}

/// [`parse_response`] with each record's `metadata.partitionKeys`.
#[allow(clippy::type_complexity)]
pub fn parse_response_with_keys(
    body: &[u8],
    n: usize,
) -> Result<Vec<(Outcome, Option<BTreeMap<String, String>>)>, InvokeError> {
    let mut keys: Vec<Option<BTreeMap<String, String>>> = vec![None; n];
    let bad = |m: String| InvokeError {
        code: "Lambda.JsonProcessingException",
        message: m,
    };
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("The function's response is not valid JSON: {e}")))?;
    let recs = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("The function's response has no records list.".into()))?;
    let mut out: Vec<Option<Outcome>> = vec![None; n];
    for r in recs {
        let id = r.get("recordId").and_then(Value::as_str);
        let Some(i) = id.and_then(|s| s.parse::<usize>().ok()).filter(|i| *i < n) else {
            return Err(bad(format!(
                "The function's response has a record with an unknown recordId {}.",
                id.unwrap_or("(none)")
            )));
        };
        if out[i].is_some() {
            return Err(InvokeError {
                code: "Lambda.DuplicatedRecordId",
                message: format!("The function's response has recordId {i} more than once."),
            });
        }
        let outcome = match r.get("result").and_then(Value::as_str) {
            Some("Ok") => match (
                r.get("data")
                    .and_then(Value::as_str)
                    .map(|d| b64().decode(d)),
                partition_keys(r),
            ) {
                (_, Err(m)) => Outcome::Failed(
                    "Lambda.InvalidPartitionKeys".into(),
                    format!("The function returned result Ok with invalid {m}."),
                ),
                (Some(Ok(d)), Ok(k)) => {
                    keys[i] = k;
                    Outcome::Ok(d)
                }
                _ => Outcome::Failed(
                    "Lambda.JsonProcessingException".into(),
                    "The function returned result Ok without base64 data.".into(),
                ),
            },
            Some("Dropped") => Outcome::Dropped,
            Some("ProcessingFailed") => Outcome::Failed(
                "Lambda.ProcessingFailed".into(),
                "The function returned result ProcessingFailed for the record.".into(),
            ),
            other => Outcome::Failed(
                "Lambda.InvalidResult".into(),
                format!(
                    "The function returned result {} (expected Ok, Dropped or ProcessingFailed).",
                    other.unwrap_or("(none)")
                ),
            ),
        };
        out[i] = Some(outcome);
    }
    Ok(out
        .into_iter()
        .zip(keys)
        .map(|(o, k)| {
            (
                o.unwrap_or(Outcome::Failed(
                    "Lambda.MissingRecordId".into(),
                    "The function's response did not include the record.".into(),
                )),
                k,
            )
        })
        .collect())
}

/// One invocation: the request on stdin, the response from stdout.
pub async fn invoke(f: &FunctionConfig, body: &[u8]) -> Result<Vec<u8>, InvokeError> {
    let argv = match f {
        FunctionConfig::Command(argv) => argv,
        FunctionConfig::Url(f) => return post(f, body).await,
    };
    let fail = |m: String| InvokeError {
        code: "Lambda.FunctionError",
        message: m,
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("The function's command is empty.".into()))?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            // The command is the operator's: logged, never written into the
            // caller's error output.
            warn!(command = %prog, error = %e, "a transformation function's command cannot start");
            fail("The function's command could not start.".into())
        })?;
    let mut stdin = child.stdin.take();
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout".into()))?;
    let run = async {
        // Written while stdout is read, so a function answering as it reads
        // cannot deadlock on a full pipe.
        let write = async {
            if let Some(mut s) = stdin.take() {
                let r = s.write_all(body).await;
                drop(s);
                r
            } else {
                Ok(())
            }
        };
        let mut out = Vec::new();
        // One byte past the limit tells a response that is too large.
        let mut limited = (&mut stdout).take(PAYLOAD_LIMIT as u64 + 1);
        let read = limited.read_to_end(&mut out);
        let (w, r) = tokio::join!(write, read);
        r.map_err(|e| fail(format!("Cannot read the function's response: {e}")))?;
        if out.len() > PAYLOAD_LIMIT {
            return Err(too_large());
        }
        let status = child
            .wait()
            .await
            .map_err(|e| fail(format!("Cannot wait for the function: {e}")))?;
        if !status.success() {
            return Err(fail(format!(
                "The function was invoked but returned an error result ({status})."
            )));
        }
        w.map_err(|e| fail(format!("Cannot write the request to the function: {e}")))?;
        Ok(out)
    };
    match tokio::time::timeout(INVOKE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(fail(format!(
            "The function did not answer within {} seconds.",
            INVOKE_TIMEOUT.as_secs()
        ))),
    }
}

/// Whether a function URL is one `post` can call: `http://` or `https://`
/// with a host, no `user:password@` (which would travel in a header) and
/// no fragment.
pub fn valid_url(url: &str) -> bool {
    ripstream_delivery::parse_url(url, true).is_ok()
}

/// A response past Lambda's 6 MB synchronous payload limit.
fn too_large() -> InvokeError {
    InvokeError {
        code: "Lambda.FunctionError",
        message: format!(
            "The function's response is larger than Lambda's payload limit of {PAYLOAD_LIMIT} bytes."
        ),
    }
}

/// One POST of the request; a 2xx answer's body is the response.
async fn post(f: &HttpFunction, body: &[u8]) -> Result<Vec<u8>, InvokeError> {
    use ripstream_delivery::DeliveryError;
    let fail = |m: String| InvokeError {
        code: "Lambda.FunctionError",
        message: m,
    };
    let (status, out) = match f
        .client
        .post_json(&f.url, body.to_vec(), INVOKE_TIMEOUT, PAYLOAD_LIMIT)
        .await
    {
        Ok(answer) => answer,
        Err(DeliveryError::ResponseTooLarge(_)) => return Err(too_large()),
        Err(DeliveryError::Timeout(_)) => {
            return Err(fail(format!(
                "The function did not answer within {} seconds.",
                INVOKE_TIMEOUT.as_secs()
            )));
        }
        // The URL is the operator's: details are logged, never written
        // into the caller's error output.
        Err(e) => {
            warn!(url = %f.url, error = %e, "a transformation function cannot be reached");
            return Err(fail("The function cannot be reached.".into()));
        }
    };
    if !(200..300).contains(&status) {
        return Err(fail(format!(
            "The function was invoked but returned an error result (HTTP {status})."
        )));
    }
    Ok(out)
}

/// The error output line AWS writes for a record that failed processing.
pub fn error_line(
    attempts: u32,
    arrival_ms: i64,
    code: &str,
    message: &str,
    ending_ms: i64,
    raw: &[u8],
    lambda_arn: &str,
) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "attemptsMade": attempts,
        "arrivalTimestamp": arrival_ms,
        "errorCode": code,
        "errorMessage": message,
        "attemptEndingTimestamp": ending_ms,
        "rawData": b64().encode(raw),
        "lambdaArn": lambda_arn,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_name_functions() {
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:f"),
            Some("f")
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:f:$LATEST"),
            Some("f")
        );
        assert_eq!(function_name("arn:aws:s3:::b"), None);
        assert_eq!(function_name("arn:aws:lambda:us-east-1:1:layer:f"), None);
    }

    #[test]
    fn responses_map_to_outcomes() {
        let body = br#"{"records":[{"recordId":"1","result":"Dropped"},{"recordId":"0","result":"Ok","data":"eA=="},{"recordId":"2","result":"ProcessingFailed","data":""}]}"#;
        let o = parse_response(body, 4).unwrap();
        assert_eq!(o[0], Outcome::Ok(b"x".to_vec()));
        assert_eq!(o[1], Outcome::Dropped);
        assert!(matches!(&o[2], Outcome::Failed(c, _) if c == "Lambda.ProcessingFailed"));
        assert!(matches!(&o[3], Outcome::Failed(c, _) if c == "Lambda.MissingRecordId"));
        assert!(parse_response(b"nope", 1).is_err());
        assert!(parse_response(br#"{"records":[{"recordId":"9","result":"Ok"}]}"#, 1).is_err());
        let r = request(
            "inv",
            "arn:s",
            None,
            "us-east-1",
            &[InRecord {
                arrival_ms: 5,
                data: b"x".to_vec(),
                metadata: None,
            }],
        );
        assert_eq!(
            r["records"][0],
            json!({"recordId": "0", "approximateArrivalTimestamp": 5, "data": "eA=="})
        );
        assert!(r.get("sourceKinesisStreamArn").is_none());
    }

    #[test]
    fn stream_sourced_requests_carry_the_kinesis_metadata() {
        let meta = crate::source::RecordMetadata {
            shard_id: "shardId-000000000001".into(),
            partition_key: "pk".into(),
            approximate_arrival_timestamp: 7,
            sequence_number: "4959".into(),
            subsequence_number: 2,
        };
        let r = request(
            "inv",
            "arn:s",
            Some("arn:aws:kinesis:us-east-1:1:stream/src"),
            "us-east-1",
            &[InRecord {
                arrival_ms: 5,
                data: b"x".to_vec(),
                metadata: Some(meta),
            }],
        );
        assert_eq!(
            r["sourceKinesisStreamArn"],
            "arn:aws:kinesis:us-east-1:1:stream/src"
        );
        assert_eq!(
            r["records"][0]["kinesisRecordMetadata"],
            json!({"shardId": "shardId-000000000001", "partitionKey": "pk",
                   "approximateArrivalTimestamp": 7, "sequenceNumber": "4959",
                   "subsequenceNumber": 2})
        );
    }

    #[test]
    fn partition_keys_come_with_ok_records() {
        let body = br#"{"records":[{"recordId":"0","result":"Ok","data":"eA==","metadata":{"partitionKeys":{"a":"x","n":3}}},{"recordId":"1","result":"Ok","data":"eA==","metadata":{"partitionKeys":{"a":[1]}}},{"recordId":"2","result":"Ok","data":"eA=="}]}"#;
        let o = parse_response_with_keys(body, 3).unwrap();
        let k = o[0].1.clone().unwrap();
        assert_eq!((k["a"].as_str(), k["n"].as_str()), ("x", "3"));
        assert!(matches!(&o[1].0, Outcome::Failed(c, _) if c == "Lambda.InvalidPartitionKeys"));
        assert_eq!(o[2], (Outcome::Ok(b"x".to_vec()), None));
    }

    #[test]
    fn otf_metadata_is_kept_apart_from_partition_keys_and_checked() {
        let body = br#"{"records":[
            {"recordId":"0","result":"Ok","data":"eA==","metadata":{"partitionKeys":{"operation":"delete"},"otfMetadata":{"operation":"update","destinationTableName":"t"}}},
            {"recordId":"1","result":"Ok","data":"eA==","metadata":{"otfMetadata":{"destinationTableName":"a\nb"}}},
            {"recordId":"2","result":"Ok","data":"eA==","metadata":{"otfMetadata":{"operation":1}}},
            {"recordId":"3","result":"Ok","data":"eA==","metadata":{"partitionKeys":{"\u0000otfMetadata.operation":"delete"}}}]}"#;
        let o = parse_response_with_keys(body, 4).unwrap();
        let k = o[0].1.clone().unwrap();
        assert_eq!(k["operation"], "delete", "the partition key, for S3");
        assert_eq!(k[&format!("{OTF_KEY_PREFIX}operation")], "update");
        assert_eq!(k[&format!("{OTF_KEY_PREFIX}destinationTableName")], "t");
        for bad in &o[1..] {
            assert!(
                matches!(&bad.0, Outcome::Failed(c, _) if c == "Lambda.InvalidPartitionKeys"),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn commands_are_invoked_with_stdin_and_stdout() {
        let f = FunctionConfig::Command(vec!["cat".into()]);
        assert_eq!(invoke(&f, b"{}").await.unwrap(), b"{}");
        let f = FunctionConfig::Command(vec!["false".into()]);
        assert_eq!(
            invoke(&f, b"{}").await.unwrap_err().code,
            "Lambda.FunctionError"
        );
        let f = FunctionConfig::Command(vec!["/nonexistent/x".into()]);
        assert!(invoke(&f, b"{}").await.is_err());
    }

    /// Answers one request on `s`: `status`, the headers `extra` and an
    /// echo of the request body (or `body`).
    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        status: &str,
        extra: &str,
        body: Option<Vec<u8>>,
    ) {
        let mut req = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            req.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some(h) = text.find("\r\n\r\n") {
                let len: usize = text[..h]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if req.len() >= h + 4 + len {
                    assert!(text.starts_with("POST /fn HTTP/1.1"), "{text}");
                    assert!(
                        text.to_ascii_lowercase()
                            .contains("content-type: application/json"),
                        "{text}"
                    );
                    let out = body.unwrap_or_else(|| req[h + 4..h + 4 + len].to_vec());
                    let head = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        out.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&out).await;
                    let _ = s.shutdown().await;
                    return;
                }
            }
            if n == 0 {
                return;
            }
        }
    }

    /// A server answering every request with [`answer`], over TLS when
    /// given an acceptor: its URL, `<scheme>://127.0.0.1:<port>/fn`.
    async fn serve(
        status: &'static str,
        extra: &'static str,
        body: Option<Vec<u8>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let (tls, body) = (tls.clone(), body.clone());
                tokio::spawn(async move {
                    match tls {
                        None => answer(tcp, status, extra, body).await,
                        Some(a) => {
                            if let Ok(s) = a.accept(tcp).await {
                                answer(s, status, extra, body).await;
                            }
                        }
                    }
                });
            }
        });
        format!("{scheme}://{addr}/fn")
    }

    fn url_function(url: &str, ca_file: Option<&Path>) -> FunctionConfig {
        FunctionConfig::Url(HttpFunction::new(url, ca_file).unwrap())
    }

    /// A test CA (its PEM) and a TLS acceptor for a certificate it issued
    /// for 127.0.0.1.
    fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        (
            ca.pem(),
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
        )
    }

    #[tokio::test]
    async fn urls_are_invoked_with_a_post() {
        let f = url_function(&serve("200 OK", "", None, None).await, None);
        assert_eq!(
            invoke(&f, b"{\"records\":[]}").await.unwrap(),
            b"{\"records\":[]}"
        );
        let url = serve("500 Internal Server Error", "", None, None).await;
        let e = invoke(&url_function(&url, None), b"{}").await.unwrap_err();
        assert_eq!(e.code, "Lambda.FunctionError");
        assert!(e.message.contains("HTTP 500"), "{}", e.message);
        // A redirect is not followed: it is an answer that is not 2xx.
        let url = serve(
            "302 Found",
            "Location: http://127.0.0.1:1/elsewhere\r\n",
            None,
            None,
        )
        .await;
        let e = invoke(&url_function(&url, None), b"{}").await.unwrap_err();
        assert!(e.message.contains("HTTP 302"), "{}", e.message);
        // Lambda's 6 MB payload limit holds for the response.
        let big = vec![b' '; PAYLOAD_LIMIT + 1];
        let url = serve("200 OK", "", Some(big), None).await;
        let e = invoke(&url_function(&url, None), b"{}").await.unwrap_err();
        assert!(e.message.contains("payload limit"), "{}", e.message);
        let exact = vec![b' '; PAYLOAD_LIMIT];
        let url = serve("200 OK", "", Some(exact), None).await;
        assert_eq!(
            invoke(&url_function(&url, None), b"{}")
                .await
                .unwrap()
                .len(),
            PAYLOAD_LIMIT
        );
        assert!(valid_url("http://127.0.0.1:8080/x"));
        assert!(valid_url("https://example.com/x"));
        assert!(!valid_url("ftp://example.com/x"));
        assert!(!valid_url("http://u:p@example.com/x"));
        assert!(!valid_url("nope"));
    }

    #[tokio::test]
    async fn an_unreachable_url_is_not_repeated_to_the_caller() {
        // Nothing listens on port 9 of 127.0.0.1 (discard; refused here).
        let f = url_function("http://127.0.0.1:9/secret-path?token=t0k", None);
        let e = invoke(&f, b"{}").await.unwrap_err();
        assert_eq!(e.code, "Lambda.FunctionError");
        assert_eq!(e.message, "The function cannot be reached.");
    }

    #[tokio::test]
    async fn https_urls_are_invoked_trusting_the_platform_and_the_ca_file() {
        let (ca_pem, acceptor) = test_pki();
        let url = serve("200 OK", "", None, Some(acceptor)).await;
        assert!(url.starts_with("https://"), "{url}");
        // The platform's roots do not know the test CA.
        let e = invoke(&url_function(&url, None), b"{}").await.unwrap_err();
        assert_eq!(e.message, "The function cannot be reached.");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let f = url_function(&url, Some(&ca));
        assert_eq!(invoke(&f, b"{\"a\":1}").await.unwrap(), b"{\"a\":1}");
        // A CA file is for https only, and must hold a certificate.
        assert!(matches!(
            HttpFunction::new("http://127.0.0.1:1/", Some(&ca)),
            Err(FunctionUrlError::CaFileWithoutHttps(_))
        ));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            HttpFunction::new(&url, Some(&empty)),
            Err(FunctionUrlError::Client(_))
        ));
        assert!(matches!(
            HttpFunction::new("https://u:p@127.0.0.1/", None),
            Err(FunctionUrlError::Url(_))
        ));
    }
}
