//! The wire protocol, seen through raw HTTP: targets, content types, error
//! bodies, headers, HTTP/2, operator endpoints.

use crate::support::*;

#[tokio::test]
async fn error_bodies_follow_aws() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();

    let r = api(
        addr,
        "CreateStream",
        r#"{"StreamName": "bad name", "ShardCount": 1}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "ValidationException");
    assert_eq!(
        r.json()["message"],
        "1 validation error detected: Value 'bad name' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
    );
    assert_eq!(r.headers["x-amzn-errortype"], "ValidationException");
    assert!(r.headers.contains_key("x-amzn-requestid"));
    assert!(r.headers.contains_key("x-amz-id-2"));

    let r = api(addr, "CreateStream", "{not json").await;
    assert_eq!(
        (r.status, r.json()["__type"].as_str()),
        (400, Some("SerializationException"))
    );
    let r = api(addr, "CreateStream", "").await;
    assert_eq!(r.json()["__type"], "SerializationException");
    let r = api(addr, "CreateStream", "[]").await;
    assert_eq!(r.json()["__type"], "SerializationException");
    let r = api(addr, "CreateStream", r#"{"StreamName": 5}"#).await;
    assert_eq!(r.json()["__type"], "SerializationException");
    assert_eq!(
        r.json()["Message"],
        "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String"
    );
    let r = api(addr, "CreateStream", r#"{"ShardCount": "one"}"#).await;
    assert_eq!(
        r.json()["Message"],
        "class java.lang.String can not be converted to an Integer"
    );

    let r = api(addr, "NoSuchOperation", "{}").await;
    assert_eq!(
        (r.status, r.json()["__type"].as_str()),
        (400, Some("UnknownOperationException"))
    );
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ("content-type", "application/x-amz-json-1.0"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "Firehose_20150804.ListStreams"),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.json()["__type"], "UnknownOperationException");
    let r = raw(addr, false, "PUT", "/", &[], Vec::new()).await;
    assert_eq!(r.status, 403);

    let r = api(addr, "DescribeStream", r#"{"StreamName": "missing"}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "ResourceNotFoundException");
    assert_eq!(
        r.json()["message"],
        "Stream missing under account 000000000000 not found."
    );
}

#[tokio::test]
async fn json_content_types_and_empty_outputs() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let r = api(
        addr,
        "CreateStream",
        r#"{"StreamName": "p", "ShardCount": 1}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ("content-type", "application/json"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["StreamNames"][0], "p");
    assert_eq!(r.json()["HasMoreStreams"], false);
    assert_eq!(r.headers["content-type"], "application/x-amz-json-1.1");
    // Timestamps are epoch seconds.
    let r = api(addr, "DescribeStreamSummary", r#"{"StreamName": "p"}"#).await;
    assert!(
        r.json()["StreamDescriptionSummary"]["StreamCreationTimestamp"]
            .as_f64()
            .unwrap()
            > 1.7e9
    );
    // Unknown members are ignored.
    let r = api(
        addr,
        "DescribeStreamSummary",
        r#"{"StreamName": "p", "Whatever": [1, 2]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http2_prior_knowledge_and_keep_alive() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let r = raw(
        addr,
        true,
        "POST",
        "/",
        &[
            ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["HasMoreStreams"], false);
    // One SDK client reuses its connection for many calls.
    let c = srv.client();
    for _ in 0..20 {
        c.list_streams().send().await.unwrap();
    }
}

#[tokio::test]
async fn health_and_metrics() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "mx", 1).await;
    c.put_record()
        .stream_name("mx")
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("hello"))
        .send()
        .await
        .unwrap();
    let _ = c.describe_stream().stream_name("nope").send().await;
    // The same operation name in two services is two series.
    c.describe_limits().send().await.unwrap();
    crate::dynamodb::dynamo(&srv.url())
        .describe_limits()
        .send()
        .await
        .unwrap();
    let r = raw(&srv.addr, false, "GET", "/health", &[], Vec::new()).await;
    assert_eq!(r.status, 200);
    let r = raw(
        &srv.addr,
        false,
        "GET",
        "/_ripstream/health",
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let short = raw(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(short.status, 200);
    let r = raw(
        &srv.addr,
        false,
        "GET",
        "/_ripstream/metrics",
        &[],
        Vec::new(),
    )
    .await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        text.contains(r#"ripstream_stream_incoming_records_total{stream="mx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ripstream_stream_incoming_bytes_total{stream="mx"} 6"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ripstream_requests_total{service="kinesis",operation="PutRecord"} 1"#),
        "{text}"
    );
    for service in ["kinesis", "dynamodb"] {
        assert!(
            text.contains(&format!(
                r#"ripstream_requests_total{{service="{service}",operation="DescribeLimits"}} 1"#
            )),
            "{text}"
        );
    }
    assert!(text.contains(r#"ripstream_request_errors_total{service="kinesis",operation="DescribeStream",code="ResourceNotFoundException"} 1"#), "{text}");
    assert!(
        text.contains("ripstream_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("ripstream_log_fsyncs_total"), "{text}");
}

#[tokio::test]
async fn sigterm_finishes_cleanly() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "bye", 1).await;
    assert_eq!(srv.terminate(), Some(0));
    assert!(srv.log().contains("shutdown complete"), "{}", srv.log());
}
