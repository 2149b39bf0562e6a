//! KinesisStreamAsSource delivery streams through the real binary: a
//! Firehose stream reads a Data Streams stream (every shard, through a
//! split, KPL aggregates de-aggregated) into the embedded object store,
//! refuses what AWS refuses of such a stream, and loses no acknowledged
//! record across kill -9.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_firehose::types::{
    BufferingHints, DeliveryStreamEncryptionConfigurationInput, DeliveryStreamType, KeyType,
    KinesisStreamSourceConfiguration,
};
use aws_sdk_kinesis::primitives::Blob as KBlob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use ripstream_client::aggregation::{Aggregator, UserRecord};

use crate::firehose::{
    ROLE, bucket_dir, extended, firehose, firehose_as, objects, record, wait_until,
};
use crate::support::*;

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:000000000000:stream/{name}")
}

fn source(name: &str) -> KinesisStreamSourceConfiguration {
    KinesisStreamSourceConfiguration::builder()
        .kinesis_stream_arn(stream_arn(name))
        .role_arn(ROLE)
        .build()
        .unwrap()
}

async fn create_sourced(url: &str, name: &str, from: &str, bucket: &str) {
    firehose(url)
        .create_delivery_stream()
        .delivery_stream_name(name)
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(source(from))
        .extended_s3_destination_configuration(
            extended(bucket, 1)
                .buffering_hints(
                    BufferingHints::builder()
                        .size_in_mbs(1)
                        .interval_in_seconds(0)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

async fn put_lines(c: &aws_sdk_kinesis::Client, stream: &str, tag: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = (0..n).map(|i| format!("<{tag}-{i}>\n")).collect();
    let entries = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("pk-{tag}-{i}"))
                .data(KBlob::new(l.as_bytes().to_vec()))
                .build()
                .unwrap()
        })
        .collect();
    let out = c
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    lines
}

/// The records of every delivered object, each line once.
fn delivered_lines(bucket: &std::path::Path) -> BTreeSet<String> {
    let mut all = Vec::new();
    for (_, data) in objects(bucket) {
        all.extend(data);
    }
    String::from_utf8_lossy(&all)
        .split_inclusive('\n')
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn a_stream_source_delivers_every_shard_through_a_split() {
    let srv = TestServer::start();
    let k = srv.client();
    create_stream(&k, "src", 2).await;
    // Written before the delivery stream exists: read from the trim horizon.
    let mut want: Vec<String> = put_lines(&k, "src", "before", 40).await;
    let bucket = bucket_dir(&srv, "fromks");
    create_sourced(&srv.url(), "sourced", "src", "fromks").await;
    want.extend(put_lines(&k, "src", "during", 40).await);
    k.split_shard()
        .stream_name("src")
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key((1u128 << 126).to_string())
        .send()
        .await
        .unwrap();
    wait_until_active(&k, "src").await;
    want.extend(put_lines(&k, "src", "after", 40).await);
    // A KPL aggregate arrives as its user records.
    let mut agg = Aggregator::new();
    for i in 0..5 {
        let line = format!("<kpl-{i}>\n");
        agg.add(UserRecord::new(
            format!("user-{i}"),
            line.clone().into_bytes(),
        ));
        want.push(line);
    }
    let a = agg.finish().unwrap();
    k.put_record()
        .stream_name("src")
        .partition_key(a.partition_key)
        .explicit_hash_key(a.explicit_hash_key)
        .data(KBlob::new(a.data))
        .send()
        .await
        .unwrap();
    let want: BTreeSet<String> = want.into_iter().collect();
    wait_until(
        "every record of the source",
        Duration::from_secs(30),
        || delivered_lines(&bucket).is_superset(&want),
    )
    .await;
    let got = delivered_lines(&bucket);
    assert_eq!(got, want, "nothing but the source's records");
    let text: String = objects(&bucket)
        .into_iter()
        .map(|(_, d)| String::from_utf8(d).unwrap())
        .collect();
    assert!(!text.contains("\u{f3}"), "no aggregate delivered whole");

    let c = firehose(&srv.url());
    let d = c
        .describe_delivery_stream()
        .delivery_stream_name("sourced")
        .send()
        .await
        .unwrap();
    let d = d.delivery_stream_description().unwrap();
    assert_eq!(
        d.delivery_stream_type(),
        &DeliveryStreamType::KinesisStreamAsSource
    );
    let src = d
        .source()
        .and_then(|s| s.kinesis_stream_source_description())
        .expect("a Kinesis source description");
    assert_eq!(src.kinesis_stream_arn(), Some(stream_arn("src").as_str()));
    assert_eq!(src.role_arn(), Some(ROLE));
    assert!(src.delivery_start_timestamp().is_some());
    let listed = c
        .list_delivery_streams()
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.delivery_stream_names(), ["sourced"]);
    let r = raw(&srv.addr, false, "GET", "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        metrics.contains("ripstream_firehose_data_read_from_kinesis_stream_records_total{delivery_stream=\"sourced\"}"),
        "{metrics}"
    );
}

pub(crate) async fn wait_until_active(k: &aws_sdk_kinesis::Client, stream: &str) {
    for _ in 0..100 {
        let s = k
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if s.stream_description_summary().unwrap().stream_status()
            == &aws_sdk_kinesis::types::StreamStatus::Active
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{stream} never became ACTIVE");
}

fn code<E: aws_sdk_firehose::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_firehose::error::SdkError<E, R>,
) -> String {
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("no code")
        .to_string()
}

#[tokio::test]
async fn what_aws_refuses_of_a_stream_sourced_delivery_stream() {
    let srv = TestServer::start();
    let k = srv.client();
    create_stream(&k, "src", 1).await;
    let c = firehose(&srv.url());
    bucket_dir(&srv, "bkt");
    // A source stream that does not exist.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nosuch")
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(source("missing"))
        .extended_s3_destination_configuration(extended("bkt", 1).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // The type without its source, and a source on a DirectPut stream.
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("nosource")
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .extended_s3_destination_configuration(extended("bkt", 1).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("mixed")
        .kinesis_stream_source_configuration(source("src"))
        .extended_s3_destination_configuration(extended("bkt", 1).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Server-side encryption belongs to the source stream.
    let sse = DeliveryStreamEncryptionConfigurationInput::builder()
        .key_type(KeyType::AwsOwnedCmk)
        .build()
        .unwrap();
    let e = c
        .create_delivery_stream()
        .delivery_stream_name("sse")
        .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
        .kinesis_stream_source_configuration(source("src"))
        .delivery_stream_encryption_configuration_input(sse.clone())
        .extended_s3_destination_configuration(extended("bkt", 1).build().unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    create_sourced(&srv.url(), "ok", "src", "bkt").await;
    let e = c
        .put_record()
        .delivery_stream_name("ok")
        .record(record(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .put_record_batch()
        .delivery_stream_name("ok")
        .records(record(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    let e = c
        .start_delivery_stream_encryption()
        .delivery_stream_name("ok")
        .delivery_stream_encryption_configuration_input(sse)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgumentException");
    // Deleting it leaves the source stream alone.
    c.delete_delivery_stream()
        .delivery_stream_name("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(put_lines(&k, "src", "still", 3).await.len(), 3);
}

#[tokio::test]
async fn a_stream_source_starts_at_creation_when_configured() {
    let srv = TestServer::start_with(&["--firehose-kinesis-start", "creation"]);
    let k = srv.client();
    create_stream(&k, "src", 1).await;
    put_lines(&k, "src", "old", 5).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bucket = bucket_dir(&srv, "late");
    create_sourced(&srv.url(), "late", "src", "late").await;
    let want: BTreeSet<String> = put_lines(&k, "src", "new", 5).await.into_iter().collect();
    wait_until("the new records", Duration::from_secs(30), || {
        delivered_lines(&bucket).is_superset(&want)
    })
    .await;
    assert_eq!(
        delivered_lines(&bucket),
        want,
        "records from before creation are not read"
    );
}

type Acked = Arc<Mutex<Vec<String>>>;

/// Writes to both a Kinesis stream (read by a stream-sourced delivery
/// stream) and a DirectPut delivery stream until the server dies.
async fn produce(url: String, acked: Acked, producer: usize, round: usize) {
    let k = client_for(&url);
    let f = firehose(&url);
    for n in 0.. {
        let lines: Vec<String> = (0..20)
            .map(|i| format!("<r{round}-p{producer}-{n}-{i}>\n"))
            .collect();
        let (ks, direct) = lines.split_at(10);
        let entries = ks
            .iter()
            .map(|l| {
                PutRecordsRequestEntry::builder()
                    .partition_key(l.clone())
                    .data(KBlob::new(l.as_bytes().to_vec()))
                    .build()
                    .unwrap()
            })
            .collect();
        match k
            .put_records()
            .stream_name("src")
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let mut a = acked.lock().unwrap();
                for (r, l) in out.records().iter().zip(ks) {
                    if r.error_code().is_none() {
                        a.push(l.clone());
                    }
                }
            }
            Err(_) => return,
        }
        match f
            .put_record_batch()
            .delivery_stream_name("direct")
            .set_records(Some(direct.iter().map(|l| record(l.as_bytes())).collect()))
            .send()
            .await
        {
            Ok(out) => {
                let mut a = acked.lock().unwrap();
                for (r, l) in out.request_responses().iter().zip(direct) {
                    if r.error_code().is_none() {
                        a.push(l.clone());
                    }
                }
            }
            Err(_) => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_of_both_sources_survive_kill_9() {
    let mut srv = TestServer::start();
    let k = srv.client();
    create_stream(&k, "src", 2).await;
    let bucket = bucket_dir(&srv, "both");
    create_sourced(&srv.url(), "sourced", "src", "both").await;
    firehose(&srv.url())
        .create_delivery_stream()
        .delivery_stream_name("direct")
        .extended_s3_destination_configuration(extended("both", 1).build().unwrap())
        .send()
        .await
        .unwrap();
    let acked: Acked = Arc::default();
    for round in 0..2 {
        let producers: Vec<_> = (0..3)
            .map(|p| tokio::spawn(produce(srv.url(), acked.clone(), p, round)))
            .collect();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        srv.kill9();
        for p in producers {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
        srv.restart();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
    let missing = || {
        let got = delivered_lines(&bucket);
        acked.iter().filter(|l| !got.contains(*l)).count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while missing() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        missing(),
        0,
        "acknowledged records lost of {}; log:\n{}",
        acked.len(),
        srv.log()
    );
}

const READER_CREDENTIALS: &str = r#"
[[principal]]
name = "admin"
access_key_id = "AKIDADMIN00000000001"
secret_access_key = "admin-secret"

[[principal]]
name = "reader"
access_key_id = "AKIDREADER0000000001"
secret_access_key = "reader-secret"
policy = '''{"Statement": [
  {"Effect": "Allow", "Action": ["firehose:*", "kinesis:*", "s3:PutObject"], "Resource": "*"}
]}'''
"#;

/// A delivery stream reads its source as whoever configured it, so the
/// source stream's resource policy judges those reads too: an explicit
/// Deny there stops the creator, however broad their own policy.
#[tokio::test]
async fn a_source_streams_resource_policy_judges_the_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("credentials.toml");
    std::fs::write(&path, READER_CREDENTIALS).unwrap();
    let srv = TestServer::start_with(&["--credentials", path.to_str().unwrap()]);
    let admin = client_with(&srv.url(), "AKIDADMIN00000000001", "admin-secret");
    create_stream(&admin, "guarded", 1).await;
    create_stream(&admin, "open", 1).await;
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/reader"},"Action":"kinesis:GetRecords","Resource":"*"}]}"#;
    admin
        .put_resource_policy()
        .resource_arn(stream_arn("guarded"))
        .policy(deny)
        .send()
        .await
        .unwrap();
    let reader = firehose_as(&srv.url(), "AKIDREADER0000000001", "reader-secret");
    let create = |name: &'static str, from: &'static str| {
        reader
            .create_delivery_stream()
            .delivery_stream_name(name)
            .delivery_stream_type(DeliveryStreamType::KinesisStreamAsSource)
            .kinesis_stream_source_configuration(source(from))
            .extended_s3_destination_configuration(extended("copies", 60).build().unwrap())
            .send()
    };
    let e = create("from-guarded", "guarded").await.unwrap_err();
    let err = e.as_service_error().unwrap();
    assert_eq!(
        aws_sdk_firehose::error::ProvideErrorMetadata::code(err),
        Some("AccessDeniedException")
    );
    let m = aws_sdk_firehose::error::ProvideErrorMetadata::message(err).unwrap_or_default();
    assert!(m.contains("kinesis:GetRecords"), "{m}");
    // The same caller, a stream without that policy: allowed.
    create("from-open", "open").await.unwrap();
}
