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
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(cbor_type(&r), "SerializationException");
    // A body in a content type Kinesis does not speak is no API call: XML,
    // 404 with a target of the form Service.Operation, 403 without one.
    for (target, status, body) in [
        (
            Some("Kinesis_20131202.ListStreams"),
            404,
            "<UnknownOperationException/>\n",
        ),
        (
            Some("Whatever.Whatever"),
            404,
            "<UnknownOperationException/>\n",
        ),
        (
            Some("Kinesis_20131202."),
            403,
            "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n",
        ),
        (
            None,
            403,
            "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n",
        ),
    ] {
        let mut headers = vec![(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        if let Some(t) = target {
            headers.push(("x-amz-target", t));
        }
        let r = raw(addr, false, "POST", "/", &headers, b"{}".to_vec()).await;
        assert_eq!(r.status, status, "{target:?}");
        assert_eq!(String::from_utf8_lossy(&r.body), body, "{target:?}");
    }
    // No target and an empty body: an unknown operation, not a serialization error.
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[("content-type", "application/x-amz-json-1.1")],
        Vec::new(),
    )
    .await;
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

/// The `__type` of a CBOR error body, as AWS answers requests in no
/// encoding the service speaks.
fn cbor_type(r: &RawResponse) -> String {
    assert_eq!(r.headers["content-type"], "application/x-amz-cbor-1.1");
    let v: ciborium::Value = ciborium::from_reader(&r.body[..]).expect("a CBOR body");
    v.as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_text() == Some("__type"))
                .and_then(|(_, v)| v.as_text().map(String::from))
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn connection_level_answers_follow_aws() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let post = |headers: Vec<(&'static str, &'static str)>, body: &'static [u8]| {
        let addr = addr.to_string();
        async move { raw(&addr, false, "POST", "/", &headers, body.to_vec()).await }
    };
    let target = ("x-amz-target", "Kinesis_20131202.ListStreams");
    // No body, and no content type or one the service does not speak: CBOR
    // errors, SerializationException for a valid target, else
    // UnknownOperation. With a body, XML (404 with a target, 403 without).
    let r = post(vec![target], b"").await;
    assert_eq!(
        (r.status, cbor_type(&r).as_str()),
        (400, "SerializationException")
    );
    let r = post(vec![target, ("content-type", "text/whatever")], b"").await;
    assert_eq!(
        (r.status, cbor_type(&r).as_str()),
        (400, "SerializationException")
    );
    let r = post(vec![("content-type", "application/x-amz-json-1.0")], b"").await;
    assert_eq!(
        (r.status, cbor_type(&r).as_str()),
        (400, "UnknownOperationException")
    );
    let r = post(vec![target], b"{}").await;
    assert_eq!(
        (r.status, &r.body[..]),
        (404, &b"<UnknownOperationException/>\n"[..])
    );
    let r = post(vec![target, ("content-type", "text/whatever")], b"{}").await;
    assert_eq!(r.status, 404);
    let r = post(vec![("content-type", "application/x-amz-json-1.0")], b"{}").await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).starts_with("<AccessDeniedException>"));
    let r = post(vec![], b"").await;
    assert_eq!(
        (r.status, cbor_type(&r).as_str()),
        (400, "UnknownOperationException")
    );
    // application/json is the old Coral protocol.
    let r = post(vec![target, ("content-type", "application/json")], b"").await;
    assert_eq!(
        (r.status, cbor_type(&r).as_str()),
        (400, "SerializationException")
    );
    let r = post(vec![target, ("content-type", "application/json")], b"{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        serde_json::json!({"Output": {"__type": "com.amazon.coral.service#UnknownOperationException"}, "Version": "1.0"})
    );
    let r = post(vec![target, ("content-type", "application/json")], b"hello").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["Output"]["__type"],
        "com.amazon.coral.service#SerializationException"
    );
    // Other methods, any path: AccessDeniedException in XML.
    for method in ["GET", "PUT", "DELETE"] {
        let r = raw(addr, false, method, "/some/path", &[], Vec::new()).await;
        assert_eq!(r.status, 403, "{method}");
        assert!(
            String::from_utf8_lossy(&r.body).starts_with("<AccessDeniedException>"),
            "{method}"
        );
    }
    // Request ids: a UUID, and 72 random bytes in x-amz-id-2.
    let r = api(addr, "ListStreams", "{}").await;
    let id = r.headers["x-amzn-requestid"].to_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.matches('-').count(), 4);
    use base64::Engine;
    let id2 = base64::engine::general_purpose::STANDARD
        .decode(r.headers["x-amz-id-2"].as_bytes())
        .unwrap();
    assert_eq!(id2.len(), 72);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    // CORS, as AWS answers browser SDKs.
    let r = raw(
        addr,
        false,
        "OPTIONS",
        "/",
        &[
            ("origin", "http://localhost:8000"),
            (
                "access-control-request-headers",
                "content-type, x-amz-target",
            ),
            ("access-control-request-method", "POST"),
        ],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(r.headers["access-control-max-age"], "172800");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "content-type, x-amz-target"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "POST");
    assert_eq!(r.headers["content-length"], "0");
    assert!(r.body.is_empty());
    // Every answer carries both ids, the front door's own included.
    assert!(
        r.headers.contains_key("x-amzn-requestid"),
        "{:?}",
        r.headers
    );
    assert!(r.headers.contains_key("x-amz-id-2"), "{:?}", r.headers);
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            target,
            ("content-type", "application/x-amz-json-1.1"),
            ("origin", "http://localhost:8000"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    assert_eq!(
        r.headers["access-control-expose-headers"],
        "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date"
    );
    // This server takes unsigned requests, so a page of any other site may
    // not drive it from a visitor's browser: refused, with no CORS headers.
    for method in ["OPTIONS", "POST"] {
        let r = raw(
            addr,
            false,
            method,
            "/",
            &[
                target,
                ("content-type", "application/x-amz-json-1.1"),
                ("origin", "https://evil.example"),
            ],
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(r.status, 403, "{method}");
        assert!(!r.headers.contains_key("access-control-allow-origin"));
        assert!(r.headers.contains_key("x-amz-id-2"), "{method}");
    }
    // Operator endpoints never answer cross-origin pages.
    let r = raw(
        addr,
        false,
        "GET",
        "/_ripstream/metrics",
        &[("origin", "http://localhost:8000")],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("access-control-allow-origin"));
    // A Host that disagrees with the HTTP/2 authority is refused.
    let r = raw(
        addr,
        true,
        "POST",
        "/",
        &[
            target,
            ("content-type", "application/x-amz-json-1.1"),
            ("host", "localhost:1"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["__type"], "InvalidSignatureException");
    assert!(r.headers.contains_key("x-amz-id-2"));
}

#[tokio::test]
async fn json_content_types_and_empty_outputs() {
    // application/json served as JSON 1.1 only where the operator allows it.
    let srv = TestServer::start_with(&["--allow-plain-json"]);
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
        text.contains(
            r#"ripstream_requests_total{service="kinesis",operation="PutRecord",code="OK"} 1"#
        ),
        "{text}"
    );
    for service in ["kinesis", "dynamodb"] {
        assert!(
            text.contains(&format!(
                r#"ripstream_requests_total{{service="{service}",operation="DescribeLimits",code="OK"}} 1"#
            )),
            "{text}"
        );
    }
    assert!(text.contains(r#"ripstream_requests_total{service="kinesis",operation="DescribeStream",code="ResourceNotFoundException"} 1"#), "{text}");
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

/// The credential scope picks the service before `X-Amz-Target` does, as
/// AWS's endpoints are per service: a call signed for Kinesis never reaches
/// DynamoDB, whatever target it names, and the other way round.
#[tokio::test]
async fn the_credential_scope_routes_before_the_target() {
    let srv = TestServer::start();
    let signed_for = |service: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        )
    };
    let call = |auth: String, target: &'static str, content_type: &'static str| {
        let addr = srv.addr.clone();
        async move {
            raw(
                &addr,
                false,
                "POST",
                "/",
                &[
                    ("authorization", auth.as_str()),
                    ("x-amz-date", "20260101T000000Z"),
                    ("x-amz-target", target),
                    ("content-type", content_type),
                ],
                b"{}".to_vec(),
            )
            .await
        }
    };
    let json_10 = "application/x-amz-json-1.0";
    let json_11 = "application/x-amz-json-1.1";
    // Each signed for its own service: served.
    let r = call(
        signed_for("dynamodb"),
        "DynamoDB_20120810.ListTables",
        json_10,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let r = call(
        signed_for("kinesis"),
        "Kinesis_20131202.ListStreams",
        json_11,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    // Signed for Kinesis, naming DynamoDB: Kinesis does not know it.
    let r = call(
        signed_for("kinesis"),
        "DynamoDB_20120810.ListTables",
        json_11,
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("UnknownOperationException"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    // Signed for DynamoDB, naming Kinesis: DynamoDB does not know it.
    let r = call(
        signed_for("dynamodb"),
        "Kinesis_20131202.ListStreams",
        json_10,
    )
    .await;
    assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("UnknownOperationException"),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
}
