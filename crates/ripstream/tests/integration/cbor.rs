//! The CBOR protocol (`application/x-amz-cbor-1.1`), as the AWS SDK for Java v2 speaks it:
//! byte strings for blobs, CBOR tag 1 with epoch milliseconds for timestamps.

use ciborium::Value as C;

use crate::support::*;

fn text(s: &str) -> C {
    C::Text(s.into())
}

fn map(entries: Vec<(&str, C)>) -> C {
    C::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}

fn get<'a>(v: &'a C, key: &str) -> Option<&'a C> {
    match v {
        C::Map(m) => m.iter().find(|(k, _)| *k == text(key)).map(|(_, v)| v),
        _ => None,
    }
}

async fn cbor_call(addr: &str, op: &str, body: &C) -> (u16, C, http::HeaderMap) {
    let mut bytes = Vec::new();
    ciborium::into_writer(body, &mut bytes).unwrap();
    let target = format!("Kinesis_20131202.{op}");
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-cbor-1.1"),
        ],
        bytes,
    )
    .await;
    let v = if r.body.is_empty() {
        C::Null
    } else {
        ciborium::from_reader(&r.body[..]).expect("a CBOR response")
    };
    (r.status, v, r.headers)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tagged_ms(v: Option<&C>) -> i64 {
    match v {
        Some(C::Tag(1, inner)) => match **inner {
            C::Integer(i) => i128::from(i) as i64,
            ref other => panic!("timestamp not an integer: {other:?}"),
        },
        other => panic!("timestamp not tag 1: {other:?}"),
    }
}

#[tokio::test]
async fn cbor_requests_and_responses_round_trip() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let (status, body, headers) = cbor_call(
        addr,
        "CreateStream",
        &map(vec![
            ("StreamName", text("cb")),
            ("ShardCount", C::Integer(2.into())),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(headers["content-type"], "application/x-amz-cbor-1.1");

    let (_, d, _) = cbor_call(
        addr,
        "DescribeStream",
        &map(vec![("StreamName", text("cb"))]),
    )
    .await;
    let desc = get(&d, "StreamDescription").unwrap();
    assert_eq!(get(desc, "StreamStatus"), Some(&text("ACTIVE")));
    let created = tagged_ms(get(desc, "StreamCreationTimestamp"));
    assert!((created - now_ms()).abs() < 60_000, "{created}");

    let data = vec![0u8, 1, 2, 255, 254];
    let (status, put, _) = cbor_call(
        addr,
        "PutRecord",
        &map(vec![
            ("StreamName", text("cb")),
            ("PartitionKey", text("k")),
            ("Data", C::Bytes(data.clone())),
            ("ExplicitHashKey", text("0")),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{put:?}");
    let seq = get(&put, "SequenceNumber").unwrap().clone();

    let (_, batch, _) = cbor_call(
        addr,
        "PutRecords",
        &map(vec![
            ("StreamName", text("cb")),
            (
                "Records",
                C::Array(vec![map(vec![
                    ("PartitionKey", text("a")),
                    ("Data", C::Bytes(b"second".to_vec())),
                    ("ExplicitHashKey", text("1")),
                ])]),
            ),
        ]),
    )
    .await;
    assert_eq!(
        get(&batch, "FailedRecordCount"),
        Some(&C::Integer(0.into()))
    );

    // AT_TIMESTAMP with tag 1 and epoch milliseconds, as the Java SDK sends it.
    let (status, it, _) = cbor_call(
        addr,
        "GetShardIterator",
        &map(vec![
            ("StreamName", text("cb")),
            ("ShardId", text("shardId-000000000000")),
            ("ShardIteratorType", text("AT_TIMESTAMP")),
            (
                "Timestamp",
                C::Tag(1, Box::new(C::Integer((now_ms() - 60_000).into()))),
            ),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{it:?}");
    let iterator = get(&it, "ShardIterator").unwrap().clone();
    let (_, recs, _) = cbor_call(addr, "GetRecords", &map(vec![("ShardIterator", iterator)])).await;
    let records = match get(&recs, "Records") {
        Some(C::Array(a)) => a.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(records.len(), 2);
    assert_eq!(get(&records[0], "Data"), Some(&C::Bytes(data)));
    assert_eq!(get(&records[0], "SequenceNumber"), Some(&seq));
    let arrived = tagged_ms(get(&records[0], "ApproximateArrivalTimestamp"));
    assert!((arrived - now_ms()).abs() < 60_000);
    assert!(matches!(
        get(&recs, "MillisBehindLatest"),
        Some(C::Integer(_))
    ));

    // Read-only operations answer the same in both protocols.
    for (op, req) in [
        (
            "DescribeStreamSummary",
            serde_json::json!({"StreamName": "cb"}),
        ),
        ("ListStreams", serde_json::json!({})),
        ("ListShards", serde_json::json!({"StreamName": "cb"})),
        ("DescribeLimits", serde_json::json!({})),
        ("ListTagsForStream", serde_json::json!({"StreamName": "cb"})),
        ("DescribeAccountSettings", serde_json::json!({})),
    ] {
        let json = api(addr, op, &req.to_string()).await.json();
        let cbor_req: C = ciborium::Value::serialized(&req).unwrap();
        let (status, cbor, _) = cbor_call(addr, op, &cbor_req).await;
        assert_eq!(status, 200, "{op}: {cbor:?}");
        assert_eq!(to_json(&cbor), json, "{op}");
    }
}

/// CBOR to JSON with the JSON protocol's conventions, to compare answers.
fn to_json(v: &C) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        C::Map(m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.as_text().unwrap().to_string(), to_json(v)))
                .collect(),
        ),
        C::Array(a) => J::Array(a.iter().map(to_json).collect()),
        C::Text(t) => J::String(t.clone()),
        C::Integer(i) => J::from(i128::from(*i) as i64),
        C::Float(f) => J::from(*f),
        C::Bool(b) => J::Bool(*b),
        C::Tag(1, inner) => match **inner {
            C::Integer(ms) => {
                let ms = i128::from(ms) as i64;
                if ms % 1000 == 0 {
                    J::from(ms / 1000)
                } else {
                    J::from(ms as f64 / 1000.0)
                }
            }
            _ => J::Null,
        },
        _ => J::Null,
    }
}

#[tokio::test]
async fn cbor_errors_and_validation() {
    let srv = TestServer::start();
    let addr = srv.addr.as_str();
    let (status, e, headers) = cbor_call(
        addr,
        "DescribeStream",
        &map(vec![("StreamName", text("missing"))]),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(get(&e, "__type"), Some(&text("ResourceNotFoundException")));
    assert_eq!(
        get(&e, "message"),
        Some(&text(
            "Stream missing under account 000000000000 not found."
        ))
    );
    assert_eq!(headers["content-type"], "application/x-amz-cbor-1.1");
    let (_, e, _) = cbor_call(
        addr,
        "CreateStream",
        &map(vec![("StreamName", text("bad name"))]),
    )
    .await;
    assert_eq!(get(&e, "__type"), Some(&text("ValidationException")));
    let target = "Kinesis_20131202.ListStreams";
    let r = raw(
        addr,
        false,
        "POST",
        "/",
        &[
            ("x-amz-target", target),
            ("content-type", "application/x-amz-cbor-1.1"),
        ],
        vec![0xff, 0x00],
    )
    .await;
    assert_eq!(r.status, 400);
    let e: C = ciborium::from_reader(&r.body[..]).unwrap();
    assert_eq!(get(&e, "__type"), Some(&text("SerializationException")));
}
