//! Writing and reading records.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use ripstream_kinesis::hash::{even_ranges, hash_key};

use crate::support::*;

fn entry(key: &str, data: &[u8]) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .partition_key(key)
        .data(Blob::new(data))
        .build()
        .unwrap()
}

fn expected_shard(key: &str, shards: u32) -> String {
    let h = hash_key(key);
    let i = even_ranges(shards)
        .iter()
        .position(|(s, e)| *s <= h && h <= *e)
        .unwrap();
    format!("shardId-{i:012}")
}

#[tokio::test]
async fn put_record_routes_by_md5_and_reads_back() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "s", 4).await;
    let mut sent: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for i in 0..40 {
        let key = format!("key-{i}");
        let data = format!("value-{i}");
        let out = c
            .put_record()
            .stream_name("s")
            .partition_key(&key)
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.shard_id(), expected_shard(&key, 4));
        // AWS sends no EncryptionType for a record stored in the clear.
        assert_eq!(out.encryption_type(), None);
        sent.entry(out.shard_id().to_string())
            .or_default()
            .push((out.sequence_number().to_string(), data));
    }
    for (shard, records) in &sent {
        let got = read_shard(&c, "s", shard).await;
        let got: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                (
                    r.sequence_number().to_string(),
                    String::from_utf8(r.data().as_ref().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(&got, records);
        // Strictly increasing sequence numbers (fixed width, so string order is numeric order).
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
}

#[tokio::test]
async fn put_records_keeps_order_and_reports_each_record() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "batch", 3).await;
    let records: Vec<PutRecordsRequestEntry> = (0..500)
        .map(|i| entry(&format!("k{}", i % 17), format!("r{i}").as_bytes()))
        .collect();
    let out = c
        .put_records()
        .stream_name("batch")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(out.records().len(), 500);
    let mut per_shard: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (i, r) in out.records().iter().enumerate() {
        assert!(r.error_code().is_none());
        let shard = r.shard_id().unwrap();
        assert_eq!(shard, expected_shard(&format!("k{}", i % 17), 3));
        per_shard
            .entry(shard.to_string())
            .or_default()
            .push((r.sequence_number().unwrap().to_string(), format!("r{i}")));
    }
    for (shard, expected) in per_shard {
        let got: Vec<(String, String)> = read_shard(&c, "batch", &shard)
            .await
            .iter()
            .map(|r| {
                (
                    r.sequence_number().to_string(),
                    String::from_utf8(r.data().as_ref().to_vec()).unwrap(),
                )
            })
            .collect();
        assert_eq!(got, expected);
    }

    // ExplicitHashKey overrides the partition key.
    let max = "340282366920938463463374607431768211455";
    let out = c
        .put_records()
        .stream_name("batch")
        .records(
            PutRecordsRequestEntry::builder()
                .partition_key("a")
                .explicit_hash_key("0")
                .data(Blob::new("x"))
                .build()
                .unwrap(),
        )
        .records(
            PutRecordsRequestEntry::builder()
                .partition_key("a")
                .explicit_hash_key(max)
                .data(Blob::new("y"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.records()[0].shard_id(), Some("shardId-000000000000"));
    assert_eq!(out.records()[1].shard_id(), Some("shardId-000000000002"));
}

#[tokio::test]
async fn put_limits_and_errors() {
    // Megabyte records back to back would be throttled; quotas have their own tests.
    let srv = TestServer::start_with(&["--quotas", "off"]);
    let c = srv.client();
    create_stream(&c, "lim", 1).await;
    let e = c
        .put_record()
        .stream_name("lim")
        .partition_key("k")
        .explicit_hash_key("340282366920938463463374607431768211456")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(
        message(&e),
        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was 340282366920938463463374607431768211456"
    );
    let e = c
        .put_record()
        .stream_name("nope")
        .partition_key("k")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    let e = c
        .put_record()
        .stream_name("lim")
        .partition_key("")
        .data(Blob::new("x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    // Data plus key over 1 MiB.
    let big = vec![7u8; 1024 * 1024];
    let e = c
        .put_record()
        .stream_name("lim")
        .partition_key("k")
        .data(Blob::new(big.clone()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    let ok = vec![7u8; 1024 * 1024 - 1];
    c.put_record()
        .stream_name("lim")
        .partition_key("k")
        .data(Blob::new(ok))
        .send()
        .await
        .unwrap();
    // Per-stream maximum raised to 2 MiB: the same record goes in.
    c.update_max_record_size()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/lim")
        .max_record_size_in_kib(2048)
        .send()
        .await
        .unwrap();
    c.put_record()
        .stream_name("lim")
        .partition_key("k")
        .data(Blob::new(big))
        .send()
        .await
        .unwrap();

    let e = c
        .put_records()
        .stream_name("lim")
        .set_records(Some((0..501).map(|_| entry("k", b"x")).collect()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");
    // 11 records of 1 MiB: over the 10 MiB request limit.
    let e = c
        .put_records()
        .stream_name("lim")
        .set_records(Some(
            (0..11)
                .map(|_| entry("k", &vec![1u8; 1024 * 1024 - 10]))
                .collect(),
        ))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .put_records()
        .stream_name("lim")
        .records(entry("k", b"x"))
        .records(
            PutRecordsRequestEntry::builder()
                .partition_key("k")
                .explicit_hash_key("99999999999999999999999999999999999999999")
                .data(Blob::new("x"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException", "{}", message(&e));
}

#[tokio::test]
async fn iterator_types_and_their_errors() {
    // Many reads of one shard in a row; quotas have their own tests.
    let srv = TestServer::start_with(&["--quotas", "off"]);
    let c = srv.client();
    create_stream(&c, "it", 2).await;
    let key = "same-key";
    let shard = expected_shard(key, 2);
    let mut seqs = Vec::new();
    for i in 0..5 {
        let out = c
            .put_record()
            .stream_name("it")
            .partition_key(key)
            .data(Blob::new(format!("{i}")))
            .send()
            .await
            .unwrap();
        seqs.push(out.sequence_number().to_string());
    }
    let iter = |ty: ShardIteratorType, seq: Option<&str>| {
        c.get_shard_iterator()
            .stream_name("it")
            .shard_id(&shard)
            .shard_iterator_type(ty)
            .set_starting_sequence_number(seq.map(String::from))
    };
    let first_data = |it: String| {
        let c = c.clone();
        async move {
            let r = c.get_records().shard_iterator(it).send().await.unwrap();
            r.records()
                .iter()
                .map(|r| String::from_utf8(r.data().as_ref().to_vec()).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let at = iter(ShardIteratorType::AtSequenceNumber, Some(&seqs[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_data(at.shard_iterator().unwrap().into()).await,
        ["2", "3", "4"]
    );
    let after = iter(ShardIteratorType::AfterSequenceNumber, Some(&seqs[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_data(after.shard_iterator().unwrap().into()).await,
        ["3", "4"]
    );
    let latest = iter(ShardIteratorType::Latest, None).send().await.unwrap();
    let latest = latest.shard_iterator().unwrap().to_string();
    assert!(first_data(latest.clone()).await.is_empty());
    c.put_record()
        .stream_name("it")
        .partition_key(key)
        .data(Blob::new("5"))
        .send()
        .await
        .unwrap();
    assert_eq!(first_data(latest).await, ["5"]);
    // The shard's StartingSequenceNumber reads from the first record, AT or AFTER.
    let d = c.describe_stream().stream_name("it").send().await.unwrap();
    let start = d
        .stream_description()
        .unwrap()
        .shards()
        .iter()
        .find(|s| s.shard_id() == shard)
        .unwrap()
        .sequence_number_range()
        .unwrap()
        .starting_sequence_number()
        .to_string();
    let a = iter(ShardIteratorType::AfterSequenceNumber, Some(&start))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_data(a.shard_iterator().unwrap().into()).await.len(),
        6
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let t = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(DateTime::from_secs(now.as_secs() as i64 - 3600))
        .send()
        .await
        .unwrap();
    assert_eq!(
        first_data(t.shard_iterator().unwrap().into()).await.len(),
        6
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let after_all = DateTime::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let t = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(after_all)
        .send()
        .await
        .unwrap();
    assert!(
        first_data(t.shard_iterator().unwrap().into())
            .await
            .is_empty()
    );

    let e = iter(ShardIteratorType::AtSequenceNumber, None)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert!(
        message(&e)
            .ends_with("Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber."),
        "{}",
        message(&e)
    );
    let e = iter(ShardIteratorType::TrimHorizon, Some(&seqs[0]))
        .send()
        .await
        .unwrap_err();
    assert!(
        message(&e).ends_with("Request specified TRIM_HORIZON and also a StartingSequenceNumber.")
    );
    let e = iter(ShardIteratorType::AtSequenceNumber, Some("12345"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let other = if shard.ends_with('0') {
        "shardId-000000000001"
    } else {
        "shardId-000000000000"
    };
    let e = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id(other)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(&seqs[0])
        .send()
        .await
        .unwrap_err();
    assert!(
        message(&e).starts_with("Invalid StartingSequenceNumber. It encodes"),
        "{}",
        message(&e)
    );
    let e = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .timestamp(DateTime::from_secs(now.as_secs() as i64 + 3600))
        .send()
        .await
        .unwrap_err();
    assert!(message(&e).starts_with(
        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis."
    ));
    let e = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AtTimestamp)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .get_shard_iterator()
        .stream_name("it")
        .shard_id("shardId-000000000009")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
    assert_eq!(
        message(&e),
        "Shard shardId-000000000009 in stream it under account 000000000000 does not exist"
    );
    // Short shard ids name the same shard.
    c.get_shard_iterator()
        .stream_name("it")
        .shard_id("shardId-1")
        .shard_iterator_type(ShardIteratorType::Latest)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn get_records_limits_lag_and_bad_iterators() {
    let srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "g", 1).await;
    let records: Vec<PutRecordsRequestEntry> = (0..30)
        .map(|i| entry("k", format!("{i}").as_bytes()))
        .collect();
    c.put_records()
        .stream_name("g")
        .set_records(Some(records))
        .send()
        .await
        .unwrap();
    let it = c
        .get_shard_iterator()
        .stream_name("g")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let r = c
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .limit(10)
        .send()
        .await
        .unwrap();
    assert_eq!(r.records().len(), 10);
    assert!(r.millis_behind_latest().is_some());
    assert_eq!(r.records()[0].partition_key(), Some("k"));
    assert!(r.records()[0].approximate_arrival_timestamp().is_some());
    let r2 = c
        .get_records()
        .shard_iterator(r.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r2.records().len(), 20);
    assert_eq!(r2.millis_behind_latest(), Some(0));
    let r3 = c
        .get_records()
        .shard_iterator(r2.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert!(r3.records().is_empty());
    assert!(r3.next_shard_iterator().is_some());
    // An iterator can be used again (each read is independent).
    let again = c
        .get_records()
        .shard_iterator(r.next_shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.records().len(), 20);

    let mut tampered = it.shard_iterator().unwrap().to_string().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let e = c
        .get_records()
        .shard_iterator(String::from_utf8(tampered).unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(message(&e), "Invalid ShardIterator.");
    let e = c
        .get_records()
        .shard_iterator("garbage")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .limit(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ValidationException");

    c.delete_stream().stream_name("g").send().await.unwrap();
    let e = c
        .get_records()
        .shard_iterator(it.shard_iterator().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "ResourceNotFoundException");
}

#[tokio::test]
async fn records_sequence_numbers_and_iterators_survive_restart() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "durable", 2).await;
    let out = c
        .put_records()
        .stream_name("durable")
        .set_records(Some(
            (0..50)
                .map(|i| entry(&format!("k{i}"), format!("v{i}").as_bytes()))
                .collect(),
        ))
        .send()
        .await
        .unwrap();
    let it = c
        .get_shard_iterator()
        .stream_name("durable")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    assert_eq!(srv.terminate(), Some(0));
    srv.restart();
    let c = srv.client();
    let mut before: Vec<String> = out
        .records()
        .iter()
        .map(|r| r.sequence_number().unwrap().to_string())
        .collect();
    let mut after = Vec::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        after.extend(
            read_shard(&c, "durable", shard)
                .await
                .iter()
                .map(|r| r.sequence_number().to_string()),
        );
    }
    before.sort();
    after.sort();
    assert_eq!(before, after);
    let r = c.get_records().shard_iterator(it).send().await.unwrap();
    assert!(!r.records().is_empty());
    // New records after the restart still sort after the old ones.
    let next = c
        .put_record()
        .stream_name("durable")
        .partition_key("k0")
        .data(Blob::new("new"))
        .send()
        .await
        .unwrap();
    let newest_before = out
        .records()
        .iter()
        .filter(|r| r.shard_id() == Some(next.shard_id()))
        .filter_map(|r| r.sequence_number())
        .max()
        .unwrap();
    assert!(next.sequence_number() > newest_before);
}
