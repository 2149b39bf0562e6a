//! Enhanced fan-out: consumer lifecycle and SubscribeToShard push.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEvent,
    SubscribeToShardEventStream,
};

use crate::support::*;

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/efo";

async fn register(c: &Client, name: &str) -> String {
    let out = c
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name(name)
        .send()
        .await
        .unwrap();
    out.consumer().unwrap().consumer_arn().to_string()
}

async fn subscribe(
    c: &Client,
    consumer: &str,
    pos: StartingPosition,
) -> aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput {
    c.subscribe_to_shard()
        .consumer_arn(consumer)
        .shard_id("shardId-000000000000")
        .starting_position(pos)
        .send()
        .await
        .unwrap()
}

fn position(ty: ShardIteratorType, seq: Option<&str>) -> StartingPosition {
    StartingPosition::builder()
        .r#type(ty)
        .set_sequence_number(seq.map(String::from))
        .build()
        .unwrap()
}

/// The next SubscribeToShardEvent, or None when the stream ended.
async fn next_event(
    out: &mut aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput,
) -> Option<SubscribeToShardEvent> {
    match tokio::time::timeout(Duration::from_secs(10), out.event_stream.recv())
        .await
        .expect("an event within 10 s")
    {
        Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => Some(e),
        Ok(Some(other)) => panic!("unexpected event {other:?}"),
        Ok(None) => None,
        Err(e) => panic!("stream error {e:?}"),
    }
}

async fn put(c: &Client, data: &str) -> String {
    c.put_record()
        .stream_name("efo")
        .partition_key("k")
        .data(Blob::new(data.to_string()))
        .send()
        .await
        .unwrap()
        .sequence_number()
        .to_string()
}

#[tokio::test]
async fn consumer_lifecycle() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let out = c
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("app")
        .send()
        .await
        .unwrap();
    let consumer = out.consumer().unwrap();
    assert_eq!(consumer.consumer_status(), &ConsumerStatus::Creating);
    let arn = consumer.consumer_arn().to_string();
    assert!(
        arn.starts_with("arn:aws:kinesis:us-east-1:000000000000:stream/efo/consumer/app:"),
        "{arn}"
    );
    let d = c
        .describe_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap();
    let d = d.consumer_description().unwrap();
    assert_eq!(d.consumer_status(), &ConsumerStatus::Active);
    assert_eq!(d.stream_arn(), STREAM_ARN);
    let d = c
        .describe_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("app")
        .send()
        .await
        .unwrap();
    assert_eq!(d.consumer_description().unwrap().consumer_arn(), arn);
    let e = c
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("app")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    for i in 1..20 {
        register(&c, &format!("app{i:02}")).await;
    }
    let e = c
        .register_stream_consumer()
        .stream_arn(STREAM_ARN)
        .consumer_name("one-too-many")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "LimitExceededException");
    let page = c
        .list_stream_consumers()
        .stream_arn(STREAM_ARN)
        .max_results(15)
        .send()
        .await
        .unwrap();
    assert_eq!(page.consumers().len(), 15);
    let rest = c
        .list_stream_consumers()
        .stream_arn(STREAM_ARN)
        .next_token(page.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.consumers().len(), 5);
    assert!(rest.next_token().is_none());
    let s = c
        .describe_stream_summary()
        .stream_name("efo")
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.stream_description_summary().unwrap().consumer_count(),
        Some(20)
    );

    // Consumer tags through the resource-ARN operations.
    c.tag_resource()
        .resource_arn(&arn)
        .tags("team", "payments")
        .send()
        .await
        .unwrap();
    let tags = c
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags()[0].key(), "team");

    srv.terminate();
    srv.restart();
    let c = srv.client();
    assert_eq!(
        c.describe_stream_consumer()
            .consumer_arn(&arn)
            .send()
            .await
            .unwrap()
            .consumer_description()
            .unwrap()
            .consumer_name(),
        "app"
    );

    c.deregister_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap();
    let e = c
        .describe_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = c
        .delete_stream()
        .stream_name("efo")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    assert!(
        message(&e).contains("EnforceConsumerDeletion"),
        "{}",
        message(&e)
    );
    c.delete_stream()
        .stream_name("efo")
        .enforce_consumer_deletion(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn records_are_pushed_as_they_arrive_and_resubscribing_loses_nothing() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "pusher").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(put(&c, &format!("early-{i}")).await);
    }
    let mut sub = subscribe(
        &c,
        &consumer,
        position(ShardIteratorType::TrimHorizon, None),
    )
    .await;
    let mut got: Vec<String> = Vec::new();
    let mut continuation = String::new();
    while got.len() < 5 {
        let e = next_event(&mut sub).await.unwrap();
        got.extend(e.records().iter().map(|r| r.sequence_number().to_string()));
        continuation = e.continuation_sequence_number().to_string();
    }
    // New records are pushed without polling.
    let started = Instant::now();
    sent.push(put(&c, "live").await);
    let e = next_event(&mut sub).await.unwrap();
    assert_eq!(e.records().len(), 1);
    assert_eq!(
        String::from_utf8(e.records()[0].data().as_ref().to_vec()).unwrap(),
        "live"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    got.push(e.records()[0].sequence_number().to_string());
    assert_eq!(e.millis_behind_latest(), 0);
    drop(sub);
    // Records written between two subscriptions are delivered once, in order.
    for i in 0..3 {
        sent.push(put(&c, &format!("between-{i}")).await);
    }
    continuation = got.last().cloned().unwrap_or(continuation);
    tokio::time::sleep(Duration::from_millis(5100)).await;
    let mut sub = subscribe(
        &c,
        &consumer,
        position(ShardIteratorType::AfterSequenceNumber, Some(&continuation)),
    )
    .await;
    while got.len() < sent.len() {
        let e = next_event(&mut sub).await.unwrap();
        got.extend(e.records().iter().map(|r| r.sequence_number().to_string()));
    }
    assert_eq!(got, sent);
}

#[tokio::test]
async fn a_second_subscription_within_five_seconds_is_refused() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "twice").await;
    let _first = subscribe(&c, &consumer, position(ShardIteratorType::Latest, None)).await;
    let e = c
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000000")
        .starting_position(position(ShardIteratorType::Latest, None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceInUseException");
    let e = c
        .subscribe_to_shard()
        .consumer_arn(format!("{consumer}9"))
        .shard_id("shardId-000000000000")
        .starting_position(position(ShardIteratorType::Latest, None))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    // Other spellings of the same consumer's ARN open no second subscription:
    // a padded creation timestamp, another case, another partition.
    let (head, created) = consumer.rsplit_once(':').unwrap();
    for variant in [
        format!("{head}:0{created}"),
        consumer.replace("consumer/twice", "consumer/TWICE"),
        consumer.replace("stream/efo", "stream/EFO"),
        consumer.replacen("arn:aws:", "arn:aws-cn:", 1),
    ] {
        let e = c
            .subscribe_to_shard()
            .consumer_arn(&variant)
            .shard_id("shardId-000000000000")
            .starting_position(position(ShardIteratorType::Latest, None))
            .send()
            .await
            .unwrap_err();
        assert!(
            matches!(
                code(&e).as_str(),
                "InvalidArgumentException" | "ValidationException" | "ResourceNotFoundException"
            ),
            "{variant}: {}",
            code(&e)
        );
    }
}

#[tokio::test]
async fn open_subscriptions_count_against_the_in_flight_limit() {
    let srv = TestServer::start_with(&["--max-in-flight", "2"]);
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let one = register(&c, "one").await;
    let two = register(&c, "two").await;
    let mut first = subscribe(&c, &one, position(ShardIteratorType::Latest, None)).await;
    let _second = subscribe(&c, &two, position(ShardIteratorType::Latest, None)).await;
    // Both slots are held by streaming responses: the next request is shed.
    let e = c.list_streams().send().await.unwrap_err();
    assert_eq!(code(&e), "ServiceUnavailableException", "{e:?}");
    // Ending a subscription gives its slot back (once the server notices the
    // closed connection, at the latest when the next heartbeat is written).
    drop(_second);
    let mut freed = false;
    for _ in 0..150 {
        if c.list_streams().send().await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        freed,
        "the slot of an ended subscription was not given back"
    );
    put(&c, "still streaming").await;
    loop {
        let e = next_event(&mut first).await.unwrap();
        if !e.records().is_empty() {
            assert_eq!(e.records().len(), 1);
            break;
        }
    }
}

#[tokio::test]
async fn subscriptions_expire_and_report_child_shards_at_the_end_of_a_parent() {
    let srv = TestServer::start_with(&["--subscription-lifetime-secs", "2"]);
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "ender").await;
    put(&c, "before split").await;
    let mut sub = subscribe(
        &c,
        &consumer,
        position(ShardIteratorType::TrimHorizon, None),
    )
    .await;
    let e = next_event(&mut sub).await.unwrap();
    assert_eq!(e.records().len(), 1);
    c.split_shard()
        .stream_name("efo")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    let e = next_event(&mut sub).await.unwrap();
    let children: Vec<&str> = e.child_shards().iter().map(|c| c.shard_id()).collect();
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
    assert!(next_event(&mut sub).await.is_none());

    // A subscription to an open shard ends by itself after its lifetime.
    let started = Instant::now();
    let mut sub = c
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000001")
        .starting_position(position(ShardIteratorType::Latest, None))
        .send()
        .await
        .unwrap();
    while next_event(&mut sub).await.is_some() {}
    let lived = started.elapsed();
    assert!(
        lived >= Duration::from_millis(1900) && lived < Duration::from_secs(8),
        "{lived:?}"
    );
}

#[tokio::test]
async fn event_stream_frames_over_http2() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "h2").await;
    put(&c, "over h2").await;
    let body = serde_json::json!({
        "ConsumerARN": consumer,
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "TRIM_HORIZON"}
    });
    let frames = subscribe_raw(
        &srv.addr,
        body.to_string().into_bytes(),
        "application/x-amz-json-1.1",
    )
    .await;
    let first = &frames[0];
    let header = |m: &aws_smithy_types::event_stream::Message, name: &str| {
        m.headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_string())
    };
    assert_eq!(
        header(first, ":event-type").as_deref(),
        Some("initial-response")
    );
    let second = &frames[1];
    assert_eq!(
        header(second, ":event-type").as_deref(),
        Some("SubscribeToShardEvent")
    );
    assert_eq!(header(second, ":message-type").as_deref(), Some("event"));
    let payload: serde_json::Value = serde_json::from_slice(second.payload()).unwrap();
    assert_eq!(payload["Records"][0]["Data"], "b3ZlciBoMg==");
    assert!(payload["ContinuationSequenceNumber"].is_string());
}

/// Subscribes over HTTP/2 with prior knowledge and returns the first two messages.
async fn subscribe_raw(
    addr: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Vec<aws_smithy_types::event_stream::Message> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/"))
        .header("x-amz-target", "Kinesis_20131202.SubscribeToShard")
        .header("content-type", content_type)
        .header("authorization", DUMMY_AUTHORIZATION)
        .header("x-amz-date", "20260101T000000Z")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let mut body = resp.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut decoder = aws_smithy_eventstream::frame::MessageFrameDecoder::new();
    let mut out = Vec::new();
    while out.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let aws_smithy_eventstream::frame::DecodedFrame::Complete(m) =
            decoder.decode_frame(&mut buf).unwrap()
        {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn cbor_subscriptions_push_cbor_events() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "cbor").await;
    put(&c, "binary").await;
    let req = serde_json::json!({
        "ConsumerARN": consumer,
        "ShardId": "shardId-000000000000",
        "StartingPosition": {"Type": "TRIM_HORIZON"}
    });
    let mut body = Vec::new();
    ciborium::into_writer(&ciborium::Value::serialized(&req).unwrap(), &mut body).unwrap();
    let frames = subscribe_raw(&srv.addr, body, "application/x-amz-cbor-1.1").await;
    let event = &frames[1];
    let content_type = event
        .headers()
        .iter()
        .find(|h| h.name().as_str() == ":content-type")
        .unwrap();
    assert_eq!(
        content_type.value().as_string().unwrap().as_str(),
        "application/x-amz-cbor-1.1"
    );
    let payload: ciborium::Value = ciborium::from_reader(&event.payload()[..]).unwrap();
    let records = payload
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("Records"))
        .unwrap()
        .1
        .as_array()
        .unwrap();
    let data = records[0]
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("Data"))
        .unwrap()
        .1
        .clone();
    assert_eq!(data, ciborium::Value::Bytes(b"binary".to_vec()));
}

#[tokio::test]
async fn sdk_subscribes_over_http2() {
    let srv = TestServer::start();
    let c = h2_client_for(&srv.addr);
    create_stream(&c, "efo", 1).await;
    let consumer = register(&c, "sdk-h2").await;
    let seq = put(&c, "pushed over h2").await;
    let mut sub = subscribe(
        &c,
        &consumer,
        position(ShardIteratorType::TrimHorizon, None),
    )
    .await;
    let e = next_event(&mut sub).await.unwrap();
    assert_eq!(e.records()[0].sequence_number(), seq);
    let live = put(&c, "live over h2").await;
    let e = next_event(&mut sub).await.unwrap();
    assert_eq!(e.records()[0].sequence_number(), live);
    assert_eq!(e.continuation_sequence_number(), live);
}
