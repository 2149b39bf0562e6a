//! Sequence numbers in AWS's layout, judged as AWS judges them, and the legacy
//! numbers of data directories written before that layout.
//!
//! The numbers are decoded here as third-party tools decode AWS's: read as a
//! hexadecimal string of 47 digits, `2 | shard creation s (9) | shard index low
//! digit (1) | counter (18) | arrival s (9) | shard index (8) | 2`.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition};

use crate::support::*;

/// 2^185: every legacy number is below it, every AWS-layout one above.
const POW_2_185: &str = "49039857307708443467467104868809893875799651909875269632";

/// Converts the digits of a number from one base to another (most significant first).
fn convert(digits: &str, from: u32, to: u32) -> String {
    let mut n: Vec<u32> = digits.chars().map(|c| c.to_digit(from).unwrap()).collect();
    let mut out = Vec::new();
    while n.iter().any(|d| *d != 0) {
        let mut rem = 0;
        for d in n.iter_mut() {
            let v = rem * from + *d;
            *d = v / to;
            rem = v % to;
        }
        out.push(std::char::from_digit(rem, to).unwrap());
    }
    if out.is_empty() {
        out.push('0');
    }
    out.iter().rev().collect()
}

fn hex_of(dec: &str) -> String {
    convert(dec, 10, 16)
}

fn dec_of(hex: &str) -> String {
    convert(hex, 16, 10)
}

fn field(hex: &str, from: usize, to: usize) -> u64 {
    u64::from_str_radix(&hex[from..to], 16).unwrap()
}

/// Replaces hex digits `from..` of a number with `digits`.
fn with_digits(dec: &str, from: usize, digits: &str) -> String {
    let mut h = hex_of(dec);
    h.replace_range(from..from + digits.len(), digits);
    dec_of(&h)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn index_of(shard_id: &str) -> u64 {
    shard_id.trim_start_matches("shardId-").parse().unwrap()
}

/// Asserts AWS's layout and returns (creation s, shard index, arrival s).
fn decode_aws(seq: &str) -> (u64, u64, u64) {
    assert_eq!(seq.len(), 56, "{seq}");
    assert!(seq > POW_2_185, "{seq}");
    let h = hex_of(seq);
    assert_eq!(h.len(), 47, "{seq}");
    assert!(h.starts_with('2') && h.ends_with('2'), "{h}");
    let index = field(&h, 38, 46);
    assert_eq!(field(&h, 10, 11), index & 0xf, "{h}");
    (field(&h, 1, 10), index, field(&h, 29, 38))
}

async fn shards_of(c: &Client, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    c.list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap()
        .shards()
        .to_vec()
}

/// Puts one record to the shard whose range starts at `hash_key`.
async fn put_to(c: &Client, stream: &str, hash_key: &str, data: &str) -> (String, String) {
    let out = c
        .put_record()
        .stream_name(stream)
        .partition_key("k")
        .explicit_hash_key(hash_key)
        .data(Blob::new(data.to_string()))
        .send()
        .await
        .unwrap();
    (
        out.shard_id().to_string(),
        out.sequence_number().to_string(),
    )
}

async fn first_data(
    c: &Client,
    stream: &str,
    shard: &str,
    ty: ShardIteratorType,
    seq: &str,
) -> Vec<String> {
    let it = c
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ty)
        .starting_sequence_number(seq)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let r = c.get_records().shard_iterator(it).send().await.unwrap();
    r.records()
        .iter()
        .map(|r| String::from_utf8(r.data().as_ref().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn sequence_numbers_decode_to_their_shard_and_arrival_time() {
    let srv = TestServer::start();
    let c = srv.client();
    let before = now_s();
    create_stream(&c, "decode", 3).await;
    let after_create = now_s();
    for sh in shards_of(&c, "decode").await {
        let index = index_of(sh.shard_id());
        let start = sh
            .sequence_number_range()
            .unwrap()
            .starting_sequence_number()
            .to_string();
        let (created, start_index, _) = decode_aws(&start);
        assert_eq!(start_index, index);
        assert!((before..=after_create).contains(&created), "{created}");

        let key = sh.hash_key_range().unwrap().starting_hash_key();
        let t0 = now_s();
        let (shard, seq) = put_to(&c, "decode", key, "one").await;
        let batch = c
            .put_records()
            .stream_name("decode")
            .records(
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key("k")
                    .explicit_hash_key(key)
                    .data(Blob::new("two"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        let t1 = now_s();
        assert_eq!(shard, sh.shard_id());
        let seq2 = batch.records()[0].sequence_number().unwrap().to_string();
        for s in [&seq, &seq2] {
            let (c_s, i, arrival) = decode_aws(s);
            assert_eq!((c_s, i), (created, index), "{s}");
            assert!((t0..=t1).contains(&arrival), "{arrival} not in {t0}..={t1}");
            assert!(*s > start);
        }
        assert!(seq < seq2);
        // Reads return the same numbers, whose arrival second is the record's.
        let records = read_shard(&c, "decode", sh.shard_id()).await;
        let got: Vec<&str> = records.iter().map(|r| r.sequence_number()).collect();
        assert_eq!(got, [seq.as_str(), seq2.as_str()]);
        for r in &records {
            let (_, _, arrival) = decode_aws(r.sequence_number());
            assert_eq!(
                arrival as i64,
                r.approximate_arrival_timestamp().unwrap().secs()
            );
        }
    }
}

#[tokio::test]
async fn numbers_are_judged_as_aws_judges_them() {
    let srv = TestServer::start_with(&["--quotas", "off"]);
    let c = srv.client();
    create_stream(&c, "judge", 6).await;
    let shards = shards_of(&c, "judge").await;
    let key = |i: usize| {
        shards[i]
            .hash_key_range()
            .unwrap()
            .starting_hash_key()
            .to_string()
    };
    let (_, seq5) = put_to(&c, "judge", &key(5), "five").await;
    let (_, seq0) = put_to(&c, "judge", &key(0), "zero-a").await;
    put_to(&c, "judge", &key(0), "zero-b").await;
    let gsi = |seq: &str| {
        c.get_shard_iterator()
            .stream_name("judge")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(seq)
            .send()
    };
    let other_shard = "Invalid StartingSequenceNumber. It encodes shardId-000000000005, while it was used in a call to a shard with shardId-000000000000";
    // Another shard's number, and "5", which AWS reads as encoding shard 5.
    for seq in [seq5.as_str(), "5"] {
        let e = gsi(seq).await.unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException");
        assert_eq!(message(&e), other_shard);
    }
    // A set top bit in the shard index field reads as a negative index.
    let e = gsi(&dec_of("20000000000000000000000000000000000000800000002"))
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Invalid StartingSequenceNumber. It encodes shardId--02147483648, while it was used in a call to a shard with shardId-000000000000"
    );
    let invalid = |seq: &str, why: &str| {
        format!(
            "StartingSequenceNumber {seq} used in GetShardIterator on shard shardId-000000000000 in stream judge under account 000000000000 is invalid{why}."
        )
    };
    // Malformed: the counter's top bit set, an unknown version, a leading 3.
    for bad in [
        with_digits(&seq0, 11, "8"),
        with_digits(&seq0, 46, "4"),
        with_digits(&seq0, 0, "3"),
    ] {
        let e = gsi(&bad).await.unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException");
        assert_eq!(message(&e), invalid(&bad, ""));
    }
    // This shard's index but another creation time, or AWS's version 1.
    let h = hex_of(&seq0);
    let created = field(&h, 1, 10);
    for foreign in [
        with_digits(&seq0, 1, &format!("{:09x}", created - 1)),
        with_digits(&seq0, 46, "1"),
    ] {
        let e = gsi(&foreign).await.unwrap_err();
        assert_eq!(
            message(&e),
            invalid(&foreign, " because it did not come from this stream")
        );
    }
    // The number itself maps to its record.
    assert_eq!(
        first_data(
            &c,
            "judge",
            "shardId-000000000000",
            ShardIteratorType::AfterSequenceNumber,
            &seq0
        )
        .await,
        ["zero-b"]
    );

    // SubscribeToShard judges its starting position the same way.
    let consumer = c
        .register_stream_consumer()
        .stream_arn("arn:aws:kinesis:us-east-1:000000000000:stream/judge")
        .consumer_name("judge")
        .send()
        .await
        .unwrap()
        .consumer()
        .unwrap()
        .consumer_arn()
        .to_string();
    let e = c
        .subscribe_to_shard()
        .consumer_arn(&consumer)
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(&seq5)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    assert_eq!(message(&e), other_shard);

    // SequenceNumberForOrdering: any number in AWS's format that has arrived.
    let ordered = |seq: String| {
        c.put_record()
            .stream_name("judge")
            .partition_key("k")
            .data(Blob::new("x"))
            .sequence_number_for_ordering(seq)
            .send()
    };
    for ok in [
        seq0.clone(),
        // A number AWS issued in 2018, and AWS's all-zero form.
        "49590338271490256608559692538361571095921575989136588898".to_string(),
        dec_of("20000000000000000000000000000000000000000000002"),
        "0".to_string(),
    ] {
        ordered(ok.clone())
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
    }
    let future = with_digits(&seq0, 29, &format!("{:09x}", now_s() + 3600));
    for bad in [
        future,
        with_digits(&seq0, 46, "4"),
        with_digits(&seq0, 11, "8"),
        // All ones: a shard creation second AWS refuses (16025175000 or later).
        dec_of("2ffffffffff7fffffffffffffff000000000007fffffff2"),
    ] {
        let e = ordered(bad.clone()).await.unwrap_err();
        assert_eq!(code(&e), "InvalidArgumentException");
        assert_eq!(
            message(&e),
            format!(
                "ExclusiveMinimumSequenceNumber {bad} used in PutRecord on stream judge under account 000000000000 is invalid."
            )
        );
    }
}

#[tokio::test]
async fn order_and_offsets_survive_restarts_and_crashes() {
    let mut srv = TestServer::start();
    create_stream(&srv.client(), "order", 1).await;
    let mut seqs = Vec::new();
    for round in 0..3 {
        let c = srv.client();
        for i in 0..3 {
            let out = c
                .put_record()
                .stream_name("order")
                .partition_key("k")
                .data(Blob::new(format!("{round}-{i}")))
                .send()
                .await
                .unwrap();
            seqs.push(out.sequence_number().to_string());
        }
        // A crash, then a clean stop.
        if round == 0 {
            srv.kill9();
        } else {
            assert_eq!(srv.terminate(), Some(0));
        }
        srv.restart();
    }
    for w in seqs.windows(2) {
        assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        assert_eq!(w[0].len(), w[1].len());
    }
    let c = srv.client();
    let read: Vec<String> = read_shard(&c, "order", "shardId-000000000000")
        .await
        .iter()
        .map(|r| r.sequence_number().to_string())
        .collect();
    assert_eq!(read, seqs);
    // Numbers from before each restart still map to their records.
    assert_eq!(
        first_data(
            &c,
            "order",
            "shardId-000000000000",
            ShardIteratorType::AtSequenceNumber,
            &seqs[2]
        )
        .await,
        ["0-2", "1-0", "1-1", "1-2", "2-0", "2-1", "2-2"]
    );
    assert_eq!(
        first_data(
            &c,
            "order",
            "shardId-000000000000",
            ShardIteratorType::AfterSequenceNumber,
            &seqs[5]
        )
        .await,
        ["2-0", "2-1", "2-2"]
    );
}

/// Rewrites the catalog as Ripstream wrote it before the AWS layout: shards
/// without `seq_created_s`. Sequence numbers are derived from what the log
/// stores, so this is the data directory an older server left.
fn make_legacy(data_dir: &std::path::Path, stream: &str) {
    let catalog = ripstream_meta::Catalog::open(&data_dir.join("meta.redb")).unwrap();
    let mut rec = catalog
        .streams()
        .unwrap()
        .into_iter()
        .find(|s| s.name == stream)
        .unwrap();
    for sh in &mut rec.shards {
        sh.seq_created_s = None;
    }
    catalog.put_stream(&rec).unwrap();
}

/// Asserts the legacy layout `4 | created ms (13) | index (12) | epoch (10) | offset (20)`.
fn decode_legacy(seq: &str) -> (u64, u64, u64, u64) {
    assert_eq!(seq.len(), 56, "{seq}");
    assert!(seq.starts_with('4') && seq < POW_2_185, "{seq}");
    let f = |a: usize, b: usize| seq[a..b].parse::<u64>().unwrap();
    (f(1, 14), f(14, 26), f(26, 36), f(36, 56))
}

#[tokio::test]
async fn a_data_dir_with_legacy_numbers_keeps_them_and_children_switch_layout() {
    let mut srv = TestServer::start();
    let c = srv.client();
    create_stream(&c, "legacy", 2).await;
    let keys: Vec<String> = shards_of(&c, "legacy")
        .await
        .iter()
        .map(|s| s.hash_key_range().unwrap().starting_hash_key().to_string())
        .collect();
    for i in 0..3 {
        put_to(&c, "legacy", &keys[0], &format!("a{i}")).await;
        put_to(&c, "legacy", &keys[1], &format!("b{i}")).await;
    }
    assert_eq!(srv.terminate(), Some(0));
    make_legacy(&srv.data_dir(), "legacy");
    srv.restart();
    let c = srv.client();

    let shards = shards_of(&c, "legacy").await;
    let start0 = shards[0]
        .sequence_number_range()
        .unwrap()
        .starting_sequence_number()
        .to_string();
    let (created_ms, index, epoch, offset) = decode_legacy(&start0);
    assert_eq!((index, epoch, offset), (0, 0, 0));
    let old0: Vec<String> = read_shard(&c, "legacy", "shardId-000000000000")
        .await
        .iter()
        .map(|r| r.sequence_number().to_string())
        .collect();
    assert_eq!(old0.len(), 3);
    for (i, s) in old0.iter().enumerate() {
        let (c_ms, idx, _, off) = decode_legacy(s);
        assert_eq!((c_ms, idx, off), (created_ms, 0, i as u64));
    }
    // Legacy numbers start iterators and order puts, and another shard's is refused.
    assert_eq!(
        first_data(
            &c,
            "legacy",
            "shardId-000000000000",
            ShardIteratorType::AtSequenceNumber,
            &old0[1]
        )
        .await,
        ["a1", "a2"]
    );
    assert_eq!(
        first_data(
            &c,
            "legacy",
            "shardId-000000000000",
            ShardIteratorType::AfterSequenceNumber,
            &old0[1]
        )
        .await,
        ["a2"]
    );
    let old1 = read_shard(&c, "legacy", "shardId-000000000001").await[0]
        .sequence_number()
        .to_string();
    decode_legacy(&old1);
    let e = c
        .get_shard_iterator()
        .stream_name("legacy")
        .shard_id("shardId-000000000000")
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(&old1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        message(&e),
        "Invalid StartingSequenceNumber. It encodes shardId-000000000001, while it was used in a call to a shard with shardId-000000000000"
    );
    // The shard goes on issuing legacy numbers, above the old ones.
    let out = c
        .put_record()
        .stream_name("legacy")
        .partition_key("k")
        .explicit_hash_key(&keys[0])
        .data(Blob::new("a3"))
        .sequence_number_for_ordering(old0[2].clone())
        .send()
        .await
        .unwrap();
    let newest = out.sequence_number().to_string();
    decode_legacy(&newest);
    assert!(newest > old0[2]);

    // Its children take AWS's layout, above every number of the parent.
    let split_at = (keys[1].parse::<u128>().unwrap() / 2).to_string();
    c.split_shard()
        .stream_name("legacy")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(&split_at)
        .send()
        .await
        .unwrap();
    let shards = shards_of(&c, "legacy").await;
    let parent = shards
        .iter()
        .find(|s| s.shard_id() == "shardId-000000000000")
        .unwrap();
    let end = parent
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .unwrap()
        .to_string();
    decode_legacy(&end);
    assert!(end > newest);
    let (shard, child_seq) = put_to(&c, "legacy", &keys[0], "child").await;
    assert_eq!(shard, "shardId-000000000002");
    let (_, idx, _) = decode_aws(&child_seq);
    assert_eq!(idx, 2);
    let child = shards
        .iter()
        .find(|s| s.shard_id() == "shardId-000000000002")
        .unwrap();
    let child_start = child
        .sequence_number_range()
        .unwrap()
        .starting_sequence_number();
    decode_aws(child_start);
    assert!(end.as_str() < child_start && child_start < child_seq.as_str());

    // A restart changes no number.
    assert_eq!(srv.terminate(), Some(0));
    srv.restart();
    let c = srv.client();
    let again: Vec<String> = read_shard(&c, "legacy", "shardId-000000000000")
        .await
        .iter()
        .map(|r| r.sequence_number().to_string())
        .collect();
    assert_eq!(again[..3], old0[..]);
    assert_eq!(again[3], newest);
    let child_again = read_shard(&c, "legacy", "shardId-000000000002").await;
    assert_eq!(child_again[0].sequence_number(), child_seq);
}
