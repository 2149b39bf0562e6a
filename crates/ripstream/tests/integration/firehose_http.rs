//! Firehose's push destinations through the real binary: an HTTP
//! endpoint, Splunk's HEC and an OpenSearch `_bulk` API, each a
//! protocol-faithful receiver written here (hyper on 127.0.0.1, ephemeral
//! port) since no OpenSearch or Splunk server can be installed for the
//! tests. The server runs with `--firehose-allow-http-destinations true`
//! (the receivers speak plain HTTP) and a short endpoint timeout, so
//! timeouts and retry durations run out in seconds.

use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_firehose::types::{
    AmazonopensearchserviceDestinationConfiguration, AmazonopensearchserviceIndexRotationPeriod,
    AmazonopensearchserviceRetryOptions, ContentEncoding, HecEndpointType,
    HttpEndpointBufferingHints, HttpEndpointCommonAttribute, HttpEndpointConfiguration,
    HttpEndpointDestinationConfiguration, HttpEndpointDestinationUpdate,
    HttpEndpointRequestConfiguration, HttpEndpointRetryOptions, HttpEndpointS3BackupMode,
    S3DestinationConfiguration, SplunkBufferingHints, SplunkDestinationConfiguration,
    SplunkRetryOptions,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::firehose::{ROLE, bucket_dir, firehose, objects, record, wait_until};
use crate::support::*;

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Got {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

pub(crate) enum Answer {
    Json(u16, Value),
    /// Never answers: the server's endpoint timeout fires.
    Hang,
}

pub(crate) type Handler = Arc<dyn Fn(usize, &Got) -> Answer + Send + Sync>;

/// A receiver: answers each request with its handler, keeps what it got,
/// stops when dropped.
pub(crate) struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(handler: Handler) -> Receiver {
        Receiver::start_with(handler, None).await
    }

    /// [`Receiver::start`], over TLS when given an acceptor (the URL is
    /// then `https://127.0.0.1:<port>`).
    pub async fn start_with(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let seen = got.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (handler, seen, tls) = (handler.clone(), seen.clone(), tls.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, seen) = (handler.clone(), seen.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let g = Got {
                                path,
                                headers,
                                body,
                            };
                            let n = {
                                let mut all = seen.lock().unwrap();
                                all.push(g.clone());
                                all.len() - 1
                            };
                            match handler(n, &g) {
                                Answer::Json(status, v) => Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(v.to_string())))
                                        .unwrap(),
                                ),
                                Answer::Hang => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                            }
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                        }
                        // A client that refuses the certificate sends no
                        // request.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Receiver { url, got, task }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

fn server() -> TestServer {
    TestServer::start_with(&[
        "--firehose-allow-http-destinations",
        "true",
        "--firehose-endpoint-timeout-ms",
        "500",
    ])
}

pub(crate) fn s3(bucket: &str, prefix: &str) -> S3DestinationConfiguration {
    S3DestinationConfiguration::builder()
        .role_arn(ROLE)
        .bucket_arn(format!("arn:aws:s3:::{bucket}"))
        .prefix(prefix)
        .build()
        .unwrap()
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn header(g: &Got, k: &str) -> String {
    g.headers
        .get(k)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The JSON lines of every object whose key starts with `prefix`.
pub(crate) fn error_lines(bucket: &std::path::Path, prefix: &str) -> Vec<Value> {
    objects(bucket)
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .flat_map(|(_, data)| {
            String::from_utf8(data)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(crate) async fn put_all(c: &aws_sdk_firehose::Client, name: &str, records: &[&[u8]]) {
    let out = c
        .put_record_batch()
        .delivery_stream_name(name)
        .set_records(Some(records.iter().map(|r| record(r)).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_put_count(), 0);
}

#[tokio::test]
async fn http_endpoint_is_awss_protocol_and_retries_with_one_request_id() {
    let srv = server();
    let _bucket = bucket_dir(&srv, "httpb");
    let c = firehose(&srv.url());
    // Two failures (a 503, then an answer with the wrong requestId), then
    // the endpoint recovers.
    let rx = Receiver::start(Arc::new(|n, g| {
        let body: Value = serde_json::from_slice(&gunzip(&g.body)).unwrap();
        match n {
            0 => Answer::Json(503, json!({"errorMessage": "busy"})),
            1 => Answer::Json(200, json!({"requestId": "not-yours", "timestamp": 1})),
            _ => Answer::Json(200, json!({"requestId": body["requestId"], "timestamp": 1})),
        }
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("hose")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(format!("{}/ingest?x=1", rx.url))
                        .name("receiver")
                        .access_key("s3cr3t-key")
                        .build()
                        .unwrap(),
                )
                .buffering_hints(
                    HttpEndpointBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(1)
                        .build(),
                )
                .request_configuration(
                    HttpEndpointRequestConfiguration::builder()
                        .content_encoding(ContentEncoding::Gzip)
                        .common_attributes(
                            HttpEndpointCommonAttribute::builder()
                                .attribute_name("env")
                                .attribute_value("test")
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .retry_options(
                    HttpEndpointRetryOptions::builder()
                        .duration_in_seconds(120)
                        .build(),
                )
                .s3_configuration(s3("httpb", ""))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Described in the model's shape, without the access key.
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("hose")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    let h = d.destinations()[0]
        .http_endpoint_destination_description()
        .unwrap();
    let ec = h.endpoint_configuration().unwrap();
    assert_eq!(ec.url(), Some(format!("{}/ingest?x=1", rx.url).as_str()));
    assert_eq!(ec.name(), Some("receiver"));
    assert_eq!(
        h.s3_backup_mode(),
        Some(&HttpEndpointS3BackupMode::FailedDataOnly)
    );
    assert_eq!(
        h.s3_destination_description().unwrap().bucket_arn(),
        "arn:aws:s3:::httpb"
    );
    assert_eq!(h.retry_options().unwrap().duration_in_seconds(), Some(120));
    assert!(!format!("{d:?}").contains("s3cr3t-key"));

    put_all(&c, "hose", &[b"one", b"two", b"three"]).await;
    wait_until("a successful delivery", Duration::from_secs(60), || {
        rx.got().len() >= 3
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 3, "no request after the one that succeeded");
    let ids: Vec<String> = got
        .iter()
        .map(|g| header(g, "x-amz-firehose-request-id"))
        .collect();
    assert!(!ids[0].is_empty());
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    for g in &got {
        assert_eq!(g.path, "/ingest");
        assert_eq!(header(g, "x-amz-firehose-protocol-version"), "1.0");
        assert_eq!(
            header(g, "x-amz-firehose-source-arn"),
            "arn:aws:firehose:us-east-1:000000000000:deliverystream/hose"
        );
        assert_eq!(header(g, "x-amz-firehose-access-key"), "s3cr3t-key");
        assert_eq!(header(g, "content-encoding"), "gzip");
        assert_eq!(header(g, "content-type"), "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&header(g, "x-amz-firehose-common-attributes")).unwrap(),
            json!({"commonAttributes": {"env": "test"}})
        );
        let body: Value = serde_json::from_slice(&gunzip(&g.body)).unwrap();
        assert_eq!(body["requestId"], ids[0]);
        assert!(body["timestamp"].as_i64().unwrap() > 0);
        let data: Vec<Vec<u8>> = body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| STANDARD.decode(r["data"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(
            data,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }

    // UpdateDestination: member by member, the version moves on.
    c.update_destination()
        .delivery_stream_name("hose")
        .current_delivery_stream_version_id("1")
        .destination_id("destinationId-000000000001")
        .http_endpoint_destination_update(
            HttpEndpointDestinationUpdate::builder()
                .retry_options(
                    HttpEndpointRetryOptions::builder()
                        .duration_in_seconds(30)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("hose")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(d.version_id(), "2");
    let h = d.destinations()[0]
        .http_endpoint_destination_description()
        .unwrap();
    assert_eq!(h.retry_options().unwrap().duration_in_seconds(), Some(30));
    assert_eq!(h.endpoint_configuration().unwrap().name(), Some("receiver"));
    // The metrics name the destination as CloudWatch does.
    let metrics = reqwest_free_get(&srv, "/metrics").await;
    assert!(
        metrics.contains(
            "ripstream_firehose_delivery_to_http_endpoint_records_total{delivery_stream=\"hose\"} 3"
        ),
        "{metrics}"
    );
}

/// GET on the server's own port, without an HTTP client crate.
async fn reqwest_free_get(srv: &TestServer, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_endpoint_that_never_answers_sends_records_to_the_error_output_after_retry_duration() {
    let srv = server();
    let bucket = bucket_dir(&srv, "hangb");
    let c = firehose(&srv.url());
    let rx = Receiver::start(Arc::new(|_, _| Answer::Hang)).await;
    c.create_delivery_stream()
        .delivery_stream_name("hang")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(&rx.url)
                        .build()
                        .unwrap(),
                )
                .buffering_hints(
                    HttpEndpointBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(1)
                        .build(),
                )
                .retry_options(
                    HttpEndpointRetryOptions::builder()
                        .duration_in_seconds(1)
                        .build(),
                )
                .s3_backup_mode(HttpEndpointS3BackupMode::AllData)
                .s3_configuration(s3("hangb", "bk/"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    put_all(&c, "hang", &[b"a\n", b"b\n"]).await;
    wait_until("the error output", Duration::from_secs(60), || {
        !error_lines(&bucket, "bk/http-endpoint-failed/").is_empty()
    })
    .await;
    let lines = error_lines(&bucket, "bk/http-endpoint-failed/");
    assert_eq!(lines.len(), 2, "{lines:?}");
    let raw: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| STANDARD.decode(l["rawData"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(raw, vec![b"a\n".to_vec(), b"b\n".to_vec()]);
    for l in &lines {
        assert_eq!(l["errorCode"], "HttpEndpoint.RequestTimeout");
        assert!(l["attemptsMade"].as_u64().unwrap() >= 1);
        assert!(l["arrivalTimestamp"].as_i64().unwrap() > 0);
        assert!(
            l["attemptEndingTimestamp"].as_i64().unwrap()
                >= l["arrivalTimestamp"].as_i64().unwrap()
        );
        assert!(l["errorMessage"].as_str().unwrap().contains("respond"));
        assert_eq!(l["subsequenceNumber"], 0);
        assert!(l["dataId"].as_str().unwrap().ends_with(".0"), "{l}");
    }
    assert_ne!(lines[0]["dataId"], lines[1]["dataId"]);
    // AllData: every record is in the backup too, under Prefix.
    let backup: Vec<(String, Vec<u8>)> = objects(&bucket)
        .into_iter()
        .filter(|(k, _)| k.starts_with("bk/") && !k.starts_with("bk/http-endpoint-failed/"))
        .collect();
    assert_eq!(backup.len(), 1, "{backup:?}");
    assert!(backup[0].0.contains("/hang-1-"), "{}", backup[0].0);
    assert_eq!(backup[0].1, b"a\nb\n");
}

#[tokio::test]
async fn splunk_hec_with_indexer_acknowledgement_and_its_timeout() {
    let srv = server();
    let bucket = bucket_dir(&srv, "splb");
    let c = firehose(&srv.url());
    // Acknowledges each ackId on its second poll.
    let polls: Arc<Mutex<std::collections::HashMap<String, u32>>> = Arc::default();
    let p = polls.clone();
    let rx = Receiver::start(Arc::new(move |n, g| {
        if g.path.ends_with("/services/collector/event") {
            return Answer::Json(200, json!({"text": "Success", "code": 0, "ackId": n}));
        }
        let v: Value = serde_json::from_slice(&g.body).unwrap();
        let id = v["acks"][0].to_string();
        let mut m = p.lock().unwrap();
        let k = m.entry(id.clone()).or_default();
        *k += 1;
        Answer::Json(200, json!({"acks": {id: *k >= 2}}))
    }))
    .await;
    let splunk = |name: &str, url: &str, retry: i32| {
        SplunkDestinationConfiguration::builder()
            .hec_endpoint(url)
            .hec_endpoint_type(HecEndpointType::Event)
            .hec_token("11111111-2222-3333-4444-555555555555")
            .buffering_hints(
                SplunkBufferingHints::builder()
                    .size_in_mbs(1)
                    .interval_in_seconds(1)
                    .build(),
            )
            .retry_options(
                SplunkRetryOptions::builder()
                    .duration_in_seconds(retry)
                    .build(),
            )
            .s3_configuration(s3("splb", &format!("{name}/")))
            .build()
            .unwrap()
    };
    c.create_delivery_stream()
        .delivery_stream_name("spl")
        .splunk_destination_configuration(splunk("spl", &rx.url, 60))
        .send()
        .await
        .unwrap();
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("spl")
        .send()
        .await
        .unwrap();
    let sd = d.delivery_stream_description().unwrap().destinations()[0]
        .splunk_destination_description()
        .unwrap()
        .clone();
    assert_eq!(sd.hec_acknowledgment_timeout_in_seconds(), Some(180));
    assert_eq!(sd.hec_endpoint_type(), Some(&HecEndpointType::Event));
    put_all(&c, "spl", &[br#"{"msg":"hi"}"#, b"plain"]).await;
    wait_until("an acknowledged batch", Duration::from_secs(60), || {
        rx.got().iter().filter(|g| g.path.ends_with("/ack")).count() >= 2
    })
    .await;
    let got = rx.got();
    let sent = &got[0];
    assert_eq!(sent.path, "/services/collector/event");
    assert_eq!(
        header(sent, "authorization"),
        "Splunk 11111111-2222-3333-4444-555555555555"
    );
    let channel = header(sent, "x-splunk-request-channel");
    assert!(!channel.is_empty());
    assert!(
        got.iter()
            .all(|g| header(g, "x-splunk-request-channel") == channel)
    );
    let events: Vec<Value> = String::from_utf8(sent.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events,
        vec![json!({"event": {"msg": "hi"}}), json!({"event": "plain"})]
    );
    assert!(error_lines(&bucket, "spl/").is_empty());

    // A collector that accepts but never acknowledges: the server's 500 ms
    // endpoint timeout bounds the acknowledgement wait, and after
    // RetryOptions' second the events go to splunk-failed/.
    let silent = Receiver::start(Arc::new(|n, g| {
        if g.path.ends_with("/ack") {
            Answer::Json(200, json!({"acks": {"0": false}}))
        } else {
            Answer::Json(200, json!({"text": "Success", "code": 0, "ackId": n}))
        }
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("noack")
        .splunk_destination_configuration(splunk("noack", &silent.url, 1))
        .send()
        .await
        .unwrap();
    put_all(&c, "noack", &[b"lost?"]).await;
    wait_until("splunk-failed output", Duration::from_secs(60), || {
        !error_lines(&bucket, "noack/splunk-failed/").is_empty()
    })
    .await;
    let lines = error_lines(&bucket, "noack/splunk-failed/");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["errorCode"], "Splunk.AckTimeout");
    assert_eq!(
        STANDARD
            .decode(lines[0]["rawData"].as_str().unwrap())
            .unwrap(),
        b"lost?"
    );
    assert!(lines[0]["EventId"].as_str().is_some_and(|e| !e.is_empty()));
}

#[tokio::test]
async fn opensearch_bulk_with_partial_failures() {
    let srv = server();
    let bucket = bucket_dir(&srv, "osb");
    let c = firehose(&srv.url());
    // Per document: {"bad":..} is refused for good (400), {"busy":..} is
    // refused with 429 the first time it is seen, then indexed.
    let seen_busy = Arc::new(Mutex::new(false));
    let sb = seen_busy.clone();
    let rx = Receiver::start(Arc::new(move |_, g| {
        let text = String::from_utf8(g.body.clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let items: Vec<Value> = lines
            .chunks(2)
            .map(|pair| {
                let (meta, doc) = (&pair[0]["index"], &pair[1]);
                if doc.get("bad").is_some() {
                    json!({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 400,
                        "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [bad]"}}})
                } else if doc.get("busy").is_some() && !std::mem::replace(&mut *sb.lock().unwrap(), true) {
                    json!({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 429,
                        "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}})
                } else {
                    json!({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201, "result": "created"}})
                }
            })
            .collect();
        Answer::Json(200, json!({"took": 3, "errors": true, "items": items}))
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("search")
        .amazonopensearchservice_destination_configuration(
            AmazonopensearchserviceDestinationConfiguration::builder()
                .role_arn(ROLE)
                .cluster_endpoint(&rx.url)
                .index_name("logs")
                .index_rotation_period(AmazonopensearchserviceIndexRotationPeriod::OneDay)
                .buffering_hints(
                    aws_sdk_firehose::types::AmazonopensearchserviceBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(1)
                        .build(),
                )
                .retry_options(
                    AmazonopensearchserviceRetryOptions::builder()
                        .duration_in_seconds(60)
                        .build(),
                )
                .s3_configuration(s3("osb", ""))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    put_all(
        &c,
        "search",
        &[br#"{"ok":1}"#, br#"{"bad":"x"}"#, br#"{"busy":1}"#],
    )
    .await;
    wait_until(
        "the failed document's error output",
        Duration::from_secs(60),
        || {
            !error_lines(&bucket, "AmazonOpenSearchService-failed/").is_empty()
                && rx.got().len() >= 2
        },
    )
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 2, "one retry, of the 429 document only");
    assert_eq!(got[0].path, "/_bulk");
    assert_eq!(header(&got[0], "content-type"), "application/x-ndjson");
    let first: Vec<Value> = String::from_utf8(got[0].body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(first.len(), 6);
    let index = first[0]["index"]["_index"].as_str().unwrap().to_string();
    assert!(
        index.starts_with("logs-20") && index.len() == "logs-2026-12-04".len(),
        "{index}"
    );
    let busy_id = first[4]["index"]["_id"].clone();
    assert!(busy_id.as_str().is_some_and(|s| !s.is_empty()));
    let second: Vec<Value> = String::from_utf8(got[1].body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(second.len(), 2);
    assert_eq!(
        second[0]["index"]["_id"], busy_id,
        "the same document id on retry"
    );
    assert_eq!(second[1], json!({"busy": 1}));
    let lines = error_lines(&bucket, "AmazonOpenSearchService-failed/");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["errorCode"], "400");
    assert!(
        lines[0]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception")
    );
    assert_eq!(
        STANDARD
            .decode(lines[0]["rawData"].as_str().unwrap())
            .unwrap(),
        br#"{"bad":"x"}"#
    );
    assert_eq!(lines[0]["esIndexName"], index.as_str());
    assert_eq!(lines[0]["esDocumentId"], first[2]["index"]["_id"]);
}

#[tokio::test]
async fn records_wait_in_the_log_while_the_endpoint_is_down_and_survive_kill_9() {
    let mut srv = server();
    let _bucket = bucket_dir(&srv, "downb");
    let c = firehose(&srv.url());
    // Down (503) until `up` is set, then AWS's success answer.
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let u = up.clone();
    let rx = Receiver::start(Arc::new(move |_, g| {
        if !u.load(std::sync::atomic::Ordering::SeqCst) {
            return Answer::Json(503, json!({"errorMessage": "down"}));
        }
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        Answer::Json(200, json!({"requestId": body["requestId"], "timestamp": 1}))
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("down")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(&rx.url)
                        .build()
                        .unwrap(),
                )
                .buffering_hints(
                    HttpEndpointBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(0)
                        .build(),
                )
                .retry_options(
                    HttpEndpointRetryOptions::builder()
                        .duration_in_seconds(7200)
                        .build(),
                )
                .s3_configuration(s3("downb", ""))
                .build(),
        )
        .send()
        .await
        .unwrap();
    put_all(&c, "down", &[b"kept-1", b"kept-2"]).await;
    wait_until(
        "retries against the down endpoint",
        Duration::from_secs(60),
        || rx.got().len() >= 2,
    )
    .await;
    // Acknowledged, undelivered, then the server dies: the records are in
    // the stream's log, and the checkpoint has not moved.
    srv.kill9();
    srv.restart();
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let delivered = |rx: &Receiver| -> Vec<Vec<u8>> {
        rx.got()
            .iter()
            .filter_map(|g| {
                let body: Value = serde_json::from_slice(&g.body).ok()?;
                Some(
                    body["records"]
                        .as_array()?
                        .iter()
                        .map(|r| STANDARD.decode(r["data"].as_str().unwrap()).unwrap())
                        .collect::<Vec<_>>(),
                )
            })
            .next_back()
            .unwrap_or_default()
    };
    wait_until(
        "delivery after the restart",
        Duration::from_secs(60),
        || {
            up.load(std::sync::atomic::Ordering::SeqCst)
                && rx.got().len() >= 3
                && delivered(&rx) == vec![b"kept-1".to_vec(), b"kept-2".to_vec()]
        },
    )
    .await;
    // Every attempt, before the crash and after, carried the same request
    // id: the batch is the same records.
    let ids: std::collections::HashSet<String> = rx
        .got()
        .iter()
        .map(|g| header(g, "x-amz-firehose-request-id"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn elasticsearch_items_refused_until_retry_duration_go_to_elasticsearch_failed() {
    use aws_sdk_firehose::types::{
        ElasticsearchBufferingHints, ElasticsearchDestinationConfiguration,
        ElasticsearchIndexRotationPeriod, ElasticsearchRetryOptions,
    };
    let srv = server();
    let bucket = bucket_dir(&srv, "esb");
    let c = firehose(&srv.url());
    // A cluster whose queue is always full: every item 429.
    let rx = Receiver::start(Arc::new(|_, g| {
        let n = String::from_utf8_lossy(&g.body).lines().count() / 2;
        let items: Vec<Value> = (0..n)
            .map(|_| json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}}))
            .collect();
        Answer::Json(200, json!({"took": 1, "errors": true, "items": items}))
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("es")
        .elasticsearch_destination_configuration(
            ElasticsearchDestinationConfiguration::builder()
                .role_arn(ROLE)
                .cluster_endpoint(&rx.url)
                .index_name("plain")
                .type_name("_doc")
                .index_rotation_period(ElasticsearchIndexRotationPeriod::NoRotation)
                .buffering_hints(
                    ElasticsearchBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(1)
                        .build(),
                )
                .retry_options(
                    ElasticsearchRetryOptions::builder()
                        .duration_in_seconds(1)
                        .build(),
                )
                .s3_configuration(s3("esb", "es/"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    put_all(&c, "es", &[br#"{"n":1}"#]).await;
    wait_until(
        "elasticsearch-failed output",
        Duration::from_secs(60),
        || !error_lines(&bucket, "es/elasticsearch-failed/").is_empty(),
    )
    .await;
    let lines = error_lines(&bucket, "es/elasticsearch-failed/");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(l["errorCode"], "429");
    assert!(
        l["errorMessage"]
            .as_str()
            .unwrap()
            .contains("es_rejected_execution_exception")
    );
    assert_eq!(l["esIndexName"], "plain");
    assert_eq!(l["esTypeName"], "_doc");
    assert!(l["attemptsMade"].as_u64().unwrap() >= 1);
    let sent: Vec<Value> = String::from_utf8(rx.got()[0].body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent[0]["index"]["_index"], "plain");
    assert_eq!(sent[0]["index"]["_type"], "_doc");
    assert_eq!(l["esDocumentId"], sent[0]["index"]["_id"]);
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A push destination runs the whole processing pipeline: Decompression,
/// then a Lambda processor (a command function here), then
/// AppendDelimiterToRecord. The endpoint receives the function's records
/// one by one; what the function fails and what cannot be decompressed
/// go to the S3 error output under their error types.
#[tokio::test]
async fn http_endpoint_records_pass_decompression_and_a_lambda_processor() {
    use crate::firehose::{TRANSFORM_PY, processor};
    use aws_sdk_firehose::types::{
        ProcessingConfiguration, ProcessorParameterName as N, ProcessorType as T,
    };
    let fdir = tempfile::tempdir().unwrap();
    let script = fdir.path().join("t.py");
    std::fs::write(&script, TRANSFORM_PY).unwrap();
    let conf = fdir.path().join("ripstream.toml");
    std::fs::write(
        &conf,
        format!(
            "[functions.upper]\ncommand = [\"python3\", {:?}]\n",
            script.to_str().unwrap()
        ),
    )
    .unwrap();
    let srv = TestServer::start_with(&[
        "--config",
        conf.to_str().unwrap(),
        "--firehose-allow-http-destinations",
        "true",
        "--firehose-endpoint-timeout-ms",
        "500",
    ]);
    let bucket = bucket_dir(&srv, "lambdab");
    let c = firehose(&srv.url());
    let rx = Receiver::start(Arc::new(|_, g| {
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        Answer::Json(200, json!({"requestId": body["requestId"], "timestamp": 1}))
    }))
    .await;
    let processing = |function: &str| {
        ProcessingConfiguration::builder()
            .enabled(true)
            .processors(processor(T::AppendDelimiterToRecord, &[]))
            .processors(processor(
                T::Lambda,
                &[(
                    N::LambdaArn,
                    &format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
                )],
            ))
            .processors(processor(
                T::Decompression,
                &[(N::CompressionFormat, "GZIP")],
            ))
            .build()
    };
    let destination = |function: &str| {
        HttpEndpointDestinationConfiguration::builder()
            .endpoint_configuration(
                HttpEndpointConfiguration::builder()
                    .url(format!("{}/in", rx.url))
                    .build()
                    .unwrap(),
            )
            .buffering_hints(
                HttpEndpointBufferingHints::builder()
                    .size_in_mbs(1)
                    .interval_in_seconds(1)
                    .build(),
            )
            .processing_configuration(processing(function))
            .s3_configuration(s3("lambdab", "errs/"))
            .build()
    };
    // A function this server does not have is refused, naming it.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nofn")
        .http_endpoint_destination_configuration(destination("missing"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(message(&e).contains("missing"), "{}", message(&e));

    c.create_delivery_stream()
        .delivery_stream_name("fn")
        .http_endpoint_destination_configuration(destination("upper"))
        .send()
        .await
        .unwrap();
    let one = gzip(b"one");
    let drop = gzip(b"drop");
    let fail = gzip(b"fail");
    let two = gzip(b"two");
    put_all(&c, "fn", &[&one, &drop, &fail, b"not gzip at all", &two]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rx.got().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery; server log:\n{}",
            srv.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("both error outputs", Duration::from_secs(60), || {
        let keys: Vec<String> = objects(&bucket).into_iter().map(|(k, _)| k).collect();
        keys.iter()
            .any(|k| k.starts_with("errs/processing-failed/"))
            && keys
                .iter()
                .any(|k| k.starts_with("errs/decompression-failed/"))
    })
    .await;
    let got = rx.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    let data: Vec<String> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(STANDARD.decode(r["data"].as_str().unwrap()).unwrap()).unwrap())
        .collect();
    assert_eq!(data, vec!["ONE\n", "TWO\n"]);
    let failed = error_lines(&bucket, "errs/processing-failed/");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["errorCode"], "Lambda.ProcessingFailed");
    assert_eq!(
        STANDARD
            .decode(failed[0]["rawData"].as_str().unwrap())
            .unwrap(),
        b"fail"
    );
    assert_eq!(
        failed[0]["lambdaArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:upper"
    );
    let unreadable = error_lines(&bucket, "errs/decompression-failed/");
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert_eq!(
        STANDARD
            .decode(unreadable[0]["rawData"].as_str().unwrap())
            .unwrap(),
        b"not gzip at all"
    );
    // Nothing was delivered twice, and no delivery failure was written.
    assert!(
        !objects(&bucket)
            .iter()
            .any(|(k, _)| k.starts_with("errs/http-endpoint-failed/")),
    );
}

/// AWS's request specification caps `records` at 10,000: a larger buffer
/// goes as several requests, and a failed one is retried alone (the
/// requests before it are not sent again), with its own stable id.
#[tokio::test]
async fn http_endpoint_buffers_past_10000_records_go_as_several_requests() {
    let srv = server();
    let _bucket = bucket_dir(&srv, "manyb");
    let c = firehose(&srv.url());
    let rx = Receiver::start(Arc::new(|n, g| {
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        if n == 1 {
            return Answer::Json(503, json!({"errorMessage": "busy"}));
        }
        Answer::Json(200, json!({"requestId": body["requestId"], "timestamp": 1}))
    }))
    .await;
    c.create_delivery_stream()
        .delivery_stream_name("many")
        .http_endpoint_destination_configuration(
            HttpEndpointDestinationConfiguration::builder()
                .endpoint_configuration(
                    HttpEndpointConfiguration::builder()
                        .url(format!("{}/in", rx.url))
                        .build()
                        .unwrap(),
                )
                .buffering_hints(
                    HttpEndpointBufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(5)
                        .build(),
                )
                .s3_configuration(s3("manyb", ""))
                .build(),
        )
        .send()
        .await
        .unwrap();
    const N: usize = 25_000;
    let all: Vec<Vec<u8>> = (0..N).map(|i| format!("{i:05}").into_bytes()).collect();
    for chunk in all.chunks(500) {
        let refs: Vec<&[u8]> = chunk.iter().map(|r| &r[..]).collect();
        put_all(&c, "many", &refs).await;
    }
    let delivered = |got: &[Got]| -> Vec<(usize, String, Vec<String>)> {
        got.iter()
            .enumerate()
            .map(|(n, g)| {
                let body: Value = serde_json::from_slice(&g.body).unwrap();
                let recs = body["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        String::from_utf8(STANDARD.decode(r["data"].as_str().unwrap()).unwrap())
                            .unwrap()
                    })
                    .collect();
                (n, body["requestId"].as_str().unwrap().to_string(), recs)
            })
            .collect()
    };
    wait_until("every record", Duration::from_secs(90), || {
        let d = delivered(&rx.got());
        d.iter()
            .filter(|(n, ..)| *n != 1)
            .map(|(_, _, r)| r.len())
            .sum::<usize>()
            >= N
    })
    .await;
    let d = delivered(&rx.got());
    assert!(
        d.iter().all(|(_, _, r)| r.len() <= 10_000),
        "a request over 10,000 records"
    );
    // The failed request was sent again as it was, with its id.
    assert_eq!(d[1].2, d[2].2);
    assert_eq!(d[1].1, d[2].1);
    // Every record delivered once by the requests that succeeded.
    let mut ok: Vec<String> = d
        .iter()
        .filter(|(n, ..)| *n != 1)
        .flat_map(|(_, _, r)| r.clone())
        .collect();
    ok.sort();
    let want: Vec<String> = all
        .iter()
        .map(|r| String::from_utf8(r.clone()).unwrap())
        .collect();
    assert_eq!(ok, want);
    let ids: std::collections::HashSet<&str> = d
        .iter()
        .filter(|(n, ..)| *n != 1)
        .map(|(_, id, _)| id.as_str())
        .collect();
    assert_eq!(ids.len(), d.len() - 1, "each request has its own id");
}
