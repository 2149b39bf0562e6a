//! Per-shard throughput quotas (the default `--quotas aws`) and `--quotas off`.

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};

use crate::support::*;

fn batch(n: usize, tag: &str) -> Vec<PutRecordsRequestEntry> {
    (0..n)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("k{i}"))
                .data(Blob::new(format!("{tag}-{i}")))
                .build()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn writes_over_1000_records_a_second_are_throttled_per_record() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "q", 1).await;
    let mut results = Vec::new();
    for round in 0..3 {
        let out = c
            .put_records()
            .stream_name("q")
            .set_records(Some(batch(500, &format!("r{round}"))))
            .send()
            .await
            .unwrap();
        results.extend(out.records().to_vec());
    }
    let throttled: Vec<_> = results
        .iter()
        .filter(|r| r.error_code().is_some())
        .collect();
    assert!(throttled.len() >= 50, "{} throttled", throttled.len());
    let first = &throttled[0];
    assert_eq!(
        first.error_code(),
        Some("ProvisionedThroughputExceededException")
    );
    assert_eq!(
        first.error_message(),
        Some(
            "Rate exceeded for shard shardId-000000000000 in stream q under account 000000000000."
        )
    );
    assert!(first.sequence_number().is_none());
    let ok = results.iter().filter(|r| r.error_code().is_none()).count();
    // 1000 in the first second, plus what refilled while the requests ran.
    assert!((1000..1450).contains(&ok), "{ok} admitted");
    // The records that passed are all readable; none of the refused ones are.
    let mut stored = 0;
    let mut it = c
        .get_shard_iterator()
        .stream_name("q")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    loop {
        let r = c.get_records().shard_iterator(&it).send().await.unwrap();
        stored += r.records().len();
        if r.millis_behind_latest() == Some(0) {
            break;
        }
        it = r.next_shard_iterator().unwrap().to_string();
    }
    assert_eq!(stored, ok);

    let e = c
        .put_record()
        .stream_name("q")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await;
    if let Err(e) = e {
        assert_eq!(code(&e), "ProvisionedThroughputExceededException");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = c
        .put_records()
        .stream_name("q")
        .set_records(Some(batch(500, "later")))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
}

#[tokio::test]
async fn reads_are_limited_to_five_calls_a_second_and_pay_for_big_responses() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "rq", 1).await;
    let it = c
        .get_shard_iterator()
        .stream_name("rq")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let mut throttled = None;
    for i in 0..8 {
        if let Err(e) = c.get_records().shard_iterator(&it).send().await {
            throttled = Some((i, code(&e)));
            break;
        }
    }
    let (at, code_seen) = throttled.expect("a sixth read within a second is throttled");
    assert!(at >= 5, "throttled after only {at} calls");
    assert_eq!(code_seen, "ProvisionedThroughputExceededException");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A 4 MiB record: admitted on a full bucket, then its read leaves the read
    // budget in debt for a while.
    c.update_max_record_size()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/rq")
        .max_record_size_in_kib(4096)
        .send()
        .await
        .unwrap();
    c.put_record()
        .stream_name("rq")
        .partition_key("big")
        .data(Blob::new(vec![1u8; 4 * 1024 * 1024 - 16]))
        .send()
        .await
        .unwrap();
    let e = c
        .put_record()
        .stream_name("rq")
        .partition_key("big")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ProvisionedThroughputExceededException");
    let r = c.get_records().shard_iterator(&it).send().await.unwrap();
    assert_eq!(r.records().len(), 1);
    let e = c
        .get_records()
        .shard_iterator(r.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ProvisionedThroughputExceededException");
}

#[tokio::test]
async fn quotas_off_lifts_the_limits() {
    let srv = TestServer::start_with(&["--quotas", "off"]);
    let c = srv.client();
    create_stream(&c, "free", 1).await;
    for round in 0..4 {
        let out = c
            .put_records()
            .stream_name("free")
            .set_records(Some(batch(500, &format!("r{round}"))))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let it = c
        .get_shard_iterator()
        .stream_name("free")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    for _ in 0..20 {
        c.get_records().shard_iterator(&it).send().await.unwrap();
    }
}
